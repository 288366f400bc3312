"""Work queues: consumer groups on durable channels (one member per handler).

Each event goes to one member; it is acknowledged after the callback returns; a
failure or a member gone quiet past ``ack_wait`` gets it delivered again, up to
``max_deliver`` times, then it is dead-lettered. On memory:// and on a real Redis.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import tidings.testing
from tests.helpers import (
    FAST,
    Harness,
    MemoryHarness,
    RedisHarness,
    StatusLog,
    assert_follows_the_state_machine,
    eventually,
    watched,
)
from tests.redis_server import RedisServer
from tidings import Channel, Channels, Retention, Retry

pytestmark = pytest.mark.anyio

NS = "g"


@pytest.fixture(autouse=True)
def _fresh_namespace() -> None:
    """Streams and groups outlive a test on the shared redis-server."""
    global NS
    NS = f"g{uuid.uuid4().hex[:8]}"


def handler(broker: Harness, **options: Any) -> Channels:
    options.setdefault("durable", {"jobs": Retention(max_len=100_000)})
    options.setdefault("backoff", FAST)
    # The mechanics of failure here; retry schedules have tests of their own.
    options.setdefault("retry_backoff", None)
    return Channels(broker.store(), namespace=NS, **options)


def pending(broker: Harness, channel: str = "jobs", group: str = "workers") -> int:
    """How many entries the group has handed out and not had acknowledged."""
    key = f"{NS}:{channel}"
    if isinstance(broker, MemoryHarness):
        return len(broker.hub.pending(key, group))
    assert isinstance(broker, RedisHarness)
    return int(broker.server.client().xpending(key, group)["pending"])


def dead_letters(broker: Harness, channel: str = "jobs") -> list[dict[str, bytes]]:
    key = f"{NS}:{channel}"
    if isinstance(broker, MemoryHarness):
        return [fields for _, fields in broker.hub.dead_letters(key)]
    assert isinstance(broker, RedisHarness)
    return [
        {k.decode(): v for k, v in fields.items()}
        for _, fields in broker.server.client().xrange(f"{key}:dead")
    ]


def consumers(broker: Harness, channel: str = "jobs", group: str = "workers") -> int:
    key = f"{NS}:{channel}"
    if isinstance(broker, MemoryHarness):
        return len(broker.hub.consumers(key, group))
    assert isinstance(broker, RedisHarness)
    return len(broker.server.client().xinfo_consumers(key, group))


class Worker:
    """A member's callback: records what it got; fails on the data it is told to."""

    def __init__(self, fail: Any = None, times: int = 1_000_000) -> None:
        self.done: list[Any] = []
        self.fail = fail
        self.failures = 0
        self.times = times
        self.ids: list[str | None] = []

    def __call__(self, channel: Channel, event: str, data: Any) -> None:
        if data == self.fail and self.failures < self.times:
            self.failures += 1
            raise RuntimeError(f"cannot do {data!r}")
        self.done.append(data)


class Stuck:
    """An async callback that records what it takes, then waits until released."""

    def __init__(self) -> None:
        self.taken: list[Any] = []
        self.release = anyio.Event()

    async def __call__(self, channel: Channel, event: str, data: Any) -> None:
        self.taken.append(data)
        await self.release.wait()


@asynccontextmanager
async def members(broker: Harness, count: int, **options: Any) -> AsyncIterator[list[Channels]]:
    async with AsyncExitStack() as stack:
        handlers = [
            await stack.enter_async_context(handler(broker, **options)) for _ in range(count)
        ]
        yield handlers


async def test_each_event_goes_to_one_member_and_is_acknowledged(broker: Harness) -> None:
    workers = [Worker() for _ in range(3)]
    async with members(broker, 3) as handlers, handler(broker) as producer:
        for member, worker in zip(handlers, workers, strict=True):
            await member.register("jobs", "*", worker, group="workers")
        for n in range(300):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: sum(len(w.done) for w in workers) >= 300)
        await eventually(lambda: sum(m.stats().acked for m in handlers) == 300)
        assert pending(broker) == 0
    done = [n for w in workers for n in w.done]
    assert sorted(done) == list(range(300))  # each once, none lost
    # Each member handles its own share in publish order.
    for worker in workers:
        assert worker.done == sorted(worker.done)


