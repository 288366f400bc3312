"""A consumer group's member alone, over a real in-process log: one member per
entry, acknowledgement, redelivery, dead letters, hand-back, a group recreated."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from tests.helpers import eventually, recording_dispatcher
from tidings.actors.callbacks import Meta
from tidings.actors.dispatch import envelope_decoder
from tidings.actors.group import GroupMember
from tidings.actors.typed import Typed
from tidings.brokers.base import Publisher
from tidings.brokers.memory import Hub, MemoryBroker
from tidings.errors import CallbackError
from tidings.policies.backoff import Backoff
from tidings.policies.streams import Retention
from tidings.protocols import Json

pytestmark = pytest.mark.anyio

LOG = logging.getLogger("tidings.test")
CHANNEL = "test:jobs"
GROUP = "workers"
#: What the member hands its callbacks as the channel (a `Channel` in the runtime).
OWNER = "the jobs channel"
#: Small enough that a redelivery, or a claim round, takes no noticeable time.
QUICK = 0.05


def envelope(event: str, data: Any) -> bytes:
    return Json().encode({"channel": "jobs", "event": event, "data": data})


async def open_publisher(hub: Hub) -> Publisher:
    """A connection to ``hub`` (a new one is how the tests reconnect)."""
    return await MemoryBroker(hub).open_publisher(health_check_interval=1.0, reply_timeout=1.0)


class Job(msgspec.Struct):
    n: int


class World:
    """What `Groups.join` gives its members: one hub, one publisher, one dispatcher."""

    def __init__(self, hub: Hub, publisher: Publisher) -> None:
        self.hub = hub
        self.publisher = publisher
        self.dispatcher, self.stats, self.removed = recording_dispatcher(limit=5)
        self.dead: list[tuple[str, int, str, str]] = []
        self.lost: list[tuple[str, list[str]]] = []
        self._serial = 0

    async def query(self, what: str, command: Callable[[Publisher], Awaitable[Any]]) -> Any:
        """The connection supervisor's ``query``, on the one memory connection."""
        return await command(self.publisher)

    def member(
        self,
        *callbacks: Callable[..., Any],
        takes_meta: bool = False,
        ack_wait: float = QUICK,
        max_deliver: int = 3,
        claim_interval: float = QUICK,
        retry_backoff: Backoff | None = None,
    ) -> GroupMember:
        """A member of `GROUP` whose registrations are ``callbacks`` (pattern ``*``)."""
        self._serial += 1
        registrations = tuple(
            self.dispatcher.registration("*", callback, OWNER, takes_meta=takes_meta)
            for callback in callbacks
        )
        for registration in registrations:
            registration.group = GROUP
            registration.since = 0  # registered: its group may call it
        return GroupMember(
            OWNER,
            CHANNEL,
            GROUP,
            f"consumer-{self._serial}",
            query=self.query,
            registrations_for=lambda event: registrations,
            decode=envelope_decoder(Json()),
            encode=Json().encode,
            dispatcher=self.dispatcher,
            on_dead=lambda *dead: self.dead.append(dead),
            on_lost=lambda reason, ids, lost: self.lost.append((reason, ids)),
            retention=Retention(),
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            claim_interval=claim_interval,
            retry_backoff=retry_backoff,
            stats=self.stats,
            logger=LOG,
            serial=self._serial,
        )

    async def store(self, data: Any, *members: GroupMember, payload: bytes | None = None) -> str:
        """Append an event to the log and wake ``members`` (as its live copy does)."""
        if payload is None:
            payload = envelope("job", data)
        entry_id, _ = await self.publisher.append(CHANNEL, payload, Retention())
        for member in members:
            member.wake()
        return entry_id

    def pending(self) -> dict[str, tuple[str, int]]:
        """XPENDING: id -> (consumer, deliveries)."""
        return self.hub.pending(CHANNEL, GROUP)

    @asynccontextmanager
    async def running(self, *members: GroupMember) -> AsyncIterator[anyio.abc.TaskGroup]:
        """Run ``members`` as their supervisor would; on exit they leave the group."""
        async with anyio.create_task_group() as tg:
            for member in members:
                self.start(tg, member)
            yield tg
            for member in members:
                member.close()

    @staticmethod
    def start(tg: anyio.abc.TaskGroup, member: GroupMember) -> None:
        member.running = True  # as the actor supervisor does when it starts the task

        async def run() -> None:
            try:
                await member.run()
            finally:
                member.running = False

        tg.start_soon(run)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    hub = Hub("group-member")
    publisher = await open_publisher(hub)
    await publisher.group_create(CHANNEL, GROUP, "$")
    yield World(hub, publisher)
    await publisher.aclose()


