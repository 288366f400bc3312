"""PubSub, the seed API's lower level, on memory://."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tests.helpers import eventually
from tidings import BrokerError, Bytes, Json, PublishError, PubSub, Store
from tidings.brokers.memory import Hub, MemoryBroker

pytestmark = pytest.mark.anyio


class Client:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def __call__(self, channel: str, message: Any) -> None:
        self.got.append((channel, message))


async def test_clients_receive_subscribed_channels_as_bytes(store: Store) -> None:
    client = Client()
    async with store.pubsub() as pubsub:
        assert pubsub.protocol is None
        pubsub.add_client(client)
        await pubsub.subscribe("a", "b")
        assert await pubsub.publish("a", b"one") == 1
        assert await pubsub.publish("b", "two") == 1  # str is sent as UTF-8
        assert await pubsub.publish("c", b"nobody") == 0
        await eventually(lambda: len(client.got) == 2)
    assert client.got == [("a", b"one"), ("b", b"two")]


async def test_async_clients_and_several_clients_in_order(store: Store) -> None:
    order: list[str] = []

    async def first(channel: str, message: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        order.append(f"first {message.decode()}")

    def second(channel: str, message: bytes) -> None:
        order.append(f"second {message.decode()}")

    async with store.pubsub() as pubsub:
        pubsub.add_client(first)
        pubsub.add_client(second)
        pubsub.add_client(first)  # no-op
        assert pubsub.clients == (first, second)
        await pubsub.subscribe("c")
        for n in range(3):
            await pubsub.publish("c", str(n))
        await eventually(lambda: len(order) == 6)
        pubsub.remove_client(first)
        pubsub.remove_client(first)  # no error
        await pubsub.publish("c", "3")
        await eventually(lambda: len(order) == 7)
    assert order == [
        "first 0",
        "second 0",
        "first 1",
        "second 1",
        "first 2",
        "second 2",
        "second 3",
    ]


async def test_patterns_deliver_the_real_channel(store: Store) -> None:
    client = Client()
    async with store.pubsub() as pubsub:
        pubsub.add_client(client)
        await pubsub.psubscribe("news.*", "sport.[ab]")
        await pubsub.publish("news.uk", b"1")
        await pubsub.publish("sport.a", b"2")
        await pubsub.publish("sport.c", b"3")
        await eventually(lambda: len(client.got) == 2)
        assert await pubsub.count_patterns() == 2
        await pubsub.punsubscribe("news.*")
        assert await pubsub.count_patterns() == 1
        await pubsub.punsubscribe()
        assert await pubsub.count_patterns() == 0
    assert client.got == [("news.uk", b"1"), ("sport.a", b"2")]


async def test_count_and_channels_answer_from_the_broker(store: Store) -> None:
    async with store.pubsub() as one, store.pubsub() as two:
        await one.subscribe("shop:a", "shop:b", "misc")
        await two.subscribe("shop:a")
        await two.psubscribe("shop:*")  # patterns are not counted
        assert await one.count("shop:a", "shop:b", "none") == {"shop:a": 2, "shop:b": 1, "none": 0}
        assert await one.count() == {}
        assert sorted(await one.channels()) == ["misc", "shop:a", "shop:b"]
        assert sorted(await two.channels("shop:*")) == ["shop:a", "shop:b"]
        await one.unsubscribe("shop:b")
        assert sorted(await one.channels()) == ["misc", "shop:a"]
        await one.unsubscribe()
        assert await one.channels() == ["shop:a"]


async def test_a_protocol_encodes_and_decodes(store: Store) -> None:
    client = Client()
    async with store.pubsub(protocol=Json()) as pubsub:
        pubsub.add_client(client)
        await pubsub.subscribe("c")
        await pubsub.publish("c", {"x": [1, 2]})
        await eventually(lambda: client.got)
        with pytest.raises(TypeError, match="JSON"):
            await pubsub.publish("c", object())
    assert client.got == [("c", {"x": [1, 2]})]


async def test_undecodable_messages_are_counted(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    async with store.pubsub(protocol=Json()) as pubsub, store.pubsub() as raw:
        pubsub.add_client(client)
        await pubsub.subscribe("c")
        with caplog.at_level(logging.WARNING, "tidings"):
            await raw.publish("c", b"{oops")
            await raw.publish("c", b"1")
            await eventually(lambda: client.got)
        assert pubsub.stats().decode_errors == 1
    assert client.got == [("c", 1)]
    assert "undecodable" in caplog.text


async def test_failing_clients_are_isolated_and_removed(store: Store) -> None:
    good = Client()

    def bad(channel: str, message: bytes) -> None:
        raise RuntimeError("bad client")

    async with store.pubsub(callback_failure_limit=1) as pubsub:
        pubsub.add_client(bad)
        pubsub.add_client(good)
        await pubsub.subscribe("c")
        for n in range(3):
            await pubsub.publish("c", str(n))
        await eventually(lambda: len(good.got) == 3)
        assert pubsub.clients == (good,)
        assert pubsub.stats().callback_errors == 2


async def test_bad_input_before_io(store: Store) -> None:
    pubsub = PubSub(store)
    with pytest.raises(TypeError, match="callable"):
        pubsub.add_client(42)  # type: ignore[arg-type]
    async with pubsub:
        for call in (
            lambda: pubsub.subscribe(""),
            lambda: pubsub.psubscribe(None),  # type: ignore[arg-type]
            lambda: pubsub.publish("", b"x"),
            lambda: pubsub.count(7),  # type: ignore[arg-type]
            lambda: pubsub.unsubscribe(""),
            lambda: pubsub.channels(""),
        ):
            with pytest.raises(ValueError, match=r"channel name|pattern"):
                await call()
        with pytest.raises(TypeError, match="Bytes protocol"):
            await pubsub.publish("c", 12)


async def test_lifecycle_errors_and_nursery_start(store: Store) -> None:
    pubsub = store.pubsub()
    assert str(pubsub) == repr(pubsub) == store.url
    assert pubsub.store is store
    with pytest.raises(RuntimeError, match="not running"):
        await pubsub.subscribe("c")
    async with anyio.create_task_group() as tg:
        await tg.start(pubsub.run)
        await pubsub.connect()
        await pubsub.subscribe("c")
        await pubsub.close()
    with pytest.raises(RuntimeError, match="closed"):
        await pubsub.publish("c", b"x")


async def test_publish_times_out_without_a_connection(hub: Hub) -> None:
    hub.refusing = True
    async with PubSub(Store(MemoryBroker(hub)), publish_timeout=0.05) as pubsub:
        with pytest.raises(PublishError, match="publish_timeout"):
            await pubsub.publish("c", b"x")
        with pytest.raises(BrokerError, match="count"):
            await pubsub.count("c")


async def test_bytes_protocol_accepts_bytes_like() -> None:
    codec = Bytes()
    assert codec.encode(bytearray(b"ab")) == b"ab"
    assert codec.encode(memoryview(b"cd")) == b"cd"
    assert codec.decode(b"x") == b"x"
    assert repr(codec) == "Bytes()"
    assert repr(Json()) == "Json()"


async def test_sync_clients_are_called_in_place_and_async_ones_get_a_task(store: Store) -> None:
    order: list[Any] = []

    async def slow(channel: str, message: Any) -> None:
        await anyio.lowlevel.checkpoint()
        order.append(("async", message))

    async with store.pubsub() as pubsub:
        tasks = pubsub._runtime.actors
        pubsub.add_client(lambda channel, message: order.append(message))
        await pubsub.subscribe("c")
        await pubsub.publish("c", b"1")
        await eventually(lambda: order == [b"1"])
        assert len(tasks) == 0  # no task: the reader called the client itself
        pubsub.add_client(slow)
        await pubsub.publish("c", b"2")
        await pubsub.publish("c", b"3")
        await eventually(lambda: len(order) == 5)
        assert order == [b"1", b"2", ("async", b"2"), b"3", ("async", b"3")]
        assert len(tasks) == 1  # while a client awaits
        pubsub.remove_client(slow)
        await pubsub.publish("c", b"4")
        await eventually(lambda: len(tasks) == 0)  # given back once all are sync again
        assert order[-1] == b"4"
