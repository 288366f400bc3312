"""BoundedCache: a dict that stops growing at its limit and keeps what it has."""

from __future__ import annotations

import pytest

from tidings.policies.cache import BoundedCache


def test_remember_keeps_the_value_and_returns_it() -> None:
    cache: BoundedCache[str, int] = BoundedCache(3)
    value = [1]
    assert cache.remember("a", 1) == 1
    assert cache.remember("list", value) is value  # the very object, not a copy
    assert cache == {"a": 1, "list": [1]}
    assert cache.get("a") == 1
    assert cache.get("missing") is None


def test_it_stops_growing_at_its_limit_and_keeps_the_first_keys() -> None:
    cache: BoundedCache[int, str] = BoundedCache(3)
    results = [cache.remember(key, f"v{key}") for key in range(10)]
    assert results == [f"v{key}" for key in range(10)]  # every value is returned...
    assert len(cache) == 3  # ...but only the first three are kept
    assert cache == {0: "v0", 1: "v1", 2: "v2"}  # nothing evicted, nothing cycled
    assert cache.get(9) is None


def test_a_full_cache_does_not_overwrite_a_key_it_holds() -> None:
    cache: BoundedCache[str, int] = BoundedCache(1)
    cache.remember("a", 1)
    assert cache.remember("a", 2) == 2
    assert cache == {"a": 1}  # full: remember() changes nothing


def test_a_cache_with_room_replaces_a_value() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.remember("a", 1)
    cache.remember("a", 2)
    assert cache == {"a": 2}


def test_clear_empties_it_and_makes_room_again() -> None:
    cache: BoundedCache[int, int] = BoundedCache(2)
    for key in range(5):
        cache.remember(key, key)
    cache.clear()
    assert cache == {}
    assert cache.limit == 2
    cache.remember(7, 7)
    cache.remember(8, 8)
    cache.remember(9, 9)
    assert cache == {7: 7, 8: 8}


@pytest.mark.parametrize("limit", [0, -1])
def test_a_cache_with_no_room_keeps_nothing(limit: int) -> None:
    cache: BoundedCache[str, int] = BoundedCache(limit)
    assert cache.remember("a", 1) == 1
    assert cache == {}


def test_it_is_a_dict_with_no_instance_dict() -> None:
    cache: BoundedCache[str, int] = BoundedCache(4)
    assert isinstance(cache, dict)
    with pytest.raises(AttributeError):
        cache.extra = 1  # type: ignore[attr-defined]
