"""Redis Cluster, classic and sharded, against a real local cluster (3 + 3 nodes)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from tests.helpers import Recorder, StatusLog, eventually, watched
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer
from tidings import Backoff, Channels, PublishError, ReplyError, create_store

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OPTIONS: dict[str, Any] = {
    "backoff": Backoff(initial=0.05, cap=0.3),
    "health_check_interval": 0.5,
    "connect_timeout": 1.0,
    "publish_timeout": 2.0,
}
MODES = [pytest.param({}, id="classic"), pytest.param({"sharded": "1"}, id="sharded")]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """Shared by the tests that only read and write."""
    cluster = RedisCluster()
    yield cluster
    cluster.close()


@pytest.fixture
def own_cluster() -> Iterator[RedisCluster]:
    """A cluster of this test's own, to break."""
    cluster = RedisCluster()
    yield cluster
    cluster.close()


@asynccontextmanager
async def listening(url: str, recorder: Recorder) -> AsyncIterator[tuple[Channels, StatusLog]]:
    """Channels on ``url`` with ``recorder`` on "orders", proven to receive."""
    channels = Channels(url, **OPTIONS)
    log = await watched(channels)
    async with channels:
        await channels.register("orders", "*", recorder)
        await publish_until_received(channels, recorder, "before")
        yield channels, log
    assert "disconnected" in log.names  # every test here breaks something


async def publish_until_received(
    channels: Channels, recorder: Recorder, data: Any, channel: str = "orders"
) -> None:
    """Publish until the event arrives: across a failover a publish may fail or be lost."""
    with anyio.fail_after(30):
        while data not in recorder.data:
            with contextlib.suppress(PublishError):
                await channels.publish(channel, "probe", data)
            await anyio.sleep(0.1)


@asynccontextmanager
async def durable_pair(url: str) -> AsyncIterator[tuple[Channels, list[int], StatusLog]]:
    """A sender and a receiver of durable channel "orders" on ``url``, events 0-9
    through already: (sender, what the receiver got, the receiver's status log)."""
    received: list[int] = []
    options = {**OPTIONS, "durable": ["orders"]}
    async with Channels(url, **options) as sender, Channels(url, **options) as receiver:
        log = await watched(receiver)
        await receiver.register("orders", "*", lambda c, e, d: received.append(d))
        for n in range(10):
            await sender.publish("orders", "e", n)
        await eventually(lambda: received == list(range(10)))
        yield sender, received, log


async def publish_retrying(channels: Channels, channel: str, data: Any) -> None:
    """Publish once it is accepted: across a failover or a move a publish may fail."""
    with anyio.fail_after(20):
        while True:
            with contextlib.suppress(PublishError):
                await channels.publish(channel, "e", data)
                return
            await anyio.sleep(0.05)


async def move_slot(cluster: RedisCluster, key: str, *, with_keys: bool = False) -> RedisServer:
    """Migrate the slot of ``key`` to another master (its keys with it, as
    ``redis-cli --cluster reshard`` does, when asked); return the new owner once it
    serves it."""
    source = cluster.owner_of(key)
    target = next(
        s
        for s in cluster.servers
        if s is not source and s.client().info("replication")["role"] == "master"
    )
    slot = source.client().execute_command("CLUSTER", "KEYSLOT", key)
    source_id = source.client().execute_command("CLUSTER", "MYID").decode()
    target_id = target.client().execute_command("CLUSTER", "MYID").decode()
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    keys = source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    if with_keys and keys:
        source.client().execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
        )
    for server in (target, source):
        server.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    await eventually(lambda: cluster.owner_of(key) is target)
    return target


@pytest.mark.parametrize("mode", MODES)
async def test_events_flow_and_counts_aggregate(
    cluster: RedisCluster, mode: dict[str, str], recorder: Recorder
) -> None:
    url = cluster.url(namespace="flow", **mode)
    names = [f"c{n}" for n in range(12)]  # spread over the three masters' slots
    async with Channels(url, **OPTIONS) as sender, Channels(url, **OPTIONS) as receiver:
        for name in names:
            await receiver.register(name, "*", recorder)
        for n, name in enumerate(names):
            await sender.publish(name, "e", n)
        await eventually(lambda: len(recorder.calls) == len(names))
        async with receiver.store.pubsub() as pubsub:
            counts = await pubsub.count(*(f"flow:{name}" for name in names))
            listed = sorted(await pubsub.channels("flow:*"))
    assert sorted(recorder.data) == list(range(len(names)))
    assert counts == {f"flow:{name}": 1 for name in names}
    assert listed == sorted(f"flow:{name}" for name in names)


