"""The contenders. Each run is a fresh process: ``python -m bench.contenders SPEC``.

SPEC is JSON ``{"scenario", "contender", "port", "n", ...}`` plus the case's
parameters (``channels``, ``publishers``, ``size``, ``mode``, ``trace``). The process
prints ``ready`` when it is subscribed (where that applies) and, at the end, one JSON
line with its measurements, or ``{"skipped": reason}`` when the library it imports
lacks what the contender needs. Every result from a process that imported tidings
names the file it came from (``tidings``): the evidence of which tree ran.

Every contender that reports a rate also reports ``cpu_us_per_msg``: the process's
CPU time (``time.process_time()``, all threads) over its timed section, per message.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

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


# -- 1. receive throughput (one channel, any payload size; or spread over many) --------------


async def receive_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    counter = Counter(spec["n"])
    async with tidings.open_channels(_url(spec), namespace="bench", max_pending=10**7) as channels:

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
    import tidings

    async with tidings.open_channels(_url(spec), namespace="bench") as ch:
        await ch.connect()
        data = _publish_event(spec)["data"]

        async def publish(i: int) -> None:
            await ch.publish("chan", "tick", data)

        return await _publishers(spec["n"], spec.get("publishers", 10), publish)


async def publish_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=spec["port"])
    data = _publish_event(spec)["data"]
    dumps = json.dumps

    async def publish(i: int) -> None:
        await client.publish(CHANNEL, dumps({"channel": "chan", "event": "tick", "data": data}))

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
            await client.publish(CHANNEL, dumps({"channel": "chan", "event": "tick", "data": data}))

        return await _publishers(spec["n"], spec.get("publishers", 10), publish)


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
    async with tidings.open_channels("memory://", max_pending=10**7) as ch:
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
                await broadcast.publish("chan", dumps(EVENT))

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


CONTENDERS: dict[tuple[str, str], tuple[Callable[..., Any], str]] = {
    ("receive", "tidings-trio"): (receive_tidings, "trio"),
    ("receive", "tidings-asyncio"): (receive_tidings, "asyncio"),
    ("receive", "redis-py"): (receive_redis_py, "asyncio"),
    ("receive", "coredis-trio"): (receive_coredis, "trio"),
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
    else:
        function, backend = CONTENDERS[spec["scenario"], spec["contender"]]
        if spec["scenario"] == "register":
            spec["mode"] = spec["contender"].removeprefix("tidings-")
        try:
            result = anyio.run(function, spec, backend=backend)
        except Exception as exc:
            if not spec.get("baseline") or not _missing_api(exc):
                raise
            result = {"skipped": f"the baseline lacks what this needs: {exc!r}"}
        if "tidings" in sys.modules:
            result["tidings"] = sys.modules["tidings"].__file__
    say(json.dumps(result))


if __name__ == "__main__":
    main()
