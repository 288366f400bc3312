"""Channels: every member of the public API, on memory://."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import tidings
from tests.helpers import Harness, Recorder, eventually
from tidings import (
    CallbackError,
    Channel,
    Channels,
    Event,
    Json,
    StatusType,
    Store,
    create_store,
    open_channels,
)
from tidings.testing import settle

pytestmark = pytest.mark.anyio


async def test_register_publish_deliver(channels: Channels, recorder: Recorder) -> None:
    channel = await channels.register("orders", "created", recorder)
    assert isinstance(channel, Channel)
    assert channel.name == "orders"
    assert await channels.publish("orders", "created", {"id": 1}) == 1
    await eventually(lambda: recorder.calls)
    assert recorder.calls == [("orders", "created", {"id": 1})]


async def test_callbacks_receive_the_channel_object(channels: Channels) -> None:
    got: list[Channel] = []
    channel = await channels.register("orders", "*", lambda ch, ev, data: got.append(ch))
    await channels.publish("orders", "x")
    await eventually(lambda: got)
    assert got == [channel]


async def test_data_defaults_to_none_and_round_trips(
    channels: Channels, recorder: Recorder
) -> None:
    await channels.register("c", "*", recorder)
    values: list[Any] = [None, 0, "text", "ünïcødé", [1, [2]], {"a": {"b": None}}, 1.5, True]
    await channels.publish("c", "e")
    for value in values[1:]:
        await channels.publish("c", "e", value)
    await eventually(lambda: len(recorder.calls) == len(values))
    assert recorder.data == values


@pytest.mark.parametrize(
    ("pattern", "delivered"),
    [
        ("*", ["created", "updated", "deleted", "c", "Created"]),
        ("created", ["created"]),
        ("*ed", ["created", "updated", "deleted", "Created"]),
        ("?", ["c"]),
        ("[cd]*", ["created", "deleted", "c"]),
        ("[^cd]*", ["updated", "Created"]),
        ("Created", ["Created"]),
    ],
)
async def test_event_patterns_are_full_case_sensitive_globs(
    channels: Channels, recorder: Recorder, pattern: str, delivered: list[str]
) -> None:
    await channels.register("c", pattern, recorder)
    for event in ("created", "updated", "deleted", "c", "Created"):
        await channels.publish("c", event)
    await channels.publish("c", "end")  # a marker, to know every event was handled
    await channels.register("c", "end", recorder)
    await channels.publish("c", "end")
    await eventually(lambda: recorder.events and recorder.events[-1] == "end")
    assert [e for e in recorder.events if e != "end"] == delivered


async def test_events_are_delivered_in_publish_order(
    channels: Channels, recorder: Recorder
) -> None:
    await channels.register("c", "*", recorder)
    for n in range(500):
        await channels.publish("c", "e", n)
    await eventually(lambda: len(recorder.calls) == 500)
    assert recorder.data == list(range(500))


async def test_async_callbacks_keep_order_with_sync_ones(channels: Channels) -> None:
    order: list[str] = []

    async def slow(ch: Channel, event: str, data: int) -> None:
        await anyio.lowlevel.checkpoint()
        order.append(f"async {data}")

    await channels.register("c", "*", slow)
    await channels.register("c", "e", lambda ch, ev, d: order.append(f"sync {d}"))
    for n in range(3):
        await channels.publish("c", "e", n)
    await eventually(lambda: len(order) == 6)
    assert order == ["async 0", "sync 0", "async 1", "sync 1", "async 2", "sync 2"]


async def test_registering_the_same_callback_twice_is_a_no_op(
    channels: Channels, recorder: Recorder
) -> None:
    await channels.register("c", "*", recorder)
    await channels.register("c", "*", recorder)
    await channels.register("c", "e", recorder)  # another pattern: a second registration
    await channels.publish("c", "e", 1)
    await eventually(lambda: len(recorder.calls) == 2)
    await settle(channels)
    assert len(recorder.calls) == 2
    assert channels.channel("c").events == ("*", "e")  # type: ignore[union-attr]


async def test_unregister_removes_and_drops_empty_channels(
    broker: Harness, channels: Channels, recorder: Recorder
) -> None:
    other = Recorder()
    await channels.register("c", "*", recorder)
    await channels.register("c", "*", other)
    assert await channels.unregister("c", "*", recorder) is channels.channel("c")
    await channels.publish("c", "e", 1)
    await eventually(lambda: other.calls)
    assert recorder.calls == []
    assert "c" in channels
    channel = await channels.unregister("c", "*", other)
    assert channel is not None
    assert len(channel) == 0
    assert "c" not in channels
    assert broker.numsub("test:c") == {"test:c": 0}  # unsubscribed on the broker
    assert await channels.publish("c", "e", 2) == 0


async def test_unregister_unknown_channel_or_callback(
    channels: Channels, recorder: Recorder
) -> None:
    assert await channels.unregister("nope", "*", recorder) is None
    await channels.register("c", "*", recorder)
    channel = await channels.unregister("c", "other", recorder)  # not registered so
    assert channel is not None
    assert "*" in channel


async def test_namespaces_prefix_and_separate_channels(broker: Harness, store: Store) -> None:
    shop, blog = Recorder(), Recorder()
    async with Channels(store, namespace="shop") as a, Channels(store, namespace="blog") as b:
        await a.register("news", "*", shop)
        await b.register("news", "*", blog)
        assert broker.numsub("shop:news", "blog:news") == {"shop:news": 1, "blog:news": 1}
        await a.publish("news", "e", "for shop")
        await a.publish("shop:news", "e", "already prefixed")
        await b.publish("news", "e", "for blog")
        await eventually(lambda: len(shop.calls) == 2 and len(blog.calls) == 1)
    assert shop.calls == [("news", "e", "for shop"), ("news", "e", "already prefixed")]
    assert blog.data == ["for blog"]


async def test_two_handlers_on_one_broker_talk(broker: Harness, recorder: Recorder) -> None:
    url = f"{broker.url}?namespace=chat"
    async with open_channels(url) as alice, open_channels(url) as bob:
        assert alice.namespace == "chat"
        await bob.register("room", "said", recorder)
        assert await alice.publish("room", "said", "hi bob") == 1
        await eventually(lambda: recorder.calls)
    assert recorder.calls == [("room", "said", "hi bob")]


async def test_unnamed_memory_stores_are_private(recorder: Recorder) -> None:
    async with open_channels("memory://") as one, open_channels("memory://") as two:
        await two.register("c", "*", recorder)
        assert await one.publish("c", "e") == 0


async def test_the_wire_format_is_the_documented_json(store: Store) -> None:
    got: list[tuple[str, bytes]] = []
    async with Channels(store, namespace="shop") as channels, store.pubsub() as raw:
        raw.add_client(lambda ch, msg: got.append((ch, msg)))
        await raw.subscribe("shop:orders")
        await channels.publish("orders", "created", {"id": 1, "name": "é"})
        await eventually(lambda: got)
    channel, payload = got[0]
    assert channel == "shop:orders"
    assert json.loads(payload) == {
        "channel": "orders",
        "event": "created",
        "data": {"id": 1, "name": "é"},
    }


async def test_a_foreign_publisher_reaches_callbacks(store: Store, recorder: Recorder) -> None:
    async with Channels(store, namespace="shop") as channels, store.pubsub() as raw:
        await channels.register("orders", "*", recorder)
        await raw.publish("shop:orders", b'{"event": "created", "data": [1]}')
        await eventually(lambda: recorder.calls)
    assert recorder.calls == [("orders", "created", [1])]


async def test_subscribe_iterates_events(channels: Channels) -> None:
    async with channels.subscribe("orders", "created") as events:
        await channels.publish("orders", "deleted", 0)
        await channels.publish("orders", "created", 1)
        await channels.publish("orders", "created", 2)
        received = [await events.receive(), await events.receive()]
    assert received == [Event("orders", "created", 1), Event("orders", "created", 2)]
    assert "orders" not in channels  # the iterator's registration is gone


async def test_subscribe_iterator_ends_when_channels_close(store: Store) -> None:
    seen: list[Event] = []
    async with Channels(store) as channels, channels.subscribe("c") as events:
        await channels.publish("c", "e", 1)
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async for ev in events:
                    seen.append(ev)

            tg.start_soon(consume)
            await eventually(lambda: seen)
            await channels.close()
    assert seen == [Event("c", "e", 1)]


async def test_event_is_a_frozen_dataclass() -> None:
    ev = Event("c", "e", {"x": 1})
    with pytest.raises(AttributeError):
        ev.event = "other"  # type: ignore[misc]
    assert ev == Event("c", "e", {"x": 1})


async def test_a_failing_callback_is_isolated_then_removed(
    store: Store, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(ch: Channel, event: str, data: Any) -> None:
        raise ValueError(f"broken on {data}")

    async with Channels(store, callback_failure_limit=2) as channels:
        await channels.register("c", "*", broken)
        await channels.register("c", "*", recorder)
        with caplog.at_level(logging.ERROR, "tidings"):
            for n in range(5):
                await channels.publish("c", "e", n)
            await eventually(lambda: len(recorder.calls) == 5)
        stats = channels.stats()
        assert recorder.data == [0, 1, 2, 3, 4]
        assert stats.callback_errors == 3  # the third failure exceeds the limit of 2
        assert stats.callbacks_removed == 1
        assert len(channels.channel("c").registrations_for("e")) == 1  # type: ignore[union-attr]
        assert "broken on 0" in caplog.text
        assert "removed" in caplog.text


async def test_callback_error_unregisters_quietly_and_drops_the_channel(
    broker: Harness, channels: Channels
) -> None:
    calls: list[int] = []

    async def once(ch: Channel, event: str, data: int) -> None:
        calls.append(data)
        raise CallbackError

    await channels.register("c", "*", once)
    await channels.publish("c", "e", 1)
    await channels.publish("c", "e", 2)
    await eventually(lambda: "c" not in channels)
    await eventually(lambda: broker.numsub("test:c") == {"test:c": 0})
    assert calls == [1]
    assert channels.stats().callback_errors == 0


async def test_a_slow_consumer_drops_counts_and_is_reported(store: Store) -> None:
    release = anyio.Event()
    got: list[int] = []
    reports: list[dict[str, Any]] = []

    async def slow(ch: Channel, event: str, data: int) -> None:
        await release.wait()
        got.append(data)

    async with Channels(store, max_pending=5) as channels:
        await channels.register(
            channels.status_channel.name,
            "slow_consumer",
            lambda ch, ev, data: reports.append(data),
        )
        await channels.register("c", "*", slow)
        for n in range(20):
            await channels.publish("c", "e", n)
        await eventually(lambda: channels.stats().dropped > 0)
        release.set()
        # every message is either delivered or counted as dropped: none vanish
        await eventually(lambda: len(got) + channels.stats().dropped == 20)
        await settle(channels)
        stats = channels.stats()
    assert stats.dropped == 20 - len(got)
    assert 0 < len(got) < 20
    if store.url.startswith("memory"):
        # One batch: the message in hand (its callback awaits) and what fit in the
        # mailbox behind it (5). (From Redis the messages come in as many reads as
        # the socket makes, and the actor frees room between them: more fit, but
        # never without bound.)
        assert len(got) == 1 + 5
    assert got == sorted(got)
    assert got[0] == 0
    assert len(reports) == 1  # one report per overflow episode, not per message
    assert reports[0]["channel"] == "c"
    assert reports[0]["max_pending"] == 5


async def test_block_overflow_loses_nothing(store: Store) -> None:
    got: list[int] = []

    async def slow(ch: Channel, event: str, data: int) -> None:
        await anyio.lowlevel.checkpoint()
        got.append(data)

    async with Channels(store, max_pending=2, overflow="block") as channels:
        await channels.register("c", "*", slow)
        for n in range(50):
            await channels.publish("c", "e", n)
        await eventually(lambda: len(got) == 50)
        assert channels.stats().dropped == 0
    assert got == list(range(50))


async def test_mapping_like_members(store: Store, recorder: Recorder) -> None:
    channels = Channels(store, namespace="shop", status_channel="status")
    assert len(channels) == 1  # the status channel
    assert "status" in channels
    assert channels.status_channel.name == "status"
    assert channels.channel("missing", create=False) is None
    async with channels:
        orders = await channels.register("orders", "*", recorder)
        assert channels.channel("orders") is orders
        assert channels.channel("shop:orders") is orders  # prefix optional
        assert "orders" in channels
        assert "shop:orders" in channels
        assert 42 not in channels
        assert "" not in channels
        assert set(channels) == {channels.status_channel, orders}
        assert len(channels) == 2
        created = channels.channel("new")
        assert created is not None
        assert len(created) == 0
        assert len(channels) == 3
        assert orders.events == ("*",)
        assert len(orders) == 1
        assert "*" in orders
        assert "x" not in orders
        assert "orders" in repr(orders)


async def test_str_and_repr_show_the_dsn_with_namespace_and_no_password() -> None:
    channels = Channels("memory://named-x?namespace=shop")
    assert str(channels) == repr(channels) == "memory://named-x?namespace=shop"
    assert channels.namespace == "shop"
    assert str(Channels("memory://", namespace="a")) == "memory://?namespace=a"
    assert str(Channels("memory://")) == "memory://"
    assert Channels("memory://?namespace=url", namespace="arg").namespace == "arg"


async def test_status_and_status_type(store: Store) -> None:
    channels = Channels(store)
    assert channels.statusType is StatusType
    assert channels.status is StatusType.initialised
    async with channels:
        await channels.connect()
        assert channels.status is StatusType.connected
    assert channels.status is StatusType.closed


async def test_close_is_idempotent_and_final(store: Store) -> None:
    channels = Channels(store)
    async with channels:
        await channels.close()
        await channels.close()
        assert channels.status is StatusType.closed
        with pytest.raises(RuntimeError, match="closed"):
            await channels.publish("c", "e")
    await channels.aclose()
    with pytest.raises(RuntimeError, match="closed; start it again"):
        await channels.register("c", "e", print)


async def test_close_before_run_and_unstarted_errors(store: Store) -> None:
    channels = Channels(store)
    for call in (
        channels.connect(),
        channels.publish("c", "e"),
        channels.register("c", "e", print),
        channels.unregister("c", "e", print),
    ):
        with pytest.raises(RuntimeError, match=r"not running.*async with.*nursery.start"):
            await call
    await channels.close()
    assert channels.status is StatusType.closed
    with pytest.raises(RuntimeError, match="closed"):
        await channels.connect()


async def test_run_in_the_callers_task_group(store: Store, recorder: Recorder) -> None:
    channels = Channels(store)
    async with anyio.create_task_group() as tg:
        await tg.start(channels.run)
        await channels.connect()
        await channels.register("c", "*", recorder)
        await channels.publish("c", "e", 1)
        await eventually(lambda: recorder.calls)
        await channels.close()
    assert channels.status is StatusType.closed


async def test_cancelling_run_leaves_nothing_behind(broker: Harness, store: Store) -> None:
    closed: list[str] = []
    before = len(anyio.get_running_tasks())
    channels = Channels(store)
    await channels.register(
        channels.status_channel.name, "closed", lambda ch, ev, data: closed.append(ev)
    )
    async with anyio.create_task_group() as tg:
        await tg.start(channels.run)
        for name in ("a", "b", "c"):
            await channels.register(name, "*", print)
        tg.cancel_scope.cancel()
    assert len(anyio.get_running_tasks()) == before
    await eventually(lambda: broker.connections() == 0)
    assert broker.numsub("a", "b", "c") == {"a": 0, "b": 0, "c": 0}
    assert channels.status is StatusType.closed
    assert closed == ["closed"]  # delivered even on cancellation


async def test_an_exception_in_the_body_propagates_bare_and_cleans_up(
    broker: Harness, store: Store
) -> None:
    before = len(anyio.get_running_tasks())

    async def fail_inside() -> None:
        async with Channels(store) as channels:
            await channels.register("c", "*", print)
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await fail_inside()
    assert len(anyio.get_running_tasks()) == before
    await eventually(lambda: broker.connections() == 0)


async def test_close_from_inside_a_callback(store: Store) -> None:
    async with Channels(store) as channels:

        async def stop(ch: Channel, event: str, data: Any) -> None:
            await channels.close()

        await channels.register("c", "*", stop)
        await channels.publish("c", "stop")
        with anyio.fail_after(5):
            while channels.status is not StatusType.closed:
                await anyio.sleep(0.001)


async def test_stats_count_what_happened(channels: Channels, recorder: Recorder) -> None:
    await channels.register("c", "*", recorder)
    for n in range(3):
        await channels.publish("c", "e", n)
    await channels.publish("nobody", "e")
    await eventually(lambda: len(recorder.calls) == 3)
    stats = channels.stats()
    assert (stats.published, stats.received, stats.delivered) == (4, 3, 3)
    with pytest.raises(AttributeError):
        stats.published = 0  # type: ignore[misc]


# -- bad input, before any I/O --------------------------------------------------------

BAD_NAMES: list[Any] = ["", None, 7, b"c", ":c", "c:", "a::b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
async def test_bad_channel_names_raise_value_error(channels: Channels, bad: Any) -> None:
    for call in (
        lambda: channels.register(bad, "e", print),
        lambda: channels.unregister(bad, "e", print),
        lambda: channels.publish(bad, "e"),
    ):
        with pytest.raises(ValueError, match="channel name"):
            await call()
    with pytest.raises(ValueError, match="channel name"):
        channels.subscribe(bad)
    with pytest.raises(ValueError, match="channel name"):
        channels.channel(bad)


@pytest.mark.parametrize("bad", ["", None, 3])
async def test_bad_event_names_raise_value_error(channels: Channels, bad: Any) -> None:
    with pytest.raises(ValueError, match="event"):
        await channels.register("c", bad, print)
    with pytest.raises(ValueError, match="event"):
        await channels.publish("c", bad)
    with pytest.raises(ValueError, match="event"):
        channels.subscribe("c", bad)


async def test_a_non_callable_callback_is_a_type_error(channels: Channels) -> None:
    with pytest.raises(TypeError, match=r"callable.*'not callable'"):
        await channels.register("c", "e", "not callable")  # type: ignore[arg-type]
    assert "c" not in channels


@pytest.mark.parametrize("data", [object(), {1, 2}, float("nan"), b"bytes"])
async def test_unencodable_data_is_a_type_error_before_io(
    broker: Harness, channels: Channels, data: Any
) -> None:
    with pytest.raises(TypeError, match="cannot encode as JSON"):
        await channels.publish("c", "e", data)
    assert channels.stats().published == 0


async def test_circular_data_is_a_type_error(channels: Channels) -> None:
    data: list[Any] = []
    data.append(data)
    with pytest.raises(TypeError, match="cannot encode"):
        await channels.publish("c", "e", data)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"publish_timeout": 0}, ValueError, "publish_timeout"),
        ({"publish_timeout": "10"}, ValueError, "publish_timeout"),
        ({"max_pending": 0}, ValueError, "max_pending"),
        ({"max_pending": 1.5}, ValueError, "max_pending"),
        ({"overflow": "spill"}, ValueError, "overflow"),
        ({"backoff": 3}, TypeError, "backoff"),
        ({"publish_timeot": 3}, TypeError, "unknown option 'publish_timeot'"),
    ],
)
async def test_bad_options_are_named(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Channels("memory://", **options)


async def test_bad_namespace_and_status_channel() -> None:
    with pytest.raises(ValueError, match="namespace"):
        Channels("memory://", namespace="a:")
    with pytest.raises(ValueError, match="channel name"):
        Channels("memory://", status_channel="")


async def test_a_custom_protocol_is_used_both_ways(store: Store, recorder: Recorder) -> None:
    class Versioned(Json):
        """JSON behind a version tag."""

        def encode(self, obj: Any, /) -> bytes:
            return b"v1:" + super().encode(obj)

        def decode(self, payload: bytes, /) -> Any:
            assert payload.startswith(b"v1:")
            return super().decode(payload[3:])

    got: list[bytes] = []
    async with Channels(store, protocol=Versioned()) as channels, store.pubsub() as raw:
        assert isinstance(channels.protocol, Versioned)
        raw.add_client(lambda ch, msg: got.append(msg))
        await raw.subscribe("c")
        await channels.register("c", "e", recorder)
        await channels.publish("c", "e", "x")
        await eventually(lambda: recorder.calls and got)
    assert recorder.calls == [("c", "e", "x")]
    assert got[0].startswith(b"v1:{")


async def test_store_property_and_url_string(store: Store) -> None:
    assert Channels(store).store is store
    assert isinstance(Channels("memory://").store, Store)
    assert create_store().url == "memory://"


async def test_dropping_and_recreating_a_channel_at_once(
    channels: Channels, recorder: Recorder
) -> None:
    # The dropped channel's actor is stopped before it ever ran: stopping is not a crash.
    for _ in range(10):
        await channels.register("c", "*", recorder)
        await channels.unregister("c", "*", recorder)
    await channels.register("c", "*", recorder)
    await channels.publish("c", "e", 1)
    await eventually(lambda: recorder.calls)
    await settle(channels)
    assert channels.stats().actor_restarts == 0


async def test_an_iterator_that_falls_behind_drops_counts_and_reports(store: Store) -> None:
    reports: list[dict[str, Any]] = []
    async with Channels(store, max_pending=3) as channels:
        await channels.register(
            channels.status_channel.name, "slow_consumer", lambda ch, ev, d: reports.append(d)
        )
        async with channels.subscribe("c") as events:
            for n in range(8):  # nobody reads: 3 fit the iterator's buffer, 5 are dropped
                await channels.publish("c", "e", n)
                await settle(channels)  # each message reaches the iterator: it never fills
            await eventually(lambda: channels.stats().dropped == 5)
            assert [(await events.receive()).data for _ in range(3)] == [0, 1, 2]
            await channels.publish("c", "e", 8)  # room again: the episode is over
            assert (await events.receive()).data == 8
            await settle(channels)
    assert len(reports) == 1
    assert reports[0]["channel"] == "c"


async def test_idle_channels_cost_no_task_and_an_awaiting_one_gets_one(store: Store) -> None:
    """Channels whose callbacks are sync are handled in place by the router; a
    channel gets a task while its callbacks await, in order, and gives it back."""
    seen: dict[str, list[Any]] = {}

    def sync(ch: Channel, event: str, data: Any) -> None:
        seen.setdefault(ch.name, []).append(data)

    async def slow(ch: Channel, event: str, data: Any) -> None:
        await anyio.lowlevel.checkpoint()
        seen.setdefault(ch.name, []).append(("async", data))

    async with Channels(store) as channels:
        tasks = channels._runtime.actors  # the status channel's actor is always one
        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(channels.register, f"c{n}", "*", sync)
        await channels.register("mixed", "*", sync)
        await channels.register("mixed", "*", slow)
        for round_ in range(3):
            for n in range(200):
                await channels.publish(f"c{n}", "e", round_)
            await channels.publish("mixed", "e", round_)
        await eventually(lambda: sum(map(len, seen.values())) == 3 * 200 + 3 * 2)
        assert all(seen[f"c{n}"] == [0, 1, 2] for n in range(200))
        assert seen["mixed"] == [0, ("async", 0), 1, ("async", 1), 2, ("async", 2)]
        assert "mixed" in [name.split(":")[-1] for name in tasks._children]
        assert len(tasks) == 2  # the status channel's and the awaiting channel's
        await channels.unregister("mixed", "*", slow)
        await channels.publish("mixed", "e", 3)
        await eventually(lambda: len(tasks) == 1)  # sync again: the task is given back
        assert seen["mixed"][-1] == 3
        assert channels.stats().dropped == 0


async def test_register_many_registers_all_in_order(broker: Harness, store: Store) -> None:
    got: list[tuple[str, str, Any]] = []

    def record(ch: Channel, event: str, data: Any) -> None:
        got.append((ch.name, event, data))

    async with Channels(store, namespace="many") as channels:
        await channels.register("c0", "*", record)
        targets = await channels.register_many(
            [(f"c{n}", "*", record) for n in range(50)]  # c0 is subscribed already
            + [("c1", "*", record), ("c1", "e", record)]  # a repeat is a no-op
        )
        assert [t.name for t in targets] == [f"c{n}" for n in range(50)] + ["c1", "c1"]
        assert targets[1] is targets[50] is channels.channel("c1")
        assert channels.channel("c1").events == ("*", "e")  # type: ignore[union-attr]
        assert broker.numsub(*(f"many:c{n}" for n in range(50))) == {
            f"many:c{n}": 1 for n in range(50)
        }
        for n in range(50):
            await channels.publish(f"c{n}", "e", n)
        await eventually(lambda: len(got) == 51)
        assert sorted(got) == sorted([(f"c{n}", "e", n) for n in range(50)] + [("c1", "e", 1)])
        assert await channels.register_many([]) == []


async def test_register_many_checks_everything_before_changing_anything(
    channels: Channels,
) -> None:
    before = len(channels)
    with pytest.raises(ValueError, match="''"):
        await channels.register_many([("a", "*", print), ("", "*", print)])
    with pytest.raises(TypeError, match="must be callable"):
        await channels.register_many([("a", "*", print), ("b", "*", 42)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"\(channel, event, callback\) tuples"):
        await channels.register_many([("a", "*")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="event pattern"):
        await channels.register_many([("a", "", print)])
    assert len(channels) == before
    assert "a" not in channels


def test_a_status_prints_as_its_name() -> None:
    assert str(tidings.StatusType.disconnected) == "disconnected"
    assert f"{tidings.StatusType.connected}" == "connected"
    assert f"[{tidings.StatusType.closed:>8}]" == "[  closed]"
    assert tidings.StatusType.connected == 3  # still the seed API's numbers


@pytest.mark.parametrize("protocol", [tidings.Bytes(), object()])
def test_a_protocol_that_cannot_encode_envelopes_is_refused_at_construction(
    protocol: Any,
) -> None:
    """Channels(protocol=tidings.Bytes()) was accepted, then failed every publish."""
    with pytest.raises(TypeError, match="protocol"):
        tidings.Channels(protocol=protocol)
    with pytest.raises(TypeError, match="protocol"):
        tidings.open_channels(protocol=protocol)


async def test_fail_fast_raises_the_cause_when_the_first_attempt_fails(hub: Any) -> None:
    """fail_fast=True: no broker at start is an error at once (not a retry loop)."""
    from tidings.brokers.memory import MemoryBroker

    hub.refusing = True
    for handler in (
        tidings.Channels(tidings.Store(MemoryBroker(hub)), fail_fast=True),
        tidings.Store(MemoryBroker(hub)).pubsub(fail_fast=True),
    ):
        log = Recorder()
        if isinstance(handler, tidings.Channels):
            await handler.register("server", "*", log)
        with pytest.raises(tidings.BrokerError, match="fail_fast") as failed:
            async with handler:
                raise AssertionError("entered without a broker")
        assert isinstance(failed.value.__cause__, ConnectionRefusedError)
        assert "refusing connections" in str(failed.value)
        assert handler.status is tidings.StatusType.closed
        if isinstance(handler, tidings.Channels):
            assert log.events == ["connecting", "disconnected", "closed"]
            assert log.calls[1][2]["retry_in"] is None
    hub.refusing = False
    async with tidings.Channels(tidings.Store(MemoryBroker(hub)), fail_fast=True) as channels:
        assert channels.status is tidings.StatusType.connected
    with pytest.raises(TypeError, match="fail_fast"):
        tidings.Channels(fail_fast="yes")


async def test_a_closed_handler_starts_again_keeping_its_registrations(
    broker: Harness,
) -> None:
    """A module-level handler used by one app lifespan after another (a second
    TestClient): every run subscribes what it kept, and delivers as the first did."""
    channels = Channels(broker.store(), namespace="again")
    log = Recorder()
    await channels.register(channels.status_channel.name, "*", log)
    got = Recorder()
    for run in range(3):
        async with channels:
            if run == 0:
                await channels.register("c", "*", got)
            async with channels.subscribe("c") as events:  # an iterator of this run only
                await channels.publish("c", "e", run)
                assert (await events.receive()).data == run
            await settle(channels)
            assert broker.numsub("again:c") == {"again:c": 1}
        assert channels.status is StatusType.closed
        assert broker.numsub("again:c") == {"again:c": 0}
    assert got.data == [0, 1, 2]
    assert log.events == ["connecting", "connected", "closed"] * 3
    assert channels.stats().reconnects == 0  # each run's first connection is no *re*connect


async def test_entering_a_running_handler_leaves_it_running(store: Store) -> None:
    channels = Channels(store)
    async with channels:
        with pytest.raises(RuntimeError, match="running already"):
            async with channels:
                pass
        with pytest.raises(RuntimeError, match="running already"):
            await channels.run()
        assert channels.status is StatusType.connected
        await channels.publish("c", "e")


async def test_a_restarted_durable_registration_catches_up_and_a_group_rejoins(
    broker: Harness,
) -> None:
    names = {"durable": ["log", "jobs"]}
    namespace = f"again{uuid.uuid4().hex[:8]}"  # the streams outlive the test on Redis
    channels = Channels(broker.store(), namespace=namespace, **names)  # type: ignore[arg-type]
    seen, done = Recorder(), Recorder()
    async with channels:
        await channels.register("log", "*", seen)
        await channels.register("jobs", "*", done, group="workers")
        await channels.publish("log", "e", 0)
        await channels.publish("jobs", "e", "a")
        await eventually(lambda: seen.data == [0] and done.data == ["a"])
    async with Channels(broker.store(), namespace=namespace, **names) as producer:  # type: ignore[arg-type]
        for n in (1, 2):  # while the first is closed
            await producer.publish("log", "e", n)
        await producer.publish("jobs", "e", "b")
    async with channels:
        await eventually(lambda: seen.data == [0, 1, 2])  # read back from the log
        await eventually(lambda: done.data == ["a", "b"])
        await channels.publish("log", "e", 3)
        await eventually(lambda: seen.data == [0, 1, 2, 3])


async def test_a_closed_pubsub_starts_again_with_its_clients_and_subscriptions(
    broker: Harness,
) -> None:
    pubsub = broker.store().pubsub()
    got: list[Any] = []
    pubsub.add_client(lambda channel, message: got.append(message))
    for run in range(2):
        async with pubsub:
            if run == 0:
                await pubsub.subscribe("p")
            await pubsub.publish("p", b"%d" % run)
            await settle(pubsub)
    assert got == [b"0", b"1"]


def test_an_event_reads_as_the_readme_says() -> None:
    assert repr(tidings.Event("orders", "shipped", {"id": 1})) == (
        "Event(channel='orders', event='shipped', data={'id': 1})"
    )
    durable = tidings.Event("jobs", "e", 1, "1-0", 2)
    assert repr(durable) == "Event(channel='jobs', event='e', data=1, id='1-0', deliveries=2)"


def test_the_readme_s_first_example_prints_what_its_comments_say(tmp_path: Any) -> None:
    import pathlib
    import re
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S)
    assert code is not None
    script = tmp_path / "first.py"
    script.write_text(code.group(1))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    promised = re.findall(r"# (Event\(.*\))", code.group(1))
    assert promised
    for line in promised:
        assert line in out.splitlines(), out


async def test_a_handler_closed_in_a_nursery_starts_again_at_once(store: Store) -> None:
    """close() returns with the run still winding down: run() waits for it, then
    starts again (it raised "running already")."""
    channels = Channels(store)
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            await tg.start(channels.run)
            assert channels.status is StatusType.connected
            await channels.close()
            assert channels.status is StatusType.closed
