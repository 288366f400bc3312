from __future__ import annotations

import pytest

import tidings
from tidings import Store, create_store


def test_default_is_a_private_memory_store() -> None:
    store = create_store()
    assert store.url == "memory://"
    assert store.namespace is None
    assert repr(store) == "Store('memory://')"


def test_named_memory_store_and_namespace() -> None:
    store = create_store("memory://hub-1?namespace=shop")
    assert store.url == "memory://hub-1"
    assert store.namespace == "shop"
    assert repr(store) == "Store('memory://hub-1?namespace=shop')"
    assert isinstance(store.pubsub(), tidings.PubSub)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mongodb://x", "unknown scheme 'mongodb'"),
        ("nonsense", "unknown scheme ''"),
        ("memory://hub/path", "no path"),
        ("memory://user:secret@hub", "no user, password"),
        ("memory://?namespace=a&namespace=b", "given twice"),
        ("memory://?colour=blue", "unknown parameter 'colour'"),
        ("memory://?namespace=a:", "namespace"),
        ("memory://?novalue", "malformed.*'novalue'"),
        ("memory://?=x&&", "malformed"),
    ],
)
def test_bad_urls_are_value_errors_naming_the_url(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        create_store(url)
    assert "secret" not in str(info.value)


def test_a_password_never_appears_in_errors() -> None:
    with pytest.raises(ValueError, match=r"\*\*\*\*") as info:
        create_store("ftp://admin:hunter2@host")
    assert "hunter2" not in str(info.value)


def test_non_str_url_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str"):
        create_store(b"memory://")  # type: ignore[arg-type]


def test_store_is_exported() -> None:
    assert isinstance(create_store(), Store)
