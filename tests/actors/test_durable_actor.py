"""The durable actor alone, over a real in-process log: live ids, supersession,
catch-up reads, gaps, overflow; and the upkeep that checkpoints named consumers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from tests.helpers import eventually, recording_dispatcher
from tidings.actors.callbacks import DEAF, Meta, Registration
from tidings.actors.dispatch import envelope_decoder
from tidings.actors.durable import DurableActor, Upkeep
from tidings.actors.mailbox import Mailbox
from tidings.brokers.base import Entry, Publisher, position_key
from tidings.brokers.memory import Hub, MemoryBroker
from tidings.errors import ReplyError
from tidings.policies.streams import LogMark, Retention, position, position_id
from tidings.protocols import Json

pytestmark = pytest.mark.anyio

LOG = logging.getLogger("tidings.test")
CHANNEL = "test:orders"
#: What the actor hands its callbacks as the channel (a `Channel` in the runtime).
OWNER = "the orders channel"


def envelope(event: str, data: Any) -> bytes:
    return Json().encode({"channel": "orders", "event": event, "data": data})


async def open_publisher(hub: Hub) -> Publisher:
    return await MemoryBroker(hub).open_publisher(health_check_interval=1.0, reply_timeout=1.0)


class Seen:
    """A durable callback recording the data it is given (and its `Meta`, if asked)."""

    def __init__(self, takes_meta: bool = False, awaits: bool = False) -> None:
        self.takes_meta = takes_meta
        self.awaits = awaits
        self.data: list[Any] = []
        self.metas: list[Meta] = []

    def __call__(self, channel: Any, event: str, data: Any, *meta: Meta) -> Any:
        assert channel == OWNER
        if self.awaits:
            return self._later(data, meta)
        self._record(data, meta)
        return None

    async def _later(self, data: Any, meta: tuple[Meta, ...]) -> None:
        await anyio.lowlevel.checkpoint()
        self._record(data, meta)

    def _record(self, data: Any, meta: tuple[Meta, ...]) -> None:
        assert len(meta) == self.takes_meta  # a Meta exactly when it asked for one
        self.data.append(data)
        self.metas.extend(meta)


class World:
    """A durable channel's actor as `Logs.new_actor` makes it, reading a memory log."""

    def __init__(self, hub: Hub, publisher: Publisher, max_pending: int = 100) -> None:
        self.hub = hub
        self.publisher = publisher
        self.mailbox: Mailbox[bytes] = Mailbox(max_pending)
        self.dispatcher, self.stats, self.removed = recording_dispatcher(limit=5)
        self.registrations: list[Registration] = []
        self.gaps: list[tuple[str, str, str | None]] = []
        #: Raised by the next reads of the log, one each (a refusal, a lost connection).
        self.faults: list[BaseException] = []
        self.actor = DurableActor(
            CHANNEL,
            self.mailbox,
            registrations=lambda: tuple(self.registrations),
            read=self._read,
            tail=lambda: self.publisher.tail(CHANNEL),
            mark=self._mark,
            on_gap=lambda reason, last, next_: self.gaps.append((reason, last, next_)),
            decode=envelope_decoder(Json()),
            registrations_for=lambda event: tuple(self.registrations),
            dispatcher=self.dispatcher,
            stats=self.stats,
            logger=LOG,
            owner=OWNER,
        )

    async def _mark(self) -> LogMark | None:
        return (await self.publisher.marks([CHANNEL]))[0]

    async def _read(self, start: str, count: int) -> list[Entry]:
        if self.faults:
            raise self.faults.pop(0)
        return await self.publisher.read(CHANNEL, start, count)

    def register(
        self, callback: Callable[..., Any], *, since: int = 0, cursor: int | None = None
    ) -> Registration:
        """``since``: the position it has passed; ``cursor``: where a ``since=``
        registration starts (it is deaf until a catch-up takes it there)."""
        takes_meta = getattr(callback, "takes_meta", False)
        registration = self.dispatcher.registration("*", callback, OWNER, takes_meta=takes_meta)
        registration.since = DEAF if cursor is not None else since
        registration.cursor = cursor
        self.registrations.append(registration)
        return registration

    async def store(self, data: Any, event: str = "e") -> tuple[str, bytes]:
        """Append an event to the log: its id and its live message."""
        payload = envelope(event, data)
        entry_id, _ = await self.publisher.append(CHANNEL, payload, Retention())
        return entry_id, b"%s %s" % (entry_id.encode(), payload)

    async def run(self) -> None:
        """Run the actor as its supervisor would, until it has nothing left to do."""
        actor = self.actor
        actor.running = True
        finished = anyio.Event()

        async def run() -> None:
            await actor.run()
            finished.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                # A lazy actor returns once idle; one that awaited lately waits for mail.
                await eventually(lambda: finished.is_set() or actor.idle)
                tg.cancel_scope.cancel()
        finally:
            actor.running = False


