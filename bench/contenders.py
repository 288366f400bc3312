"""The contenders. Each run is a fresh process: ``python -m bench.contenders SPEC``.

SPEC is JSON ``{"scenario", "contender", "port", "n", ...}`` plus the case's
parameters (``channels``, ``publishers``, ``size``, ``mode``, ``trace``). The process
prints ``ready`` when it is subscribed (where that applies) and, at the end, one JSON
line with its measurements, or ``{"skipped": reason}`` when the library it imports
lacks what the contender needs, or a peer library is not installed (the ``bench``
extra: coredis, FastStream, broadcaster, taskiq-redis; see bench/peers.py). Every
result from a process that imported tidings names the file it came from
(``tidings``): the evidence of which tree ran. A member of the work-queue scenario
(``jobs``) is one of several such processes, driven by the harness through its
standard input (see section 7).

Every contender that reports a rate also reports ``cpu_us_per_msg``: the process's
CPU time (``time.process_time()``, all threads) over its timed section, per message.

No contender sees the OpenTelemetry API, even where it is installed (the test
environment has it): `without_opentelemetry` makes it unimportable at the start of
every contender process, before anything imports tidings (or redis-py and coredis,
which look for it too), so every library runs as it does where the API is absent
and the ratios against peers mean what they meant. Only the ``telemetry`` scenario
says otherwise, per contender (see section 8).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from bench.peers import broadcaster_subscribe, missing_peer, wait_subscribed

CHANNEL = "bench:chan"
EVENT = {"channel": "chan", "event": "tick", "data": {"n": 1, "text": "hello world"}}
PAYLOAD = json.dumps(EVENT, separators=(",", ":"))
# receive-spread: channel i is SPREAD:<i, 12 digits zero-padded>, as redis-benchmark
# writes __rand_int__ with -r K (uniform in [0, K)).
SPREAD = "spread"
SPREAD_PREFIX = f"bench:{SPREAD}:"


def spread_channel(i: int) -> str:
    """The name (without namespace) that redis-benchmark's ``__rand_int__`` gives for i."""
    return f"{SPREAD}:{i:012d}"


def sized_event(size: int) -> dict[str, Any]:
    """An event like EVENT whose compact JSON envelope is ``size`` bytes (at least 58)."""
    empty = {"channel": "chan", "event": "tick", "data": {"n": 1, "text": ""}}
    pad = max(0, size - len(json.dumps(empty, separators=(",", ":"))))
    return {"channel": "chan", "event": "tick", "data": {"n": 1, "text": "x" * pad}}


def sized_payload(size: int) -> str:
    return json.dumps(sized_event(size), separators=(",", ":"))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_us(seconds: float, count: int) -> float:
    return seconds * 1e6 / max(1, count)


