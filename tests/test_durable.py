"""Durable channels: every event once, in order, across reconnects; gaps reported."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from tests.faults import running_proxy
from tests.helpers import (
    FAST,
    Harness,
    MemoryHarness,
    Recorder,
    RedisHarness,
    StatusLog,
    eventually,
    watched,
)
from tests.redis_server import RedisServer
from tidings import Channel, Channels, Retention, Stats
from tidings.brokers.base import position_key
from tidings.brokers.redis import APPEND
from tidings.policies.streams import Retention as _Retention

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _fresh_namespace() -> None:
    """Logs outlive a test on the shared redis-server: each test writes its own."""
    global NS
    NS = f"d{uuid.uuid4().hex[:8]}"


NS = "d"


class Ids:
    """A callback recording ``data``; an iterator feeds it ids too."""

    def __init__(self) -> None:
        self.data: list[Any] = []

    def __call__(self, channel: Channel, event: str, data: Any) -> None:
        self.data.append(data)


def identity(stats: Stats) -> tuple[int, int]:
    """(what came in, what it became), for one callback per event."""
    return (
        stats.received + stats.replayed,
        stats.delivered
        + stats.callback_errors
        + stats.dropped
        + stats.unrouted
        + stats.decode_errors
        + stats.superseded,
    )


@dataclass
class Session:
    subscriber: Channels
    producer: Channels
    received: Ids
    log: StatusLog


class World:
    """A subscriber whose live stream can be cut and kept off, and a producer that
    keeps writing to the log meanwhile, on either broker."""

    def __init__(self, broker: Harness, names: list[str], retention: Retention) -> None:
        self.broker = broker
        self.durable = dict.fromkeys(names, retention)
        self.proxy: Any = None

    def subscriber_store(self) -> Any:
        if isinstance(self.broker, MemoryHarness):
            return self.broker.store()
        return self.proxy.url

    @asynccontextmanager
    async def running(self) -> AsyncIterator[World]:
        if isinstance(self.broker, MemoryHarness):
            yield self
            return
        async with running_proxy(self.broker.server.port) as proxy:
            self.proxy = proxy
            yield self

    def subscriber(self, **options: Any) -> Channels:
        return Channels(
            self.subscriber_store(),
            namespace=NS,
            durable=self.durable,
            backoff=FAST,
            connect_timeout=0.5,
            **options,
        )

    def producer(self) -> Channels:
        return Channels(self.broker.store(), namespace=NS, durable=self.durable, backoff=FAST)

    @asynccontextmanager
    async def listening(
        self, channel: str, first: list[Any], **options: Any
    ) -> AsyncIterator[Session]:
        """A producer, and a subscriber of ``channel`` (with these handler options)
        that has received ``first``."""
        async with self.running():
            received = Ids()
            subscriber, producer = self.subscriber(**options), self.producer()
            log = await watched(subscriber)
            async with subscriber, producer:
                await subscriber.register(channel, "*", received)
                await self.produce(producer, channel, first)
                await eventually(lambda: received.data == first)
                yield Session(subscriber, producer, received, log)

    @asynccontextmanager
    async def away(self, subscriber: Channels) -> AsyncIterator[None]:
        """:meth:`deaf`, once the subscriber has noticed."""
        async with self.deaf():
            await eventually(lambda: subscriber.status.name != "connected")
            yield

    @asynccontextmanager
    async def deaf(self) -> AsyncIterator[None]:
        """The subscriber's connections are cut, and new ones hang, until the end."""
        if isinstance(self.broker, MemoryHarness):
            self.broker.hub.refusing = True
            self.broker.hub.kill_connections()
            try:
                yield
            finally:
                self.broker.hub.refusing = False
            return
        self.proxy.blackhole = True
        self.proxy.cut()
        try:
            yield
        finally:
            self.proxy.blackhole = False

    async def produce(self, producer: Channels | None, channel: str, values: list[Any]) -> None:
        """Store and publish events (straight into the hub while memory:// refuses)."""
        if isinstance(self.broker, MemoryHarness) and self.broker.hub.refusing:
            for value in values:
                envelope = json.dumps({"channel": channel, "event": "e", "data": value})
                self.broker.hub.append(f"{NS}:{channel}", envelope.encode(), self.durable[channel])
            return
        assert producer is not None
        for value in values:
            await producer.publish(channel, "e", value)


