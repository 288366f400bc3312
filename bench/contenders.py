"""The contenders. Each run is a fresh process: ``python -m bench.contenders SPEC``.

SPEC is JSON ``{"scenario", "contender", "port", "n", ...}``. The process prints
``ready`` when it is subscribed (where that applies) and, at the end, one JSON line
with its measurements.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio

CHANNEL = "bench:chan"
EVENT = {"channel": "chan", "event": "tick", "data": {"n": 1, "text": "hello world"}}
PAYLOAD = json.dumps(EVENT, separators=(",", ":"))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        import os

        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Counter:
    """Counts received events; notes the first and last arrival."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = anyio.Event()

    def hit(self) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += 1
        if self.count == self.n:
            self.last = time.perf_counter()
            self.done.set()

    def result(self) -> dict[str, Any]:
        return {
            "events": self.count,
            "seconds": self.last - self.first,
            "rate": self.count / (self.last - self.first),
        }


# -- 1. receive throughput ----------------------------------------------------------------


async def receive_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    counter = Counter(spec["n"])
    async with tidings.open_channels(
        f"redis://127.0.0.1:{spec['port']}", namespace="bench", max_pending=10**7
    ) as channels:

        def on_tick(channel: Any, event: str, data: Any) -> None:
            counter.hit()

        await channels.register("chan", "tick", on_tick)
        say("ready")
        await counter.done.wait()
        assert channels.stats().dropped == 0
    return counter.result()


async def receive_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    counter = Counter(spec["n"])
    client = redis.asyncio.Redis(port=spec["port"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
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


async def receive_coredis(spec: dict[str, Any]) -> dict[str, Any]:
    import coredis

    counter = Counter(spec["n"])
    loads = json.loads
    async with (
        coredis.Redis(port=spec["port"]) as client,
        client.pubsub(channels=[CHANNEL]) as pubsub,
    ):
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
    say("ready")
    n = counter.n
    while counter.count < n:
        reader.feed(await stream.receive(65536))
        while reader.gets() is not False:
            if counter.count == 0:
                counter.first = time.perf_counter()
            counter.count += 1
    counter.last = time.perf_counter()
    await stream.aclose()
    return counter.result()


# -- 2. publish throughput ----------------------------------------------------------------


async def _publishers(n: int, publish: Callable[[int], Any]) -> dict[str, Any]:
    per_task = n // 10
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(10):

            async def run() -> None:
                for i in range(per_task):
                    await publish(i)

            tg.start_soon(run)
    seconds = time.perf_counter() - started
    return {"events": per_task * 10, "seconds": seconds, "rate": per_task * 10 / seconds}


async def publish_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    async with tidings.open_channels(f"redis://127.0.0.1:{spec['port']}", namespace="bench") as ch:
        await ch.connect()
        data = EVENT["data"]
        return await _publishers(spec["n"], lambda i: ch.publish("chan", "tick", data))


async def publish_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=spec["port"])
    data = EVENT["data"]
    dumps = json.dumps

    async def publish(i: int) -> None:
        await client.publish(CHANNEL, dumps({"channel": "chan", "event": "tick", "data": data}))

    try:
        return await _publishers(spec["n"], publish)
    finally:
        await client.aclose()


async def publish_coredis(spec: dict[str, Any]) -> dict[str, Any]:
    import coredis

    data = EVENT["data"]
    dumps = json.dumps
    async with coredis.Redis(port=spec["port"]) as client:

        async def publish(i: int) -> None:
            await client.publish(CHANNEL, dumps({"channel": "chan", "event": "tick", "data": data}))

        return await _publishers(spec["n"], publish)


# -- 3. latency -----------------------------------------------------------------------------


def _latency_result(latencies: list[float]) -> dict[str, Any]:
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"events": len(latencies), "p50_ms": pick(0.50) * 1e3, "p99_ms": pick(0.99) * 1e3}


async def latency_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    latencies: list[float] = []
    done = anyio.Event()
    async with tidings.open_channels(f"redis://127.0.0.1:{spec['port']}", namespace="bench") as ch:

        def on_tick(channel: Any, event: str, data: Any) -> None:
            latencies.append(time.time() - data["sent"])
            if len(latencies) == spec["n"]:
                done.set()

        await ch.register("chan", "tick", on_tick)
        say("ready")
        await done.wait()
    return _latency_result(latencies)