class Counter:
    """Counts received events; notes the first and last arrival, and CPU time.

    The rate runs from the first arrival to the last; the CPU time from :meth:`arm`
    (called just before ``ready``: the consumer is then paused until the messages
    wait for it, so nothing else runs) to the last arrival, so that the parsing of the
    first read is counted too.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.cpu_start = 0.0
        self.cpu_last = 0.0
        self.done = anyio.Event()

    def arm(self) -> None:
        self.cpu_start = time.process_time()

    def hit(self) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += 1
        if self.count == self.n:
            self.finish()

    def finish(self) -> None:
        self.last = time.perf_counter()
        self.cpu_last = time.process_time()
        self.done.set()

    def result(self) -> dict[str, Any]:
        seconds = self.last - self.first
        return {
            "events": self.count,
            "seconds": seconds,
            "rate": self.count / seconds,
            "cpu_us_per_msg": cpu_us(self.cpu_last - self.cpu_start, self.count),
        }


def _url(spec: dict[str, Any]) -> str:
    return f"redis://127.0.0.1:{spec['port']}"


def handler_options(spec: dict[str, Any]) -> dict[str, Any]:
    """Options of the contender's ``Channels``: ``telemetry=False`` when the spec says
    so (the ``telemetry`` scenario), nothing otherwise (an older tree may lack it)."""
    return {"telemetry": False} if spec.get("telemetry") is False else {}


# -- 1. receive throughput (one channel, any payload size; or spread over many) --------------


async def receive_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    counter = Counter(spec["n"])
    async with tidings.open_channels(
        _url(spec), namespace="bench", max_pending=10**7, **handler_options(spec)
    ) as channels:

        def on_tick(channel: Any, event: str, data: Any) -> None:
            counter.hit()

        await channels.register("chan", "tick", on_tick)
        counter.arm()
        say("ready")
        await counter.done.wait()
        assert channels.stats().dropped == 0
    return counter.result()


async def _drain_redis_py(client: Any, pubsub: Any, counter: Counter) -> dict[str, Any]:
    """Say ready, then decode and check every message until ``counter`` is full."""
    counter.arm()
    say("ready")
    loads = json.loads
    while counter.count < counter.n:
        message = await pubsub.get_message(timeout=None)
        if message is not None and message["type"] == "message":
            event = loads(message["data"])
            if event["event"] == "tick":
                counter.hit()
    await pubsub.aclose()
    await client.aclose()
    return counter.result()


async def receive_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    counter = Counter(spec["n"])
    client = redis.asyncio.Redis(port=spec["port"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    return await _drain_redis_py(client, pubsub, counter)


async def receive_coredis(spec: dict[str, Any]) -> dict[str, Any]:
    import coredis

    counter = Counter(spec["n"])
    loads = json.loads
    async with (
        coredis.Redis(port=spec["port"]) as client,
        client.pubsub(channels=[CHANNEL]) as pubsub,
    ):
        counter.arm()
        say("ready")
        async for message in pubsub:
            if message["type"] == "message":
                event = loads(message["data"])
                if event["event"] == "tick":
                    counter.hit()
                    if counter.count == counter.n:
                        break
    return counter.result()


async def receive_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """anyio + hiredis.Reader, no decoding at all: the practical limit."""
    import hiredis

    counter = Counter(spec["n"])
    stream = await anyio.connect_tcp("127.0.0.1", spec["port"])
    reader = hiredis.Reader()
    await stream.send(f"SUBSCRIBE {CHANNEL}\r\n".encode())
    reader.feed(await stream.receive())
    assert reader.gets()[0] == b"subscribe"
    counter.arm()
    say("ready")
    n = counter.n
    while counter.count < n:
        reader.feed(await stream.receive(65536))
        while reader.gets() is not False:
            if counter.count == 0:
                counter.first = time.perf_counter()
            counter.count += 1
    counter.finish()
    await stream.aclose()
    return counter.result()


def faststream_broker(spec: dict[str, Any]) -> Any:
    """A FastStream ``RedisBroker`` as an application would run it, but with the
    per-message access log lines (INFO "Received" / "Processed", FastStream's default)
    at DEBUG, below the logger's level, as in bench/web.py: a production setting, and
    no log I/O timed. Its warnings go to standard error (FastStream's access logger
    writes to standard output, where a contender says only ``ready`` and its result)."""
    from faststream.redis import RedisBroker

    logger = logging.getLogger("bench.faststream")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.setLevel(logging.WARNING)  # its start and stop lines too
        logger.propagate = False
    return RedisBroker(_url(spec), logger=logger, log_level=logging.DEBUG)


async def receive_faststream(spec: dict[str, Any]) -> dict[str, Any]:
    """FastStream's Redis pub/sub subscriber (asyncio only: FastStream runs on asyncio).

    The handler is typed ``dict[str, Any]``, as FastStream's documentation writes
    one: FastStream decodes the JSON (the events come from redis-benchmark, as for
    every contender: no FastStream headers) and validates it against the annotation;
    the handler checks the event name. (A message not in FastStream's own format is
    JSON-decoded twice more by its parser, looking for its legacy envelope: about 5%
    of its time per message here; most goes to its per-message machinery.)
    """
    counter = Counter(spec["n"])
    broker = faststream_broker(spec)

    async def on_tick(body: dict[str, Any]) -> None:
        if body["event"] == "tick":
            counter.hit()

    # (FastStream reads the annotation; this module's are strings, so given here.)
    on_tick.__annotations__ = {"body": dict[str, Any], "return": None}
    broker.subscriber(CHANNEL)(on_tick)
    async with broker:
        await broker.start()
        wait_subscribed(spec["port"], CHANNEL)
        counter.arm()
        say("ready")
        await counter.done.wait()
    return counter.result()


async def receive_broadcaster(spec: dict[str, Any]) -> dict[str, Any]:
    """broadcaster's Redis backend (redis-py's asyncio PubSub underneath), iterated as
    its documentation shows; each event's message JSON-decoded and its name checked.
    `broadcaster_subscribe` makes it deliver with redis-py 8 (see bench/peers.py)."""
    from broadcaster import Broadcast

    counter = Counter(spec["n"])
    loads = json.loads
    async with (
        Broadcast(_url(spec)) as broadcast,
        broadcaster_subscribe(broadcast, CHANNEL) as subscriber,
    ):
        wait_subscribed(spec["port"], CHANNEL)
        counter.arm()
        say("ready")
        async for event in subscriber:
            if loads(event.message)["event"] == "tick":
                counter.hit()
                if counter.count == counter.n:
                    break
    return counter.result()


async def spread_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """One ``register(channel, "*", callback)`` per channel, all at once."""
    import tidings

    counter = Counter(spec["n"])
    k = spec["channels"]
    async with tidings.open_channels(_url(spec), namespace="bench", max_pending=10**7) as channels:

        def on_event(channel: Any, event: str, data: Any) -> None:
            if event == "tick":
                counter.hit()

        names = [spread_channel(i) for i in range(k)]
        register_many = getattr(channels, "register_many", None)
        if register_many is not None:
            await register_many([(name, "*", on_event) for name in names])
        else:
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(channels.register, name, "*", on_event)
        counter.arm()
        say("ready")
        await counter.done.wait()
        assert channels.stats().dropped == 0
    result = counter.result()
    result["register_many"] = int(register_many is not None)
    return result


async def spread_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    counter = Counter(spec["n"])
    k = spec["channels"]
    client = redis.asyncio.Redis(port=spec["port"])
    pubsub = client.pubsub()
    await pubsub.subscribe(*(f"bench:{spread_channel(i)}" for i in range(k)))
    confirmed = 0
    while confirmed < k:  # every subscription confirmed before "ready"
        message = await pubsub.get_message(timeout=None)
        if message is not None and message["type"] == "subscribe":
            confirmed += 1
    return await _drain_redis_py(client, pubsub, counter)


# -- 2. publish throughput ----------------------------------------------------------------


async def _publishers(
    n: int, publishers: int, publish: Callable[[int], Awaitable[Any]]
) -> dict[str, Any]:
    per_task = max(1, n // publishers)
    cpu_started = time.process_time()
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(publishers):

            async def run() -> None:
                for i in range(per_task):
                    await publish(i)

            tg.start_soon(run)
    seconds = time.perf_counter() - started
    events = per_task * publishers
    return {
        "events": events,
        "seconds": seconds,
        "rate": events / seconds,
        "cpu_us_per_msg": cpu_us(time.process_time() - cpu_started, events),
    }


def _publish_event(spec: dict[str, Any]) -> dict[str, Any]:
    size = spec.get("size")
    return sized_event(size) if size else EVENT


async def publish_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain, or durable (``-durable`` contenders: the default retention); with
    ``redis_cpu``, also the redis-server's CPU time per publish."""
    import tidings

    if durable(spec):
        forget_log(spec["port"])
    options = durable_options(tidings, spec) | handler_options(spec)
    async with tidings.open_channels(_url(spec), namespace="bench", **options) as ch:
        await ch.connect()
        data = _publish_event(spec)["data"]

        async def publish(i: int) -> None:
            await ch.publish("chan", "tick", data)

        server_cpu = redis_cpu_seconds(spec["port"]) if spec.get("redis_cpu") else None
        result = await _publishers(spec["n"], spec.get("publishers", 10), publish)
        if server_cpu is not None:
            server_cpu = redis_cpu_seconds(spec["port"]) - server_cpu
            result["redis_cpu_us_per_msg"] = cpu_us(server_cpu, result["events"])
        return result


#: The envelope as tidings sends it: compact JSON (docs/wire-format.md).
COMPACT = (",", ":")


async def publish_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=spec["port"])
    data = _publish_event(spec)["data"]
    dumps = json.dumps

    async def publish(i: int) -> None:
        envelope = {"channel": "chan", "event": "tick", "data": data}
        await client.publish(CHANNEL, dumps(envelope, separators=COMPACT))

    try:
        return await _publishers(spec["n"], spec.get("publishers", 10), publish)
    finally:
        await client.aclose()


async def publish_coredis(spec: dict[str, Any]) -> dict[str, Any]:
    import coredis

    data = _publish_event(spec)["data"]
    dumps = json.dumps
    async with coredis.Redis(port=spec["port"]) as client:

        async def publish(i: int) -> None:
            envelope = {"channel": "chan", "event": "tick", "data": data}
            await client.publish(CHANNEL, dumps(envelope, separators=COMPACT))

        return await _publishers(spec["n"], spec.get("publishers", 10), publish)


async def publish_faststream(spec: dict[str, Any]) -> dict[str, Any]:
    """``broker.publish(envelope, channel=...)``: FastStream encodes the same envelope
    (a dict) as JSON and sends it in its own message format (binary, with its
    headers: a correlation id and the content type), one PUBLISH each, awaited."""
    broker = faststream_broker(spec)
    data = _publish_event(spec)["data"]
    async with broker:
        await broker.connect()

        async def publish(i: int) -> None:
            await broker.publish({"channel": "chan", "event": "tick", "data": data}, CHANNEL)

        return await _publishers(spec["n"], spec.get("publishers", 10), publish)


# -- 2b. publish many: a batch of events in one call ----------------------------------------
#
# n events published in calls of ``batch`` items each, one call after another (and each
# awaited): tidings' ``publish_many`` against pipelines of the same PUBLISH commands with
# the same compact JSON envelope, encoded item by item as a caller of each would. Each
# call returns the receiver counts in order, and their number is checked.