@pytest.fixture
async def world() -> AsyncIterator[World]:
    hub = Hub("durable-actor")
    world = World(hub, await open_publisher(hub))
    yield world
    world.mailbox.discard()
    await world.publisher.aclose()


# -- the live stream -----------------------------------------------------------------


@pytest.mark.parametrize("awaits", [False, True], ids=["sync", "async"])
async def test_live_messages_are_dispatched_in_order_each_once(world: World, awaits: bool) -> None:
    seen = Seen(awaits=awaits)
    registration = world.register(seen)
    stored = [await world.store(n) for n in range(1, 4)]
    world.mailbox.put_nowait([live for _, live in stored])
    await world.run()
    assert seen.data == [1, 2, 3]
    last = position(stored[-1][0])
    assert (world.actor.last, registration.since) == (last, last)  # after the callback
    assert (world.stats.delivered, world.stats.superseded, world.stats.replayed) == (3, 0, 0)
    assert world.gaps == []


async def test_positions_advance_only_once_an_async_callback_returned(world: World) -> None:
    gate = anyio.Event()
    calls: list[Any] = []

    async def slow(channel: Any, event: str, data: Any) -> None:
        await gate.wait()
        calls.append(("slow", data))

    first = world.register(slow)
    after = Seen()
    second = world.register(after)  # called after the slow one, for the same event
    entry_id, live = await world.store(1)
    world.mailbox.put_nowait([live])
    async with anyio.create_task_group() as tg:
        tg.start_soon(world.run)
        await eventually(lambda: world.mailbox.pending == 0)  # taken: the slow one waits
        await anyio.wait_all_tasks_blocked()
        # Not done yet: a checkpoint taken now must not resume after it.
        assert (first.since, second.since, after.data) == (0, 0, [])
        gate.set()
    assert (calls, after.data) == ([("slow", 1)], [1])
    assert first.since == second.since == position(entry_id)


async def test_a_live_copy_at_or_before_last_is_superseded(world: World) -> None:
    seen = Seen()
    world.register(seen)
    stored = [await world.store(n) for n in range(1, 4)]
    world.mailbox.put_nowait([stored[0][1], stored[1][1]])
    await world.run()
    # Copies of what it dispatched (at last, before it), then a new one.
    world.mailbox.put_nowait([stored[1][1], stored[0][1], stored[2][1], stored[2][1]])
    await world.run()
    assert seen.data == [1, 2, 3]
    assert (world.stats.delivered, world.stats.superseded) == (3, 3)


async def test_a_live_message_without_an_entry_id_is_a_counted_decode_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    world.register(seen)
    _, good = await world.store(1)
    second, _ = await world.store(2)
    _, after = await world.store(3)
    world.mailbox.put_nowait(
        [
            good,
            b"not-an-id " + envelope("e", "x"),  # no id at all
            second.encode() + b" {not json",  # an id, and an undecodable envelope
            after,
        ]
    )
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        await world.run()
    assert seen.data == [1, 3]
    assert world.stats.decode_errors == 2
    assert "no entry id" in caplog.text
    assert world.actor.last == world.registrations[0].since  # the bad one was passed over


async def test_callbacks_that_take_meta_get_the_entry_id_live_and_replayed(
    world: World,
) -> None:
    seen = Seen(takes_meta=True)
    world.register(seen)
    first, live = await world.store(1)
    second, _ = await world.store(2)  # no live copy: read back
    world.mailbox.put_nowait([live])
    await world.run()
    world.actor.catch_up()
    await world.run()
    assert seen.data == [1, 2]
    assert seen.metas == [Meta(first), Meta(second)]


