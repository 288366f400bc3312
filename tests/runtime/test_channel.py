"""ChannelState (one name's registrations) and its Channel face, in isolation."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tidings._runtime.channel import LOOKUP_CACHE_SIZE, ChannelState, callback_key
from tidings.actors.callbacks import Registration
from tidings.actors.typed import Typed
from tidings.types import Channel


def state(**flags: bool) -> ChannelState:
    return ChannelState("orders", "ns:orders", **flags)


def reg(owner: ChannelState, pattern: str, callback: Any, group: str | None = None) -> Registration:
    registration = Registration(pattern, callback, owner)
    registration.group = group
    return registration


def a(*args: Any) -> None:
    pass


def b(*args: Any) -> None:
    pass


class Unhashable:
    """A callable equal to any other with the same tag, and so not hashable."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unhashable) and other.tag == self.tag

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, *args: Any) -> None:
        pass


def test_add_has_find() -> None:
    s = state()
    registration = reg(s, "created", a)
    assert not s.has("created", a)
    assert s.add(registration) is True
    assert s.has("created", a)
    assert not s.has("created", b)
    assert not s.has("deleted", a)
    assert s.find("created", a) is registration
    assert s.find("created", b) is None
    assert s.find("nope", a) is None


def test_a_duplicate_add_returns_false_and_keeps_the_first() -> None:
    s = state()
    first, second = reg(s, "*", a), reg(s, "*", a)
    assert s.add(first) is True
    assert s.add(second) is False
    assert s.find("*", a) is first
    assert s.all_registrations() == [first]
    # The same callback under another pattern is another registration.
    assert s.add(reg(s, "created", a)) is True
    assert len(s.all_registrations()) == 2


def test_remove_takes_this_very_registration_only() -> None:
    s = state()
    kept = reg(s, "*", a)
    s.add(kept)
    stranger = reg(s, "*", a)  # equal key, another object: not the one held
    assert s.remove(stranger) is False
    assert s.find("*", a) is kept
    assert kept.active
    assert stranger.active
    assert s.remove(kept) is True
    assert not kept.active  # deactivated at once
    assert s.patterns == {}  # an empty pattern is forgotten
    assert s.remove(kept) is False  # removed already


def test_remove_keeps_the_other_callbacks_of_a_pattern() -> None:
    s = state()
    ra, rb = reg(s, "*", a), reg(s, "*", b)
    s.add(ra)
    s.add(rb)
    s.remove(ra)
    assert list(s.patterns) == ["*"]
    assert s.registrations_for("x") == (rb,)


def test_registrations_for_matches_globs_in_registration_order() -> None:
    s = state()
    star, created, ranged, escaped = (
        reg(s, "*", a),
        reg(s, "created", b),
        reg(s, "order.[a-c]*", a),
        reg(s, r"lit\*", b),
    )
    for registration in (star, created, ranged, escaped):
        s.add(registration)
    assert s.registrations_for("created") == (star, created)
    assert s.registrations_for("order.beta") == (star, ranged)
    assert s.registrations_for("order.delta") == (star,)
    assert s.registrations_for("lit*") == (star, escaped)
    assert s.registrations_for("litx") == (star,)
    assert s.registrations_for("Created") == (star,)  # case-sensitive


def test_lookups_are_cached_and_the_cache_cleared_on_every_change() -> None:
    s = state()
    first = reg(s, "c*", a)
    s.add(first)
    assert s.registrations_for("created") == (first,)
    assert "created" in s.found  # the actor reads this dict directly
    found = s.found
    second = reg(s, "*", b)
    s.add(second)
    assert s.found is found  # cleared, never replaced (the actor holds it)
    assert "created" not in s.found
    assert s.registrations_for("created") == (first, second)
    s.remove(first)
    assert s.found == {}
    assert s.registrations_for("created") == (second,)
    assert s.registrations() == (second,)  # the plain tuple is rebuilt too
    assert not s.add(reg(s, "*", b))  # a duplicate changes nothing...
    assert "created" in s.found  # ...and keeps the cache


def test_the_lookup_cache_is_bounded() -> None:
    s = state()
    s.add(reg(s, "*", a))
    for n in range(LOOKUP_CACHE_SIZE + 10):
        assert len(s.registrations_for(f"e{n}")) == 1  # answered past the bound too
    assert len(s.found) == LOOKUP_CACHE_SIZE