async def test_a_failed_delivery_is_delivered_again(broker: Harness) -> None:
    flaky = Worker(fail=3, times=2)  # fails twice on 3, then does it
    async with handler(broker, max_deliver=5) as member, handler(broker) as producer:
        log = await watched(member)
        await member.register("jobs", "*", flaky, group="workers")
        for n in range(6):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: sorted(flaky.done) == list(range(6)))
        await eventually(lambda: member.stats().acked == 6)
        assert pending(broker) == 0
        assert flaky.failures == 2
        stats = member.stats()
        assert stats.callback_errors == 2
        assert stats.dead_lettered == 0
        assert "dead_letter" not in log.names
    assert dead_letters(broker) == []


async def test_a_poison_event_is_dead_lettered_and_does_not_block_the_rest(
    broker: Harness,
) -> None:
    poisoned = Worker(fail="poison")
    async with handler(broker, max_deliver=3) as member, handler(broker) as producer:
        log = await watched(member)
        await member.register("jobs", "*", poisoned, group="workers")
        await producer.publish("jobs", "job", "poison")
        for n in range(20):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: "dead_letter" in log.names)
        await eventually(lambda: sorted(poisoned.done) == list(range(20)))
        await eventually(lambda: pending(broker) == 0)
        assert poisoned.failures == 3
        dead = log.last("dead_letter")
        assert dead["channel"] == "jobs"
        assert dead["group"] == "workers"
        assert dead["deliveries"] == 3
        assert "cannot do 'poison'" in dead["error"]
        assert member.stats().dead_lettered == 1
    [letter] = dead_letters(broker)
    assert json.loads(letter["envelope"])["data"] == "poison"
    assert letter["id"].decode() == dead["id"]
    assert letter["group"] == b"workers"
    assert letter["deliveries"] == b"3"
    assert b"RuntimeError" in letter["error"]


async def test_an_undecodable_entry_is_dead_lettered_at_once(broker: Harness) -> None:
    worker = Worker()
    async with handler(broker) as member, handler(broker) as producer:
        log = await watched(member)
        await member.register("jobs", "*", worker, group="workers")
        key = f"{NS}:jobs"
        if isinstance(broker, MemoryHarness):
            broker.hub.append(key, b"{not json", Retention())
        else:
            assert isinstance(broker, RedisHarness)
            broker.server.client().xadd(key, {"envelope": b"{not json"})
        await producer.publish("jobs", "job", "fine")
        await eventually(lambda: "dead_letter" in log.names and worker.done == ["fine"])
        assert log.last("dead_letter")["deliveries"] == 1
        assert member.stats().decode_errors == 1
        await eventually(lambda: pending(broker) == 0)
    [letter] = dead_letters(broker)
    assert letter["envelope"] == b"{not json"


async def test_a_member_gone_quiet_has_its_events_claimed_after_ack_wait(
    broker: Harness,
) -> None:
    """A member that dies holding events (cancelled here, without leaving the
    group: as a killed process) has them delivered to another after ack_wait."""
    hangs = Stuck()
    survivor = Worker()
    async with handler(broker) as producer:
        with anyio.CancelScope() as dying:
            async with handler(broker, ack_wait=0.3) as doomed:
                for n in range(3):
                    await producer.publish("jobs", "job", n)
                # It takes all three at once, and hangs on the first.
                await doomed.register("jobs", "*", hangs, group="workers", since="all")
                await eventually(lambda: hangs.taken == [0])
                dying.cancel()  # no goodbye: its events stay pending
        assert pending(broker) == 3
        async with handler(broker, ack_wait=0.3) as member:
            log = await watched(member)
            await member.register("jobs", "*", survivor, group="workers")
            await eventually(lambda: sorted(survivor.done) == [0, 1, 2])
            await eventually(lambda: member.stats().acked == 3)
            assert pending(broker) == 0
            assert "dead_letter" not in log.names


async def test_iterator_acknowledges_when_the_next_event_is_taken(broker: Harness) -> None:
    async with handler(broker, ack_wait=0.3) as member, handler(broker) as producer:
        for n in range(3):
            await producer.publish("jobs", "job", n)
        async with member.subscribe("jobs", group="workers", since="all") as jobs:
            first = await jobs.receive()
            assert (first.data, first.deliveries) == (0, 1)
            assert first.id is not None
            assert pending(broker) >= 1  # in hand: not acknowledged yet
            second = await jobs.receive()
            assert second.data == 1
            await eventually(lambda: member.stats().acked == 1)
        # Left normally: the one in hand is done too.
        await eventually(lambda: member.stats().acked == 2)
        third = None
        with pytest.raises(LookupError):  # noqa: PT012 (the block fails with an event in hand)
            async with member.subscribe("jobs", group="workers") as jobs:
                third = await jobs.receive()
                {}[third.data]
        assert third is not None
        assert third.data == 2
        # Handed back: delivered again, counted.
        async with member.subscribe("jobs", group="workers") as jobs:
            again = await jobs.receive()
            assert (again.data, again.deliveries, again.id) == (2, 2, third.id)
        await eventually(lambda: pending(broker) == 0)