async def _batches(
    n: int, batch: int, call: Callable[[int], Awaitable[list[Any] | tuple[Any, ...]]]
) -> dict[str, Any]:
    calls = max(1, n // batch)
    cpu_started = time.process_time()
    started = time.perf_counter()
    for _ in range(calls):
        counts = await call(batch)
        if len(counts) != batch:
            raise RuntimeError(f"{len(counts)} receiver counts for {batch} events")
    seconds = time.perf_counter() - started
    events = calls * batch
    return {
        "events": events,
        "calls": calls,
        "seconds": seconds,
        "rate": events / seconds,
        "cpu_us_per_msg": cpu_us(time.process_time() - cpu_started, events),
    }


async def publish_many_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """``await channels.publish_many([(channel, event, data), ...])``."""
    import tidings

    if not hasattr(tidings.Channels, "publish_many"):
        return {"skipped": "this tidings has no Channels.publish_many"}
    data = EVENT["data"]
    async with tidings.open_channels(_url(spec), namespace="bench", **handler_options(spec)) as ch:
        await ch.connect()

        def call(k: int) -> Awaitable[list[int]]:
            return ch.publish_many([("chan", "tick", data) for _ in range(k)])

        return await _batches(spec["n"], spec["batch"], call)


async def publish_many_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    """redis-py's asyncio pipeline (``transaction=False``) of PUBLISH commands."""
    import redis.asyncio

    client = redis.asyncio.Redis(port=spec["port"])
    await client.ping()
    data = EVENT["data"]
    dumps = json.dumps

    async def call(k: int) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for _ in range(k):
            envelope = {"channel": "chan", "event": "tick", "data": data}
            pipe.publish(CHANNEL, dumps(envelope, separators=COMPACT))
        return await pipe.execute()

    try:
        return await _batches(spec["n"], spec["batch"], call)
    finally:
        await client.aclose()


async def publish_many_coredis(spec: dict[str, Any]) -> dict[str, Any]:
    """coredis's pipeline (``transaction=False``): the commands go out, and their
    replies are read, when its ``async with`` block ends."""
    import coredis

    data = EVENT["data"]
    dumps = json.dumps
    async with coredis.Redis(port=spec["port"]) as client:
        await client.ping()

        async def call(k: int) -> tuple[Any, ...]:
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(k):
                    envelope = {"channel": "chan", "event": "tick", "data": data}
                    pipe.publish(CHANNEL, dumps(envelope, separators=COMPACT))
            return pipe.results or ()

        return await _batches(spec["n"], spec["batch"], call)


async def publish_many_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """The practical limit: one PUBLISH command, encoded once, sent ``batch`` times in
    one write on an anyio socket; the replies parsed by ``hiredis.Reader``. No JSON and
    no framing per event: what the socket and Redis allow."""
    import hiredis

    stream = await anyio.connect_tcp("127.0.0.1", spec["port"])
    reader = hiredis.Reader()
    channel, payload = CHANNEL.encode(), PAYLOAD.encode()
    command = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel),
        channel,
        len(payload),
        payload,
    )

    async def call(k: int) -> list[Any]:
        await stream.send(command * k)
        counts: list[Any] = []
        while len(counts) < k:
            reply = reader.gets()
            if reply is False:
                reader.feed(await stream.receive(65536))
            else:
                counts.append(reply)
        return counts

    try:
        return await _batches(spec["n"], spec["batch"], call)
    finally:
        await stream.aclose()


# -- 3. latency -----------------------------------------------------------------------------


def _latency_result(latencies: list[float], cpu_seconds: float) -> dict[str, Any]:
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "events": len(latencies),
        "p50_ms": pick(0.50) * 1e3,
        "p99_ms": pick(0.99) * 1e3,
        "cpu_us_per_msg": cpu_us(cpu_seconds, len(latencies)),
    }


async def latency_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    latencies: list[float] = []
    done = anyio.Event()
    async with tidings.open_channels(_url(spec), namespace="bench") as ch:

        def on_tick(channel: Any, event: str, data: Any) -> None:
            latencies.append(time.time() - data["sent"])
            if len(latencies) == spec["n"]:
                done.set()

        await ch.register("chan", "tick", on_tick)
        cpu_started = time.process_time()
        say("ready")
        await done.wait()
        cpu_seconds = time.process_time() - cpu_started
    return _latency_result(latencies, cpu_seconds)