async def test_events_carry_ids_and_arrive_once_in_order(broker: Harness) -> None:
    async with Channels(broker.store(), namespace=NS, durable=["orders"]) as channels:
        got: list[Any] = []
        async with channels.subscribe("orders") as events, channels.subscribe("plain") as other:
            for n in range(30):
                await channels.publish("orders", "created", n)
            await channels.publish("plain", "e", "x")
            for _ in range(30):
                got.append(await events.receive())
            plain = await other.receive()
        assert [e.data for e in got] == list(range(30))
        assert all(e.id for e in got)
        ids = [tuple(map(int, e.id.split("-"))) for e in got if e.id]
        assert ids == sorted(ids)
        assert len(set(ids)) == 30
        assert plain.id is None
        assert channels.channel("orders").durable  # type: ignore[union-attr]
        assert not channels.channel("plain").durable  # type: ignore[union-attr]
        stats = channels.stats()
        assert identity(stats)[0] == identity(stats)[1]


async def test_since_all_an_id_and_a_datetime(broker: Harness) -> None:
    async with Channels(broker.store(), namespace=NS, durable=["log"]) as channels:
        before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        for n in range(10):
            await channels.publish("log", "e", n)
        everything, after_five, by_time = Ids(), Ids(), Ids()
        async with channels.subscribe("log", since="all") as events:
            ids = [(await events.receive()).id for _ in range(10)]
        await channels.register("log", "*", everything, since="all")
        await channels.register("log", "*", after_five, since=ids[4])
        await channels.register("log", "*", by_time, since=before)
        await channels.publish("log", "e", 10)
        await eventually(lambda: len(everything.data) == 11 and len(after_five.data) == 6)
        await eventually(lambda: len(by_time.data) == 11)
        assert everything.data == list(range(11))
        assert after_five.data == list(range(5, 11))
        assert by_time.data == list(range(11))


async def test_nothing_is_lost_or_repeated_while_the_subscriber_is_away(
    broker: Harness,
) -> None:
    world = World(broker, ["jobs"], Retention(max_len=10_000))
    async with world.listening("jobs", list(range(20))) as s:
        for round_ in range(3):
            async with world.away(s.subscriber):
                start = 100 * (round_ + 1)
                await world.produce(s.producer, "jobs", list(range(start, start + 50)))
            await eventually(lambda r=round_: s.log.names.count("connected") == r + 2)
        await world.produce(s.producer, "jobs", list(range(1000, 1020)))
        expected = [
            *range(0, 20),
            *range(100, 150),
            *range(200, 250),
            *range(300, 350),
            *range(1000, 1020),
        ]
        await eventually(lambda: len(s.received.data) >= len(expected))
        assert s.received.data == expected
        assert s.subscriber.stats().replayed >= 150
        assert "gap" not in s.log.names


async def test_a_subscriber_away_past_retention_gets_a_gap_and_resumes(
    broker: Harness,
) -> None:
    world = World(broker, ["feed"], Retention(max_len=5))
    async with world.listening("feed", [0, 1]) as s:
        async with world.away(s.subscriber):
            await world.produce(s.producer, "feed", list(range(2, 1002)))
        await eventually(lambda: "gap" in s.log.names)
        gap = s.log.last("gap")
        assert (gap["channel"], gap["reason"]) == ("feed", "trimmed")
        assert gap["last_id"]
        assert gap["next_id"]
        await eventually(lambda: s.received.data[-1:] == [1001])
        kept = s.received.data[2:]
        assert kept == sorted(kept)  # the part still retained, in order, once
        assert len(kept) < 1000


async def test_a_deleted_log_is_a_gap(broker: Harness) -> None:
    world = World(broker, ["feed"], Retention(max_len=100))
    async with world.listening("feed", [0]) as s:
        async with world.away(s.subscriber):
            delete_log(broker, "feed")
        await eventually(lambda: "gap" in s.log.names)
        assert s.log.last("gap")["reason"] == "deleted"
        await world.produce(s.producer, "feed", [1])  # a new log: events flow again
        await eventually(lambda: s.received.data == [0, 1])


