"""Typed callbacks in isolation: `check_schema` and the `Typed` wrapper."""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any, Union

import anyio
import msgspec
import pytest

import tidings.actors.typed as typed_module
from tidings.actors.callbacks import Meta, Unfit
from tidings.actors.typed import Typed, check_schema

pytestmark = pytest.mark.anyio

LOGGER = logging.getLogger("tidings.test.typed")


class Order(msgspec.Struct):
    id: int
    total: float = 0.0


class Refund(msgspec.Struct):
    order: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Plain:
    """A class msgspec knows nothing about: data decoded from JSON never is one."""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> str:
        self.calls.append(args)
        return "returned"


@pytest.mark.parametrize("schema", [int, Order, Point, list[Order], dict[str, int], Any])
def test_check_schema_takes_what_msgspec_converts_to(schema: Any) -> None:
    check_schema(schema)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        (Union[Order, Refund], "Union"),  # untagged structs: msgspec cannot tell them apart  # noqa: UP007
        (int | str | bytes, "int | str | bytes"),
        (3, "3"),
        ("Order", "'Order'"),
    ],
)
def test_check_schema_refuses_with_a_type_error_naming_it(schema: Any, named: str) -> None:
    with pytest.raises(TypeError) as raised:
        check_schema(schema)
    assert f"schema={schema!r}" in str(raised.value)
    assert named in str(raised.value)
    assert raised.value.__cause__ is None  # said once, not chained


@pytest.mark.parametrize("schema", [Plain, complex])
def test_check_schema_refuses_a_class_msgspec_cannot_convert_data_to(
    schema: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # an application without pydantic
    with pytest.raises(TypeError, match=schema.__name__) as raised:
        check_schema(schema)
    assert "pydantic model" in str(raised.value)  # says what would do


def test_check_schema_leaves_what_msgspec_cannot_build_to_pydantic_when_it_is_used() -> None:
    pytest.importorskip("pydantic")
    check_schema(complex)  # pydantic validates complex numbers
    with pytest.raises(TypeError, match="neither converted by msgspec nor validated by pydantic"):
        check_schema(Plain)


def test_typed_refuses_a_bad_schema_at_construction() -> None:
    with pytest.raises(TypeError, match="schema=3"):
        Typed(print, 3, LOGGER, "orders")


async def test_typed_converts_the_data_before_the_call() -> None:
    recorder = Recorder()
    typed = Typed(recorder, Order, LOGGER, "orders")
    assert typed("ch", "created", {"id": 1, "total": 2.5}) == "returned"
    points = Typed(recorder, Point, LOGGER, "orders")
    points("ch", "moved", {"x": 1, "y": 2})
    assert recorder.calls == [("ch", "created", Order(1, 2.5)), ("ch", "moved", Point(1, 2))]


async def test_extra_meta_arguments_pass_through() -> None:
    recorder = Recorder()
    meta = Meta("1-0", 2)
    Typed(recorder, int, LOGGER, "orders")("ch", "e", 5, meta)
    assert recorder.calls == [("ch", "e", 5, meta)]


async def test_data_that_does_not_fit_raises_unfit_and_the_callback_is_not_called(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    typed = Typed(recorder, Order, LOGGER, "orders")
    with caplog.at_level(logging.WARNING, LOGGER.name), pytest.raises(Unfit) as raised:
        typed("ch", "created", {"id": "one"})
    assert raised.value.__cause__ is None
    assert "Expected `int`" in str(raised.value)
    assert recorder.calls == []
    [record] = caplog.records
    assert "'orders'" in record.getMessage()
    assert "'created'" in record.getMessage()
    assert "Order" in record.getMessage()


async def test_unfit_data_is_logged_once_per_interval_with_how_many_more(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(typed_module, "UNFIT_LOG_INTERVAL", 0.05)
    typed = Typed(Recorder(), int, LOGGER, "orders")
    with caplog.at_level(logging.WARNING, LOGGER.name):
        for _ in range(4):
            with pytest.raises(Unfit):
                typed("ch", "e", "not an int")
        assert len(caplog.records) == 1
        assert "more since" not in caplog.records[0].getMessage()
        await anyio.sleep(0.06)
        with pytest.raises(Unfit):
            typed("ch", "e", "still not")
    assert len(caplog.records) == 2
    assert "(3 more since the last warning)" in caplog.records[1].getMessage()


async def test_each_typed_registration_has_its_own_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = Typed(Recorder(), int, LOGGER, "a")
    second = Typed(Recorder(), int, LOGGER, "b")
    with caplog.at_level(logging.WARNING, LOGGER.name):
        for typed in (first, second, first, second):
            with pytest.raises(Unfit):
                typed("ch", "e", "x")
    assert [("'a'" in r.getMessage(), "'b'" in r.getMessage()) for r in caplog.records] == [
        (True, False),
        (False, True),
    ]


def test_a_typed_callback_is_equal_to_and_hashed_like_its_callback() -> None:
    recorder, other = Recorder(), Recorder()
    typed = Typed(recorder, Order, LOGGER, "orders")
    assert typed == recorder
    assert recorder == typed  # reflected
    assert typed == Typed(recorder, int, LOGGER, "elsewhere")  # whatever its schema
    assert typed != other
    assert typed != Typed(other, Order, LOGGER, "orders")
    assert hash(typed) == hash(recorder)
    assert {recorder: "found"}[typed] == "found"  # found in a dict by either
    assert {typed: "found"}[recorder] == "found"
    assert len({typed, recorder, Typed(recorder, int, LOGGER, "x")}) == 1


def test_repr_names_the_callback_and_the_schema() -> None:
    assert repr(Typed(print, Order, LOGGER, "orders")) == f"{print!r} (schema Order)"
    assert "int | None" in repr(Typed(print, int | None, LOGGER, "orders"))


def test_a_generic_schema_is_named_in_full() -> None:
    assert "list[int]" in repr(Typed(print, list[int], LOGGER, "orders"))