async def latency_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=spec["port"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    cpu_started = time.process_time()
    say("ready")
    latencies: list[float] = []
    while len(latencies) < spec["n"]:
        message = await pubsub.get_message(timeout=None)
        if message is not None and message["type"] == "message":
            event = json.loads(message["data"])
            if event["event"] == "tick":
                latencies.append(time.time() - event["data"]["sent"])
    cpu_seconds = time.process_time() - cpu_started
    await pubsub.aclose()
    await client.aclose()
    return _latency_result(latencies, cpu_seconds)


def pace(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish n events at a steady rate (per second) with redis-py, stamped."""
    import redis

    client = redis.Redis(port=spec["port"])
    rate, n = spec["rate"], spec["n"]
    tick = 0.002
    per_tick = max(1, round(rate * tick))
    started = time.perf_counter()
    sent = 0
    while sent < n:
        pipe = client.pipeline(transaction=False)
        for _ in range(min(per_tick, n - sent)):
            pipe.publish(
                CHANNEL,
                json.dumps({"channel": "chan", "event": "tick", "data": {"sent": time.time()}}),
            )
            sent += 1
        pipe.execute()
        next_at = started + (sent / rate)
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    return {"events": sent, "seconds": time.perf_counter() - started}


# -- 4. registrations ------------------------------------------------------------------------


def _confirmed(port: int, prefix: str, n: int) -> dict[str, int]:
    """What Redis says: channels subscribed under ``prefix``, and NUMSUB of a sample."""
    import redis

    client = redis.Redis(port=port)
    try:
        subscribed = len(client.pubsub_channels(f"{prefix}:*"))
        sample = sorted({*range(0, n, max(1, n // 100)), n - 1})
        counts = client.pubsub_numsub(*(f"{prefix}:c{i}" for i in sample))
    finally:
        client.close()
    return {
        "confirmed": subscribed,
        "sample": len(sample),
        "sample_subscribed": sum(1 for _name, count in counts if count == 1),
    }


async def register_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """Register n channels (``mode``: concurrent, sequential or register_many).

    Timed until every registration returned (each confirmed by Redis), with the RSS
    growth; or, with ``trace``, untimed under tracemalloc, started before the Channels
    exist, for the bytes traced per channel.
    """
    import gc
    import tracemalloc

    import tidings

    n, mode, trace = spec["n"], spec["mode"], bool(spec.get("trace"))
    if mode == "register_many" and not hasattr(tidings.Channels, "register_many"):
        return {"skipped": "this tidings has no Channels.register_many"}
    if trace:
        tracemalloc.start()
    async with tidings.open_channels(_url(spec), namespace="scale") as ch:
        await ch.connect()

        def callback(channel: Any, event: str, data: Any) -> None:
            pass

        gc.collect()
        rss_before = rss_bytes()
        traced_before = tracemalloc.get_traced_memory()[0] if trace else 0
        if trace:
            tracemalloc.reset_peak()
        cpu_started = time.process_time()
        started = time.perf_counter()
        if mode == "sequential":
            for i in range(n):
                await ch.register(f"c{i}", "*", callback)
        elif mode == "concurrent":
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(ch.register, f"c{i}", "*", callback)
        elif mode == "register_many":
            register_many = getattr(ch, "register_many", None)
            assert register_many is not None
            await register_many([(f"c{i}", "*", callback) for i in range(n)])
        else:
            raise ValueError(f"unknown mode {mode!r}")
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        gc.collect()
        result: dict[str, Any] = {"events": n}
        if trace:
            traced, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            result["traced_bytes_per_channel"] = (traced - traced_before) / n
            result["traced_peak_bytes_per_channel"] = (peak - traced_before) / n
        else:
            rss_growth = rss_bytes() - rss_before
            result.update(
                seconds=seconds,
                rate=n / seconds,
                cpu_us_per_channel=cpu_us(cpu_seconds, n),
                rss_bytes_per_channel=rss_growth / n,
                rss_mb=rss_growth / 2**20,
            )
        result.update(_confirmed(spec["port"], "scale", n))
    return result


# -- 5. in-process ------------------------------------------------------------------------------


async def memory_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    counter = Counter(spec["n"])
    async with tidings.open_channels("memory://", max_pending=10**7, **handler_options(spec)) as ch:
        await ch.register("chan", "tick", lambda c, e, d: counter.hit())
        data = EVENT["data"]
        cpu_started = time.process_time()
        started = time.perf_counter()
        for _ in range(spec["n"]):
            await ch.publish("chan", "tick", data)
        await counter.done.wait()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    return _in_process(counter.n, seconds, cpu_seconds)


def _in_process(events: int, seconds: float, cpu_seconds: float) -> dict[str, Any]:
    return {
        "events": events,
        "seconds": seconds,
        "rate": events / seconds,
        "cpu_us_per_msg": cpu_us(cpu_seconds, events),
    }


async def memory_broadcaster(spec: dict[str, Any]) -> dict[str, Any]:
    from broadcaster import Broadcast

    n = spec["n"]
    async with Broadcast("memory://") as broadcast, broadcast.subscribe("chan") as subscriber:
        cpu_started = time.process_time()
        started = time.perf_counter()

        async def produce() -> None:
            # The same JSON encoding as tidings does, as in every scenario.
            dumps = json.dumps
            for _ in range(n):
                await broadcast.publish("chan", dumps(EVENT, separators=COMPACT))

        count = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            async for event in subscriber:  # type: ignore[union-attr]
                if json.loads(event.message)["event"] == "tick":
                    count += 1
                if count == n:
                    break
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    return _in_process(n, seconds, cpu_seconds)


async def memory_trio_channel(spec: dict[str, Any]) -> dict[str, Any]:
    import trio

    n = spec["n"]
    send, receive = trio.open_memory_channel[Any](1000)
    cpu_started = time.process_time()
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            async with send:
                for _ in range(n):
                    await send.send(EVENT)

        nursery.start_soon(produce)
        count = 0
        async with receive:
            async for _event in receive:
                count += 1
    seconds = time.perf_counter() - started
    return _in_process(count, seconds, time.process_time() - cpu_started)


# -- 6. durable channels ------------------------------------------------------------------
#
# A contender named ``...-durable`` declares "chan" durable; its log is the stream
# CHANNEL (the channel's broker name), emptied when the contender starts.

DURABLE = "-durable"

#: A durable publish as tidings makes it (docs/wire-format.md): XADD, then PUBLISH of
#: "<id> <envelope>", atomically. KEYS[1]: the channel; ARGV: envelope, max_len.
APPEND = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'envelope', ARGV[1])
redis.call('PUBLISH', KEYS[1], id .. ' ' .. ARGV[1])
return id
"""


def durable(spec: dict[str, Any]) -> bool:
    return str(spec["contender"]).endswith(DURABLE)


def durable_options(
    tidings: Any, spec: dict[str, Any], max_len: int | None = None
) -> dict[str, Any]:
    """``Channels(...)`` keyword arguments: none, or ``durable=`` for a durable contender
    (``max_len`` events retained; None: tidings's default retention)."""
    if not durable(spec):
        return {}
    retention = tidings.DEFAULT_RETENTION if max_len is None else tidings.Retention(max_len=max_len)
    return {"durable": {"chan": retention}}


def _redis(port: int) -> Any:
    import redis

    return redis.Redis(port=port)


def forget_log(port: int) -> None:
    """Delete the stream of CHANNEL: each durable run starts with an empty log."""
    client = _redis(port)
    try:
        client.delete(CHANNEL)
    finally:
        client.close()


def redis_cpu_seconds(port: int) -> float:
    """The redis-server's CPU time so far (INFO cpu: system + user)."""
    client = _redis(port)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def publish_durable(port: int, payloads: Iterable[str | bytes], max_len: int) -> int:
    """Publish to durable CHANNEL as tidings does (the APPEND script), pipelined by
    1000; return how many."""
    client = _redis(port)
    try:
        sha = client.script_load(APPEND)
        count = 0
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            pipe.evalsha(sha, 1, CHANNEL, payload, max_len)
            count += 1
            if count % 1000 == 0:
                pipe.execute()
                pipe = client.pipeline(transaction=False)
        pipe.execute()
    finally:
        client.close()
    return count


def fill_log(port: int, n: int, channel: str = "chan") -> None:
    """A fresh log of n events ``{"s": i}`` on ``channel`` (CHANNEL by default): XADD
    only, nothing published."""
    key = f"bench:{channel}"
    client = _redis(port)
    try:
        client.delete(key)
        dumps = json.dumps
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + 1000)):
                envelope = dumps(
                    {"channel": channel, "event": "tick", "data": {"s": i}}, separators=(",", ":")
                )
                pipe.xadd(key, {"envelope": envelope})
            pipe.execute()
        assert client.xlen(key) == n
    finally:
        client.close()


async def live_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """The receive scenario's consumer, plain or durable. Before ``ready``, one event
    of its own has come back live: the durable channel's first catch-up read is over,
    and what follows is the live path only."""
    import tidings

    if durable(spec):
        forget_log(spec["port"])
    counter = Counter(spec["n"])
    warm = anyio.Event()
    async with tidings.open_channels(
        _url(spec), namespace="bench", max_pending=10**7, **durable_options(tidings, spec)
    ) as channels:

        def on_event(channel: Any, event: str, data: Any) -> None:
            if event == "tick":
                counter.hit()
            elif event == "warm":
                warm.set()

        await channels.register("chan", "*", on_event)
        await channels.publish("chan", "warm", None)
        await warm.wait()
        counter.arm()
        say("ready")
        await counter.done.wait()
        stats = channels.stats()
        assert stats.dropped == 0
    result = counter.result()
    result.update(replayed=stats.replayed, superseded=stats.superseded)
    return result


async def catch_up_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """n events in the log; a fresh handler registers with ``since="all"``: the time
    from the call until the n-th callback returned, and the CPU time over it."""
    import tidings

    n = spec["n"]
    if not hasattr(tidings, "Retention"):
        return {"skipped": "this tidings has no durable channels"}
    fill_log(spec["port"], n)
    counter = Counter(n)
    misplaced = 0
    durable_ = {"chan": tidings.Retention(max_len=n)}
    async with tidings.open_channels(
        _url(spec), namespace="bench", durable=durable_, max_pending=10**7
    ) as channels:
        await channels.connect()

        def on_tick(channel: Any, event: str, data: Any) -> None:
            nonlocal misplaced
            if data["s"] != counter.count:
                misplaced += 1
            counter.hit()

        counter.arm()
        started = time.perf_counter()
        await channels.register("chan", "tick", on_tick, since="all")
        returned = time.perf_counter() - started
        await counter.done.wait()
        stats = channels.stats()
    return _caught_up(counter, started, misplaced) | {
        "register_returned_s": returned,
        "replayed": stats.replayed,
    }