def delete_log(broker: Harness, channel: str) -> None:
    if isinstance(broker, MemoryHarness):
        broker.hub.delete_log(f"{NS}:{channel}")
    else:
        broker.client.delete(f"{NS}:{channel}")


async def test_a_log_deleted_and_made_again_while_away_is_deleted_not_trimmed(
    broker: Harness,
) -> None:
    world = World(broker, ["feed"], Retention(max_len=100))
    async with world.listening("feed", [0]) as s:
        async with world.away(s.subscriber):
            delete_log(broker, "feed")
            await world.produce(s.producer, "feed", [1, 2])  # a new log in its place
        await eventually(lambda: "gap" in s.log.names)
        gap = s.log.last("gap")
        assert gap["reason"] == "deleted"
        assert gap["next_id"]
        await eventually(lambda: s.received.data == [0, 1, 2])


async def test_a_log_deleted_under_a_steady_publisher_is_a_gap(broker: Harness) -> None:
    # Every event arrives live, so the live stream never shows the new log: the
    # log's counts tell it, marked at registration and at each recheck. (A log with
    # no history at its last mark, made and deleted since, cannot be told from its
    # successor: this one has a history.)
    world = World(broker, ["feed"], Retention(max_len=5))
    received = Ids()
    async with world.running(), world.producer() as producer:
        await world.produce(producer, "feed", list(range(50)))
        async with world.subscriber(recheck_interval=0.05) as subscriber:
            log = await watched(subscriber)
            await subscriber.register("feed", "*", received)
            delete_log(broker, "feed")
            sent: list[int] = []
            with anyio.fail_after(10):
                while "gap" not in log.names:
                    sent.append(len(sent))
                    await producer.publish("feed", "e", sent[-1])
                    await anyio.sleep(0.01)
            assert [d["reason"] for name, d, _ in log.events if name == "gap"] == ["deleted"]
            await eventually(lambda: received.data == sent)  # nothing lost, once each


async def test_overflow_reads_back_instead_of_dropping(broker: Harness) -> None:
    got: list[int] = []

    async def slow(channel: Channel, event: str, data: int) -> None:
        await anyio.lowlevel.checkpoint()
        got.append(data)

    async with Channels(broker.store(), namespace=NS, durable=["c"], max_pending=3) as channels:
        await channels.register("c", "*", slow)
        for n in range(200):
            await channels.publish("c", "e", n)
        await eventually(lambda: len(got) == 200)
        stats = channels.stats()
    assert got == list(range(200))
    assert stats.dropped == 0
    assert identity(stats)[0] == identity(stats)[1]


async def test_plain_and_durable_channels_on_one_handler(
    broker: Harness, recorder: Recorder
) -> None:
    async with Channels(broker.store(), namespace=NS, durable={"a": Retention(max_len=9)}) as ch:
        await ch.register("a", "*", recorder)
        await ch.register("b", "*", recorder)
        await ch.publish("a", "e", 1)
        await ch.publish("b", "e", 2)
        await ch.publish("a", "e", 3)
        await eventually(lambda: len(recorder.calls) == 3)
        assert sorted(recorder.calls) == [("a", "e", 1), ("a", "e", 3), ("b", "e", 2)]


async def test_bad_durable_arguments_are_refused_before_io(store: Any) -> None:
    with pytest.raises(TypeError, match="single str"):
        Channels(store, durable="orders")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Retention"):
        Channels(store, durable={"orders": 100})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="channel name"):
        Channels(store, durable=[""])
    with pytest.raises(ValueError, match="max_len"):
        Retention(max_len=0)
    with pytest.raises(ValueError, match="max_age"):
        _Retention(max_age=float("nan"))
    async with Channels(store, durable=["d"]) as channels:
        with pytest.raises(ValueError, match="needs a durable channel"):
            await channels.register("plain", "*", print, since="all")
        with pytest.raises(ValueError, match="since="):
            await channels.register("d", "*", print, since="yesterday")
        with pytest.raises(ValueError, match="timezone-aware"):
            channels.subscribe("d", since=dt.datetime(2026, 1, 1))
        assert len(channels) == 1  # the status channel: nothing was made