async def latency_redis_py(spec: dict[str, Any]) -> dict[str, Any]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=spec["port"])
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    say("ready")
    latencies: list[float] = []
    while len(latencies) < spec["n"]:
        message = await pubsub.get_message(timeout=None)
        if message is not None and message["type"] == "message":
            event = json.loads(message["data"])
            if event["event"] == "tick":
                latencies.append(time.time() - event["data"]["sent"])
    await pubsub.aclose()
    await client.aclose()
    return _latency_result(latencies)


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


# -- 4. many registrations ---------------------------------------------------------------------


async def scale_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import gc

    import tidings

    n = spec["n"]
    async with tidings.open_channels(f"redis://127.0.0.1:{spec['port']}", namespace="scale") as ch:
        await ch.connect()

        def callback(channel: Any, event: str, data: Any) -> None:
            pass

        gc.collect()
        before = rss_bytes()
        started = time.perf_counter()
        if spec.get("mode") == "sequential":
            for i in range(n):
                await ch.register(f"c{i}", "*", callback)
        else:
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(ch.register, f"c{i}", "*", callback)
        seconds = time.perf_counter() - started
        gc.collect()
        per_channel = (rss_bytes() - before) / n
        async with ch.store.pubsub() as pubsub:
            confirmed = await pubsub.count("scale:c0", f"scale:c{n - 1}")
    return {
        "events": n,
        "seconds": seconds,
        "rate": n / seconds,
        "bytes_per_channel": per_channel,
        "confirmed": confirmed,
    }


# -- 5. in-process ------------------------------------------------------------------------------


async def memory_tidings(spec: dict[str, Any]) -> dict[str, Any]:
    import tidings

    counter = Counter(spec["n"])
    async with tidings.open_channels("memory://", max_pending=10**7) as ch:
        await ch.register("chan", "tick", lambda c, e, d: counter.hit())
        data = EVENT["data"]
        started = time.perf_counter()
        for _ in range(spec["n"]):
            await ch.publish("chan", "tick", data)
        await counter.done.wait()
        seconds = time.perf_counter() - started
    return {"events": counter.n, "seconds": seconds, "rate": counter.n / seconds}


async def memory_broadcaster(spec: dict[str, Any]) -> dict[str, Any]:
    from broadcaster import Broadcast

    n = spec["n"]
    async with Broadcast("memory://") as broadcast, broadcast.subscribe("chan") as subscriber:
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
    return {"events": n, "seconds": seconds, "rate": n / seconds}


async def memory_trio_channel(spec: dict[str, Any]) -> dict[str, Any]:
    import trio

    n = spec["n"]
    send, receive = trio.open_memory_channel[Any](1000)
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
    return {"events": count, "seconds": seconds, "rate": count / seconds}


CONTENDERS: dict[tuple[str, str], tuple[Callable[..., Any], str]] = {
    ("receive", "tidings-trio"): (receive_tidings, "trio"),
    ("receive", "tidings-asyncio"): (receive_tidings, "asyncio"),
    ("receive", "redis-py"): (receive_redis_py, "asyncio"),
    ("receive", "coredis-trio"): (receive_coredis, "trio"),
    ("receive", "raw-hiredis"): (receive_raw, "trio"),
    ("publish", "tidings-trio"): (publish_tidings, "trio"),
    ("publish", "tidings-asyncio"): (publish_tidings, "asyncio"),
    ("publish", "redis-py"): (publish_redis_py, "asyncio"),
    ("publish", "coredis-trio"): (publish_coredis, "trio"),
    ("latency", "tidings-trio"): (latency_tidings, "trio"),
    ("latency", "redis-py"): (latency_redis_py, "asyncio"),
    ("scale", "tidings-batched"): (scale_tidings, "trio"),
    ("scale", "tidings-sequential"): (scale_tidings, "trio"),
    ("memory", "tidings-trio"): (memory_tidings, "trio"),
    ("memory", "tidings-asyncio"): (memory_tidings, "asyncio"),
    ("memory", "broadcaster"): (memory_broadcaster, "asyncio"),
    ("memory", "trio-channel"): (memory_trio_channel, "trio"),
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["scenario"] == "pace":
        result = pace(spec)
    else:
        function, backend = CONTENDERS[spec["scenario"], spec["contender"]]
        if spec["contender"] == "tidings-sequential":
            spec["mode"] = "sequential"
        result = anyio.run(function, spec, backend=backend)
    say(json.dumps(result))


if __name__ == "__main__":
    main()