async def test_since_places_a_new_group_and_an_existing_one_keeps_its_place(
    broker: Harness,
) -> None:
    async with handler(broker) as producer:
        for n in range(5):
            await producer.publish("jobs", "job", n)
        old, new, later = Worker(), Worker(), Worker()
        async with handler(broker) as member:
            await member.register("jobs", "*", old, group="replay", since="all")
            await member.register("jobs", "*", new, group="fresh")
            await eventually(lambda: old.done == [0, 1, 2, 3, 4])
            await producer.publish("jobs", "job", 5)
            await eventually(lambda: old.done == list(range(6)) and new.done == [5])
        async with handler(broker) as member:
            # The group exists: it goes on from where it is; since= does not move it.
            await member.register("jobs", "*", later, group="replay", since="all")
            await producer.publish("jobs", "job", 6)
            await eventually(lambda: later.done == [6])


async def test_groups_and_plain_registrations_share_a_channel(broker: Harness) -> None:
    audit, a, b = Worker(), Worker(), Worker()
    async with members(broker, 2) as (one, two), handler(broker) as producer:
        await one.register("jobs", "*", audit)  # sees everything
        await one.register("jobs", "*", a, group="workers")
        await two.register("jobs", "*", b, group="workers")
        for n in range(50):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: len(audit.done) == 50 and len(a.done) + len(b.done) == 50)
        assert audit.done == list(range(50))
        assert sorted(a.done + b.done) == list(range(50))
        # Two groups each get every event.
        other = Worker()
        await two.register("jobs", "*", other, group="others", since="all")
        await eventually(lambda: sorted(other.done) == list(range(50)))


async def test_patterns_pick_what_a_member_does_and_the_rest_is_acknowledged(
    broker: Harness,
) -> None:
    created = Worker()
    async with handler(broker) as member, handler(broker) as producer:
        await member.register("jobs", "created", created, group="workers")
        await producer.publish("jobs", "created", 1)
        await producer.publish("jobs", "deleted", 2)
        await producer.publish("jobs", "created", 3)
        await eventually(lambda: created.done == [1, 3])
        await eventually(lambda: member.stats().acked == 3)
        assert member.stats().unrouted == 1
        assert pending(broker) == 0


async def test_unregister_and_close_leave_the_group(broker: Harness) -> None:
    worker = Worker()
    async with handler(broker) as member:
        await member.register("jobs", "*", worker, group="workers")
        await member.publish("jobs", "job", 1)
        await eventually(lambda: worker.done == [1])
        assert await member.unregister("jobs", "*", worker, group="workers") is not None
        assert "jobs" not in member
        await eventually(lambda: consumers(broker) == 0)
        await member.register("jobs", "*", worker, group="workers")
        await member.publish("jobs", "job", 2)
        await eventually(lambda: worker.done == [1, 2])
    assert consumers(broker) == 0  # closed: left, nothing pending


async def test_callback_error_unregisters_from_the_group(broker: Harness) -> None:
    from tidings import CallbackError

    seen: list[Any] = []

    def once(channel: Channel, event: str, data: Any) -> None:
        seen.append(data)
        raise CallbackError

    async with handler(broker) as member:
        await member.register("jobs", "*", once, group="workers")
        await member.publish("jobs", "job", 1)
        await eventually(lambda: "jobs" not in member)
        assert seen == [1]
        await eventually(lambda: member.stats().acked == 1)  # done with it: acknowledged
        await eventually(lambda: consumers(broker) == 0)


async def test_bad_group_arguments_fail_before_any_io(broker: Harness) -> None:
    async with handler(broker) as member:
        with pytest.raises(ValueError, match="group='w' needs a durable channel"):
            await member.register("plain", "*", print, group="w")
        with pytest.raises(ValueError, match="group name"):
            await member.register("jobs", "*", print, group="")
        with pytest.raises(ValueError, match="do not go together"):
            await member.register("jobs", "*", print, group="w", consumer="c")
        with pytest.raises(ValueError, match="group='w' needs a durable channel"):
            member.subscribe("plain", group="w")
        assert "plain" not in member
        assert "jobs" not in member
    with pytest.raises(ValueError, match="max_deliver"):
        handler(broker, max_deliver=0)
    with pytest.raises(ValueError, match="ack_wait"):
        handler(broker, ack_wait=-1)


