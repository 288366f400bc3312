from __future__ import annotations

import pytest

from tidings.policies.names import InvalidName, Namespace, check_name, check_namespace


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        ("shop", "orders", "shop:orders"),
        ("shop", "shop:orders", "shop:orders"),  # already prefixed
        ("shop", "shopping", "shop:shopping"),  # a prefix of the word is no prefix
        ("shop", "a:b", "shop:a:b"),
        ("", "orders", "orders"),
        ("a:b", "c", "a:b:c"),
    ],
)
def test_broker_names(namespace: str, name: str, expected: str) -> None:
    ns = Namespace(namespace)
    assert ns.broker_name(name) == expected
    assert ns.broker_name(ns.user_name(expected)) == expected


@pytest.mark.parametrize("bad", ["", ":orders", "orders:", "a::b", ":"])
def test_bad_channel_names_raise_value_error_naming_them(bad: str) -> None:
    with pytest.raises(ValueError, match="channel name") as info:
        Namespace("shop").broker_name(bad)
    if bad:
        assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [None, 3, b"orders", ["orders"]])
def test_non_str_names_are_value_and_type_errors(bad: object) -> None:
    with pytest.raises(InvalidName, match=type(bad).__name__) as info:
        Namespace("").broker_name(bad)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypeError)


def test_event_and_namespace_checks() -> None:
    assert check_name("created", "event name") == "created"
    with pytest.raises(ValueError, match="event name"):
        check_name("", "event name")
    assert check_namespace(None) == ""
    assert check_namespace("") == ""
    assert check_namespace("shop") == "shop"
    with pytest.raises(ValueError, match="namespace"):
        check_namespace("shop:")
    with pytest.raises(TypeError, match="namespace"):
        check_namespace(7)
