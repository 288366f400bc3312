"""Idempotent publish (``publish(..., key=)``) and the keys tidings keeps beside a log."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from tests.helpers import Harness, MemoryHarness, Recorder, eventually
from tests.redis_server import RedisServer
from tidings import Channels
from tidings.brokers.base import dedupe_key, legacy_position_key, position_key, side_key
from tidings.brokers.slots import key_slot
from tidings.policies.names import Namespace

pytestmark = pytest.mark.anyio

NS = "idem"


@pytest.fixture(autouse=True)
def _fresh_namespace() -> None:
    """Logs and keys outlive a test on the shared redis-server: each test its own."""
    global NS
    NS = f"i{uuid.uuid4().hex[:8]}"


async def test_a_repeated_key_stores_and_delivers_nothing(broker: Harness) -> None:
    seen = Recorder()
    async with (
        Channels(broker.store(), namespace=NS, durable=["jobs"]) as producer,
        Channels(broker.store(), namespace=NS, durable=["jobs"]) as other,
        Channels(broker.store(), namespace=NS, durable=["jobs"]) as consumer,
    ):
        await consumer.register("jobs", "*", seen, since="all")
        assert await producer.publish("jobs", "e", 1, key="order-42") == 1
        # A repeat from the same handler, and from another one: nothing.
        assert await producer.publish("jobs", "e", 2, key="order-42") == 0
        assert await other.publish("jobs", "e", 3, key="order-42") == 0
        # Other keys, and no key, go through.
        assert await other.publish("jobs", "e", 4, key="order-43") == 1
        assert await producer.publish("jobs", "e", 5) == 1
        await eventually(lambda: seen.data == [1, 4, 5])
        assert producer.stats().deduplicated == 1
        assert other.stats().deduplicated == 1
        assert producer.stats().published == 2  # the repeat is not a publish
        await producer.publish("jobs", "e", "end")
    # The log holds the three, and the marker after them: the repeats were not stored.
    async with (
        Channels(broker.store(), namespace=NS, durable=["jobs"]) as reader,
        reader.subscribe("jobs", since="all") as events,
    ):
        got = [(await events.receive()).data for _ in range(4)]
    assert got == [1, 4, 5, "end"]


async def test_a_key_is_forgotten_after_the_window(broker: Harness) -> None:
    seen = Recorder()
    async with Channels(
        broker.store(), namespace=NS, durable=["jobs"], dedupe_window=0.05
    ) as channels:
        await channels.register("jobs", "*", seen)
        assert await channels.publish("jobs", "e", 1, key="k") == 1
        await eventually(lambda: seen.data == [1])

        async def published_again() -> bool:
            return await channels.publish("jobs", "e", 2, key="k") == 1

        # The window is the broker's clock's: ask again until it has passed.
        with anyio.fail_after(5):
            while not await published_again():
                await anyio.sleep(0.02)
        await eventually(lambda: seen.data == [1, 2])


async def test_a_key_is_refused_before_any_io(broker: Harness) -> None:
    channels = Channels(broker.store(), namespace=NS, durable=["jobs"])
    # Not running: the checks come first all the same.
    with pytest.raises(ValueError, match="durable"):
        await channels.publish("plain", "e", 1, key="k")
    with pytest.raises(ValueError, match="idempotency key"):
        await channels.publish("jobs", "e", 1, key="")
    with pytest.raises(ValueError, match="idempotency key"):
        await channels.publish("jobs", "e", 1, key=7)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not running"):
        await channels.publish("jobs", "e", 1, key="k")


def test_side_keys_share_the_slot_of_their_channel_and_are_never_channel_names() -> None:
    namespace = Namespace("shop")
    for channel in ("shop:orders", "shop:{user1}.inbox", "plain", "a{b}c", "x{}y"):
        for key in (
            position_key(channel, "billing"),
            dedupe_key(channel, "order-42"),
            side_key(channel, "k", "n"),
        ):
            assert key.startswith(channel)  # the namespace's ACL key patterns cover it
            if "{}" not in channel:  # an empty tag: Redis hashes the whole name
                assert key_slot(key.encode()) == key_slot(channel.encode()), (channel, key)
            with pytest.raises(ValueError, match="delimiter"):  # an empty segment
                namespace.broker_name(key)
    # The old checkpoint key could be a channel of its own.
    assert namespace.broker_name(legacy_position_key("shop:jobs", "b")) == "shop:jobs:checkpoint:b"


async def test_a_checkpoint_saved_under_the_old_key_is_resumed(
    redis_server: RedisServer,
) -> None:
    """Saved by a release before 0.2 (``<channel>:checkpoint:<consumer>``)."""
    import redis

    client: Any = redis.Redis(port=redis_server.port, decode_responses=True)
    seen = Recorder()
    async with Channels(redis_server.url, namespace=NS, durable=["jobs"]) as channels:
        for n in range(4):
            await channels.publish("jobs", "e", n)
        ids = [entry[0] for entry in client.xrange(f"{NS}:jobs")]
        client.set(legacy_position_key(f"{NS}:jobs", "billing"), ids[1])
        await channels.register("jobs", "*", seen, consumer="billing")
        await eventually(lambda: seen.data == [2, 3])
        # Saved from now on under the new key.
        await eventually(lambda: client.get(position_key(f"{NS}:jobs", "billing")) == ids[3])


async def test_memory_forgets_expired_keys() -> None:
    broker = MemoryHarness()
    async with Channels(
        broker.store(), namespace=NS, durable=["jobs"], dedupe_window=0.001
    ) as channels:
        for n in range(2000):
            await channels.publish("jobs", "e", n, key=f"k{n}")
        await anyio.sleep(0.01)
        await channels.publish("jobs", "e", -1, key="last")
        assert len(broker.hub._dedupe) < 1100  # bounded: the expired ones went


async def test_a_user_limited_to_the_namespace_keys_can_use_keys_and_checkpoints(
    redis_server: RedisServer,
) -> None:
    """The side keys start with the channel's name: ``~<namespace>:*`` covers them."""
    admin: Any = redis_server.client()
    admin.acl_setuser(
        f"only-{NS}",
        enabled=True,
        passwords=["+pw"],
        commands=["+@all"],
        keys=[f"~{NS}:*"],
        channels=[f"{NS}:*"],
    )
    url = f"redis://only-{NS}:pw@127.0.0.1:{redis_server.port}"
    seen = Recorder()
    async with Channels(url, namespace=NS, durable=["jobs"]) as channels:
        await channels.register("jobs", "*", seen, consumer="billing")
        assert await channels.publish("jobs", "e", 1, key="k") == 1
        assert await channels.publish("jobs", "e", 2, key="k") == 0
        await eventually(lambda: seen.data == [1])
        await eventually(lambda: admin.get(position_key(f"{NS}:jobs", "billing")) is not None)