async def test_a_refused_group_rolls_the_registration_back(hub: Any) -> None:
    """An ACL that forbids the stream: register raises, nothing stays registered."""
    from tidings import ReplyError, Store
    from tidings.brokers.memory import MemoryBroker

    hub.allowed_channels = "g:other*"
    async with Channels(Store(MemoryBroker(hub)), namespace="g", durable=["jobs"]) as member:
        with pytest.raises(ReplyError) as refused:
            await member.register("jobs", "*", print, group="workers")
        assert refused.value.code == "NOPERM"
        assert "jobs" not in member


async def test_counts_add_up(broker: Harness) -> None:
    """received + replayed == delivered + ... + superseded, with groups too."""
    worker = Worker(fail=7, times=1)
    async with handler(broker) as member, handler(broker) as producer:
        await member.register("jobs", "*", worker, group="workers")
        for n in range(20):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: sorted(worker.done) == list(range(20)))
        await eventually(lambda: member.stats().acked == 20)
        s = member.stats()
        assert s.received + s.replayed == (
            s.delivered
            + s.callback_errors
            + s.dropped
            + s.unrouted
            + s.decode_errors
            + s.superseded
        )
        assert s.replayed == 21  # 20 events, one delivered twice


async def test_dead_letter_reports_sit_between_the_status_events(broker: Harness) -> None:
    async with handler(broker, max_deliver=1) as member:
        log: StatusLog = await watched(member)
        await member.register("jobs", "*", Worker(fail=0), group="workers")
        await member.publish("jobs", "job", 0)
        await eventually(lambda: "dead_letter" in log.names)
    assert Counter(log.names)["dead_letter"] == 1
    assert_follows_the_state_machine(log.names)


# -- across processes, and across a Redis restart ---------------------------------------


class Members:
    """Member processes (tests/group_worker.py), each recording the jobs it did."""

    def __init__(self, url: str, namespace: str, folder: Path, backend: str) -> None:
        self.url, self.namespace, self.folder, self.backend = url, namespace, folder, backend
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, count: int) -> None:
        root = Path(__file__).resolve().parent.parent
        for n in range(count):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.group_worker",
                    self.url,
                    self.namespace,
                    str(self.folder / f"member{n}"),
                    self.backend,
                ],
                cwd=root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.processes.append(process)
        for process in self.processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"

    def done(self, n: int) -> list[int]:
        path = self.folder / f"member{n}"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def all_done(self) -> list[int]:
        return [job for n in range(len(self.processes)) for job in self.done(n)]

    def stop(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()  # the member's cue to close (a dead one's pipe, too)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def member_processes(
    redis_server: RedisServer, tmp_path: Path, anyio_backend: str
) -> Iterator[Members]:
    members = Members(redis_server.url, NS, tmp_path, anyio_backend)
    yield members
    members.stop()


def group_state(server: RedisServer, namespace: str) -> dict[str, Any]:
    [state] = server.client(decode_responses=True).xinfo_groups(f"{namespace}:jobs")
    return dict(state)


@pytest.mark.redis
async def test_three_processes_share_ten_thousand_jobs_each_done_once(
    member_processes: Members, redis_server: RedisServer
) -> None:
    member_processes.start(3)
    async with Channels(redis_server.url, namespace=NS, durable={"jobs": Retention()}) as producer:
        for start in range(0, 10_000, 500):
            await producer.publish_many([("jobs", "job", n) for n in range(start, start + 500)])
        await eventually(lambda: len(member_processes.all_done()) >= 10_000, limit=60)
    await eventually(lambda: group_state(redis_server, NS)["pending"] == 0)
    assert sorted(member_processes.all_done()) == list(range(10_000))  # once each
    assert all(member_processes.done(n) for n in range(3))  # all three worked
    state = group_state(redis_server, NS)
    assert state["entries-read"] == 10_000
    assert state["lag"] == 0


@pytest.mark.redis
async def test_a_killed_member_s_jobs_go_to_the_others(
    member_processes: Members, redis_server: RedisServer
) -> None:
    member_processes.start(3)
    victim = member_processes.processes[0]
    async with Channels(redis_server.url, namespace=NS, durable={"jobs": Retention()}) as producer:
        for n in range(3_000):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: len(member_processes.done(0)) >= 200, limit=30)
        victim.kill()  # kill -9, mid-job: what it holds is pending, for nobody
        victim.wait()
        held = group_state(redis_server, NS)["pending"]
        await eventually(lambda: set(member_processes.all_done()) == set(range(3_000)), limit=30)
    await eventually(lambda: group_state(redis_server, NS)["pending"] == 0)
    done = member_processes.all_done()
    assert set(done) == set(range(3_000))  # none lost
    # Done twice only if the victim did it and died before acknowledging it.
    twice = [job for job, count in Counter(done).items() if count > 1]
    assert set(twice) <= set(member_processes.done(0))
    assert len(twice) <= held
    survivors = member_processes.done(1) + member_processes.done(2)
    assert len(set(survivors)) == len(survivors)