@pytest.mark.parametrize("mode", MODES)
async def test_publish_many_goes_to_each_slot_owner_in_one_write_per_node(
    cluster: RedisCluster, mode: dict[str, str], recorder: Recorder
) -> None:
    namespace = f"many{uuid.uuid4().hex[:8]}"
    url = cluster.url(namespace=namespace, **mode)
    names = [f"c{n}" for n in range(12)]  # spread over the three masters' slots
    durable = ["d0", "d1", "d2", "{tag}.d3"]
    async with (
        Channels(url, durable=durable, **OPTIONS) as sender,
        Channels(url, durable=durable, **OPTIONS) as receiver,
    ):
        for name in names + durable:
            await receiver.register(name, "*", recorder)
        items: list[tuple[Any, ...]] = [(name, "e", n) for n, name in enumerate(names)]
        items += [(name, "e", 100 + n, None, f"k{n}") for n, name in enumerate(durable)]
        items += [(name, "e", 200 + n, None, f"k{n}") for n, name in enumerate(durable)]
        counts = await sender.publish_many(items)
        # (A classic cluster counts the receivers of the node it asked only.)
        assert counts[len(names) + len(durable) :] == [0] * len(durable)  # repeated keys
        await eventually(lambda: len(recorder.calls) == len(names) + len(durable))
        assert sender.stats().deduplicated == len(durable)
    assert sorted(recorder.data) == list(range(len(names))) + [100 + n for n in range(4)]


async def test_sharded_subscriptions_go_to_each_slot_owner(
    cluster: RedisCluster, recorder: Recorder
) -> None:
    async with Channels(cluster.url(namespace="own", sharded="1"), **OPTIONS) as channels:
        for name in ("a", "b", "c", "d", "e", "f"):
            await channels.register(name, "*", recorder)
        connections = cluster.clients_named("tidings-sub")
        # one subscriber connection per master that owns one of the channels
        owners = {cluster.owner_of(f"own:{name}").port for name in "abcdef"}
        assert {server.port for server, _ in connections} == owners
        for server, _ in connections:
            assert server.client().info("replication")["role"] == "master"


async def test_patterns_are_refused_up_front_in_sharded_mode(cluster: RedisCluster) -> None:
    store = create_store(cluster.url(sharded="1"))
    async with store.pubsub() as pubsub:
        with pytest.raises(ValueError, match="sharded pub/sub has no patterns"):
            await pubsub.psubscribe("news.*")


async def test_classic_moves_to_another_node_when_its_node_dies(
    own_cluster: RedisCluster, recorder: Recorder
) -> None:
    async with listening(own_cluster.url(namespace="mv"), recorder) as (channels, log):
        [(node, _)] = own_cluster.clients_named("tidings-sub")
        node.kill()
        await eventually(lambda: log.names.count("connected") >= 2, limit=30)
        [(moved_to, _)] = own_cluster.clients_named("tidings-sub")
        assert moved_to is not node
        await publish_until_received(channels, recorder, "after")


async def test_sharded_follows_a_failover(own_cluster: RedisCluster, recorder: Recorder) -> None:
    url = own_cluster.url(namespace="fo", sharded="1")
    async with listening(url, recorder) as (channels, _):
        owner = own_cluster.owner_of("fo:orders")
        owner.kill()  # its replica is promoted after the node timeout
        await eventually(lambda: own_cluster.owner_of("fo:orders") is not owner, limit=30)
        await publish_until_received(channels, recorder, "after")
        assert [s for s, _ in own_cluster.clients_named("tidings-sub")] == [
            own_cluster.owner_of("fo:orders")
        ]


async def test_sharded_follows_a_slot_migration(
    own_cluster: RedisCluster, recorder: Recorder
) -> None:
    url = own_cluster.url(namespace="mg", sharded="1")
    async with listening(url, recorder) as (channels, _):
        target = await move_slot(own_cluster, "mg:orders")
        await publish_until_received(channels, recorder, "after")
        await eventually(
            lambda: [s for s, _ in own_cluster.clients_named("tidings-sub")] == [target]
        )