def test_group_registrations_are_kept_apart() -> None:
    s = state(durable=True)
    plain = reg(s, "*", a)
    workers = reg(s, "*", a, group="workers")  # the same callback, in a group
    auditors = reg(s, "created", b, group="auditors")
    for registration in (plain, workers, auditors):
        assert s.add(registration)
    assert s.registrations_for("created") == (plain,)
    assert s.registrations() == (plain,)
    assert s.group_registrations_for("workers", "created") == (workers,)
    assert s.group_registrations_for("auditors", "created") == (auditors,)
    assert s.group_registrations_for("auditors", "deleted") == ()
    assert s.group_names() == {"workers", "auditors"}
    assert len(s.all_registrations()) == 3
    assert s.has("*", a, "workers")
    assert s.has("*", a)
    assert not s.has("*", a, "auditors")
    assert s.find("*", a, "workers") is workers
    assert s.remove(workers)
    assert s.find("*", a) is plain  # the plain one stays
    assert s.group_names() == {"auditors"}


def test_unhashable_callbacks_are_found_by_equality() -> None:
    s = state()
    first = reg(s, "*", Unhashable("x"))
    assert s.add(first)
    assert s.has("*", Unhashable("x"))  # an equal one is the same callback
    assert not s.add(reg(s, "*", Unhashable("x")))
    assert s.find("*", Unhashable("x")) is first
    other = reg(s, "*", Unhashable("y"))
    assert s.add(other)
    assert s.registrations_for("e") == (first, other)
    assert s.has("*", Unhashable("y"), None)
    group = reg(s, "*", Unhashable("x"), group="g")
    assert s.add(group)  # in a group: another registration
    assert s.find("*", Unhashable("x"), "g") is group
    assert s.remove(first)
    assert s.find("*", Unhashable("x")) is None
    assert s.find("*", Unhashable("y")) is other


def test_callback_key() -> None:
    assert callback_key(a) is a
    assert callback_key(a, "g") == ("g", a)
    assert callback_key(Unhashable("x")) == callback_key(Unhashable("x"))
    assert callback_key(Unhashable("x")) != callback_key(Unhashable("y"))
    assert callback_key(Unhashable("x"), "g") == ("g", callback_key(Unhashable("x")))
    hash(callback_key(Unhashable("x")))  # usable as a dict key


def test_a_typed_callback_is_found_by_its_plain_callback() -> None:
    s = state()
    logger = logging.getLogger("tidings.test")
    for callback in (a, Unhashable("x")):
        typed = reg(s, "*", Typed(callback, int, logger, "orders"))
        assert s.add(typed)
        assert s.has("*", callback)
        assert s.find("*", callback) is typed
        assert not s.add(reg(s, "*", callback))  # the same callback, whatever its schema


def test_channel_face_reflects_the_state() -> None:
    s = state()
    channel = s.channel
    assert isinstance(channel, Channel)
    assert (channel.name, channel.broker_name) == ("orders", "ns:orders")
    assert (channel.local, channel.durable) == (False, False)
    assert (len(channel), channel.events) == (0, ())
    assert "*" not in channel
    s.add(reg(s, "created", a))
    s.add(reg(s, "*", a))
    s.add(reg(s, "*", b))
    assert channel.events == ("created", "*")  # registration order, each pattern once
    assert len(channel) == 2
    assert "*" in channel
    assert "deleted" not in channel
    assert 3 not in channel  # not a pattern: simply absent
    assert [r.key for r in channel.registrations_for("created")] == ["created", "*", "*"]
    assert repr(channel) == "<Channel 'orders' events=['created', '*']>"
    s.remove(s.find("created", a))  # type: ignore[arg-type]
    assert channel.events == ("*",)
    assert s.channel is channel  # one face per state


@pytest.mark.parametrize(
    ("flags", "expected"), [({"local": True}, (True, False)), ({"durable": True}, (False, True))]
)
def test_channel_face_local_and_durable(
    flags: dict[str, bool], expected: tuple[bool, bool]
) -> None:
    channel = state(**flags).channel
    assert (channel.local, channel.durable) == expected


def test_the_face_is_read_only() -> None:
    channel = state().channel
    with pytest.raises(AttributeError):
        channel.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        channel.extra = 1  # type: ignore[attr-defined]