async def test_pending_jobs_survive_a_redis_restart_with_aof(
    tmp_path: Path,
) -> None:
    """kill -9 of an AOF-backed Redis with events in hand: what was acknowledged stays
    acknowledged (never delivered again), what was pending stays pending, and the
    member acknowledges it after reconnecting."""
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    try:
        hold = anyio.Event()
        done: list[Any] = []

        async def work(channel: Channel, event: str, data: Any) -> None:
            if data == 5:
                await hold.wait()
            done.append(data)

        options: dict[str, Any] = {
            "namespace": NS,
            "durable": {"jobs": Retention()},
            "backoff": FAST,
            "connect_timeout": 0.5,
        }
        async with Channels(server.url, **options) as producer:
            for n in range(10):
                await producer.publish("jobs", "job", n)
        async with Channels(server.url, **options) as member:
            log = await watched(member)
            await member.register("jobs", "*", work, group="workers", since="all")
            await eventually(lambda: done == [0, 1, 2, 3, 4])
            await eventually(lambda: group_state(server, NS)["pending"] == 5)
            server.kill()
            server.start()
            state = group_state(server, NS)
            [(last, _)] = server.client().xrevrange(f"{NS}:jobs", count=1)
            assert state["pending"] == 5  # as it was
            assert state["last-delivered-id"] == last.decode()
            hold.set()
            await eventually(lambda: "connected" in log.names)  # again
            await eventually(lambda: member.stats().acked == 10)
            assert group_state(server, NS)["pending"] == 0
            assert done == list(range(10))  # nothing delivered twice
    finally:
        server.close()


