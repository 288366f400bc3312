"""``publish_many``: many events in as few writes as the broker allows, checked first."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import pytest

import tidings
from tests.helpers import FAST, Harness, Recorder, eventually
from tests.redis_server import RedisServer
from tidings import Channels, PublishError

pytestmark = pytest.mark.anyio


def fresh() -> str:
    """A namespace of its own: keys and logs outlive a test on a shared server."""
    return f"many-{uuid.uuid4().hex[:8]}"


async def test_every_item_is_published_in_order_with_its_receiver_count(
    broker: Harness, recorder: Recorder
) -> None:
    async with (
        Channels(broker.store(), namespace=fresh(), durable=["d"]) as sender,
        Channels(sender.store, namespace=sender.namespace, durable=["d"]) as receiver,
    ):
        await receiver.register("a", "*", recorder)
        await receiver.register("d", "*", recorder)
        items: list[tuple[Any, ...]] = [
            *(("a", "tick", n) for n in range(300)),
            ("nobody", "tick", 0),
            ("d", "tick", {"n": 1}, {"tenant": "acme"}),
            ("d", "tick", {"n": 2}, None, "key-2"),
            ("d", "tick", {"n": 2}, None, "key-2"),  # a repeat: nothing sent
        ]
        counts = await sender.publish_many(items)
        assert counts == [1] * 300 + [0, 1, 1, 0]
        await eventually(lambda: len(recorder.calls) == 302)
        stats = sender.stats()
    by_channel: dict[str, list[Any]] = {}
    for channel, _, data in recorder.calls:
        by_channel.setdefault(channel, []).append(data)
    assert by_channel == {"a": list(range(300)), "d": [{"n": 1}, {"n": 2}]}  # in order
    assert (stats.published, stats.deduplicated, stats.publish_errors) == (303, 1, 0)


async def test_headers_and_ids_travel_as_with_publish(broker: Harness) -> None:
    channels = Channels(broker.store(), namespace=fresh(), durable=["d"])
    async with channels, channels.subscribe("d") as events:
        await channels.publish_many([("d", "e", 1, {"h": "v"}), ("d", "e", 2)])
        first, second = await events.receive(), await events.receive()
    assert (first.data, dict(first.headers), second.data) == (1, {"h": "v"}, 2)
    assert first.id is not None
    assert second.id is not None
    assert first.id < second.id


@pytest.mark.parametrize(
    ("item", "error", "says"),
    [
        (["c", "e", 1], TypeError, "item 1 must be a (channel, event, data"),
        (("c", "e"), TypeError, "item 1 must be a (channel, event, data"),
        (("c", "e", 1, None, None, None), TypeError, "item 1 must be"),
        (("", "e", 1), ValueError, "item 1: "),
        (("c", "", 1), ValueError, "item 1: event name"),
        (("c", "e", {1, 2}), TypeError, "item 1: cannot encode as JSON"),
        (("c", "e", 1, {"k": 1}), TypeError, "item 1: "),
        (("c", "e", 1, None, "k"), ValueError, "item 1: key='k' needs a durable channel"),
    ],
)
async def test_a_bad_item_fails_the_call_before_anything_is_sent(
    broker: Harness, recorder: Recorder, item: Any, error: type[Exception], says: str
) -> None:
    async with Channels(broker.store(), namespace=fresh()) as channels:
        await channels.register("c", "*", recorder)
        with pytest.raises(error) as raised:
            await channels.publish_many([("c", "e", 0), item, ("c", "e", 2)])
        assert says in str(raised.value)
        await channels.publish("c", "after", None)
        await eventually(lambda: len(recorder.calls) == 1)
        assert recorder.calls[0][1] == "after"  # nothing of the bad call went out
        assert channels.stats().published == 1


async def test_nothing_to_publish_is_no_publish(broker: Harness) -> None:
    async with Channels(broker.store(), namespace=fresh()) as channels:
        assert await channels.publish_many([]) == []
        assert await channels.publish_many(iter(())) == []
    with pytest.raises(RuntimeError, match="publish"):
        await channels.publish_many([("c", "e", 1)])


@pytest.mark.redis
async def test_it_is_pipelined_in_one_write(redis_server: RedisServer) -> None:
    """The replies of 500 publishes come back in far fewer reads than 500: the
    commands went out together (counted by the server's own INFO)."""
    admin = redis_server.client()
    async with Channels(redis_server.url, namespace=fresh()) as channels:
        await channels.publish("warm", "e", 0)
        before = admin.info("stats")
        await channels.publish_many([("c", "e", n) for n in range(500)])
        after = admin.info("stats")
    commands = after["total_commands_processed"] - before["total_commands_processed"]
    reads = after["total_reads_processed"] - before["total_reads_processed"]
    assert 500 <= commands <= 501  # (and an INFO)
    assert reads < 50, reads  # one write from us is read in a few chunks, not 500


@pytest.mark.redis
async def test_a_refused_item_fails_alone_and_is_named(redis_server: RedisServer) -> None:
    namespace = fresh()
    url = redis_server.user("limited", channels=f"{namespace}:open*")
    received: list[Any] = []
    async with Channels(redis_server.url, namespace=namespace) as watcher:
        await watcher.register("open", "*", lambda c, e, d: received.append(d))
        async with Channels(url, namespace=namespace) as channels:
            with pytest.raises(PublishError) as raised:
                await channels.publish_many(
                    [("open", "e", 1), ("closed", "e", 2), ("open", "e", 3)]
                )
            message = str(raised.value)
            assert "item 1" in message
            assert f"{namespace}:closed" in message
            assert "1 of 3 refused" in message
            assert raised.value.__cause__ is not None
            assert isinstance(raised.value.__cause__, tidings.ReplyError)
            assert raised.value.__cause__.code == "NOPERM"
            stats = channels.stats()
            assert (stats.published, stats.publish_errors) == (2, 1)
            # The connection is fine: the next call goes through.
            assert await channels.publish_many([("open", "e", 4)]) == [1]
        await eventually(lambda: received == [1, 3, 4])


@pytest.mark.redis
async def test_durable_items_survive_a_flushed_script_cache(redis_server: RedisServer) -> None:
    """After a restart Redis has forgotten the append script: every durable item of
    the batch is refused NOSCRIPT, and made again, in order."""
    namespace = fresh()
    admin = redis_server.client()
    async with Channels(redis_server.url, namespace=namespace, durable=["d"]) as channels:
        await channels.publish("d", "e", -1)  # the script is loaded
        admin.script_flush()
        counts = await channels.publish_many(
            [("d", "e", 0), ("plain", "e", 1), ("d", "e", 2), ("d", "e", 3, None, "k")]
        )
        assert counts == [0, 0, 0, 0]  # (nobody listens)
    entries = admin.xrange(f"{namespace}:d")
    data = [json.loads(fields[b"envelope"])["data"] for _, fields in entries]
    assert data == [-1, 0, 2, 3]


@pytest.mark.redis
async def test_scripting_forbidden_falls_back_item_by_item(redis_server: RedisServer) -> None:
    namespace = fresh()
    admin = redis_server.client()
    url = redis_server.user("noscript", "-@scripting")
    async with Channels(url, namespace=namespace, durable=["d"]) as channels:
        items: list[tuple[Any, ...]] = [("d", "e", n, None, f"k{n % 3}") for n in range(6)]
        assert await channels.publish_many(items) == [0] * 6
        assert channels.stats().deduplicated == 3
        assert await channels.publish_many(items) == [0] * 6  # (no scripts, known now)
        assert channels.stats().deduplicated == 9
    entries = admin.xrange(f"{namespace}:d")
    assert [json.loads(f[b"envelope"])["data"] for _, f in entries] == [0, 1, 2]


@pytest.mark.redis
async def test_while_disconnected_it_waits_for_the_connection(recorder: Recorder) -> None:
    server = RedisServer()
    try:
        # Durable: the receiver may resubscribe after the sender published; it reads
        # the log back (on a plain channel, an event published first would be lost).
        options: dict[str, Any] = {"backoff": FAST, "publish_timeout": 10, "durable": ["c"]}
        async with (
            Channels(server.url, namespace="w", **options) as receiver,
            Channels(server.url, namespace="w", **options) as sender,
        ):
            await receiver.register("c", "*", recorder)
            server.kill()
            await eventually(lambda: sender.status is tidings.StatusType.disconnected)
            async with anyio.create_task_group() as group:
                results: list[list[int]] = []

                async def publish() -> None:
                    results.append(await sender.publish_many([("c", "e", 1), ("c", "e", 2)]))

                group.start_soon(publish)
                await anyio.wait_all_tasks_blocked()
                assert results == []  # waiting, not failed
                server.start()
            await eventually(lambda: len(recorder.calls) == 2)
            assert len(results) == 1
            assert len(results[0]) == 2  # (the receiver may not have been back yet: 0s)
    finally:
        server.close()


@pytest.mark.redis
async def test_a_lost_connection_is_a_publish_error() -> None:
    server = RedisServer()
    try:
        async with Channels(server.url, namespace="lost", publish_timeout=0.5) as channels:
            await channels.publish("c", "e", 0)
            big = "x" * 100_000
            server.kill()
            with pytest.raises(PublishError, match="publish") as raised:
                await channels.publish_many([("c", "e", big)] * 50)
            assert "lost while publishing 50 events" in str(raised.value) or (
                "not connected" in str(raised.value)
            )
            assert channels.stats().publish_errors >= 1
    finally:
        server.close()


@pytest.mark.redis
async def test_cancelled_midway_shifts_no_later_reply(redis_server: RedisServer) -> None:
    """A call cancelled before its replies came leaves them to be read and dropped:
    the next publish gets its own count, not one of theirs."""
    namespace = fresh()
    async with Channels(redis_server.url, namespace=namespace) as channels:
        await channels.register("one", "*", lambda c, e, d: None)
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled at its first wait: after the write
            await channels.publish_many([("none", "e", n) for n in range(1000)])
        for _ in range(20):
            assert await channels.publish("one", "e", 0) == 1
            assert await channels.publish("none", "e", 0) == 0
