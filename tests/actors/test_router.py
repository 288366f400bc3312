"""The router: grouping, counting, slow-consumer episodes."""

from __future__ import annotations

import pytest

from tidings._stats import Counters
from tidings.actors.mailbox import Mailbox
from tidings.actors.router import Router

pytestmark = pytest.mark.anyio


def make() -> tuple[Router, Counters, list[tuple[str, int]]]:
    stats = Counters()
    reports: list[tuple[str, int]] = []
    return Router(stats, lambda name, dropped: reports.append((name, dropped))), stats, reports


async def test_a_batch_is_grouped_by_channel_in_order() -> None:
    router, stats, _ = make()
    a, b = Mailbox[bytes](10), Mailbox[bytes](10)
    router.add("a", a)
    router.add("b", b)
    await router.deliver([("a", b"1"), ("b", b"2"), ("a", b"3"), ("gone", b"4")])
    assert a.get_nowait() == [b"1", b"3"]  # one put for the whole group
    assert b.get_nowait() == [b"2"]
    assert (stats.received, stats.unrouted, stats.dropped) == (4, 1, 0)
    a.discard()
    b.discard()


async def test_drops_are_counted_and_each_episode_reported_once() -> None:
    router, stats, reports = make()
    mailbox = Mailbox[bytes](2)
    router.add("a", mailbox)
    await router.deliver([("a", b"1"), ("a", b"2"), ("a", b"3")])
    await router.deliver([("a", b"4")])  # the same episode: counted, not reported
    assert (stats.dropped, reports) == (2, [("a", 1)])
    mailbox.get_nowait()  # the actor empties the mailbox: the episode ends
    await router.deliver([("a", b"5"), ("a", b"6"), ("a", b"7")])
    assert (stats.dropped, reports) == (3, [("a", 1), ("a", 1)])
    mailbox.discard()


async def test_a_removed_channel_is_unrouted_and_a_closed_mailbox_not_reported() -> None:
    router, stats, reports = make()
    mailbox = Mailbox[bytes](2)
    router.add("a", mailbox)
    assert router.remove("a") is mailbox
    assert "a" not in router
    await router.deliver([("a", b"1")])
    assert stats.unrouted == 1
    router.add("b", mailbox)
    mailbox.close()
    await router.deliver([("b", b"2")])
    assert (stats.dropped, reports) == (1, [])  # its channel is going away: no episode
    mailbox.discard()


async def test_local_messages_go_to_a_mailbox_without_waiting() -> None:
    router, _, _ = make()
    assert router.put_nowait("status", ["connected"]) is None  # no mailbox: not running
    mailbox = Mailbox[str](1, "block")
    router.add("status", mailbox)
    assert router.put_nowait("status", ["connected"]) == 0
    assert router.put_nowait("status", ["closed"]) == 1  # never waits, even in block mode
    assert [name for name, _ in router] == ["status"]
    mailbox.discard()