# -- catch-up reads --------------------------------------------------------------------


async def test_catch_up_reads_from_the_lowest_registration_and_supersedes_later_copies(
    world: World,
) -> None:
    stored = [await world.store(n) for n in range(1, 5)]
    ids = [entry_id for entry_id, _ in stored]
    ahead, behind, deaf = Seen(), Seen(), Seen()
    world.register(ahead, since=position(ids[1]))  # has had 1 and 2
    world.register(behind, since=position(ids[0]))  # has had 1
    world.register(deaf, since=DEAF)  # its subscription is not confirmed yet
    world.actor.last = position(ids[1])
    world.actor.catch_up()
    # The live copies of 3 and 4 arrive after the catch-up was asked for.
    world.mailbox.put_nowait([stored[2][1], stored[3][1]])
    await world.run()
    assert (ahead.data, behind.data, deaf.data) == ([3, 4], [2, 3, 4], [])
    assert world.stats.replayed == 3  # 2, 3 and 4, read from the log once each
    assert world.stats.superseded == 2  # both live copies
    assert world.actor.last == position(ids[3])
    assert world.gaps == []


async def test_live_messages_received_before_a_catch_up_are_dispatched_first(
    world: World,
) -> None:
    seen = Seen()
    world.register(seen)
    stored = [await world.store(n) for n in range(1, 4)]
    world.mailbox.put_nowait([stored[0][1]])  # 2 and 3 never came live
    world.actor.catch_up()
    world.mailbox.put_nowait([stored[2][1]])  # a late copy of 3
    await world.run()
    assert seen.data == [1, 2, 3]
    assert (world.stats.replayed, world.stats.superseded) == (2, 1)


async def test_a_registration_with_a_cursor_alone_reads_the_past_when_not_broken(
    world: World,
) -> None:
    old = Seen()
    world.register(old)
    stored = [await world.store(n) for n in range(1, 3)]
    world.mailbox.put_nowait([live for _, live in stored])
    await world.run()
    unseen, _ = await world.store(3)  # stored without a live copy
    new = Seen()
    newcomer = world.register(new, cursor=0)  # since="all"
    world.actor.catch_up(broken=False)
    await world.run()
    assert (old.data, new.data) == ([1, 2], [1, 2, 3])  # the live stream is whole
    assert newcomer.cursor is None
    assert newcomer.since == position(unseen)
    # A break: every registration reads on from where it is (3, for the old one).
    world.actor.catch_up()
    await world.run()
    assert (old.data, new.data) == ([1, 2, 3], [1, 2, 3])
    _, live = await world.store(4)
    world.mailbox.put_nowait([live])
    await world.run()
    assert (old.data, new.data) == ([1, 2, 3, 4], [1, 2, 3, 4])
    assert world.gaps == []


async def test_overflow_reads_the_refused_messages_from_the_log() -> None:
    hub = Hub("durable-overflow")
    world = World(hub, await open_publisher(hub), max_pending=2)
    seen = Seen()
    world.register(seen)
    stored = [await world.store(n) for n in range(1, 5)]
    dropped = world.mailbox.put_nowait([live for _, live in stored])
    assert dropped == 2
    assert world.actor.overflowed(dropped) is True  # it gets them back itself
    await world.run()
    assert seen.data == [1, 2, 3, 4]
    assert (world.stats.superseded, world.stats.replayed, world.stats.dropped) == (2, 2, 0)
    world.mailbox.discard()
    await world.publisher.aclose()


def busy() -> ReplyError:
    return ReplyError("BUSY Redis is busy running a script", "BUSY")


async def test_a_deferred_read_after_a_break_is_read_again(world: World) -> None:
    seen = Seen()
    world.register(seen)
    _, live = await world.store(1)
    world.mailbox.put_nowait([live])
    await world.run()
    await world.store(2)  # missed by the live stream
    world.faults.append(busy())
    world.actor.catch_up()
    await world.run()
    assert seen.data == [1, 2]
    assert (world.faults, world.gaps) == ([], [])