def _caught_up(counter: Counter, started: float, misplaced: int) -> dict[str, Any]:
    seconds = counter.last - started
    return {
        "events": counter.count,
        "seconds": seconds,
        "rate": counter.count / seconds,
        "cpu_us_per_msg": cpu_us(counter.cpu_last - counter.cpu_start, counter.count),
        "misplaced": misplaced,
    }


async def catch_up_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    """The same read by hand: XRANGE by 1000 with redis-py, JSON-decoded, one call each."""
    import redis.asyncio

    n = spec["n"]
    fill_log(spec["port"], n)
    counter = Counter(n)
    misplaced = 0
    client = redis.asyncio.Redis(port=spec["port"])
    await client.ping()

    def on_tick(channel: Any, event: str, data: Any) -> None:
        nonlocal misplaced
        if data["s"] != counter.count:
            misplaced += 1
        counter.hit()

    loads = json.loads
    counter.arm()
    started = time.perf_counter()
    start: bytes = b"-"
    while counter.count < n:
        entries: Any = await client.xrange(CHANNEL, min=start, max="+", count=1000)
        if not entries:
            break
        for _entry_id, fields in entries:
            event = loads(fields[b"envelope"])
            on_tick(event["channel"], event["event"], event["data"])
        start = b"(" + entries[-1][0]
    await client.aclose()
    return _caught_up(counter, started, misplaced)


class Proxy:
    """A TCP proxy to the Redis server that can cut every connection through it, and
    refuse new ones (accept and close at once) for a while: an outage of the network
    between one client and Redis, whose side of each connection closes too."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.down = False
        self.cuts = 0  # connections cut
        self.refused = 0  # connections refused while down
        self._open: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            self.port = listener.extra(SocketAttribute.local_port)
            task_status.started()
            await listener.serve(self._handle)

    async def outage(self, seconds: float) -> None:
        self.down = True
        for scope in list(self._open):
            scope.cancel()
            self.cuts += 1
        await anyio.sleep(seconds)
        self.down = False

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            if self.down:
                self.refused += 1
                return
            with anyio.CancelScope() as scope:
                self._open.add(scope)
                try:
                    upstream = await anyio.connect_tcp("127.0.0.1", self.target)
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(self._pump, client, upstream, scope)
                        tg.start_soon(self._pump, upstream, client, scope)
                except OSError:
                    pass
                finally:
                    self._open.discard(scope)

    @staticmethod
    async def _pump(source: SocketStream, sink: SocketStream, scope: anyio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()  # one side is gone: close both


class Tally:
    """Which of the events ``{"s": 0 .. n-1}`` arrived, how often, in what order."""

    def __init__(self, n: int, cut_at: int) -> None:
        self.seen = bytearray(n)
        self.arrivals = 0
        self.distinct = 0
        self.out_of_order = 0
        self.highest = -1
        self.changed = time.monotonic()
        self.cut_at = cut_at
        self.cut = anyio.Event()
        self.back: float | None = None  # the first arrival after the outage
        self.stats: Callable[[], Any] | None = None

    def hit(self, s: int) -> None:
        self.arrivals += 1
        self.changed = time.monotonic()
        if self.back is None and not self.seen[s] and self.cut.is_set():
            self.back = time.perf_counter()
        if self.seen[s]:
            return
        self.seen[s] = 1
        self.distinct += 1
        if s < self.highest:
            self.out_of_order += 1
        else:
            self.highest = s
        if self.arrivals >= self.cut_at:
            self.cut.set()

    async def settle(self, published: int, quiet: float) -> None:
        """Until every published event came, or none for ``quiet`` seconds."""
        deadline = time.monotonic() + 30
        while self.distinct < published and time.monotonic() < deadline:
            if time.monotonic() - self.changed > quiet:
                break
            await anyio.sleep(0.01)


Listen = Callable[..., Coroutine[Any, Any, None]]  # (port, tally, *, task_status)


async def _outage(spec: dict[str, Any], listen: Listen) -> dict[str, Any]:
    """Subscribe through a :class:`Proxy`; after 30% of the events, cut it for a
    quarter of the publishing time (``down``: 1 s at 5k/s for 4 s); once the harness
    writes how many were published (stdin), count what came."""
    n, rate = spec["n"], spec["rate"]
    down = n / rate / 4
    proxy = Proxy(spec["port"])
    tally = Tally(n, cut_at=int(n * 0.3))
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        await tg.start(listen, proxy.port, tally)
        say("ready")
        with anyio.fail_after(60):
            await tally.cut.wait()
        cut_after = tally.arrivals
        await proxy.outage(down)
        up = time.perf_counter()
        tally.back = None  # what came during the outage was on its way before it
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        published = int(json.loads(line)["published"])
        await tally.settle(published, quiet=max(0.3, min(1.0, down)))
        stats = tally.stats() if tally.stats is not None else None
        tg.cancel_scope.cancel()
    lost = published - tally.distinct
    result = {
        "events": published,
        "lost": lost,
        "duplicated": tally.arrivals - tally.distinct,
        "out_of_order": tally.out_of_order,
        "lost_ms": lost / rate * 1e3,
        "down_ms": down * 1e3,
        "back_ms": None if tally.back is None else (tally.back - up) * 1e3,
        "cut_after": cut_after,
        "cut": proxy.cuts,
        "refused": proxy.refused,
    }
    if stats is not None:
        result.update(
            reconnects=stats.reconnects, replayed=stats.replayed, superseded=stats.superseded
        )
    return result


async def outage_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    # The outage is the point: its reconnection warnings would only fill the output.
    logging.getLogger("tidings").setLevel(logging.ERROR)

    async def listen(
        port: int, tally: Tally, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        warm = anyio.Event()
        async with tidings.open_channels(
            f"redis://127.0.0.1:{port}",
            namespace="bench",
            max_pending=10**6,
            backoff=tidings.Backoff(initial=0.05, cap=0.2),
            **durable_options(tidings, spec, max_len=10 * spec["n"]),
        ) as channels:

            def on_event(channel: Any, event: str, data: Any) -> None:
                if event == "tick":
                    tally.hit(data["s"])
                elif event == "warm":
                    warm.set()

            await channels.register("chan", "*", on_event)
            await channels.publish("chan", "warm", None)
            await warm.wait()
            tally.stats = channels.stats
            task_status.started()
            await anyio.sleep_forever()

    if durable(spec):
        forget_log(spec["port"])
    return await _outage(spec, listen)


async def outage_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    """redis-py's PubSub, read as its documentation shows, retried after an error
    (redis-py reconnects and subscribes again by itself), with the same back-off
    between attempts as the tidings contenders (50 ms doubling to 200 ms, jittered)."""
    import redis.asyncio
    import redis.asyncio.retry
    import redis.backoff
    import redis.exceptions

    async def listen(
        port: int, tally: Tally, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        backoff = redis.backoff.ExponentialWithJitterBackoff(cap=0.2, base=0.05)
        retry = redis.asyncio.retry.Retry(backoff, retries=1000)
        client = redis.asyncio.Redis(port=port, retry=retry)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL)
        task_status.started()
        loads = json.loads
        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=None)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    await anyio.sleep(0.05)
                    continue
                if message is not None and message["type"] == "message":
                    event = loads(message["data"])
                    if event["event"] == "tick":
                        tally.hit(event["data"]["s"])
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()
                await client.aclose()

    return await _outage(spec, listen)


def pace_outage(spec: dict[str, Any]) -> dict[str, Any]:
    """Publish n events ``{"s": i}`` at a steady rate with redis-py, plain or (with
    ``durable``) as tidings does on a durable channel."""
    import redis

    client = redis.Redis(port=spec["port"])
    rate, n = spec["rate"], spec["n"]
    sha = client.script_load(APPEND) if spec["durable"] else None
    per_tick = max(1, round(rate * 0.002))
    dumps = json.dumps
    started = time.perf_counter()
    sent = 0
    while sent < n:
        pipe = client.pipeline(transaction=False)
        for s in range(sent, min(n, sent + per_tick)):
            envelope = dumps({"channel": "chan", "event": "tick", "data": {"s": s}})
            if sha is None:
                pipe.publish(CHANNEL, envelope)
            else:
                pipe.evalsha(sha, 1, CHANNEL, envelope, 10 * n)
            sent += 1
        pipe.execute()
        delay = started + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    seconds = time.perf_counter() - started
    client.close()
    return {"published": sent, "seconds": seconds, "rate": sent / seconds}


# -- 7. work queues (consumer groups) -----------------------------------------------------
#
# The harness fills the log of the durable channel JOBS with n jobs (fill_log), or
# keeps the one it filled for the run before, and creates the consumer group JOB_GROUP
# at its start ("0") anew, then starts M member processes. A job-queue library with a
# message format of its own (FastStream, taskiq) has a log of its own (JOB_KEYS),
# filled by its own enqueue in a process of its own (JOB_FILLS), untimed: each drains
# what it natively reads. Each connects and
# prints "ready", starts on a "go" line from its standard input and stops on "stop"
# (the harness sees from XINFO GROUPS when the group is done); it reports how many jobs
# it got, when its first and last came (time.perf_counter(): one clock for every
# process on Linux) and its CPU time from "go" to "stop".

JOBS = "jobs"
JOBS_KEY = f"bench:{JOBS}"
JOB_GROUP = "workers"
#: The logs of the contenders that read a format of their own (the others: JOBS_KEY).
JOB_KEYS = {"faststream": f"{JOBS_KEY}-faststream", "taskiq": f"{JOBS_KEY}-taskiq"}


def job_key(contender: str) -> str:
    """The stream that ``contender``'s members read (tidings' and redis-py's: JOBS_KEY)."""
    return JOB_KEYS.get(contender, JOBS_KEY)