async def test_sharded_subscription_to_a_moved_slot_is_retried_not_refused(
    own_cluster: RedisCluster, recorder: Recorder
) -> None:
    """MOVED means "not here", not "never": the channel is subscribed where it lives now."""
    url = own_cluster.url(namespace="mg", sharded="1")
    async with listening(url, recorder) as (channels, _):
        await move_slot(own_cluster, "mg:other")
        other = Recorder()
        await channels.register("other", "*", other)  # asked of the old owner first
        assert "other" in channels
        await publish_until_received(channels, other, "moved", channel="other")


@pytest.mark.parametrize("mode", MODES)
async def test_durable_channels_keep_their_logs_on_each_slot_owner(
    cluster: RedisCluster, mode: dict[str, str], recorder: Recorder
) -> None:
    """The stream and the live message of a channel hash to one slot, on its owner."""
    namespace = f"dur{uuid.uuid4().hex[:8]}"  # the cluster outlives the test
    url = cluster.url(namespace=namespace, **mode)
    names = [f"c{n}" for n in range(6)]  # spread over the masters
    async with Channels(url, durable=names, **OPTIONS) as sender:
        for n, name in enumerate(names):
            await sender.publish(name, "e", n)  # before anyone listens: kept in the logs
        async with Channels(url, durable=names, **OPTIONS) as receiver:
            for name in names:
                await receiver.register(name, "*", recorder, since="all")
            for n, name in enumerate(names):
                await sender.publish(name, "e", 100 + n)  # live
            await eventually(lambda: len(recorder.calls) == 12)
    for n, name in enumerate(names):
        assert [d for c, _, d in recorder.calls if c == name] == [n, 100 + n]
    owners = {cluster.owner_of(f"{namespace}:{name}").port for name in names}
    assert len(owners) > 1  # the logs really are on several nodes


@pytest.mark.parametrize("mode", MODES)
async def test_idempotent_publishes_and_checkpoints_on_each_slot_owner(
    cluster: RedisCluster, mode: dict[str, str], recorder: Recorder
) -> None:
    """The dedupe key shares its channel's slot (one script touches both), and a
    named consumer's checkpoint is found on its own slot's owner."""
    namespace = f"idem{uuid.uuid4().hex[:8]}"
    url = cluster.url(namespace=namespace, **mode)
    names = ["c0", "c1", "c2", "{tag}.c3"]
    async with (
        Channels(url, durable=names, **OPTIONS) as sender,
        Channels(url, durable=names, **OPTIONS) as receiver,
    ):
        for name in names:
            await receiver.register(name, "*", recorder, consumer="billing")
        for name in names:
            # (A classic cluster counts the receivers of the node it asked only.)
            await sender.publish(name, "e", 1, key="k")
            assert await sender.publish(name, "e", 2, key="k") == 0
            await sender.publish(name, "e", 3)
        await eventually(lambda: len(recorder.calls) == 2 * len(names))
        assert sender.stats().deduplicated == len(names)
        assert sorted(d for _, _, d in recorder.calls) == [1] * len(names) + [3] * len(names)


@pytest.mark.parametrize("mode", MODES)
async def test_consumer_groups_share_work_and_dead_letter_on_a_cluster(
    cluster: RedisCluster, mode: dict[str, str]
) -> None:
    """Groups of channels on several slot owners; the dead-letter stream of a
    hash-tagged name on its channel's node, of a plain name wherever its slot is."""
    namespace = f"grp{uuid.uuid4().hex[:8]}"
    url = cluster.url(namespace=namespace, **mode)
    names = ["{jobs}", "mail", "sms"]
    options = {**OPTIONS, "durable": names, "max_deliver": 2}
    done: dict[str, list[Any]] = {name: [] for name in names}

    def work(channel: Any, event: str, data: Any) -> None:
        if data == "poison":
            raise RuntimeError("poison")
        done[channel.name].append(data)

    async with Channels(url, **options) as one, Channels(url, **options) as two:
        log = await watched(one)
        log_two = await watched(two)
        for member in (one, two):
            for name in names:
                await member.register(name, "*", work, group="workers")
        for n in range(30):
            await one.publish(names[n % 3], "e", n)
        await one.publish("{jobs}", "e", "poison")
        await one.publish("mail", "e", "poison")
        await eventually(lambda: sum(map(len, done.values())) == 30, limit=10)
        await eventually(lambda: (log.names + log_two.names).count("dead_letter") == 2, limit=10)
    for index, name in enumerate(names):
        assert sorted(done[name]) == list(range(index, 30, 3))
    for name in ("{jobs}", "mail"):
        key = f"{namespace}:{name}"
        [(_, fields)] = cluster.owner_of(f"{key}:dead").client().xrange(f"{key}:dead")
        assert fields[b"deliveries"] == b"2"
        assert cluster.owner_of(key).client().xpending(key, "workers")["pending"] == 0
    tagged = f"{namespace}:{{jobs}}"
    assert cluster.owner_of(f"{tagged}:dead") is cluster.owner_of(tagged)