# -- Redis only -----------------------------------------------------------------------


async def test_a_foreign_producer_is_picked_up(redis_server: RedisServer) -> None:
    """Another language's producer: XADD, then PUBLISH "<id> <envelope>"."""
    client = redis_server.client()
    channels = Channels(redis_server.url, namespace=NS, durable=["x"])
    async with channels, channels.subscribe("x") as events:
        envelope = json.dumps({"channel": "x", "event": "made", "data": [1, 2]})
        entry = client.xadd(f"{NS}:x", {"envelope": envelope})
        client.publish(f"{NS}:x", entry + b" " + envelope.encode())
        event = await events.receive()
    assert (event.event, event.data, event.id) == ("made", [1, 2], entry.decode())


async def test_ids_that_go_back_are_a_rewound_gap(redis_server: RedisServer) -> None:
    """After a failover to a replica that missed the latest entries, new ids can be
    lower than the last one delivered: reported, and delivery starts over."""
    world = World(RedisHarness(redis_server), ["feed"], Retention(max_len=100))
    client = redis_server.client()
    async with world.listening("feed", [0]) as s:
        async with world.away(s.subscriber):
            client.delete(f"{NS}:feed")
            envelope = json.dumps({"channel": "feed", "event": "e", "data": "old"})
            client.xadd(f"{NS}:feed", {"envelope": envelope}, id="1-1")
        await eventually(lambda: "gap" in s.log.names)
        gap = s.log.last("gap")
        assert (gap["reason"], gap["next_id"]) == ("rewound", "1-1")
        await world.produce(s.producer, "feed", [1])
        await eventually(lambda: s.received.data == [0, 1])