class JobTally:
    """One member's jobs (no anyio here: the redis-py member is synchronous)."""

    def __init__(self) -> None:
        self.jobs = 0
        self.first: float | None = None
        self.last: float | None = None
        self.cpu_started = 0.0
        self.cpu_seconds = 0.0

    def start(self) -> None:
        self.cpu_started = time.process_time()

    def hit(self) -> None:
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.jobs += 1

    def stop(self) -> None:
        self.cpu_seconds = time.process_time() - self.cpu_started

    def result(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "first": self.first,
            "last": self.last,
            "cpu_seconds": self.cpu_seconds,
        }


def _told(word: str, line: str) -> None:
    if line.strip() != word:
        raise RuntimeError(f"expected {word!r} from the harness, got {line!r}")


async def jobs_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """One member of the group: ``register(JOBS, "*", callback, group=JOB_GROUP)``
    once told to go (the group exists: tidings joins it where it is)."""
    import inspect

    import tidings

    if "group" not in inspect.signature(tidings.Channels.register).parameters:
        return {"skipped": "this tidings has no consumer groups"}
    tally = JobTally()
    durable_ = {JOBS: tidings.Retention(max_len=spec["n"] + 1000)}
    async with tidings.open_channels(
        _url(spec), namespace="bench", durable=durable_, ack_wait=30, max_deliver=5
    ) as channels:
        await channels.connect()
        say("ready")
        _told("go", await anyio.to_thread.run_sync(sys.stdin.readline))
        tally.start()

        def on_job(channel: Any, event: str, data: Any) -> None:
            if event == "tick":
                tally.hit()

        await channels.register(JOBS, "*", on_job, group=JOB_GROUP)
        _told("stop", await anyio.to_thread.run_sync(sys.stdin.readline))
        tally.stop()
    # Once closed: the reply to its last XACK is counted (Redis had it when the
    # harness said stop, but this process may not have read the reply yet).
    stats = channels.stats()
    return tally.result() | {
        "acked": stats.acked,
        "callback_errors": stats.callback_errors,
        "dead_lettered": stats.dead_lettered,
    }


def jobs_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    """The same member by hand: XREADGROUP COUNT 100 BLOCK 100, JSON-decode each entry
    and check its event name (as tidings does), then one XACK for the batch.

    redis-py's synchronous client: a worker process that does nothing else is most
    often written as this blocking loop, and it is the faster of redis-py's two
    clients for it (no event loop between the reply and the next command), so the
    harder peer of the two.
    """
    import threading

    import redis

    client = redis.Redis(port=spec["port"])
    client.ping()
    consumer = f"redis-py-{os.getpid()}-{spec.get('member', 0)}"
    tally = JobTally()
    say("ready")
    _told("go", sys.stdin.readline())
    stopping = threading.Event()

    def wait_for_stop() -> None:
        _told("stop", sys.stdin.readline())
        stopping.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    tally.start()
    loads = json.loads
    acked = 0
    while not stopping.is_set():
        reply: Any = client.xreadgroup(JOB_GROUP, consumer, {JOBS_KEY: ">"}, count=100, block=100)
        for _key, entries in reply.items() if isinstance(reply, dict) else reply or ():
            if not entries:
                continue
            for _entry_id, fields in entries:
                event = loads(fields[b"envelope"])
                if event["event"] == "tick":
                    tally.hit()
            acked += client.xack(JOBS_KEY, JOB_GROUP, *(entry_id for entry_id, _ in entries))
    tally.stop()
    client.close()
    return tally.result() | {"acked": acked}


async def _stdin_line() -> str:
    return await anyio.to_thread.run_sync(sys.stdin.readline)


async def jobs_faststream(spec: dict[str, Any]) -> dict[str, Any]:
    """A FastStream stream subscriber in the consumer group (asyncio only):
    ``StreamSub(key, group=JOB_GROUP, consumer=..., max_records=100)``, its handler
    typed ``dict[str, Any]`` (FastStream decodes and validates the JSON) checking the
    event name. FastStream acknowledges as it does by default: one XACK per message,
    once its handler returned. ``max_records=100`` (XREADGROUP COUNT, as redis-py's
    loop and taskiq read): FastStream's default reads the whole backlog in one reply,
    so the first member would take every job and the others none."""
    from faststream.redis import StreamSub

    tally = JobTally()
    broker = faststream_broker(spec)
    consumer = f"faststream-{os.getpid()}-{spec.get('member', 0)}"

    async def on_job(body: dict[str, Any]) -> None:
        if body["event"] == "tick":
            tally.hit()

    on_job.__annotations__ = {"body": dict[str, Any], "return": None}
    sub = StreamSub(JOB_KEYS["faststream"], group=JOB_GROUP, consumer=consumer, max_records=100)
    broker.subscriber(stream=sub)(on_job)
    async with broker:
        await broker.connect()
        say("ready")
        _told("go", await _stdin_line())
        tally.start()
        await broker.start()  # joins the group (it exists: FastStream reads from ">")
        _told("stop", await _stdin_line())
        tally.stop()
    return tally.result()