async def test_cancellation_matrix_of_group_operations(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Group registrations, unregistrations and iterators cancelled at random
    points: afterwards the members are exactly the groups with callbacks, each takes
    every new event once, and closing leaves no consumer behind, without a warning."""
    rng = random.Random(14)
    names = ["jobs", "mail"]
    workers = [Worker() for _ in range(2)]
    member = handler(broker, durable=names, ack_wait=0.5)

    async def register() -> None:
        await member.register(rng.choice(names), "*", rng.choice(workers), group=rng.choice("ab"))

    async def unregister() -> None:
        await member.unregister(rng.choice(names), "*", rng.choice(workers), group=rng.choice("ab"))

    async def iterate() -> None:
        async with member.subscribe(rng.choice(names), group=rng.choice("ab")) as jobs:
            with anyio.move_on_after(0.002):
                await jobs.receive()

    async def publish() -> None:
        await member.publish(rng.choice(names), "e", -1)

    operations: list[Callable[[], Awaitable[None]]] = [
        register,
        register,
        unregister,
        iterate,
        publish,
    ]
    with caplog.at_level(logging.WARNING, "tidings"):
        async with member:
            for _ in range(200):
                with anyio.move_on_after(rng.choice((0, 0, 0.0001, 0.0005, 0.002))):
                    await rng.choice(operations)()
            registry = member._registry
            standing = {
                (state.name, registration.group)
                for state in registry.channels.values()
                for registration in state.all_registrations()
                if registration.group is not None
            }
            assert standing  # the matrix left some standing
            assert {(f"{NS}:{c}", g) for c, g in standing} == registry.groups.memberships()
            for worker in workers:
                worker.done.clear()
            for n, name in enumerate(names):
                await member.publish(name, "e", n)
            # Once per group, to each of the group's callbacks here.
            calls = {
                name: sum(
                    registration.group is not None
                    for registration in registry.state(name).all_registrations()  # type: ignore[union-attr]
                )
                if name in member
                else 0
                for name in names
            }
            for n, name in enumerate(names):
                await eventually(
                    lambda n=n, w=calls[name]: sum(x.done.count(n) for x in workers) >= w
                )
            await anyio.sleep(0.1)  # (a second copy would come now)
            for n, name in enumerate(names):
                assert sum(x.done.count(n) for x in workers) == calls[name]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # What it held when it closed was handed back: a new member takes all of it.
    async with handler(broker, durable=names) as successor:
        for name, group in standing:
            await successor.register(name, "*", Worker(), group=group)
        for name, group in standing:
            await eventually(lambda n=name, g=group: pending(broker, n, g) == 0)


async def test_no_wake_up_is_lost_while_a_member_reads(broker: Harness) -> None:
    """Events published while a member's read is under way are read next, not at the
    next claim round (a minute away here): bursts at random moments."""
    rng = random.Random(7)
    worker = Worker()
    async with (
        handler(broker, recheck_interval=60, ack_wait=120) as member,
        handler(broker) as producer,
    ):
        await member.register("jobs", "*", worker, group="workers")
        sent = 0
        for _ in range(40):
            for _ in range(rng.randint(1, 3)):
                await producer.publish("jobs", "job", sent)
                sent += 1
            for _ in range(rng.randint(0, 3)):
                await anyio.lowlevel.checkpoint()
            await eventually(lambda s=sent: len(worker.done) == s)
        assert worker.done == list(range(sent))


async def test_an_event_published_while_a_read_ahead_is_in_flight_is_read_next(
    broker: Harness,
) -> None:
    """A full first read makes the member ask for the next one before it works the
    batch; an event published while it works (after that read went out) wakes the
    member again, and is read next, not at the next claim round (a minute here)."""
    done: list[Any] = []

    async with handler(broker) as producer:
        for n in range(10):  # FIRST_COUNT: the first read comes back full
            await producer.publish("jobs", "job", n)

        async def work(channel: Channel, event: str, data: Any) -> None:
            if data == 5:
                await producer.publish("jobs", "job", "late")
            done.append(data)

        async with handler(broker, recheck_interval=60, ack_wait=120) as member:
            await member.register("jobs", "*", work, group="workers", since="all")
            await eventually(lambda: "late" in done)
    assert done == [*range(10), "late"]


async def test_an_event_claimed_past_max_deliver_is_buried_not_run(broker: Harness) -> None:
    """Members that took an event and died (or hung) on it, max_deliver times: the
    next member to claim it dead-letters it without running it (it could take that
    member down too)."""
    worker = Worker()
    async with handler(broker) as producer:
        await producer.publish("jobs", "job", "deadly")
        key = f"{NS}:jobs"
        # Three ghosts took it in turn and never acknowledged it.
        if isinstance(broker, MemoryHarness):
            broker.hub.group_create(key, "workers", "0")
            broker.hub.group_read(key, "workers", "ghost", 10)
            for _ in range(2):
                broker.hub.group_claim(key, "workers", "ghost", 0, "0-0", 10)
        else:
            assert isinstance(broker, RedisHarness)
            client = broker.server.client()
            client.xgroup_create(key, "workers", id="0")
            [[_, [(entry_id, _)]]] = client.xreadgroup("workers", "ghost", {key: ">"})
            for _ in range(2):
                client.xclaim(key, "workers", "ghost", 0, [entry_id])
        assert pending(broker) == 1
        async with handler(broker, max_deliver=3, ack_wait=0.05) as member:
            log = await watched(member)
            await member.register("jobs", "*", worker, group="workers")
            await eventually(lambda: "dead_letter" in log.names)
            dead = log.last("dead_letter")
            assert dead["deliveries"] == 4
            assert "without an acknowledgement" in dead["error"]
            await producer.publish("jobs", "job", "fine")
            await eventually(lambda: worker.done == ["fine"])  # never "deadly"
        assert pending(broker) == 0


async def test_closing_hands_back_at_once_what_was_taken_and_not_started(
    broker: Harness,
) -> None:
    """A member closing while a callback runs gives the rest of its batch back
    before it waits for that callback: another member takes them now."""
    slow = Stuck()
    other = Worker()
    async with handler(broker) as producer:
        for n in range(3):
            await producer.publish("jobs", "job", n)
        async with handler(broker, recheck_interval=0.05) as survivor:
            async with anyio.create_task_group() as tg:
                closing = handler(broker, close_timeout=30)
                async with closing:
                    # It takes all three, and hangs on the first.
                    await closing.register("jobs", "*", slow, group="workers", since="all")
                    await eventually(lambda: slow.taken == [0])
                    await survivor.register("jobs", "*", other, group="workers")
                    tg.start_soon(closing.close)
                    # Handed back while 0 is still running: the survivor has them.
                    await eventually(lambda: sorted(other.done) == [1, 2])
                    slow.release.set()
            assert slow.taken == [0]
        await eventually(lambda: pending(broker) == 0)


async def test_an_iterator_giving_up_an_event_another_callback_did_does_not_repeat_it(
    broker: Harness,
) -> None:
    worker = Worker()
    async with handler(broker) as member, handler(broker) as producer:
        await member.register("jobs", "*", worker, group="workers")
        with anyio.CancelScope() as scope:
            async with member.subscribe("jobs", group="workers") as jobs:
                await producer.publish("jobs", "job", 0)
                await jobs.receive()
                scope.cancel()  # the consumer gives it up, cancelled at its next await
                await anyio.sleep(1)
        await producer.publish("jobs", "job", 1)
        await eventually(lambda: worker.done == [0, 1])
        await eventually(lambda: pending(broker) == 0)
        assert worker.done == [0, 1]  # 0 once: the callback did it


async def test_an_iterator_cancelled_with_an_event_in_hand_counts_the_delivery(
    broker: Harness,
) -> None:
    async with handler(broker) as member, handler(broker) as producer:
        await producer.publish("jobs", "job", 0)
        with anyio.CancelScope() as scope:
            async with member.subscribe("jobs", group="workers", since="all") as jobs:
                assert (await jobs.receive()).deliveries == 1
                scope.cancel()
                await anyio.sleep(1)  # cancelled here, with the event in hand
        async with member.subscribe("jobs", group="workers") as jobs:
            again = await jobs.receive()
        assert (again.data, again.deliveries) == (0, 2)


async def test_unregister_checks_the_group_name_and_ack_wait_must_be_finite(
    broker: Harness,
) -> None:
    async with handler(broker) as member:
        with pytest.raises(ValueError, match="group name"):
            await member.unregister("jobs", "*", print, group="")
    with pytest.raises(ValueError, match="ack_wait"):
        handler(broker, ack_wait=float("inf"))


async def test_a_publisher_that_forgets_durable_is_named_in_one_warning(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The group gets nothing (the event was never stored): the member says why once."""
    with caplog.at_level(logging.WARNING, "tidings"):
        async with handler(broker) as member, handler(broker, durable=()) as careless:
            await member.register("jobs", "*", Worker(), group="workers")
            for n in range(3):
                await careless.publish("jobs", "job", n)
            await eventually(lambda: member.stats().decode_errors == 3)
    hints = [r for r in caplog.records if "does not declare the channel durable" in r.message]
    assert len(hints) == 1


async def test_close_lets_the_job_in_hand_finish_and_acknowledges_it(broker: Harness) -> None:
    """Within close_timeout, longer than the one-second cleanup bound: the job in hand
    finishes during a clean close and is acknowledged, not done again elsewhere."""
    started, finished = anyio.Event(), []

    async def slow(channel: Channel, event: str, data: Any) -> None:
        started.set()
        await anyio.sleep(1.5)
        finished.append(data)

    async with handler(broker) as producer:
        async with handler(broker, close_timeout=4.0) as member:
            await member.register("jobs", "*", slow, group="workers")
            await producer.publish("jobs", "job", 1)
            with anyio.fail_after(10):
                await started.wait()
        assert finished == [1]
        assert member.stats().acked == 1
        assert pending(broker) == 0


async def test_consumers_left_by_killed_processes_are_removed_once_idle(
    broker: Harness,
) -> None:
    """A consumer that holds nothing and has been idle past 10 x ack_wait is gone; the
    live member (it reads every claim interval, so it is never that idle) stays."""
    key = f"{NS}:jobs"
    async with handler(broker, ack_wait=0.05) as member, handler(broker) as producer:
        await member.register("jobs", "*", Worker(), group="workers")
        await producer.publish("jobs", "job", 1)
        await eventually(lambda: member.stats().acked == 1)
        # A consumer a killed process left, holding nothing.
        if isinstance(broker, MemoryHarness):
            broker.hub.group_read(key, "workers", "ghost-idle", 10)
        else:
            assert isinstance(broker, RedisHarness)
            client = broker.server.client()
            client.xgroup_createconsumer(key, "workers", "ghost-idle")
        assert consumers(broker) == 2
        await eventually(lambda: consumers(broker) == 1, limit=10)  # the ghost went
        await producer.publish("jobs", "job", 2)  # the live member is still in the group
        await eventually(lambda: member.stats().acked == 2)


async def test_a_hung_job_costs_its_own_deliveries_not_the_group(broker: Harness) -> None:
    """An async callback still running at ack_wait is cancelled: that delivery failed
    (here: dead-lettered after max_deliver); the events taken with it, and the other
    members, carry on, each event done once."""
    cancelled: list[Any] = []
    done: list[Any] = []

    async def hangs_on_poison(channel: Channel, event: str, data: Any) -> None:
        if data == "poison":
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(data)
                raise
        done.append(data)

    async with (
        members(broker, 2, ack_wait=0.3, max_deliver=2) as handlers,
        handler(broker) as producer,
    ):
        log = await watched(handlers[0])
        log_b = await watched(handlers[1])
        for member in handlers:
            await member.register("jobs", "*", hangs_on_poison, group="workers")
        await producer.publish("jobs", "job", "poison")
        for n in range(20):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: sorted(done, key=str) == sorted(range(20), key=str), limit=15)
        await eventually(lambda: "dead_letter" in log.names + log_b.names, limit=15)
        assert cancelled == ["poison", "poison"]  # one cancelled delivery each time
        await eventually(lambda: pending(broker) == 0)
    assert sorted(done) == list(range(20))  # each once: none claimed while it waited
    [dead] = dead_letters(broker)
    assert b"ran past ack_wait" in dead["error"]


