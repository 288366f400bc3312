"""Faults in the batched paths: publish_many, the work-queue read ahead, and the
durable live stream's fast path.

Each test pins a defect an independent review found in their first version (every
one failed then): a script refused or reloaded mid-batch, a member closing or losing
its connection with a read ahead in flight, acks refused BUSY, ids only the careful
parser refuses, a cluster without its slot map. Real redis-server processes; both
anyio backends.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import anyio
import pytest
import redis

import tidings
from tests.helpers import FAST, Harness, Recorder, eventually
from tests.redis_server import RedisServer
from tidings import Channel, Channels, PublishError, Retention
from tidings.brokers.redis import APPEND, RedisPublisher

pytestmark = pytest.mark.anyio


def fresh(prefix: str = "r26") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- publish_many -------------------------------------------------------------------------


@pytest.mark.redis
async def test_publish_many_outcomes_stay_aligned_when_scripting_is_refused_meanwhile(
    redis_server: RedisServer,
) -> None:
    """`_Commands.send_many` reads ``self._scripting`` *after* awaiting the replies
    ("as the commands were made", says the comment, but it is not). A concurrent
    durable publish on the same connection that meets NOPERM flips it to False in
    between: the durable item of the batch is then redone by commands without its
    EVALSHA reply being consumed, and every later item takes the reply of the item
    before it. Here the plain item (published fine) is reported refused."""
    namespace = fresh()
    url = redis_server.user("r26noscript", "-@scripting")
    failures: list[str] = []
    for attempt in range(16):  # a fresh connection each time: it still tries scripts
        async with Channels(url, namespace=f"{namespace}-{attempt}", durable=["d"]) as channels:

            async def single(channels: Channels = channels) -> None:
                await channels.publish("d", "e", "single")

            async def many(channels: Channels = channels) -> None:
                try:
                    await channels.publish_many([("d", "e", "batch"), ("plain", "e", "p")])
                except PublishError as exc:
                    failures.append(str(exc))

            async with anyio.create_task_group() as tg:
                tg.start_soon(single)
                tg.start_soon(many)
    assert failures == [], failures[:1]


@pytest.mark.redis
async def test_publish_many_keeps_a_channels_order_when_the_script_is_loaded_mid_batch(
    redis_server: RedisServer,
) -> None:
    """After a restart (script cache empty) every EVALSHA of a batch fails NOSCRIPT
    and is redone, in order, after the batch. But the batch is one long write that
    Redis reads in chunks, serving other clients in between: when another client
    loads the script meanwhile (another producer's EVAL after the same restart), the
    later items of the batch succeed in place and the earlier ones are appended
    after them: the channel's log is out of publish order."""
    namespace = fresh()
    admin = redis_server.client()
    async with Channels(redis_server.url, namespace=namespace, durable=["d"]) as channels:
        await channels.publish("d", "e", -1)  # loaded ...
        admin.script_flush()  # ... and forgotten, as after a restart
        stop = threading.Event()
        before = admin.info("commandstats").get("cmdstat_evalsha", {})
        refused = before.get("failed_calls", 0) + before.get("rejected_calls", 0)

        def other_producer() -> None:
            # Another producer's first publish after the restart: EVAL (loading the
            # script) once our batch has begun to fail NOSCRIPT.
            client = redis_server.client()
            deadline = time.monotonic() + 10
            while not stop.is_set() and time.monotonic() < deadline:
                stats = client.info("commandstats").get("cmdstat_evalsha", {})
                if stats.get("failed_calls", 0) + stats.get("rejected_calls", 0) > refused:
                    client.script_load(APPEND.source)
                    return

        thread = threading.Thread(target=other_producer)
        thread.start()
        try:
            pad = "x" * 2000
            items = [("d", "e", {"n": n, "pad": pad}) for n in range(4000)]
            await channels.publish_many(items)
        finally:
            stop.set()
            thread.join()
    entries: Any = admin.xrange(f"{namespace}:d")
    data = [json.loads(f[b"envelope"])["data"] for _, f in entries]
    order = [d if d == -1 else d["n"] for d in data]
    assert order == [-1, *range(4000)], [
        (i, n) for i, n in enumerate(order) if i and n != order[i - 1] + 1
    ][:3]


@pytest.mark.redis
async def test_publish_many_timing_out_counts_each_event_as_a_publish_error() -> None:
    """A lost connection counts ``publish_errors`` once per item (and publish() once
    per event), but publish_many timing out while disconnected counts one for the
    whole batch."""
    server = RedisServer()
    try:
        async with Channels(server.url, namespace=fresh(), publish_timeout=0.2) as channels:
            server.kill()
            await eventually(lambda: channels.status is tidings.StatusType.disconnected)
            with pytest.raises(PublishError, match="not connected"):
                await channels.publish_many([("c", "e", n) for n in range(5)])
            assert channels.stats().publish_errors == 5
    finally:
        server.close()


# -- work queues: the read ahead -----------------------------------------------------------


def _handler(url: str, namespace: str, **options: Any) -> Channels:
    options.setdefault("durable", {"jobs": Retention(max_len=100_000)})
    options.setdefault("backoff", FAST)
    options.setdefault("retry_backoff", None)
    return Channels(url, namespace=namespace, **options)


class _Stuck:
    def __init__(self) -> None:
        self.taken: list[Any] = []
        self.release = anyio.Event()

    async def __call__(self, channel: Channel, event: str, data: Any) -> None:
        self.taken.append(data)
        await self.release.wait()


class _Worker:
    def __init__(self) -> None:
        self.done: list[Any] = []

    def __call__(self, channel: Channel, event: str, data: Any) -> None:
        self.done.append(data)


async def test_closing_hands_back_the_read_ahead_at_once_too(broker: Harness) -> None:
    """DESIGN, graceful drain: closing "hands back what was taken and not started"
    at once. A full first read (10) makes the member read ahead (10 more, pending
    for it on the broker) before it works the batch; `leave()` hands back only the
    queue: the read-ahead entries wait for the callback in hand, and, when it
    outlives close_timeout, for ack_wait (30 s) on another member."""
    namespace = fresh("r26g")
    url = broker.url
    slow, other = _Stuck(), _Worker()
    async with _handler(url, namespace) as producer:
        await producer.publish_many([("jobs", "job", n) for n in range(20)])
        async with (
            _handler(url, namespace, recheck_interval=0.05) as survivor,
            anyio.create_task_group() as tg,
        ):
            closing = _handler(url, namespace, close_timeout=30)
            async with closing:
                await closing.register("jobs", "*", slow, group="workers", since="all")
                await eventually(lambda: slow.taken == [0])
                await survivor.register("jobs", "*", other, group="workers")
                tg.start_soon(closing.close)
                # Everything but the one in hand, while it still runs.
                with anyio.move_on_after(3):
                    while sorted(other.done) != list(range(1, 20)):
                        await anyio.sleep(0.01)
                got = sorted(other.done)
                slow.release.set()
                assert got == list(range(1, 20)), f"survivor got only {got}"


@pytest.mark.redis
async def test_a_batch_in_hand_is_worked_when_the_read_ahead_cannot_be_sent(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_round` asks the read ahead *after* the batch came back and *before* working
    it; if that ask fails (the connection dropped right then) the exception leaves
    `_round` and the batch already received is dropped: never run, never handed
    back, pending until ack_wait. With max_deliver=1 the next claim (delivery 2)
    dead-letters all of it without ever running it. (Before the read ahead, the
    batch was worked and its acks deferred.)

    The connection is really cut (CLIENT KILL) at that moment; the wrapper only
    times it."""
    namespace = fresh("r26g")
    admin = redis_server.client()
    original = RedisPublisher.read_ahead
    calls = 0

    async def read_ahead(self: RedisPublisher, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the read ahead after the first (full) batch came back
            admin.client_kill_filter(_type="normal", skipme=True)
            with anyio.fail_after(5):
                while self._error is None:
                    await anyio.sleep(0.001)
        return await original(self, *args, **kwargs)

    worker = _Worker()
    async with _handler(redis_server.url, namespace) as producer:
        await producer.publish_many([("jobs", "job", n) for n in range(20)])
        monkeypatch.setattr(RedisPublisher, "read_ahead", read_ahead)
        async with _handler(
            redis_server.url, namespace, ack_wait=1, max_deliver=1, recheck_interval=0.1
        ) as member:
            await member.register("jobs", "*", worker, group="workers", since="all")
            await eventually(lambda: calls >= 2)
            await anyio.sleep(2.5)  # past ack_wait, and a claim round
        assert sorted(worker.done) == list(range(20))
        assert admin.xlen(f"{namespace}:jobs:dead") == 0


@pytest.mark.redis
async def test_acks_refused_busy_are_sent_again_not_dropped(
    redis_server: RedisServer,
) -> None:
    """An XACK refused with a transient reply (BUSY: a long script runs) is dropped
    as if the group were gone (`_flush`; and in `_answer` when the read that went
    with it is refused too, without a word): the events were done, stay pending, and
    are run again after ack_wait."""
    namespace = fresh("r26g")
    admin = redis_server.client()
    admin.config_set("busy-reply-threshold", 20)
    busy_started = threading.Event()

    def busy() -> None:
        client = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10)
        script = (
            "local t0 = redis.call('TIME') "
            "local start = t0[1] * 1000000 + t0[2] "
            "while true do local t = redis.call('TIME') "
            "if t[1] * 1000000 + t[2] - start > 1000000 then break end end return 1"
        )
        busy_started.set()
        client.eval(script, 0)

    runs: Counter[Any] = Counter()
    order: list[Any] = []
    t0 = time.monotonic()

    def job(channel: Channel, event: str, data: Any) -> None:
        runs[data] += 1
        order.append((round(time.monotonic() - t0, 2), data))
        if data == 9 and runs[data] == 1:  # the last of the first batch: Redis turns busy
            threading.Thread(target=busy, daemon=True).start()
            busy_started.wait(5)
            probe = redis_server.client()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    probe.ping()
                except Exception as exc:
                    if "BUSY" in str(exc):
                        return
                time.sleep(0.005)

    try:
        async with _handler(redis_server.url, namespace) as producer:
            await producer.publish_many([("jobs", "job", n) for n in range(20)])
            async with _handler(
                redis_server.url, namespace, ack_wait=3, recheck_interval=0.1
            ) as member:
                await member.register("jobs", "*", job, group="workers", since="all")
                await eventually(lambda: len(runs) == 20)
                await anyio.sleep(4.5)  # busy for 1 s; then past ack_wait, claim rounds
        assert {n: c for n, c in runs.items() if c != 1} == {}, f"{order}"
    finally:
        admin.config_set("busy-reply-threshold", 5000)


# -- the durable live fast path ------------------------------------------------------------


@pytest.mark.redis
async def test_the_live_fast_path_refuses_the_ids_the_careful_path_refuses(
    redis_server: RedisServer,
) -> None:
    """A live message whose id only a lax parser would read (a sequence past 64 bits)
    would be a position past every real id: every later event of the channel passed
    over. Both paths count it a decode error and go on."""
    namespace = fresh()
    admin = redis_server.client()
    recorder = Recorder()
    async with Channels(redis_server.url, namespace=namespace, durable=["d"]) as channels:
        await channels.register("d", "*", recorder)
        await channels.publish("d", "e", 1)  # the first dispatch: the fast path from now on
        await eventually(lambda: recorder.data == [1])
        envelope = json.dumps({"channel": "d", "event": "e", "data": "bogus"}).encode()
        admin.publish(f"{namespace}:d", b"1-" + b"9" * 40 + b" " + envelope)
        await channels.publish("d", "e", 2)
        await eventually(lambda: recorder.data == [1, 2])
        assert channels.stats().decode_errors == 1