@pytest.mark.parametrize(
    "fault", [busy, anyio.BrokenResourceError], ids=["transient-reply", "connection-lost"]
)
async def test_a_failed_read_of_a_since_registration_is_read_again(
    world: World, fault: Callable[[], BaseException]
) -> None:
    for n in (1, 2):
        await world.store(n)
    seen = Seen()
    world.register(seen, cursor=0)  # since="all"
    world.faults.append(fault())
    world.actor.catch_up(broken=False)
    await world.run()
    _, live = await world.store(3)
    world.mailbox.put_nowait([live])
    await world.run()
    assert seen.data == [1, 2, 3]
    assert world.gaps == []


# -- gaps ------------------------------------------------------------------------------


async def test_a_trimmed_log_is_reported_once(world: World) -> None:
    seen = Seen()
    world.register(seen)
    stored = [await world.store(n) for n in range(1, 3)]
    world.mailbox.put_nowait([live for _, live in stored])
    await world.run()
    await world.store(3)  # stored while the live stream was off...
    kept, _ = await world.store(4)
    world.hub.trim_log(CHANNEL, 1)  # ...and 2 and 3 trimmed before it read back
    world.actor.catch_up()
    await world.run()
    assert world.gaps == [("trimmed", stored[1][0], kept)]
    assert seen.data == [1, 2, 4]
    world.actor.catch_up()
    await world.run()
    assert len(world.gaps) == 1


async def test_a_log_made_again_after_its_deletion_is_deleted_not_trimmed(
    world: World,
) -> None:
    seen = Seen()
    world.register(seen)
    entry_id, live = await world.store(1)
    world.mailbox.put_nowait([live])
    await world.run()
    assert world.hub.delete_log(CHANNEL)
    made, _ = await world.store(2)  # a new log, whose ids come after the old one's
    world.actor.catch_up()
    await world.run()
    assert world.gaps == [("deleted", entry_id, made)]
    assert seen.data == [1, 2]


async def test_a_deleted_log_is_reported_once(world: World) -> None:
    seen = Seen()
    world.register(seen)
    entry_id, live = await world.store(1)
    world.mailbox.put_nowait([live])
    await world.run()
    assert world.hub.delete_log(CHANNEL)
    world.actor.catch_up()
    await world.run()
    assert world.gaps == [("deleted", entry_id, None)]
    world.actor.catch_up()  # nothing new since: not said again
    await world.run()
    assert world.gaps == [("deleted", entry_id, None)]


async def test_ids_going_back_are_reported_as_rewound(world: World) -> None:
    seen = Seen()
    world.register(seen)
    tail, live_copy = await world.store(1, "old")  # what the new master has
    # The old master had handed out a later id before it failed over.
    future = position_id(position(tail) + (1 << 64) * 10_000)
    world.mailbox.put_nowait([f"{future} ".encode() + envelope("e", "lost")])
    await world.run()
    world.actor.catch_up()
    await world.run()
    assert world.gaps == [("rewound", future, tail)]
    world.mailbox.put_nowait([live_copy])  # an old id: its registrations are past it
    await world.run()
    assert seen.data == ["lost"]
    assert world.stats.superseded == 1


async def test_a_since_id_not_in_the_log_is_reported_missing(world: World) -> None:
    first, _ = await world.store(1)
    await world.store(2)
    before, after = Seen(), Seen()
    early = position("1-0")  # an id before the log's first entry
    late = position("99999999999999-0")  # one after its last
    world.register(before, cursor=early)
    world.register(after, cursor=late)
    world.actor.verify.update({early: "missing", late: "missing"})
    world.actor.catch_up(broken=False)
    await world.run()
    assert sorted(world.gaps) == sorted(
        [("missing", "1-0", first), ("missing", "99999999999999-0", None)]
    )
    assert (before.data, after.data) == ([1, 2], [])
    assert world.actor.verify == {}


# -- the upkeep of named consumers ------------------------------------------------------