async def test_settle_covers_the_groups(broker: Harness) -> None:
    """settle() returns once every entry in the group's log when it was called is
    acknowledged, dead-lettered, or waiting out a retry delay: no polling in tests."""
    done: list[Any] = []

    async def slowish(channel: Channel, event: str, data: Any) -> None:
        await anyio.sleep(0.002)
        if data == "later":
            raise Retry(delay=60)  # scheduled: settled as far as settle() goes
        done.append(data)

    async with handler(broker) as member, handler(broker) as producer:
        await member.register("jobs", "*", slowish, group="workers")
        for n in range(30):
            await producer.publish("jobs", "job", n)
        await producer.publish("jobs", "job", "later")
        with anyio.fail_after(20):
            await tidings.testing.settle(member)
        assert sorted(done) == list(range(30))
        assert pending(broker) == 0
        assert member.stats().retries == 1


async def test_nothing_spins_when_the_group_or_redis_goes() -> None:
    """The group destroyed, its log deleted, FLUSHALL: recreated and reported each
    time; Redis down: the member waits on its back-off, using no measurable CPU."""
    server = RedisServer()
    try:
        key = f"{NS}:jobs"
        options: dict[str, Any] = {
            "namespace": NS,
            "durable": {"jobs": Retention()},
            "backoff": tidings.Backoff(initial=0.05, cap=0.2),
            "connect_timeout": 0.5,
            "ack_wait": 1.0,
        }
        worker = Worker()
        async with Channels(server.url, **options) as member:
            log = await watched(member)
            await member.register("jobs", "*", worker, group="workers")
            for fault in (
                lambda: server.client().xgroup_destroy(key, "workers"),
                lambda: server.client().delete(key),
                lambda: server.client().flushall(),
            ):
                gaps = log.names.count("gap")
                fault()
                await eventually(lambda g=gaps: log.names.count("gap") > g, limit=10)
                assert log.last("gap")["reason"] == "deleted"
            connections = log.names.count("connected")
            server.kill()
            await eventually(lambda: "disconnected" in log.names)
            before = time.process_time()
            await anyio.sleep(1.5)
            assert time.process_time() - before < 0.5  # (a spinning loop takes ~1.5)
            server.start()  # empty: the group is gone again (a gap after connected)
            await eventually(lambda: log.names.count("connected") > connections, limit=10)
            async with Channels(server.url, **options) as producer:
                await producer.publish("jobs", "job", "after")
            await eventually(lambda: "after" in worker.done, limit=10)
    finally:
        server.close()


async def test_a_deleted_group_says_how_many_events_went_with_it(broker: Harness) -> None:
    """The group's backlog (pending and not handed out) at its last look is what a
    ``deleted`` gap reports lost."""
    stuck = Stuck()
    key = f"{NS}:jobs"
    async with handler(broker, ack_wait=0.2) as member, handler(broker) as producer:
        log = await watched(member)
        await member.register("jobs", "*", stuck, group="workers")
        for n in range(5):
            await producer.publish("jobs", "job", n)
        await eventually(lambda: stuck.taken == [0])  # one in hand, more waiting
        if isinstance(broker, MemoryHarness):
            broker.hub.delete_log(key)
        else:
            assert isinstance(broker, RedisHarness)
            broker.server.client().delete(key)
        stuck.release.set()
        await eventually(lambda: "gap" in log.names, limit=10)
        gap = log.last("gap")
        assert gap["reason"] == "deleted"
        # A look at the group came before the first read: the count is known.
        assert gap["lost"] is not None