def taskiq_broker(spec: dict[str, Any], consumer: str | None = None) -> Any:
    """taskiq-redis's ``RedisStreamBroker`` (Redis Streams, a consumer group, an XACK
    per task) on the taskiq log, in JOB_GROUP; its defaults otherwise (XREADGROUP
    COUNT 100 BLOCK 2000)."""
    from taskiq_redis import RedisStreamBroker

    return RedisStreamBroker(
        _url(spec),
        queue_name=JOB_KEYS["taskiq"],
        consumer_group_name=JOB_GROUP,
        consumer_name=consumer,
    )


async def jobs_taskiq(spec: dict[str, Any]) -> dict[str, Any]:
    """A taskiq worker (asyncio only), run in this process as the ``taskiq worker``
    command runs one: a ``Receiver`` with the command's defaults (100 concurrent tasks,
    each acknowledged once its result is saved: no result backend here), listening
    until its finish event is set (the command's soft stop). The task is
    ``async def tick(data: dict[str, int])``: taskiq decodes its JSON message, finds
    the task by name (the event name's check) and validates the argument.

    Why taskiq-redis and not arq, as the job queue a user picks for an asyncio or
    FastAPI app: its RedisStreamBroker is Redis Streams with a consumer group and
    XACK, the same mechanism as tidings' groups, so the numbers compare one design;
    arq keeps jobs in a sorted set and polls it (every 0.5 s by default), with a lock
    key and a result key per job, and has been in maintenance-only mode since
    2025-10 (python-arq/arq#510), while taskiq is actively developed and has a
    FastAPI integration. arq is downloaded about twice as often, mostly by
    established projects.
    """
    from concurrent.futures import ThreadPoolExecutor

    from redis.asyncio import Redis
    from taskiq.receiver import Receiver

    tally = JobTally()
    broker = taskiq_broker(spec, f"taskiq-{os.getpid()}-{spec.get('member', 0)}")

    async def tick(data: dict[str, int]) -> None:
        tally.hit()

    tick.__annotations__ = {"data": dict[str, int], "return": None}
    broker.register_task(tick, task_name="tick")
    broker.is_worker_process = True
    await broker.startup()  # the group exists: taskiq's "create" fails, as it expects
    async with Redis(connection_pool=broker.connection_pool) as client:
        await client.ping()
    say("ready")
    _told("go", await _stdin_line())
    tally.start()
    finish = asyncio.Event()
    with ThreadPoolExecutor() as executor:
        receiver = Receiver(broker, executor, max_async_tasks=100, run_startup=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver.listen, finish)
            _told("stop", await _stdin_line())
            tally.stop()
            finish.set()
            # (A worker's soft stop takes a moment: the prefetcher's pending read is
            # cancelled and the tasks in flight awaited; nothing is left to do here.)
            tg.cancel_scope.deadline = anyio.current_time() + 10
    await broker.shutdown()
    return tally.result()


async def _enqueue_all(n: int, enqueue: Callable[[int], Awaitable[Any]]) -> None:
    """``enqueue(i)`` for i in range(n), 100 at a time (the fills are untimed)."""
    for start in range(0, n, 100):
        async with anyio.create_task_group() as tg:
            for i in range(start, min(n, start + 100)):
                tg.start_soon(enqueue, i)


async def fill_jobs_faststream(spec: dict[str, Any]) -> dict[str, Any]:
    """n jobs by ``broker.publish(envelope, stream=...)``: JOBS' envelopes, in
    FastStream's message format."""
    broker = faststream_broker(spec)
    key = JOB_KEYS["faststream"]
    async with broker:
        await broker.connect()

        async def enqueue(i: int) -> None:
            await broker.publish({"channel": JOBS, "event": "tick", "data": {"s": i}}, stream=key)

        await _enqueue_all(spec["n"], enqueue)
    return {"filled": spec["n"]}


async def fill_jobs_taskiq(spec: dict[str, Any]) -> dict[str, Any]:
    """n jobs by ``await tick.kiq({"s": i})``: taskiq's own messages."""
    broker = taskiq_broker(spec)

    async def tick(data: dict[str, int]) -> None:
        pass

    task = broker.register_task(tick, task_name="tick")
    await broker.startup()
    try:

        async def enqueue(i: int) -> None:
            await task.kiq({"s": i})

        await _enqueue_all(spec["n"], enqueue)
    finally:
        await broker.shutdown()
    return {"filled": spec["n"]}


#: How the harness fills a contender's own log (JOB_KEYS): ``python -m bench.contenders
#: '{"scenario": "fill-jobs", "contender": ..., "port": ..., "n": ...}'``.
JOB_FILLS: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "faststream": fill_jobs_faststream,
    "taskiq": fill_jobs_taskiq,
}


# -- 8. the cost of telemetry ---------------------------------------------------------------
#
# tidings' own publish, receive and in-process paths (sections 1, 2 and 5), in four
# set-ups of OpenTelemetry, alternating in one run. The receive case's events carry a
# ``traceparent`` header, as from an instrumented publisher (the same events for every
# set-up: "absent" decodes the header too, and ignores it).

#: The events the telemetry scenario's receive case drains: EVENT with a traceparent.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACED_PAYLOAD = json.dumps(
    {**EVENT, "headers": {"traceparent": TRACEPARENT}}, separators=(",", ":")
)

#: The telemetry scenario's contenders: how OpenTelemetry is set up for each.
#: ``absent``: the API cannot be imported (what every other contender runs with);
#: ``api``: the API alone, no SDK configured (its no-op tracer and meter);
#: ``sdk``: the SDK, spans to an exporter that discards them (in a batch processor, as
#: an application would), a meter provider with no reader; ``off``: that SDK, and the
#: handler made with ``telemetry=False``.
OTEL_SETUPS = {
    "tidings-absent": "absent",
    "tidings-api": "api",
    "tidings-sdk": "sdk",
    "tidings-off": "off",
}


def without_opentelemetry() -> None:
    """Make the OpenTelemetry API unimportable in this process (``import opentelemetry``
    raises ImportError, as where it is not installed). Called by `main` before any
    contender runs, unless its spec's ``otel`` says otherwise: it must come before the
    first ``import tidings``, which looks for the API once."""
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]


