from __future__ import annotations

import pytest

from tidings._util import collapse_exception_group


def test_a_lone_exception_is_unwrapped_with_its_own_context() -> None:
    original = KeyError("k")
    try:
        raise ValueError("inner")
    except ValueError as inner:
        original.__context__ = inner
    with pytest.raises(KeyError) as info, collapse_exception_group():
        raise ExceptionGroup("g", [ExceptionGroup("h", [original])])
    assert info.value is original
    assert isinstance(info.value.__context__, ValueError)


def test_several_exceptions_stay_grouped() -> None:
    with pytest.raises(ExceptionGroup) as info, collapse_exception_group():
        raise ExceptionGroup("g", [KeyError("a"), ValueError("b")])
    assert len(info.value.exceptions) == 2


def test_plain_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), collapse_exception_group():
        raise KeyError("x")
