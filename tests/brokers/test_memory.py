"""The embedded hub has Redis pub/sub semantics."""

from __future__ import annotations

import logging

import anyio
import pytest

from tests.helpers import eventually
from tidings.brokers.base import Message
from tidings.brokers.memory import Hub, MemoryBroker

pytestmark = pytest.mark.anyio


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.batches = 0

    async def __call__(self, batch: list[Message]) -> None:
        self.batches += 1
        self.messages.extend(batch)


async def test_publish_counts_exact_and_pattern_subscriptions_like_redis(hub: Hub) -> None:
    broker = MemoryBroker(hub)
    sub = await broker.open_subscriber(health_check_interval=30, reply_timeout=5)
    pub = await broker.open_publisher(health_check_interval=30, reply_timeout=5)
    inbox = Inbox()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sub.run, inbox)
        await sub.subscribe(["news"])
        await sub.psubscribe(["n*", "*s"])
        # one exact + two matching patterns on the same connection: three deliveries
        assert await pub.publish("news", b"hello") == 3
        assert await pub.publish("nope", b"x") == 1
        assert await pub.publish("other", b"x") == 0
        await eventually(lambda: len(inbox.messages) == 4)
        assert inbox.messages == [("news", b"hello")] * 3 + [("nope", b"x")]
        assert await pub.numsub(["news", "nope"]) == {"news": 1, "nope": 0}
        assert await pub.numpat() == 2
        await sub.punsubscribe(["n*"])
        await sub.unsubscribe(["news"])
        assert await pub.publish("news", b"again") == 1
        assert await pub.numpat() == 1
        tg.cancel_scope.cancel()
    await sub.aclose()
    await pub.aclose()
    assert "connections=0" in repr(hub)


async def test_numpat_counts_distinct_patterns_and_channels_filters(hub: Hub) -> None:
    broker = MemoryBroker(hub)
    a, b = (
        await broker.open_subscriber(health_check_interval=30, reply_timeout=5),
        await broker.open_subscriber(health_check_interval=30, reply_timeout=5),
    )
    pub = await broker.open_publisher(health_check_interval=30, reply_timeout=5)
    await a.psubscribe(["p*"])
    await b.psubscribe(["p*", "q*"])
    await a.subscribe(["shop:orders", "shop:users", "misc"])
    await b.subscribe(["shop:orders"])
    assert await pub.numpat() == 2
    assert await pub.numsub(["shop:orders"]) == {"shop:orders": 2}
    assert sorted(await pub.channels()) == ["misc", "shop:orders", "shop:users"]
    assert sorted(await pub.channels("shop:*")) == ["shop:orders", "shop:users"]
    await a.aclose()  # closing a connection drops its subscriptions
    assert await pub.channels() == ["shop:orders"]
    assert await pub.numpat() == 2
    await b.aclose()
    assert await pub.channels() == []
    assert await pub.numpat() == 0
    await pub.aclose()


async def test_messages_arrive_in_batches_in_publish_order(hub: Hub) -> None:
    broker = MemoryBroker(hub)
    sub = await broker.open_subscriber(health_check_interval=30, reply_timeout=5)
    pub = await broker.open_publisher(health_check_interval=30, reply_timeout=5)
    await sub.subscribe(["c"])
    for n in range(100):
        hub.publish("c", str(n).encode())  # no checkpoint between: one batch
    inbox = Inbox()
    async with anyio.create_task_group() as tg:
        tg.start_soon(sub.run, inbox)
        await eventually(lambda: len(inbox.messages) == 100)
        tg.cancel_scope.cancel()
    assert [int(p) for _, p in inbox.messages] == list(range(100))
    assert inbox.batches == 1
    await sub.aclose()
    await pub.aclose()


async def test_named_hubs_are_shared_and_unnamed_are_private() -> None:
    assert Hub.named("shared-test") is Hub.named("shared-test")
    assert Hub.named("shared-test") is not Hub.named("other-test")
    assert Hub() is not Hub()


async def test_a_subscriber_too_far_behind_is_disconnected(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    hub.max_buffered = 10
    broker = MemoryBroker(hub)
    sub = await broker.open_subscriber(health_check_interval=30, reply_timeout=5)
    await sub.subscribe(["c"])
    with caplog.at_level(logging.WARNING, "tidings"):
        for _ in range(11):
            hub.publish("c", b"x")
    assert "11 messages behind" in caplog.text
    assert hub.numsub(["c"]) == {"c": 0}  # like Redis, a dropped client loses its subscriptions
    with pytest.raises(anyio.BrokenResourceError, match="max_buffered"):
        await sub.run(Inbox())
    await sub.aclose()


async def test_faults_refuse_and_kill(hub: Hub) -> None:
    broker = MemoryBroker(hub)
    sub = await broker.open_subscriber(health_check_interval=30, reply_timeout=5)
    assert hub.kill_connections("boom") == 1
    with pytest.raises(anyio.BrokenResourceError, match="boom"):
        await sub.subscribe(["c"])
    hub.refusing = True
    with pytest.raises(ConnectionRefusedError, match="refusing"):
        await broker.open_publisher(health_check_interval=30, reply_timeout=5)


async def test_a_killed_reader_wakes_and_raises(hub: Hub) -> None:
    sub = await MemoryBroker(hub).open_subscriber(health_check_interval=30, reply_timeout=5)

    async def kill() -> None:
        await anyio.wait_all_tasks_blocked()  # the reader is asleep, waiting
        hub.kill_connections()

    with pytest.RaisesGroup(anyio.BrokenResourceError):
        async with anyio.create_task_group() as tg:
            tg.start_soon(kill)
            await sub.run(Inbox())