class _SpanCounter:
    """The SDK parts of the ``sdk`` and ``off`` set-ups: spans are counted and discarded."""

    def __init__(self) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        counter = self

        class Discard(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                counter.spans += len(spans)
                return SpanExportResult.SUCCESS

        self.spans = 0
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
        trace.set_tracer_provider(self.tracer_provider)
        metrics.set_meter_provider(MeterProvider())

    def exported(self) -> int:
        """The spans exported so far (the batch processor's queue flushed first)."""
        self.tracer_provider.force_flush()
        return self.spans


async def telemetry_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    """One case (``op``: publish, receive or memory) in one set-up of OpenTelemetry
    (the spec's ``otel``; `main` has already blocked the API for ``absent``)."""
    import tidings

    setup = spec["otel"]
    options = getattr(tidings, "Options", None)
    if setup != "absent" and "telemetry" not in getattr(options, "__dataclass_fields__", {}):
        return {"skipped": "this tidings has no telemetry"}
    sdk = _SpanCounter() if setup in ("sdk", "off") else None
    if setup == "off":
        spec = {**spec, "telemetry": False}
    run = {"publish": publish_tidings, "receive": receive_tidings, "memory": memory_tidings}
    result = await run[spec["op"]](spec)
    result["spans_per_msg"] = sdk.exported() / result["events"] if sdk is not None else 0.0
    # The evidence that "absent" ran without the API (1: it was imported).
    result["otel_imported"] = int(sys.modules.get("opentelemetry") is not None)
    return result


#: The backend of a contender that is a plain function (no event loop).
SYNC = "sync"

CONTENDERS: dict[tuple[str, str], tuple[Callable[..., Any], str]] = {
    ("receive", "tidings-trio"): (receive_tidings, "trio"),
    ("receive", "tidings-asyncio"): (receive_tidings, "asyncio"),
    ("receive", "redis-py"): (receive_redis_py, "asyncio"),
    ("receive", "coredis-trio"): (receive_coredis, "trio"),
    ("receive", "coredis-asyncio"): (receive_coredis, "asyncio"),
    ("receive", "faststream"): (receive_faststream, "asyncio"),
    ("receive", "broadcaster"): (receive_broadcaster, "asyncio"),
    ("receive", "raw-hiredis"): (receive_raw, "trio"),
    ("receive-spread", "tidings-trio"): (spread_tidings, "trio"),
    ("receive-spread", "tidings-asyncio"): (spread_tidings, "asyncio"),
    ("receive-spread", "redis-py"): (spread_redis_py, "asyncio"),
    ("receive-size", "tidings-trio"): (receive_tidings, "trio"),
    ("receive-size", "tidings-asyncio"): (receive_tidings, "asyncio"),
    ("receive-size", "redis-py"): (receive_redis_py, "asyncio"),
    ("publish", "tidings-trio"): (publish_tidings, "trio"),
    ("publish", "tidings-asyncio"): (publish_tidings, "asyncio"),
    ("publish", "redis-py"): (publish_redis_py, "asyncio"),
    ("publish", "coredis-trio"): (publish_coredis, "trio"),
    ("publish", "coredis-asyncio"): (publish_coredis, "asyncio"),
    ("publish", "faststream"): (publish_faststream, "asyncio"),
    ("publish-many", "tidings-trio"): (publish_many_tidings, "trio"),
    ("publish-many", "tidings-asyncio"): (publish_many_tidings, "asyncio"),
    ("publish-many", "redis-py-pipeline"): (publish_many_redis_py, "asyncio"),
    ("publish-many", "coredis-pipeline"): (publish_many_coredis, "asyncio"),
    ("publish-many", "raw-hiredis"): (publish_many_raw, "trio"),
    ("publish-size", "tidings-trio"): (publish_tidings, "trio"),
    ("publish-size", "tidings-asyncio"): (publish_tidings, "asyncio"),
    ("publish-size", "redis-py"): (publish_redis_py, "asyncio"),
    ("latency", "tidings-trio"): (latency_tidings, "trio"),
    ("latency", "redis-py"): (latency_redis_py, "asyncio"),
    ("register", "tidings-concurrent"): (register_tidings, "trio"),
    ("register", "tidings-sequential"): (register_tidings, "trio"),
    ("register", "tidings-register_many"): (register_tidings, "trio"),
    ("memory", "tidings-trio"): (memory_tidings, "trio"),
    ("memory", "tidings-asyncio"): (memory_tidings, "asyncio"),
    ("memory", "broadcaster"): (memory_broadcaster, "asyncio"),
    ("memory", "trio-channel"): (memory_trio_channel, "trio"),
    ("durable-publish", "tidings-trio"): (publish_tidings, "trio"),
    ("durable-publish", "tidings-trio-durable"): (publish_tidings, "trio"),
    ("durable-publish", "tidings-asyncio"): (publish_tidings, "asyncio"),
    ("durable-publish", "tidings-asyncio-durable"): (publish_tidings, "asyncio"),
    ("catch-up", "tidings-trio"): (catch_up_tidings, "trio"),
    ("catch-up", "tidings-asyncio"): (catch_up_tidings, "asyncio"),
    ("catch-up", "redis-py"): (catch_up_redis_py, "asyncio"),
    ("durable-receive", "tidings-trio"): (live_tidings, "trio"),
    ("durable-receive", "tidings-trio-durable"): (live_tidings, "trio"),
    ("durable-receive", "tidings-asyncio"): (live_tidings, "asyncio"),
    ("durable-receive", "tidings-asyncio-durable"): (live_tidings, "asyncio"),
    ("outage", "tidings-trio"): (outage_tidings, "trio"),
    ("outage", "tidings-trio-durable"): (outage_tidings, "trio"),
    ("outage", "redis-py"): (outage_redis_py, "asyncio"),
    ("jobs", "tidings-trio"): (jobs_tidings, "trio"),
    ("jobs", "tidings-asyncio"): (jobs_tidings, "asyncio"),
    ("jobs", "redis-py"): (jobs_redis_py, SYNC),
    ("jobs", "faststream"): (jobs_faststream, "asyncio"),
    ("jobs", "taskiq"): (jobs_taskiq, "asyncio"),
    **{("telemetry", name): (telemetry_tidings, "trio") for name in OTEL_SETUPS},
}


def _missing_api(exc: Exception) -> bool:
    """An older tree may lack an API this contender code uses: AttributeError or
    ImportError (alone, or all there is in an exception group)."""
    missing = (AttributeError, ImportError)
    if isinstance(exc, ExceptionGroup):
        return exc.split(missing)[1] is None
    return isinstance(exc, missing)


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["scenario"] == "pace":
        result = pace(spec)
    elif spec["scenario"] == "pace-outage":
        result = pace_outage(spec)
    elif spec["scenario"] == "fill-jobs":
        try:
            result = anyio.run(JOB_FILLS[spec["contender"]], spec, backend="asyncio")
        except ImportError as exc:
            if missing_peer(exc) is None:
                raise
            result = {"skipped": f"{missing_peer(exc)} is not installed (the bench extra)"}
    else:
        if spec["scenario"] == "telemetry":
            spec["otel"] = OTEL_SETUPS[spec["contender"]]
        if spec.get("otel", "absent") == "absent":
            without_opentelemetry()
        function, backend = CONTENDERS[spec["scenario"], spec["contender"]]
        if spec["scenario"] == "register":
            spec["mode"] = spec["contender"].removeprefix("tidings-")
        try:
            if backend == SYNC:
                result = function(spec)
            else:
                result = anyio.run(function, spec, backend=backend)
        except Exception as exc:
            peer = missing_peer(exc)
            if peer is not None:  # a peer library, not installed here (the bench extra)
                result = {"skipped": f"{peer} is not installed (the bench extra)"}
            elif spec.get("baseline") and _missing_api(exc):
                result = {"skipped": f"the baseline lacks what this needs: {exc!r}"}
            else:
                raise
        if "tidings" in sys.modules:
            result["tidings"] = sys.modules["tidings"].__file__
    say(json.dumps(result))


if __name__ == "__main__":
    main()