async def test_scripting_forbidden_falls_back_to_two_commands(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis_server.client()
    admin.acl_setuser(
        "noscript",
        enabled=True,
        passwords=["+pw"],
        commands=["+@all", "-@scripting"],
        keys=["~*"],
        channels=["*"],
    )
    url = f"redis://noscript:pw@127.0.0.1:{redis_server.port}"
    received = Ids()
    with caplog.at_level(logging.WARNING, "tidings"):
        async with Channels(url, namespace=NS, durable=["x"]) as channels:
            await channels.register("x", "*", received)
            for n in range(5):
                await channels.publish("x", "e", n)
            # Idempotent publishes take a SET NX first (what it cannot promise is
            # said in the warning).
            assert await channels.publish("x", "e", 5, key="k") == 1
            assert await channels.publish("x", "e", 6, key="k") == 0
            await eventually(lambda: received.data == [0, 1, 2, 3, 4, 5])
    assert caplog.text.count("scripts are not allowed") == 1
    assert "is lost" in caplog.text
    assert admin.xlen(f"{NS}:x") == 6


async def test_kill_9_with_aof_loses_no_acknowledged_event() -> None:
    """Every publish that returned before Redis was killed arrives once, in order."""
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    try:
        received = Ids()
        acknowledged: list[int] = []
        options: dict[str, Any] = {"backoff": FAST, "publish_timeout": 5}
        subscriber = Channels(server.url, namespace="k", durable=["x"], **options)
        producer = Channels(server.url, namespace="k", durable=["x"], **options)
        async with subscriber, producer:
            await subscriber.register("x", "*", received)

            async def produce() -> None:
                for n in range(400):
                    try:
                        await producer.publish("x", "e", n)
                    except Exception:
                        continue
                    acknowledged.append(n)

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                await eventually(lambda: len(acknowledged) >= 100)
                server.kill()
                await anyio.to_thread.run_sync(server.start)
            await eventually(lambda: set(acknowledged) <= set(received.data), limit=10)
        assert received.data == sorted(received.data)
        assert len(received.data) == len(set(received.data))  # nothing twice
    finally:
        server.close()


async def test_a_named_consumer_resumes_where_it_was_after_a_restart(broker: Harness) -> None:
    def saved() -> str | None:
        key = position_key(f"{NS}:jobs", "billing")
        if isinstance(broker, MemoryHarness):
            return broker.hub.positions.get(key)
        value = broker.client.get(key)
        return str(value) if value is not None else None

    first, second, ids = Ids(), Ids(), []
    async with Channels(broker.store(), namespace=NS, durable=["jobs"]) as producer:
        async with Channels(broker.store(), namespace=NS, durable=["jobs"]) as before:
            await before.register("jobs", "*", first, consumer="billing")
            async with before.subscribe("jobs") as events:
                for n in range(10):
                    await producer.publish("jobs", "e", n)
                ids = [(await events.receive()).id for _ in range(10)]
            await eventually(lambda: first.data == list(range(10)))
            await eventually(lambda: saved() == ids[-1])  # about once a second
        for n in range(10, 20):  # while it is away
            await producer.publish("jobs", "e", n)
        async with Channels(broker.store(), namespace=NS, durable=["jobs"]) as after:
            # since= is for the first time only: a known consumer resumes.
            await after.register("jobs", "*", second, consumer="billing", since="all")
            await producer.publish("jobs", "e", 20)
            await eventually(lambda: second.data[-1:] == [20])
    assert second.data == list(range(10, 21))


async def test_consumer_needs_a_durable_channel(store: Any) -> None:
    async with Channels(store, durable=["d"]) as channels:
        with pytest.raises(ValueError, match="consumer='x' needs a durable channel"):
            await channels.register("plain", "*", print, consumer="x")
        with pytest.raises(ValueError, match="consumer name"):
            await channels.register("d", "*", print, consumer="")


async def test_events_stored_without_a_live_copy_are_picked_up(broker: Harness) -> None:
    """A producer that only writes the log (or a live copy lost on the way): an idle
    durable channel reads its log every ``recheck_interval`` seconds."""
    received = Ids()
    options: dict[str, Any] = {"durable": ["x"], "recheck_interval": 0.2}
    async with Channels(broker.store(), namespace=NS, **options) as channels:
        await channels.register("x", "*", received)
        envelope = json.dumps({"channel": "x", "event": "e", "data": "stored"}).encode()
        if isinstance(broker, MemoryHarness):
            broker.hub.append(f"{NS}:x", envelope, Retention(), live=False)
        else:
            broker.client.xadd(f"{NS}:x", {"envelope": envelope})
        await eventually(lambda: received.data == ["stored"])
        assert channels.stats().replayed == 1
        # Between rechecks an idle channel keeps no task (only the status channel's
        # actor and the upkeep run).
        await eventually(lambda: len(channels._runtime.actors) == 2)


async def test_starting_after_an_id_no_longer_in_the_log_is_a_missing_gap(
    broker: Harness,
) -> None:
    received = Ids()
    durable = {"feed": Retention(max_len=5)}
    async with Channels(broker.store(), namespace=NS, durable=durable) as channels:
        log = await watched(channels)
        async with channels.subscribe("feed") as events:
            await channels.publish("feed", "e", 0)
            first = (await events.receive()).id
        for n in range(1, 301):  # past retention (Redis trims whole nodes of ~100)
            await channels.publish("feed", "e", n)
        await channels.register("feed", "*", received, since=first)
        await eventually(lambda: received.data[-1:] == [300])
        await eventually(lambda: "gap" in log.names)  # (status events have a task)
        gap = log.last("gap")
        assert (gap["reason"], gap["last_id"]) == ("missing", first)
        assert gap["next_id"]
        assert received.data == list(range(received.data[0], 301))  # what is left, once
        assert received.data[0] > 1


# -- random interleavings: the class of faults the reviews found ------------------------


class _Tracked:
    """A registration under test: what it received, from which event on."""

    def __init__(self, kind: str, since: str, first: int) -> None:
        self.kind, self.since, self.first = kind, since, first
        self.settled = first
        self.got: list[int] = []
        self.active = True

    def callback(self) -> Any:
        if self.kind == "sync":
            return lambda channel, event, data: self.got.append(data)

        async def slow(channel: Channel, event: str, data: int) -> None:
            for _ in range(data % 3):
                await anyio.lowlevel.checkpoint()
            self.got.append(data)

        return slow


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_interleavings_deliver_every_event_once_in_order(
    broker: Harness, seed: int
) -> None:
    """A producer elsewhere publishes all along; here registrations come and go (from
    now or from the start, sync or awaiting callbacks, bursts past a tiny mailbox) and
    the connections are killed at random: each registration gets its events in
    order, never twice, and (while it stays) all of them."""
    rng = random.Random(seed)
    retention = Retention(max_len=100_000)
    key = f"{NS}:c"
    produced: list[int] = []
    done = anyio.Event()

    def append(n: int) -> None:
        envelope = json.dumps({"channel": "c", "event": "e", "data": n})
        if isinstance(broker, MemoryHarness):
            broker.hub.append(key, envelope.encode(), retention)
        else:  # another process's publisher: the same script, its own connection
            client.eval(APPEND.source, 1, key, envelope, "100000", "", "PUBLISH")

    bursts = random.Random(seed + 1000)  # its own: the ops stay the same whatever runs when

    issued = 0  # the next number: what is issued from now on comes after

    async def produce() -> None:
        nonlocal issued
        while not done.is_set():
            for _ in range(bursts.randint(1, 20)):
                n, issued = issued, issued + 1
                if isinstance(broker, MemoryHarness):
                    append(n)
                else:
                    await anyio.to_thread.run_sync(append, n)
                produced.append(n)
            await anyio.sleep(0.002)

    client = None if isinstance(broker, MemoryHarness) else broker.server.client()
    tracked: list[tuple[_Tracked, Any]] = []
    channels = Channels(
        broker.store(),
        namespace=NS,
        durable={"c": retention},
        max_pending=4,
        backoff=FAST,
        publish_timeout=5,
    )
    async with channels, anyio.create_task_group() as tg:
        tg.start_soon(produce)
        for _ in range(25):
            op = rng.random()
            if op < 0.35:
                kind, since = rng.choice(["sync", "async"]), rng.choice(["new", "all"])
                item = _Tracked(kind, since, len(produced))
                callback = item.callback()
                await channels.register("c", "*", callback, since=since)
                item.settled = issued  # (what the producer did during the call is
                tracked.append((item, callback))  # on either side of "new")
            elif op < 0.45 and tracked:
                item, callback = rng.choice(tracked)
                if item.active:
                    item.active = False
                    await channels.unregister("c", "*", callback)
            elif op < 0.7:
                broker.kill_connections()
            await anyio.sleep(rng.choice((0, 0.005, 0.02)))
        last = _Tracked("sync", "new", len(produced))  # at least one stays to the end
        await channels.register("c", "*", last_callback := last.callback())
        last.settled = issued
        tracked.append((last, last_callback))
        done.set()
        await anyio.sleep(0.01)  # the producer's last burst is in
        for item, _ in tracked:
            if item.active:
                wanted = {n for n in produced if item.since == "all" or n >= item.settled}
                with contextlib.suppress(TimeoutError):
                    await eventually(lambda i=item, w=wanted: w <= set(i.got), limit=15)
                missing = sorted(wanted - set(item.got))
                assert not missing, (item.kind, item.since, len(missing), missing[:10])
        stats = channels.stats()
    for item, _ in tracked:
        assert item.got == sorted(item.got), (item.kind, item.since)  # in order
        assert len(item.got) == len(set(item.got)), (item.kind, item.since)  # once
        if item.since == "new":
            assert all(n >= item.first for n in item.got)  # nothing from before
    # (Dropped: a backlog discarded as a channel's last callback left, if any.)
    assert stats.decode_errors == stats.callback_errors == 0


async def test_register_many_on_durable_channels_starts_each_at_its_end(
    broker: Harness,
) -> None:
    """The ends of the logs are asked in one round trip; each registration gets what
    is published after it, and nothing from before."""
    names = [f"c{n}" for n in range(40)]
    received = Ids()
    async with Channels(broker.store(), namespace=NS, durable=names) as channels:
        for name in names:
            await channels.publish(name, "old", name)  # before: not for them
        await channels.register_many([(name, "*", received) for name in names])
        for name in names:
            await channels.publish(name, "new", name)
        await eventually(lambda: sorted(received.data) == sorted(names))
