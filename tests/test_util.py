from __future__ import annotations

import pytest

from tidings._util import collapse_exception_group, redact, split_userinfo


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:****@host:6379/0"),
        ("redis://:secret@host", "redis://:****@host"),
        ("rediss://u:p%40ss@h/1?namespace=x", "rediss://u:****@h/1?namespace=x"),
        ("redis://host:6379", "redis://host:6379"),
        ("redis://user@host", "redis://user@host"),
        ("memory://", "memory://"),
        ("redis://u:pw@host:notaport", "redis://u:****@host:notaport"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown


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


@pytest.mark.parametrize(
    ("url", "userinfo", "rest"),
    [
        # Passwords holding "/", "?", "#" or "@" unescaped stay whole.
        ("redis://u:p/ss@w#rd@host:6379/0", ("u", "p/ss@w#rd"), "host:6379/0"),
        ("redis://u:1234/5@host:6379/0", ("u", "1234/5"), "host:6379/0"),
        ("redis://:a@b/c?d#e@host/0", ("", "a@b/c?d#e"), "host/0"),
        ("unix://u:p/w@/tmp/r.sock", ("u", "p/w"), "/tmp/r.sock"),
        ("redis:/u:s3cr3t@h", ("u", "s3cr3t"), "h"),
        # An "@" after a real host is in a query value or a socket path.
        ("redis://localhost:6379/0?client_name=me@box", (None, None), None),
        ("rediss://cache:6380/0?ssl_ca_certs=/etc/redis@main/ca.pem", (None, None), None),
        ("redis+cluster://h1:7000,h2:7001/?client_name=a@b", (None, None), None),
        ("redis://[::1]:6379/0?client_name=a@b", (None, None), None),
        ("unix:///tmp/a@b.sock?db=0", (None, None), None),
        ("redis://u:p@host:6379/0?client_name=me@box", ("u", "p"), None),
        ("redis://user@host", ("user", None), "host"),
    ],
)
def test_split_userinfo_reads_passwords_whole(
    url: str, userinfo: tuple[str | None, str | None], rest: str | None
) -> None:
    _, user, password, after = split_userinfo(url)
    assert (user, password) == userinfo
    if rest is not None:
        assert after == rest
    assert password is None or password not in redact(url)
