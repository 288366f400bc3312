"""Robustness at the edges: each class of fault an operator meets, on both brokers.

Idle health checks, refused commands, stalled and frozen connections, hostile
payloads, cancellation at every await, overflow in block mode, the accounting
identity, secrets in URLs, and which messages a new registration sees. (Malformed
replies from a server have their own fake server: tests/brokers/test_hostile_server.py.)
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import random
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from tests.fake_redis import Script, message, running_fake
from tests.faults import running_proxy
from tests.helpers import (
    FAST,
    Harness,
    MemoryHarness,
    Recorder,
    RedisHarness,
    StatusLog,
    eventually,
    watched,
)
from tests.redis_server import RedisServer
from tidings import (
    CallbackError,
    Channel,
    Channels,
    Event,
    Json,
    PublishError,
    ReplyError,
    StatusType,
    Store,
    create_store,
)

pytestmark = pytest.mark.anyio


def redis_calls(redis: RedisHarness, command: str) -> int:
    """How many times the server ran ``command`` (INFO commandstats)."""
    stats = redis.client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def stats_identity(channels: Channels) -> tuple[int, int]:
    """(received, the sum of the outcomes) for handlers with one callback per message."""
    s = channels.stats()
    return s.received, s.delivered + s.callback_errors + s.dropped + s.unrouted + s.decode_errors


# -- 1. idle connections are health-checked, and PONG comes in two shapes ------------


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisHarness:
    """The shared real server alone (for what memory:// has no equivalent of)."""
    return RedisHarness(redis_server)


@pytest.mark.redis
async def test_a_handler_with_no_subscriptions_stays_connected(redis: RedisHarness) -> None:
    """A publish-only handler PINGs an unsubscribed connection: +PONG is an answer."""
    channels = Channels(redis.store(), namespace="idle", health_check_interval=0.02)
    log = await watched(channels)
    async with channels:
        before = redis_calls(redis, "ping")
        await eventually(lambda: redis_calls(redis, "ping") >= before + 6)
        assert await channels.publish("c", "e") == 0
    assert "disconnected" not in log.names
    assert channels.stats().reconnects == 0


@pytest.mark.redis
async def test_a_handler_whose_channels_were_all_unregistered_stays_connected(
    redis: RedisHarness, recorder: Recorder
) -> None:
    channels = Channels(redis.store(), namespace="idle2", health_check_interval=0.02)
    log = await watched(channels)
    async with channels:
        await channels.register("c", "*", recorder)
        await channels.unregister("c", "*", recorder)
        before = redis_calls(redis, "ping")
        await eventually(lambda: redis_calls(redis, "ping") >= before + 6)
        await channels.register("c", "*", recorder)
        await channels.publish("c", "e", 1)
        await eventually(lambda: recorder.data == [1])
    assert "disconnected" not in log.names


# -- 2. a refused SUBSCRIBE fails that registration alone ---------------------------


_users = itertools.count()


def restricted_store(broker: Harness, allowed: str) -> Store:
    """A store whose user may only use channels matching ``allowed`` (an ACL glob)."""
    if isinstance(broker, MemoryHarness):
        broker.hub.allowed_channels = allowed
        return broker.store()
    user = f"limited{next(_users)}"
    broker.client.acl_setuser(
        user,
        enabled=True,
        passwords=["+pw"],
        commands=["+@all"],
        keys=["~*"],
        channels=[allowed],
        reset_channels=True,
    )
    return create_store(f"redis://{user}:pw@127.0.0.1:{broker.server.port}")


async def test_a_refused_subscribe_fails_only_that_registration(
    broker: Harness, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    store = restricted_store(broker, "acl:allowed:*")
    channels = Channels(store, namespace="acl", backoff=FAST)
    log = await watched(channels)
    other = Recorder()
    async with channels:
        await channels.register("allowed:a", "*", recorder)
        with pytest.raises(ReplyError) as info:
            await channels.register("other", "*", other)
        assert info.value.code == "NOPERM"
        assert "other" not in channels  # rolled back
        assert broker.numsub("acl:other") == {"acl:other": 0}
        # The connection and the other channels carry on.
        await channels.publish("allowed:a", "e", 1)
        await eventually(lambda: recorder.data == [1])
        assert "disconnected" not in log.names
        # A registration on a channel already refused is refused again, not hung.
        with pytest.raises(ReplyError):
            await channels.register("other", "x", other)
        # After a reconnect, the refused name is not replayed: nothing is refused.
        caplog.clear()
        with caplog.at_level(logging.WARNING, "tidings"):
            broker.kill_connections()
            await eventually(lambda: log.names.count("connected") == 2)
            await channels.publish("allowed:a", "e", 2)
            await eventually(lambda: recorder.data == [1, 2])
        assert not [r for r in caplog.records if "refused" in r.getMessage()]
        assert broker.numsub("acl:allowed:a") == {"acl:allowed:a": 1}
    assert other.calls == []


async def test_register_many_is_all_or_nothing_when_one_is_refused(
    broker: Harness, recorder: Recorder
) -> None:
    store = restricted_store(broker, "acl:allowed:*")
    async with Channels(store, namespace="acl", backoff=FAST) as channels:
        await channels.register("allowed:a", "*", recorder)
        other = Recorder()
        with pytest.raises(ReplyError) as info:
            await channels.register_many(
                [("allowed:a", "x", other), ("allowed:b", "*", other), ("other", "*", other)]
            )
        assert info.value.code == "NOPERM"
        # None of the three stands; what stood before does.
        assert [c.name for c in channels if not c.local] == ["allowed:a"]
        assert channels.channel("allowed:a", create=False).events == ("*",)  # type: ignore[union-attr]
        await eventually(
            lambda: (
                broker.numsub("acl:allowed:b", "acl:other") == {"acl:allowed:b": 0, "acl:other": 0}
            )
        )
        await channels.publish("allowed:a", "x", 1)
        await eventually(lambda: recorder.data == [1])
    assert other.calls == []


async def test_a_refused_pubsub_subscribe_raises_and_is_rolled_back(broker: Harness) -> None:
    store = restricted_store(broker, "ok:*")
    received: list[tuple[str, Any]] = []
    async with store.pubsub() as pubsub:
        pubsub.add_client(lambda channel, message: received.append((channel, message)))
        with pytest.raises(ReplyError) as info:
            await pubsub.subscribe("ok:1", "nope")  # one name refused: the command is
        assert info.value.code == "NOPERM"
        assert broker.numsub("nope") == {"nope": 0}
        # the refused name alone is given up; the allowed one is subscribed
        await pubsub.subscribe("ok:2")
        await pubsub.publish("ok:2", b"x")
        await eventually(lambda: received == [("ok:2", b"x")])
        assert pubsub.status is StatusType.connected


async def test_a_refused_publish_is_a_publish_error_naming_the_reply(broker: Harness) -> None:
    store = restricted_store(broker, "ok:*")
    async with Channels(store, backoff=FAST) as channels:
        with pytest.raises(PublishError) as info:
            await channels.publish("forbidden", "e")
        assert isinstance(info.value.__cause__, ReplyError)
        assert info.value.__cause__.code == "NOPERM"
        assert await channels.publish("ok:fine", "e") == 0
        assert channels.status is StatusType.connected


# -- 3. a stalled command connection is found within publish_timeout -----------------


@pytest.mark.redis
async def test_a_stalled_publisher_fails_the_publish_within_publish_timeout(
    redis_server: RedisServer,
) -> None:
    async with running_proxy(redis_server.port) as proxy:
        channels = Channels(
            proxy.url,
            backoff=FAST,
            publish_timeout=0.3,
            health_check_interval=60,  # only the reply deadline can notice
        )
        log = await watched(channels)
        async with channels:
            await channels.publish("c", "e")
            proxy.stall()
            with anyio.fail_after(5), pytest.raises(PublishError, match="PUBLISH"):
                await channels.publish("c", "e")
            await eventually(lambda: "disconnected" in log.names)
            proxy.flow()
            proxy.cut()
            await channels.connect()
            assert await channels.publish("c", "e") == 0


# -- 4. hostile payloads: any size, any nesting depth --------------------------------


async def publish_raw(broker: Harness, channel: str, payload: bytes) -> None:
    if isinstance(broker, MemoryHarness):
        broker.hub.publish(channel, payload)
        await anyio.lowlevel.checkpoint()
    else:
        broker.client.publish(channel, payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"event":"e","data":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"event":"e","data":' + b'{"a":' * 30_000 + b"1" + b"}" * 30_001,
        b"[" * 5_000,  # truncated
        b'{"event": 1}',
        b"\xff\xfe garbage",
        b"",
    ],
    ids=["deep-array", "deep-data", "deep-objects", "truncated", "not-an-event", "bytes", "empty"],
)
async def test_hostile_payloads_are_counted_decode_errors(
    broker: Harness, channels: Channels, recorder: Recorder, payload: bytes
) -> None:
    await channels.register("c", "*", recorder)
    await publish_raw(broker, "test:c", payload)
    await channels.publish("c", "after", 1)
    await eventually(lambda: recorder.data == [1])
    stats = channels.stats()
    assert (stats.decode_errors, stats.actor_restarts) == (1, 0)
    assert stats_identity(channels) == (2, 2)


def test_the_envelope_decoder_raises_only_decode_errors() -> None:
    """Fuzz: random mutations of valid envelopes never escape as another exception,
    and the default codec's fast path (a struct) agrees with the careful one."""
    from tidings import Json, ProtocolError
    from tidings.actors.dispatch import DECODE_ERRORS, envelope_decoder

    class Careful(Json):
        """Not the default codec: decoded the general way (a dict, then checks)."""

    decode = envelope_decoder(Json())
    careful = envelope_decoder(Careful())
    rng = random.Random(1234)
    seeds = [
        b'{"channel":"c","event":"e","data":{"a":[1,2,{"b":null}]}}',
        b'{"event":"e","data":"\\ud800"}',
        b'{"event":"e","data":1e999}',
        b'{"event":"e","data":NaN}',
    ]
    alphabet = b'{}[]",:\\ 0123456789eE.-+tfnul\xff\x00'
    ok = 0
    failures: list[Exception] = []
    for _ in range(5_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data) + 1)
            kind = rng.random()
            if kind < 0.4 and data:
                del data[min(i, len(data) - 1)]
            elif kind < 0.8:
                data.insert(i, rng.choice(alphabet))
            else:
                data[i:i] = rng.choice((b"[" * 3000, b'{"x":' * 2000, b"\\u"))
        try:
            event, args, headers = decode("c", bytes(data))
        except DECODE_ERRORS as exc:
            failures.append(exc)
            with pytest.raises(ProtocolError):
                careful("c", bytes(data))
        else:
            assert type(event) is str
            assert event
            assert careful("c", bytes(data)) == (event, args, headers)
            ok += 1
    # Whatever the input, the codec's own error, and nothing else.
    assert all(isinstance(exc, ProtocolError) for exc in failures), failures[:3]
    assert ok
    assert failures  # both paths were exercised


# -- 6. cancellation at any await point: local state and the broker agree -----------


async def test_cancellation_matrix_keeps_the_broker_in_agreement(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(2026)
    names = [f"m{i}" for i in range(6)]
    recorders = [Recorder() for _ in range(3)]
    channels = Channels(broker.store(), namespace="cx", publish_timeout=1)

    async def register() -> None:
        await channels.register(
            rng.choice(names), rng.choice(("*", "e", "x*")), rng.choice(recorders)
        )

    async def unregister() -> None:
        await channels.unregister(
            rng.choice(names), rng.choice(("*", "e", "x*")), rng.choice(recorders)
        )

    async def register_many() -> None:
        await channels.register_many(
            (rng.choice(names), rng.choice(("*", "e", "x*")), rng.choice(recorders))
            for _ in range(rng.randint(1, 4))
        )

    async def iterate() -> None:
        async with channels.subscribe(rng.choice(names)) as events:
            with anyio.move_on_after(0.001):
                await events.receive()

    async def publish() -> None:
        await channels.publish(rng.choice(names), "e", 0)

    operations: list[Callable[[], Awaitable[None]]] = [
        register,
        register_many,
        unregister,
        iterate,
        publish,
    ]

    async def traffic() -> None:
        while True:
            await channels.publish(rng.choice(names), "e", 0)
            await anyio.sleep(0.0005)

    with caplog.at_level(logging.WARNING, "tidings"):
        async with channels:
            async with anyio.create_task_group() as tg:
                tg.start_soon(traffic)
                for _ in range(300):
                    operation = rng.choice(operations)
                    with anyio.move_on_after(rng.choice((0, 0, 0.0001, 0.0003, 0.001, 0.003))):
                        await operation()
                tg.cancel_scope.cancel()

            def expected() -> dict[str, int]:
                return {f"cx:{n}": int(n in channels) for n in names}

            await eventually(lambda: broker.numsub(*expected()) == expected())
            assert any(expected().values())
            # Every registration that stands gets what is published now.
            expected_calls = []
            for channel in channels:
                for pattern in () if channel.local else channel.events:
                    event = pattern.replace("*", "z")
                    await channels.publish(channel.name, event, "marker")
                    for registration in channel.registrations_for(event):
                        # (the callback itself, inside any wrapper of tidings': a span)
                        callback = getattr(registration.callback, "callback", None)
                        callback = callback or registration.callback
                        expected_calls.append((callback, (channel.name, event)))
            assert expected_calls
            for callback, (name, event) in expected_calls:
                await eventually(lambda c=callback, n=name, e=event: (n, e, "marker") in c.calls)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert broker.numsub(*(f"cx:{n}" for n in names)) == {f"cx:{n}": 0 for n in names}


async def test_pubsub_cancellation_matrix(broker: Harness) -> None:
    rng = random.Random(7)
    names = [f"p{i}" for i in range(5)]
    async with broker.store().pubsub() as pubsub:
        for _ in range(200):
            picked = rng.sample(names, rng.randint(1, 3))
            operation = pubsub.subscribe if rng.random() < 0.6 else pubsub.unsubscribe
            with anyio.move_on_after(rng.choice((0, 0.0001, 0.0005, 0.002))):
                await operation(*picked)
        wanted = set(pubsub._runtime.connection.channels)
        await eventually(lambda: broker.numsub(*names) == {n: int(n in wanted) for n in names})
        await pubsub.unsubscribe()
        assert broker.numsub(*names) == dict.fromkeys(names, 0)


# -- 7. lifecycle: closed while connecting, entered twice ----------------------------


@pytest.mark.redis
async def test_close_during_the_first_connection_attempt(redis_server: RedisServer) -> None:
    async with running_proxy(redis_server.port) as proxy:
        proxy.blackhole = True  # accepted, never answered: a frozen server
        for start in ("async with", "nursery.start"):
            channels = Channels(proxy.url, connect_timeout=30)
            accepted = proxy.accepted
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    if start == "async with":

                        async def enter(ch: Channels = channels) -> None:
                            async with ch:
                                pass

                        tg.start_soon(enter)
                    else:
                        tg.start_soon(tg.start, channels.run)
                    await eventually(lambda a=accepted: proxy.accepted > a)
                    await channels.close()
            assert channels.status is StatusType.closed


async def test_entering_a_running_handler_leaves_it_intact(
    store: Store, recorder: Recorder
) -> None:
    channels = Channels(store, namespace="twice")
    async with channels:
        with pytest.raises(RuntimeError, match="running"):
            async with channels:
                pass  # pragma: no cover
        await channels.register("c", "*", recorder)
        await channels.publish("c", "e", 1)
        await eventually(lambda: recorder.data == [1])
    assert channels.status is StatusType.closed
    async with channels:  # closed: it may be started again, its registration kept
        await channels.publish("c", "e", 2)
        await eventually(lambda: recorder.data == [1, 2])


# -- 8, 9. block mode, and nothing vanishes uncounted ---------------------------------


@pytest.mark.parametrize("overflow", ["block", "drop"])
async def test_unregistering_a_full_channel_counts_its_backlog(
    store: Store, recorder: Recorder, overflow: str
) -> None:
    gate = anyio.Event()

    async def slow(channel: Any, event: str, data: Any) -> None:
        await gate.wait()

    channels = Channels(store, namespace="full", overflow=overflow, max_pending=2)
    log = await watched(channels)
    async with channels:
        await channels.register("slow", "*", slow)
        await channels.register("other", "*", recorder)
        for n in range(10):
            await channels.publish("slow", "e", n)
        await eventually(lambda: channels.stats().received >= 4)
        await anyio.wait_all_tasks_blocked()
        await channels.unregister("slow", "*", slow)
        await channels.publish("other", "e", "still here")
        await eventually(lambda: recorder.data == ["still here"])
        await eventually(lambda: channels.stats().received == 11)
        assert stats_identity(channels) == (11, 11)
        stats = channels.stats()
        # Queued (or held by the interrupted callback) when unregistered: dropped;
        # still on the wire then: unrouted. Either way counted, never delivered.
        assert stats.dropped >= 3
        assert (stats.dropped + stats.unrouted, stats.delivered) == (10, 1)
    assert "disconnected" not in log.names


async def test_status_events_are_counted_apart(channels: Channels, recorder: Recorder) -> None:
    status = StatusLog()
    await channels.register(channels.status_channel.name, "*", status)
    await channels.register("c", "*", recorder)
    for n in range(3):
        await channels.publish("c", "e", n)
    await eventually(lambda: len(recorder.calls) == 3)
    stats = channels.stats()
    assert stats.delivered == 3
    assert stats_identity(channels) == (3, 3)
    await channels.close()
    await eventually(lambda: "closed" in status.names)
    assert channels.stats().status_events == len(status.events) >= 1


async def test_events_matching_no_pattern_are_unrouted(
    channels: Channels, recorder: Recorder
) -> None:
    await channels.register("c", "wanted", recorder)
    await channels.publish("c", "unwanted")
    await channels.publish("c", "wanted")
    await eventually(lambda: recorder.events == ["wanted"])
    assert channels.stats().unrouted == 1
    assert stats_identity(channels) == (2, 2)


# -- 10. secrets in URLs, whatever characters they hold ------------------------------

MARK = "S3CR3T"
PASSWORDS = [f"{MARK}{c}{MARK}" for c in "@/#?:%&="] + [f"a@b/{MARK}?c#{MARK}@", f"{MARK}@@"]
BAD_URLS = [
    "redis://user:{pw}@host:notaport/0",
    "redis://:{pw}@host:6379/notadb",
    "redis://:{pw}@host:6379/0?bogus=1",
    "rediss://:{pw}@host:6379/0?ssl_cert_reqs=maybe",
    "unix://:{pw}@/tmp/r.sock?db=x",
    "redis+cluster://:{pw}@h1:7000,h2:bad/",
    "redis+cluster://:{pw}@h1:7000/1",
    "redis://:{pw}@host/0?namespace=:bad",
    "memory://:{pw}@hub",
    "nope://:{pw}@host",
    "redis://:{pw}@[::1:6379/0",
]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("template", BAD_URLS)
def test_no_password_leaks_into_url_errors(template: str, password: str) -> None:
    url = template.format(pw=password)
    with pytest.raises(ValueError, match=r"URL|namespace") as info:
        create_store(url)
    assert MARK not in str(info.value)


@pytest.mark.parametrize("password", PASSWORDS)
def test_passwords_with_special_characters_are_kept_and_hidden(password: str) -> None:
    store = create_store(f"redis://user:{password}@host:6380/2?namespace=shop")
    assert store.broker.address.password == password.replace("%&", "%&")  # type: ignore[attr-defined]
    assert (store.broker.address.host, store.broker.address.port) == ("host", 6380)  # type: ignore[attr-defined]
    for text in (str(store.url), repr(store), str(Channels(store))):
        assert MARK not in text


# -- 11. a registration sees only what is published after it -------------------------


async def test_an_iterator_opened_after_a_publish_does_not_see_it(channels: Channels) -> None:
    """The README's first example: the iterator's first event is "shipped"."""
    seen: list[str] = []
    await channels.register("orders", "created", lambda ch, ev, data: seen.append(ev))
    await channels.publish("orders", "created", {"id": 1})
    async with channels.subscribe("orders", "*") as events:
        await channels.publish("orders", "shipped", {"id": 1})
        with anyio.fail_after(5):
            first = await events.receive()
    assert first == Event("orders", "shipped", {"id": 1})
    assert seen == ["created"]


async def test_a_callback_registered_after_a_publish_does_not_see_it(
    channels: Channels, recorder: Recorder
) -> None:
    first = Recorder()
    await channels.register("c", "*", first)
    for n in range(50):
        await channels.publish("c", "e", n)
    await channels.register("c", "*", recorder)
    await channels.publish("c", "e", "after")
    await eventually(lambda: recorder.calls)
    await eventually(lambda: len(first.calls) == 51)
    assert recorder.data == ["after"]


# -- 12. cancelled handlers log no warning and leave no unclosed stream --------------


async def test_cancelled_handlers_leave_no_unclosed_streams(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "tidings"), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for delay in (0, 0.0001, 0.001, 0.005):
            with anyio.move_on_after(delay):
                async with Channels(broker.store(), namespace="rw") as channels:
                    await channels.register("c", "*", Recorder())
                    async with channels.subscribe("c") as events:
                        await channels.publish("c", "e")
                        await events.receive()
                    await anyio.sleep_forever()
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert broker.connections() == 0


# -- found in review: each pinned on both brokers ------------------------------------


class CountingJson(Json):
    """JSON that counts its decodes (a subclass: the generic decode path)."""

    def __init__(self) -> None:
        super().__init__()
        self.decodes = 0

    def decode(self, payload: bytes, /) -> Any:
        self.decodes += 1
        return super().decode(payload)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_callback_that_unregisters_itself_mid_batch(store: Store, kind: str) -> None:
    """The rest of its batch is dropped once, not replayed nor counted twice."""
    protocol = CountingJson()
    calls: list[Any] = []

    def stop_at_two(channel: Any, event: str, data: Any) -> None:
        calls.append(data)
        if len(calls) == 2:
            raise CallbackError

    async def stop_at_two_async(channel: Any, event: str, data: Any) -> None:
        await anyio.lowlevel.checkpoint()
        stop_at_two(channel, event, data)

    async with Channels(store, namespace="self", protocol=protocol) as channels:
        callback = stop_at_two if kind == "sync" else stop_at_two_async
        await channels.register("c", "*", callback)
        # On Redis, the unsubscription may come before the last publishes.
        sent = sum([await channels.publish("c", "e", n) for n in range(5)])
        await eventually(lambda: channels.stats().received == sent)
        await eventually(lambda: "c" not in channels)
        assert calls == [0, 1]
        assert protocol.decodes <= sent
        stats = channels.stats()
        assert stats_identity(channels) == (sent, sent)
        assert (stats.delivered, stats.dropped + stats.unrouted) == (2, sent - 2)


async def test_concurrent_registrations_of_a_refused_channel_are_all_refused(
    broker: Harness,
) -> None:
    store = restricted_store(broker, "race:ok*")
    outcomes: list[str] = []

    async def register(channels: Channels, n: int) -> None:
        try:
            await channels.register("nope", "*", Recorder())
        except ReplyError as exc:
            outcomes.append(exc.code)
        else:
            outcomes.append("registered")

    async with Channels(store, namespace="race") as channels:
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(register, channels, n)
                await anyio.lowlevel.checkpoint()
        assert outcomes == ["NOPERM"] * 3
        assert "nope" not in channels
        await channels.register("ok", "*", Recorder())  # the handler is fine
        assert broker.numsub("race:ok", "race:nope") == {"race:ok": 1, "race:nope": 0}


async def test_concurrent_pubsub_subscribes_of_a_refused_channel_are_all_refused(
    broker: Harness,
) -> None:
    store = restricted_store(broker, "ok*")
    outcomes: list[str] = []

    async def subscribe(pubsub: Any) -> None:
        try:
            await pubsub.subscribe("nope")
        except ReplyError as exc:
            outcomes.append(exc.code)
        else:
            outcomes.append("subscribed")

    async with store.pubsub() as pubsub:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(subscribe, pubsub)
                await anyio.lowlevel.checkpoint()
        assert outcomes == ["NOPERM"] * 3


async def test_cancelling_one_pubsub_subscribe_keeps_anothers(broker: Harness) -> None:
    async with broker.store().pubsub() as pubsub:
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def cancelled() -> None:
                with first:
                    await pubsub.subscribe("shared")

            tg.start_soon(cancelled)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(pubsub.subscribe, "shared")
            await anyio.lowlevel.checkpoint()
            first.cancel()
        await eventually(lambda: broker.numsub("shared") == {"shared": 1})
        await pubsub.unsubscribe("shared")
        assert broker.numsub("shared") == {"shared": 0}


async def test_what_close_timeout_cuts_short_is_counted(store: Store) -> None:
    release = anyio.Event()

    async def slow(channel: Any, event: str, data: Any) -> None:
        await release.wait()

    channels = Channels(store, namespace="late", close_timeout=0.05)
    async with channels:
        await channels.register("c", "*", slow)
        for n in range(5):
            await channels.publish("c", "e", n)
        await eventually(lambda: channels.stats().received == 5)
    stats = channels.stats()
    assert stats_identity(channels) == (5, 5)
    assert (stats.delivered, stats.dropped) == (0, 5)


# -- where a new registration starts, to the byte: a scripted server ------------------


class AroundAnswers(Script):
    """Sends messages for ``t:c`` right before and right after an answer, in one write."""

    def __init__(self) -> None:
        self.pongs = 0

    def confirm(self, conn: Any, kind: bytes, proper: bytes) -> bytes:
        if kind != b"subscribe":
            return proper
        # Published just after the subscription took effect: new to the registration.
        return proper + message(b"t:c", Json().encode({"event": "after-subscribe"}))

    def pong(self, conn: Any, proper: bytes) -> bytes:
        self.pongs += 1
        before = message(b"t:c", Json().encode({"event": f"before-pong-{self.pongs}"}))
        after = message(b"t:c", Json().encode({"event": f"after-pong-{self.pongs}"}))
        return before + proper + after


async def test_a_registration_starts_exactly_where_the_broker_answered() -> None:
    script = AroundAnswers()
    first, second = Recorder(), Recorder()
    async with running_fake(script) as fake, Channels(fake.url, namespace="t") as channels:
        await channels.register("c", "*", first)  # subscribes: the answer is a confirmation
        await channels.register("c", "*", second)  # subscribed already: a PING's answer
        await eventually(lambda: "after-pong-1" in second.events)
    # Sent after the confirmation, in the same write: delivered, not lost to the race
    # between the reader and the register call that waits for it.
    assert first.events[0] == "after-subscribe"
    assert second.events == ["after-pong-1"]  # never what came before its answer
    assert first.events == ["after-subscribe", "before-pong-1", "after-pong-1"]


async def test_a_command_sent_as_an_idle_wait_ends_is_not_a_timeout() -> None:
    """A command going out just before the idle health-check wait ends gets its full
    reply wait: sweep the send time across that deadline (the server answers at once)."""
    from tidings.brokers.connection import Connection
    from tidings.brokers.redis import RedisSubscriber

    interval = 0.05

    async def deliver(batch: list[Any]) -> None:
        pass

    async with running_fake() as fake:
        stream = await anyio.connect_tcp("127.0.0.1", fake.port)
        subscriber = RedisSubscriber(Connection(stream, fake.url, 1.0), interval)
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscriber.run, deliver)
            for step in range(30):
                # Across the deadline of the reader's idle wait, a quarter ms at a time.
                await anyio.sleep(interval - 0.004 + step * 0.00025)
                with anyio.fail_after(5):
                    await subscriber.subscribe(["c"])
                    await subscriber.unsubscribe(["c"])
            tg.cancel_scope.cancel()
        await subscriber.aclose()


async def test_pubsub_decode_errors_name_the_channel(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with store.pubsub(protocol=Json()) as pubsub:
        received: list[Any] = []
        pubsub.add_client(lambda channel, message: received.append(message))
        await pubsub.subscribe("news")
        with caplog.at_level(logging.WARNING, "tidings"):
            await pubsub.publish("news", {"ok": 1})  # encoded by the protocol
            await pubsub._runtime.connection.publish("news", b"{not json")
            await pubsub.publish("news", {"ok": 2})
            await eventually(lambda: len(received) == 2)
    assert "pubsub clients on 'news'" in caplog.text


async def test_a_subclass_is_named_in_errors() -> None:
    class MyChannels(Channels):
        pass

    with pytest.raises(RuntimeError, match="MyChannels is not running"):
        await MyChannels().publish("c", "e")


def test_the_json_fast_encoder_writes_what_the_standard_library_would() -> None:
    """Fuzz: random values, plain or not; the encoding (when there is one) means
    the same JSON as the standard library's, and whatever it refuses, it refuses."""
    from tidings import Json

    stdlib = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    rng = random.Random(99)
    leaves: list[Callable[[], Any]] = [
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.choice((0.5, -0.0, 1e16, 1.5e-7, float("nan"), float("inf"))),
        lambda: rng.choice(("", 'é\u2028\n"\\', "\ud800", "x" * 50)),
        lambda: rng.choice((True, False, None)),
        lambda: rng.choice((b"x", {1, 2}, frozenset(), bytearray(b"y"), object())),
    ]

    def value(depth: int) -> Any:
        kind = rng.random()
        if depth == 0 or kind < 0.4:
            return rng.choice(leaves)()
        if kind < 0.7:
            keys = [rng.choice(("a", "b", 1, 2.5, None, True)) for _ in range(rng.randint(0, 4))]
            return {key: value(depth - 1) for key in keys}
        items = [value(depth - 1) for _ in range(rng.randint(0, 4))]
        return items if kind < 0.85 else tuple(items)

    encoded = refused = 0
    for _ in range(3_000):
        data = {"channel": "c", "event": "e", "data": value(rng.randint(0, 5))}
        try:
            expected = json.loads(stdlib.encode(data).encode())
        except (TypeError, ValueError):
            with pytest.raises(TypeError):
                Json().encode(data)
            refused += 1
        else:
            assert json.loads(Json().encode(data)) == expected
            encoded += 1
    assert encoded > 500  # both sides exercised
    assert refused > 500


# -- lazy actors: in place, in a task, and back, under random interleavings -----------


class _Tracked:
    """A callback that records ``(channel, n)``; some kinds await, some fail."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.got: dict[str, list[int]] = {}

    def record(self, channel: Channel, data: int) -> None:
        self.got.setdefault(channel.name, []).append(data)
        if self.kind == "flaky" and data % 7 == 0:
            raise ValueError(f"flaky on {data}")


class _Sync(_Tracked):
    def __call__(self, channel: Channel, event: str, data: int) -> None:
        self.record(channel, data)


class _Async(_Tracked):
    async def __call__(self, channel: Channel, event: str, data: int) -> None:
        for _ in range(data % 3 if self.kind == "slow" else 1):
            await anyio.lowlevel.checkpoint()
        self.record(channel, data)


async def test_lazy_actors_keep_order_under_random_interleavings(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Channels go from in place to a task and back as callbacks come and go: every
    callback sees its channel's events in order, only those published while it was
    registered, and all of them while it stays; idle sync channels end with no task."""
    rng = random.Random(11)
    names = ["a", "b", "c"]
    callbacks: list[_Tracked] = [_Sync("sync"), _Sync("flaky"), _Async("quick"), _Async("slow")]
    # (callback, channel) -> windows [first n it may get, first n it may not) of publishes
    windows: dict[tuple[int, str], list[list[int | None]]] = {}
    numbers = itertools.count()
    published: dict[str, list[int]] = {name: [] for name in names}
    upcoming = 0  # the number the next publish gets

    channels = Channels(
        broker.store(), namespace="lz", max_pending=10_000, callback_failure_limit=10**6
    )
    with caplog.at_level(logging.CRITICAL, "tidings"):  # the flaky callback logs errors
        async with channels:
            for _ in range(400):
                op = rng.random()
                index, name = rng.randrange(len(callbacks)), rng.choice(names)
                spans = windows.setdefault((index, name), [])
                registered = bool(spans) and spans[-1][1] is None
                if op < 0.15 and not registered:
                    await channels.register(name, "*", callbacks[index])
                    spans.append([upcoming, None])
                elif op < 0.25 and registered:
                    spans[-1][1] = upcoming
                    await channels.unregister(name, "*", callbacks[index])
                elif op < 0.3:  # everything everywhere, in one call
                    fresh = [
                        key
                        for key in itertools.product(range(len(callbacks)), names)
                        if not (windows.get(key) and windows[key][-1][1] is None)
                    ]
                    await channels.register_many(
                        [(n, "*", callback) for callback in callbacks for n in names]
                    )
                    for key in fresh:
                        windows.setdefault(key, []).append([upcoming, None])
                else:
                    for _ in range(rng.choice((1, 1, 5, 20))):  # bursts make batches
                        n = next(numbers)
                        upcoming = n + 1
                        channel = rng.choice(names)
                        published[channel].append(n)
                        await channels.publish(channel, "e", n)

            def complete() -> bool:
                return all(
                    [m for m in published[name] if m >= spans[-1][0]]
                    == [m for m in callbacks[index].got.get(name, []) if m >= spans[-1][0]]
                    for (index, name), spans in windows.items()
                    if spans and spans[-1][1] is None
                )

            await eventually(complete)
            for (index, name), spans in windows.items():
                got = callbacks[index].got.get(name, [])
                assert got == sorted(got), (callbacks[index].kind, name)  # in order, once
                for n in got:  # only while registered
                    assert any(start <= n and (end is None or n < end) for start, end in spans), (
                        callbacks[index].kind,
                        name,
                        n,
                        spans,
                    )
            # The awaiting callbacks leave: each channel is idle and sync again, and
            # gives its task back after its next event.
            for (index, name), spans in windows.items():
                if isinstance(callbacks[index], _Async) and spans and spans[-1][1] is None:
                    await channels.unregister(name, "*", callbacks[index])
            for name in names:
                await channels.publish(name, "e", next(numbers))
            await eventually(lambda: len(channels._runtime.actors) == 1)  # the status one
    assert channels.stats().actor_restarts == 0
