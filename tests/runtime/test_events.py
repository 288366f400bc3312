"""Events and their iterators: the plain feed, the group iterator, and both through a
registry."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.runtime.world import NS, Log, World, eventually
from tidings import CallbackError
from tidings._runtime.channel import ChannelState
from tidings._runtime.events import _Feed, iterate, work
from tidings._runtime.registry import Wanted
from tidings.actors.callbacks import Interrupted, Meta, Undelivered
from tidings.actors.mailbox import Mailbox
from tidings.policies.backoff import Backoff
from tidings.policies.streams import Retention
from tidings.types import Event, Events, GroupEvents, Job

pytestmark = pytest.mark.anyio

CHANNEL = ChannelState("orders", "ns:orders").channel


def test_event_repr_leaves_out_what_a_plain_channel_has_not() -> None:
    assert repr(Event("orders", "created", {"id": 1})) == (
        "Event(channel='orders', event='created', data={'id': 1})"
    )
    assert repr(Event("orders", "created", None, id="1-0")) == (
        "Event(channel='orders', event='created', data=None, id='1-0')"
    )
    assert repr(Event("orders", "e", 1, id="1-0", deliveries=2)) == (
        "Event(channel='orders', event='e', data=1, id='1-0', deliveries=2)"
    )
    assert repr(Event("o", "e", 1, deliveries=0)).endswith("deliveries=0)")  # 0 is shown


def test_events_are_frozen_and_compare_by_value() -> None:
    event = Event("orders", "created", 1, "1-0")
    assert event == Event("orders", "created", 1, "1-0")
    assert event != Event("orders", "created", 1)
    with pytest.raises(AttributeError):
        event.data = 2  # type: ignore[misc]


async def test_iteration_ends_when_the_mailbox_closes() -> None:
    mailbox: Mailbox[Event[Any]] = Mailbox(10)
    events: Events[Any] = Events(mailbox)
    first, second, third = (Event("o", "e", n) for n in range(3))
    mailbox.put_nowait([first, second])
    mailbox.put_nowait([third])
    mailbox.close()
    assert [event async for event in events] == [first, second, third]
    with pytest.raises(anyio.EndOfStream):
        await events.receive()


async def test_a_discarded_mailbox_ends_the_iteration_too() -> None:
    mailbox: Mailbox[Event[Any]] = Mailbox(10)
    events: Events[Any] = Events(mailbox)
    mailbox.put_nowait([Event("o", "e", 1)])
    mailbox.discard()
    with pytest.raises(anyio.EndOfStream):
        await events.receive()


async def test_receive_waits_for_an_event() -> None:
    mailbox: Mailbox[Event[Any]] = Mailbox(10)
    events: Events[Any] = Events(mailbox)
    got: list[Event[Any]] = []

    async def take() -> None:
        got.append(await events.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        mailbox.put_nowait([Event("o", "e", 1)])
    assert got == [Event("o", "e", 1)]


def jobs(*data: Any) -> list[Job]:
    return [Job(Event("o", "e", n)) for n in data]


async def test_group_events_acknowledge_on_the_next_receive() -> None:
    mailbox: Mailbox[Job] = Mailbox(10, "block")
    events: GroupEvents[Any] = GroupEvents(mailbox)
    first, second = jobs(1, 2)
    mailbox.put_nowait([first, second])
    assert await events.receive() == first.event
    assert not first.done.is_set()  # in hand
    assert await events.receive() == second.event
    assert first.done.is_set()
    assert first.error is None
    assert not second.done.is_set()
    events.leave(None, [])  # the block left normally: the one in hand is done
    assert second.done.is_set()
    assert second.error is None


class Cancelled(BaseException):
    """Stands for a cancellation (trio's cannot be made by hand)."""


@pytest.mark.parametrize(
    ("raised", "expected"),
    [(ValueError("consumer bug"), ValueError), (Cancelled(), Interrupted)],
)
async def test_group_events_leave_with_a_failure_and_hand_back_the_unread(
    raised: BaseException, expected: type[Exception]
) -> None:
    mailbox: Mailbox[Job] = Mailbox(10, "block")
    events: GroupEvents[Any] = GroupEvents(mailbox)
    held, queued, later = jobs(1, 2, 3)
    mailbox.put_nowait([held, queued])
    mailbox.put_nowait([later])
    await events.receive()
    unread = events.unread()
    assert unread == [queued, later]
    assert events.unread() == []  # taken once
    events.leave(raised, unread)
    assert isinstance(held.error, expected)
    if expected is ValueError:
        assert held.error is raised  # the consumer's own failure
    for job in (queued, later):
        assert job.done.is_set()
        assert type(job.error) is Undelivered  # handed back, never delivered


async def test_a_job_finishes_once() -> None:
    [job] = jobs(1)
    job.finish(ValueError("first"))
    job.finish(None)
    assert isinstance(job.error, ValueError)


async def test_the_plain_feed_drops_and_reports_one_episode_per_overflow() -> None:
    mailbox: Mailbox[Event[Any]] = Mailbox(1)
    reports: list[tuple[str, int]] = []
    feed = _Feed(mailbox, lambda name, dropped: reports.append((name, dropped)))
    feed(CHANNEL, "e", 1, Meta("1-0"))
    assert mailbox.get_nowait() == [Event("orders", "e", 1, "1-0")]
    feed(CHANNEL, "e", 2, Meta())
    for n in (3, 4, 5):
        with pytest.raises(Undelivered):
            feed(CHANNEL, "e", n, Meta())
    assert reports == [("ns:orders", 1)]  # one report for the episode
    assert mailbox.get_nowait() == [Event("orders", "e", 2)]  # emptied: the episode ends
    feed(CHANNEL, "e", 6, Meta())
    with pytest.raises(Undelivered):
        feed(CHANNEL, "e", 7, Meta())
    assert reports == [("ns:orders", 1), ("ns:orders", 1)]
    mailbox.close()
    with pytest.raises(CallbackError):  # the iterator is gone: unregister the feed
        feed(CHANNEL, "e", 8, Meta())
    assert len(reports) == 2  # a closed mailbox reports nothing


async def test_an_iterator_through_the_registry() -> None:
    world = World()
    async with world.running():
        wanted = world.wanted("orders", "*", print)
        async with iterate(world.runtime, world.registry, wanted) as events:
            state = world.state("orders")
            assert state is not None
            [registration] = state.all_registrations()
            assert registration.takes_meta
            assert world.registry.iterators  # its mailbox is known, to be closed
            await world.publish("orders", "created", 1)
            await world.publish("orders", "created", 2)
            assert await events.receive() == Event("orders", "created", 1)
            assert await events.receive() == Event("orders", "created", 2)
        assert world.state("orders") is None  # the block left: unregistered, dropped
        assert world.registry.iterators == set()
        assert world.hub.numsub([f"{NS}:orders"]) == {f"{NS}:orders": 0}


async def test_an_iterator_ends_when_the_runtime_closes() -> None:
    world = World()
    got: list[Any] = []
    wanted = world.wanted("o", "*", print)
    async with world.running(), iterate(world.runtime, world.registry, wanted) as events:
        await world.publish("o", "e", 1)
        await world.settle()
        await world.runtime.close()
        async for event in events:  # what was delivered, then the end
            got.append(event.data)
    assert got == [1]


async def test_a_full_iterator_drops_and_reports_one_slow_consumer_episode() -> None:
    world = World(max_pending=2)
    status = Log()
    await world.registry.register([world.wanted("server", "*", status)], "register")
    async with world.running():
        wanted = world.wanted("orders", "*", print)
        async with iterate(world.runtime, world.registry, wanted) as events:
            for n in range(5):
                await world.publish("orders", "e", n)
            await world.settle()
            await eventually(lambda: "slow_consumer" in status.events)
            stats = world.runtime.stats
            assert (stats.delivered, stats.dropped) == (2, 3)
            assert [(await events.receive()).data for _ in range(2)] == [0, 1]
        assert status.events.count("slow_consumer") == 1
        assert status.last("slow_consumer") == {
            "channel": "orders",
            "dropped": 1,
            "max_pending": 2,
        }


async def test_a_durable_iterator_carries_ids() -> None:
    world = World(durable={f"{NS}:orders": Retention()})
    async with world.running():
        wanted = world.wanted("orders", "*", print)
        async with iterate(world.runtime, world.registry, wanted) as events:
            await world.publish("orders", "e", 1)
            event = await events.receive()
        assert event.id == world.hub.tail(f"{NS}:orders")
        assert event.deliveries is None


async def test_a_group_iterator_acknowledges_on_the_next_event_and_hands_back_on_error() -> None:
    orders = f"{NS}:orders"
    world = World(durable={orders: Retention()}, retry_backoff=None)  # (retried at once)
    async with world.running():
        wanted = world.wanted("orders", "*", print, group="workers")
        async with work(world.runtime, world.registry, wanted) as events:
            await world.publish("orders", "e", 1)
            await world.publish("orders", "e", 2)
            first = await events.receive()
            assert (first.data, first.deliveries) == (1, 1)
            assert first.id in world.hub.pending(orders, "workers")  # in hand
            second = await events.receive()
            assert second.data == 2
            await eventually(lambda: list(world.hub.pending(orders, "workers")) == [second.id])
        await eventually(lambda: world.hub.pending(orders, "workers") == {})
        assert world.runtime.stats.acked == 2
        # A block that raises hands the event in hand back, to be delivered again.
        taken: list[Event[Any]] = []
        with pytest.raises(RuntimeError, match="consumer bug"):
            await fail_with_one_in_hand(world, wanted, taken)
        [third] = taken
        await eventually(lambda: world.hub.pending(orders, "workers") != {})
        assert world.hub.pending(orders, "workers")[third.id][1] == 1  # one delivery made
        async with work(world.runtime, world.registry, wanted) as events:
            again = await events.receive()
        assert (again.id, again.data, again.deliveries) == (third.id, 3, 2)


async def test_a_group_iterator_that_raises_has_the_event_retried_after_the_backoff() -> None:
    """With a retry back-off, the event in hand is acknowledged and scheduled: it comes
    back as a new entry, with its first id and its delivery count carried on."""
    orders = f"{NS}:orders"
    world = World(
        durable={orders: Retention()},
        retry_backoff=Backoff(initial=0.05, factor=1.0, cap=0.05, jitter=False),
    )
    async with world.running():
        wanted = world.wanted("orders", "*", print, group="workers")
        taken: list[Event[Any]] = []
        with pytest.raises(RuntimeError, match="consumer bug"):
            await fail_with_one_in_hand(world, wanted, taken)
        [first] = taken
        await eventually(lambda: world.hub.pending(orders, "workers") == {})  # acked
        async with work(world.runtime, world.registry, wanted) as events:
            again = await events.receive()
        assert (again.id, again.data, again.deliveries) == (first.id, 3, 2)
        assert again.headers["tidings-original-id"] == first.id


async def fail_with_one_in_hand(world: World, wanted: Wanted, taken: list[Event[Any]]) -> None:
    """A group iterator's block that takes an event (3), then raises."""
    async with work(world.runtime, world.registry, wanted) as events:
        await world.publish("orders", "e", 3)
        taken.append(await events.receive())
        raise RuntimeError("consumer bug")