class Taken:
    """A callback recording ``(data, meta)`` (``meta`` when it takes one)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Meta | None]] = []

    def __call__(self, channel: Any, event: str, data: Any, meta: Meta | None = None) -> None:
        assert channel == OWNER
        self.calls.append((data, meta))

    @property
    def data(self) -> list[Any]:
        return [data for data, _ in self.calls]


class Gated(Taken):
    """An async callback that waits at ``gate`` for the data in ``hold``."""

    def __init__(self, *hold: Any) -> None:
        super().__init__()
        self.hold = set(hold)
        self.gate = anyio.Event()
        self.started = anyio.Event()

    async def __call__(  # type: ignore[override]
        self, channel: Any, event: str, data: Any, meta: Meta | None = None
    ) -> None:
        if data in self.hold:
            self.started.set()
            await self.gate.wait()
        super().__call__(channel, event, data, meta)


# -- one member per entry, acknowledged after the callback --------------------------------


async def test_each_entry_goes_to_one_member_of_two(world: World) -> None:
    first, second = Gated(1), Taken()
    a = world.member(first, ack_wait=30)  # nothing is claimed in this test
    b = world.member(second, ack_wait=30)
    ids = [await world.store(n) for n in range(1, 6)]
    async with world.running(a):
        await first.started.wait()  # a took 1..5 in one read, and holds 1
        async with world.running(b):
            ids += [await world.store(n, a, b) for n in range(6, 21)]
            await eventually(
                lambda: len(second.calls) == 15 and set(world.pending()) == set(ids[:5])
            )
            first.gate.set()
            await eventually(lambda: len(first.calls) == 5 and not world.pending())
    assert first.data == [1, 2, 3, 4, 5]  # in log order, within a member
    assert second.data == list(range(6, 21))  # none of what a holds
    assert world.stats.acked == 20
    assert world.hub.consumers(CHANNEL, GROUP) == set()  # both left the group


async def test_an_entry_is_acknowledged_after_its_callback_returns(world: World) -> None:
    gated = Gated("job")
    member = world.member(gated, ack_wait=30)
    async with world.running(member):
        entry_id = await world.store("job", member)
        await gated.started.wait()
        # Taken, not done: pending for this member.
        assert world.pending() == {entry_id: (member.consumer, 1)}
        assert world.stats.acked == 0
        gated.gate.set()
        await eventually(lambda: not world.pending())
    assert world.stats.acked == 1
    assert gated.data == ["job"]


async def test_a_takes_meta_registration_gets_the_id_and_delivery_count(world: World) -> None:
    taken = Taken()
    member = world.member(taken, takes_meta=True)
    async with world.running(member):
        entry_id = await world.store({"x": 1}, member)
        await eventually(lambda: taken.calls and not world.pending())
    assert taken.calls == [({"x": 1}, Meta(entry_id, 1))]


# -- failures ------------------------------------------------------------------------------


async def test_a_failed_entry_is_redelivered_and_acknowledged_once_it_succeeds(
    world: World,
) -> None:
    deliveries: list[int | None] = []

    def flaky(channel: Any, event: str, data: Any, meta: Meta) -> None:
        deliveries.append(meta.deliveries)
        if meta.deliveries == 1:
            raise RuntimeError("not yet")

    # Redelivered at once: not after ack_wait, nor at the next claim round.
    member = world.member(flaky, takes_meta=True, ack_wait=30, claim_interval=30)
    async with world.running(member):
        await world.store("job", member)
        await eventually(lambda: deliveries == [1, 2] and not world.pending())
    assert (world.stats.callback_errors, world.stats.acked, world.dead) == (1, 1, [])
    assert world.removed == []  # a failure retries the event, not the callback


async def test_an_entry_failing_max_deliver_times_is_dead_lettered_and_acknowledged(
    world: World,
) -> None:
    deliveries: list[int | None] = []

    def broken(channel: Any, event: str, data: Any, meta: Meta) -> None:
        deliveries.append(meta.deliveries)
        raise RuntimeError("boom")

    member = world.member(broken, takes_meta=True, max_deliver=3)
    async with world.running(member):
        entry_id = await world.store("job", member)
        await eventually(lambda: world.dead)
        await eventually(lambda: not world.pending())
    [(dead_entry, count, error, dead_id)] = world.dead
    assert (dead_entry, count, error) == (entry_id, 3, "RuntimeError: boom")
    assert deliveries == [1, 2, 3]
    assert (world.stats.callback_errors, world.stats.dead_lettered, world.stats.acked) == (
        3,
        1,
        0,
    )
    [(stored_id, fields)] = world.hub.dead_letters(CHANNEL)
    assert stored_id == dead_id
    assert (fields["id"], fields["deliveries"], fields["group"]) == (
        entry_id.encode(),
        b"3",
        GROUP.encode(),
    )
    assert fields["envelope"] == envelope("job", "job")


async def test_callback_error_removes_the_registration_and_acknowledges(world: World) -> None:
    calls: list[Any] = []

    def once(channel: Any, event: str, data: Any) -> None:
        calls.append(data)
        raise CallbackError

    member = world.member(once)
    async with world.running(member):
        await world.store(1, member)
        await eventually(lambda: calls and not world.pending())
        [removed] = world.removed
        assert removed.callback is once
        assert not removed.active
        await world.store(2, member)  # nobody here takes it now: done with it
        await eventually(lambda: world.stats.acked == 2)
    assert calls == [1]
    assert (world.stats.delivered, world.stats.callbacks_removed) == (1, 1)
    assert (world.stats.callback_errors, world.stats.unrouted, world.dead) == (0, 1, [])


async def test_an_entry_that_does_not_fit_the_schema_is_dead_lettered(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    taken = Taken()
    member = world.member(Typed(taken, Job, LOG, "jobs"))
    async with world.running(member):
        with caplog.at_level(logging.WARNING, logger=LOG.name):
            unfit = await world.store({"n": "not a number"}, member)
            await world.store({"n": 2}, member)
            await eventually(lambda: world.dead and taken.calls and not world.pending())
    assert taken.data == [Job(2)]
    [(entry_id, count, error, _)] = world.dead
    assert (entry_id, count) == (unfit, 1)  # never retried: it never will fit
    assert error.startswith("does not fit the schema")
    assert (world.stats.decode_errors, world.stats.callback_errors) == (1, 0)
    assert "does not fit schema Job" in caplog.text


async def test_an_undecodable_entry_is_dead_lettered_at_once(world: World) -> None:
    taken = Taken()
    member = world.member(taken)
    async with world.running(member):
        bad = await world.store(None, member, payload=b"{not json")
        await eventually(lambda: world.dead and not world.pending())
    [(entry_id, count, error, _)] = world.dead
    assert (entry_id, count) == (bad, 1)
    assert error.startswith("undecodable")
    assert (taken.calls, world.stats.decode_errors) == ([], 1)


# -- leaving, and a group that disappears ---------------------------------------------------


async def test_leave_hands_back_what_was_taken_and_not_started(world: World) -> None:
    held, other = Gated(1), Taken()
    leaving = world.member(held, ack_wait=30)  # no claim could take them in time
    staying = world.member(other, takes_meta=True, ack_wait=30)
    ids = [await world.store(n) for n in range(1, 5)]
    async with world.running(leaving) as tg:
        await held.started.wait()  # 1 in hand, 2..4 taken with it
        assert set(world.pending()) == set(ids)
        World.start(tg, staying)
        left = anyio.Event()

        async def leave() -> None:
            await leaving.leave()
            left.set()

        tg.start_soon(leave)
        # Well within ack_wait, the others are done, by the member that stays.
        await eventually(
            lambda: len(other.calls) == 3 and world.pending() == {ids[0]: (leaving.consumer, 1)}
        )
        assert not left.is_set()  # it finishes the event in hand first
        held.gate.set()
        await left.wait()
        assert world.pending() == {}
        assert leaving.consumer not in world.hub.consumers(CHANNEL, GROUP)
        staying.close()
    assert held.data == [1]
    # Handed back unstarted: the delivery that did not take place is not counted.
    assert other.calls == [(n, Meta(i, 1)) for n, i in zip([2, 3, 4], ids[1:], strict=True)]


async def test_a_deleted_group_is_recreated_and_reported_once(world: World) -> None:
    first, second = Taken(), Taken()
    a, b = world.member(first), world.member(second)
    async with world.running(a, b):
        await world.store(1, a, b)
        await eventually(lambda: first.calls + second.calls and not world.pending())
        assert world.hub.delete_log(CHANNEL)  # DEL, FLUSHALL: the group goes with it
        # The next claim round finds out; the member that recreates it says so.
        await eventually(lambda: world.lost)
        assert world.pending() == {}  # the group is back (else NOGROUP)
        await world.store(2, a, b)
        await eventually(lambda: len(first.calls + second.calls) == 2 and not world.pending())
    assert sorted(first.data + second.data) == [1, 2]
    assert world.lost == [("deleted", [])]  # once, whichever members met NOGROUP


async def test_a_pending_entry_trimmed_from_the_log_is_reported_lost(world: World) -> None:
    calls: list[Any] = []

    def trimmed_meanwhile(channel: Any, event: str, data: Any) -> None:
        calls.append(data)
        world.hub.trim_log(CHANNEL, 0)  # retention catches up with the retries
        raise RuntimeError("try again")

    member = world.member(trimmed_meanwhile, max_deliver=5)
    async with world.running(member):
        entry_id = await world.store("job", member)
        await eventually(lambda: world.lost)
    assert world.lost == [("trimmed", [entry_id])]
    assert (calls, world.pending(), world.dead) == (["job"], {}, [])


async def test_acks_that_meet_a_lost_connection_are_sent_on_the_next_one(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []

    def cut(channel: Any, event: str, data: Any) -> None:
        calls.append(data)
        if len(calls) == 1:
            world.hub.kill_connections()  # before its acknowledgement goes out

    member = world.member(cut, ack_wait=30)  # no redelivery could hide a lost ack
    with caplog.at_level(logging.DEBUG, logger=LOG.name):
        async with world.running(member):
            entry_id = await world.store("job", member)
            await eventually(lambda: "acks deferred" in caplog.text)
            await eventually(lambda: "connection lost" in caplog.text)  # it waits, alive
            assert world.pending() == {entry_id: (member.consumer, 1)}
            world.publisher = await open_publisher(world.hub)  # connected again
            # (Counted once the answer to the read it went out with is taken.)
            await eventually(lambda: not world.pending() and world.stats.acked == 1)
            await world.store("next", member)  # and it goes on taking entries
            await eventually(lambda: len(calls) == 2 and not world.pending())
    assert calls == ["job", "next"]