async def test_concurrent_publishes_open_one_connection_per_node(cluster: RedisCluster) -> None:
    """Callers racing to a node nobody published to yet share the one connection
    the first of them opens (they each opened one, and all but one leaked)."""
    url = cluster.url(namespace=f"race{uuid.uuid4().hex[:8]}", sharded="1")
    async with Channels(url, **OPTIONS) as channels:
        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(channels.publish, f"c{n}", "e", n)
        connections = [server.port for server, _ in cluster.clients_named("tidings-pub")]
        assert connections
        assert len(connections) == len(set(connections))  # one per node


async def test_a_durable_channel_follows_its_slot_and_log_to_another_node(
    own_cluster: RedisCluster,
) -> None:
    async with durable_pair(own_cluster.url(namespace="dm", sharded="1")) as (
        sender,
        received,
        log,
    ):
        target = await move_slot(own_cluster, "dm:orders", with_keys=True)
        assert own_cluster.owner_of("dm:orders") is target
        for n in range(10, 20):  # the first may meet the old owner's MOVED
            await publish_retrying(sender, "orders", n)
        await eventually(lambda: received[-1:] == [19], limit=10)
    assert received == list(range(20))  # once each, in order: the log moved with the slot
    assert "gap" not in log.names


async def test_a_durable_channel_after_a_failover_repeats_nothing_and_reports_losses(
    own_cluster: RedisCluster,
) -> None:
    """Replication is asynchronous: a failover may lose the newest entries. What
    arrives comes once and in order, and what is lost is reported, never silent."""
    async with durable_pair(own_cluster.url(namespace="df", sharded="1")) as (
        sender,
        received,
        log,
    ):
        owner = own_cluster.owner_of("df:orders")
        owner.kill()  # its replica is promoted after the node timeout
        await eventually(lambda: own_cluster.owner_of("df:orders") is not owner, limit=30)
        after = list(range(100, 110))
        for n in after:
            await publish_retrying(sender, "orders", n)
        await eventually(lambda: set(after) <= set(received), limit=20)
    assert received == sorted(received)  # in order
    assert len(received) == len(set(received))  # nothing twice
    if not set(range(10)) <= set(received):
        assert "gap" in log.names


@pytest.mark.redis
async def test_cluster_publish_many_of_plain_events_works_where_publish_does(
    cluster: RedisCluster, recorder: Recorder
) -> None:
    """Classic mode publishes plain events through one connection and needs no slot
    map: a user whose ACL refuses CLUSTER can `publish()`, and `publish_many()` too
    (it asks for the slot map only when an item needs its owner)."""
    for server in cluster.servers:
        server.user("r26nocluster", "-cluster")
    seeds = ",".join(f"127.0.0.1:{s.port}" for s in cluster.servers[:2])
    url = f"redis+cluster://r26nocluster:pw@{seeds}/"
    namespace = f"many{uuid.uuid4().hex[:8]}"
    async with Channels(url, namespace=namespace, publish_timeout=2) as channels:
        await channels.register("c", "*", recorder)
        await channels.publish("c", "e", 0)  # fine
        try:
            await channels.publish_many([("c", "e", 1), ("c", "e", 2)])
        except ReplyError as exc:
            pytest.fail(f"publish_many refused where publish works: {exc!r}")
        await eventually(lambda: recorder.data == [0, 1, 2])