class Saves:
    """The upkeep's ``save``: the position through the current publisher (replaced
    after a lost connection, as the connection supervisor does), refusing some."""

    def __init__(self, hub: Hub, publisher: Publisher) -> None:
        self.hub = hub
        self.publisher = publisher
        self.refused: set[str] = set()
        self.attempts: list[tuple[str, str]] = []

    async def __call__(self, channel: str, consumer: str, entry_id: str) -> None:
        self.attempts.append((consumer, entry_id))
        if consumer in self.refused:
            raise ReplyError("NOPERM this user has no permissions", "NOPERM")
        await self.publisher.save_position(channel, consumer, entry_id)

    def saved(self, consumer: str) -> str | None:
        return self.hub.positions.get(position_key(CHANNEL, consumer))


@pytest.fixture
async def saves() -> AsyncIterator[Saves]:
    hub = Hub("upkeep")
    saves = Saves(hub, await open_publisher(hub))
    yield saves
    await saves.publisher.aclose()


def watched(upkeep: Upkeep, consumer: str, since: int) -> Registration:
    registration = Registration("*", print, OWNER)
    registration.since = since
    upkeep.watch(registration, CHANNEL, consumer)
    return registration


def upkeep_of(saves: Saves) -> Upkeep:
    return Upkeep(saves, anyio.lowlevel.checkpoint, recheck_interval=60.0, logger=LOG)


async def test_flush_saves_a_position_where_it_starts_and_then_only_when_it_moved(
    saves: Saves,
) -> None:
    upkeep = upkeep_of(saves)
    registration = watched(upkeep, "billing", DEAF)  # not placed yet: nothing to save
    await upkeep.flush()
    assert saves.attempts == []
    registration.since = position("1000-0")  # where it starts, nothing delivered yet
    await upkeep.flush()
    assert saves.saved("billing") == "1000-0"
    await upkeep.flush()  # unmoved: not saved again
    assert saves.attempts == [("billing", "1000-0")]
    registration.since = position("1000-5")
    await upkeep.flush()
    assert saves.saved("billing") == "1000-5"
    assert len(saves.attempts) == 2


async def test_a_refused_save_is_logged_and_the_others_are_saved(
    saves: Saves, caplog: pytest.LogCaptureFixture
) -> None:
    upkeep = upkeep_of(saves)
    watched(upkeep, "denied", position("5-0"))
    watched(upkeep, "allowed", position("6-0"))
    saves.refused.add("denied")
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        await upkeep.flush()
    assert (saves.saved("denied"), saves.saved("allowed")) == (None, "6-0")
    assert "checkpoint of consumer 'denied' refused" in caplog.text
    saves.refused.clear()  # the ACL changed: the refused one is tried again
    await upkeep.flush()
    assert saves.saved("denied") == "5-0"
    assert saves.attempts.count(("allowed", "6-0")) == 1


async def test_a_lost_connection_ends_the_round_and_the_next_flush_saves(
    saves: Saves,
) -> None:
    upkeep = upkeep_of(saves)
    watched(upkeep, "first", position("5-0"))
    watched(upkeep, "second", position("6-0"))
    saves.hub.kill_connections()
    await upkeep.flush()  # no error escapes
    assert saves.attempts == [("first", "5-0")]  # the round stopped at the first
    assert (saves.saved("first"), saves.saved("second")) == (None, None)
    saves.publisher = await open_publisher(saves.hub)  # connected again
    await upkeep.flush()
    assert (saves.saved("first"), saves.saved("second")) == ("5-0", "6-0")


async def test_an_inactive_registration_is_forgotten(saves: Saves) -> None:
    upkeep = upkeep_of(saves)
    registration = watched(upkeep, "gone", position("5-0"))
    registration.active = False  # unregistered
    await upkeep.flush()
    registration.active = True  # (never happens; shows it is no longer watched)
    registration.since = position("7-0")
    await upkeep.flush()
    assert saves.attempts == []


async def test_run_flushes_and_rechecks_until_closed(saves: Saves) -> None:
    rechecks: list[float] = []

    async def recheck() -> None:
        rechecks.append(anyio.current_time())

    upkeep = Upkeep(
        saves,
        recheck,
        recheck_interval=0.02,
        logger=LOG,
        interval=0.01,
    )
    registration = watched(upkeep, "runner", position("5-0"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(upkeep.run)
        await eventually(lambda: saves.saved("runner") == "5-0" and rechecks)
        registration.since = position("8-0")
        await eventually(lambda: saves.saved("runner") == "8-0")
        upkeep.close()  # run returns: the task group ends
