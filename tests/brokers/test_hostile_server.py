"""A server (or a middlebox) that sends malformed replies.

The guarantee under test (DESIGN.md, "Guarantees that tests pin down"): nothing a
remote party sends can end ``run()`` / ``async with``; malformed replies are a lost
connection, reported with its error and reconnected. A publish whose reply is
malformed raises :class:`tidings.PublishError`, never returns something that is not
an int, never raises anything else.

The server is :mod:`tests.fake_redis`: a small RESP2 server that behaves well (the
first tests check that it does, end to end) until its script injects a frame.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import hiredis
import pytest

import tidings
from tests.fake_redis import (
    UNPARSABLE,
    FakeRedis,
    Frame,
    Hostile,
    Script,
    array,
    bulk,
    describe,
    error,
    integer,
    message,
    running_fake,
    seeded,
    simple,
)
from tests.helpers import FAST, Recorder, StatusLog, assert_follows_the_state_machine, watched

pytestmark = pytest.mark.anyio

OPTIONS: dict[str, Any] = {
    "backoff": FAST,
    "health_check_interval": 0.2,
    "connect_timeout": 0.5,
    "publish_timeout": 0.5,
}
#: Seconds any one test may take (the well-behaved path takes well under one).
LIMIT = 5.0
#: Seconds allowed for every planned frame to be injected.
INJECTION_LIMIT = 3.0

NAME = "chan"  # in the namespace "t" below
BROKER_NAME = b"t:chan"


def envelope(event: str, data: Any) -> bytes:
    """A valid tidings payload for NAME (what another process would publish)."""
    return json.dumps({"channel": NAME, "event": event, "data": data}).encode()


class Clients:
    """A PubSub client recording ``(channel, message)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, channel: str, msg: Any) -> None:
        self.calls.append((channel, msg))


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def private_logger(name: str) -> tuple[logging.Logger, Records]:
    logger = logging.getLogger(f"tests.hostile.{name}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    records = Records()
    logger.addHandler(records)
    return logger, records


async def checked(publish: Awaitable[int]) -> int | None:
    """The receiver count, or None for a PublishError; anything else fails the test."""
    try:
        received = await publish
    except tidings.PublishError:
        return None
    assert type(received) is int, f"publish returned {received!r}, not an int"
    return received


async def inject_everything(
    fake: FakeRedis, script: Hostile, publish: Callable[[int], Awaitable[int]]
) -> None:
    """Publish while the script has publisher frames left; stay quiet otherwise.

    Quiet, so that the subscriber connection goes idle and is PINGed (some frames
    answer the PING). Fails, naming what is left, if the frames are not all taken:
    then a malformed frame was accepted and the connection went on as if nothing
    had happened.
    """
    n = 0
    with anyio.move_on_after(INJECTION_LIMIT):
        while not script.exhausted:
            if script.pending["pub"]:
                n += 1
                await checked(publish(-n))
            await anyio.sleep(0.01)
    left = {role: [str(frame) for frame in queue] for role, queue in script.pending.items()}
    assert script.exhausted, f"frames never injected: {left}; {describe(fake)}"


async def recovered(
    publish: Callable[[int], Awaitable[int]], arrived: Callable[[int], bool]
) -> None:
    """Publish until a publish is received (by one subscriber) and arrives."""
    n = 0
    while True:
        n += 1
        if await checked(publish(n)) == 1:
            with anyio.move_on_after(0.5):
                while not arrived(n):
                    await anyio.sleep(0.005)
            if arrived(n):
                return
        await anyio.sleep(0.01)


@asynccontextmanager
async def channels_on(
    script: Script,
) -> AsyncIterator[tuple[FakeRedis, tidings.Channels, StatusLog]]:
    """A running Channels handler on a fake server playing ``script``, within LIMIT."""
    with anyio.fail_after(LIMIT):
        async with running_fake(script) as fake:
            channels = tidings.Channels(fake.url, namespace="t", **OPTIONS)
            log = await watched(channels)
            async with channels:
                yield fake, channels, log


async def delivery_recovers(channels: tidings.Channels, recorder: Recorder) -> None:
    """Publishing on NAME reaches ``recorder`` again."""
    await recovered(
        lambda n: channels.publish(NAME, "e", n),
        lambda n: ("chan", "e", n) in recorder.calls,
    )


def assert_reported_and_reconnected(fake: FakeRedis, log: StatusLog) -> None:
    errors = [data.get("error") for name, data, _ in log.events if name == "disconnected"]
    assert errors, f"no disconnected event: {log.names}; {describe(fake)}"
    assert all(errors), f"a disconnected event without an error: {errors}"
    assert fake.accepted > 2, f"never reconnected: {describe(fake)}"
    assert_follows_the_state_machine(log.names)


# -- the fake itself ---------------------------------------------------------------


async def test_well_behaved_fake_end_to_end(recorder: Recorder) -> None:
    """Handshake (with AUTH and SELECT), subscribe, publish, pushes, PING: no reconnect."""
    with anyio.fail_after(LIMIT):
        async with running_fake() as fake:
            url = f"redis://alice:s3cret@127.0.0.1:{fake.port}/3"
            channels = tidings.Channels(url, namespace="t", **OPTIONS)
            log = await watched(channels)
            async with channels:
                await channels.register(NAME, "*", recorder)
                await channels.connect()
                assert await channels.publish(NAME, "hello", {"x": 1}) == 1
                assert await fake.push(message(BROKER_NAME, envelope("pushed", 2))) == 1
                await recovered(
                    lambda n: channels.publish(NAME, "after", n),
                    lambda n: ("chan", "after", n) in recorder.calls,
                )
                await anyio.sleep(0.5)  # idle: the health check PINGs and gets its pong
                assert channels.status is tidings.StatusType.connected
            assert recorder.calls[:2] == [("chan", "hello", {"x": 1}), ("chan", "pushed", 2)]
            assert fake.accepted == 2
            assert sorted(map(str, fake.roles())) == ["pub", "sub"]
            [sub] = [c for c in fake.connections if c.role == "sub"]
            [pub] = [c for c in fake.connections if c.role == "pub"]
            assert [b"AUTH", b"alice", b"s3cret"] in sub.commands
            assert [b"SELECT", b"3"] in pub.commands
            assert [b"CLIENT", b"SETNAME", b"tidings-sub"] in sub.commands
            assert [b"SUBSCRIBE", BROKER_NAME] in sub.commands
            assert [b"PING"] in [c[:1] for c in sub.commands]
            assert fake.injected == []
        assert "disconnected" not in log.names
        assert log.names[-1] == "closed"


async def test_well_behaved_fake_pubsub_queries() -> None:
    clients = Clients()
    with anyio.fail_after(LIMIT):
        async with running_fake() as fake:
            pubsub = tidings.create_store(fake.url).pubsub(**OPTIONS)
            pubsub.add_client(clients)
            async with pubsub:
                await pubsub.subscribe("chan")
                await pubsub.psubscribe("ch*")
                assert await pubsub.publish("chan", b"hi") == 2  # message + pmessage
                assert await pubsub.count("chan", "other") == {"chan": 1, "other": 0}
                assert await pubsub.count_patterns() == 1
                assert await pubsub.channels() == ["chan"]
                assert await pubsub.channels("x*") == []
                await pubsub.unsubscribe("chan")
                with anyio.fail_after(1):  # the unsubscription may still be on its way
                    while await pubsub.count("chan") != {"chan": 0}:
                        await anyio.sleep(0.005)
                with anyio.fail_after(1):
                    while len(clients.calls) < 2:
                        await anyio.sleep(0.005)
            assert clients.calls == [("chan", b"hi"), ("chan", b"hi")]
            assert fake.accepted == 2


def test_seeded_frames_are_deterministic_and_parse_as_labelled() -> None:
    """Same seed, same plan; unparsable frames fail hiredis, the others parse."""
    unparsable = {label for label, _ in UNPARSABLE}
    for seed in range(200):
        script = seeded(seed, BROKER_NAME, envelope("e", 1))
        assert repr(script) == repr(seeded(seed, BROKER_NAME, envelope("e", 1)))
        sub = script.planned["sub"]
        assert sub
        assert sub[0].when in ("after_subscribe", "instead_of_confirmation")
        assert script.planned["pub"]
        for frame in (*sub, *script.planned["pub"]):
            reader = hiredis.Reader()
            reader.feed(frame.data)
            try:
                while reader.gets() is not False:
                    pass
            except hiredis.ProtocolError:
                assert frame.label.split("valid-then-")[-1] in unparsable, frame
            else:
                assert frame.label.split("valid-then-")[-1] not in unparsable, frame


# -- seeded malformed frames ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
async def test_seeded_malformed_frames_are_lost_connections(seed: int, recorder: Recorder) -> None:
    script = seeded(seed, BROKER_NAME, envelope("noise", 0))
    async with channels_on(script) as (fake, channels, log):

        def publish(n: int) -> Awaitable[int]:
            return channels.publish(NAME, "e", n)

        await channels.register(NAME, "*", recorder)
        for n in range(3):
            await checked(channels.publish(NAME, "first", n))
            await anyio.sleep(0.005)
        await inject_everything(fake, script, publish)
        await delivery_recovers(channels, recorder)
    assert channels.status is tidings.StatusType.closed
    assert_reported_and_reconnected(fake, log)
    # Only what was published (or injected as valid noise) reached the callback.
    assert {event for _, event, _ in recorder.calls} <= {"first", "e", "noise"}


@pytest.mark.parametrize("seed", [100, 101, 102, 103, 104])
async def test_seeded_malformed_frames_pubsub(seed: int) -> None:
    script = seeded(seed, b"chan", b"noise")
    clients = Clients()
    logger, records = private_logger(f"pubsub{seed}")
    with anyio.fail_after(LIMIT):
        async with running_fake(script) as fake:
            pubsub = tidings.create_store(fake.url).pubsub(logger=logger, **OPTIONS)
            pubsub.add_client(clients)

            def publish(n: int) -> Awaitable[int]:
                return pubsub.publish("chan", b"%d" % n)

            async with pubsub:
                await pubsub.subscribe("chan")
                await inject_everything(fake, script, publish)
                await recovered(publish, lambda n: ("chan", b"%d" % n) in clients.calls)
                stats = pubsub.stats()
            assert pubsub.status is tidings.StatusType.closed
        assert fake.accepted > 2, describe(fake)  # and, recovered above, it works again
        assert stats.published >= 1
        assert any(r.levelno >= logging.WARNING for r in records.records), "nothing reported"
        assert {msg for _, msg in clients.calls} <= {b"noise"} | {b"%d" % n for n in range(-9, 99)}


# -- the cases of the bug report ---------------------------------------------------

PUSHES = {
    "message-channel-is-an-integer": array(bulk(b"message"), integer(42), bulk(envelope("x", 1))),
    "message-with-two-elements": array(bulk(b"message"), bulk(BROKER_NAME)),
    "message-payload-is-a-nested-array": array(
        bulk(b"message"), bulk(BROKER_NAME), array(bulk(b"a"), array(bulk(b"b"), integer(1)))
    ),
    "empty-array": array(),
    "unsolicited-error": error("ERR out of the blue"),
    "pmessage-channel-is-an-integer": array(
        bulk(b"pmessage"), bulk(b"t:*"), integer(7), bulk(envelope("x", 1))
    ),
    "resp3-map": b"%1\r\n" + bulk(b"a") + bulk(b"b"),
    # hiredis parses #f as False, the value its Reader returns for "no complete reply".
    "resp3-false": b"#f\r\n",
    "unparsable": b"?garbage\r\n",
}


@pytest.mark.parametrize("frame", PUSHES.values(), ids=PUSHES.keys())
async def test_malformed_push_on_the_subscriber(frame: bytes, recorder: Recorder) -> None:
    script = Hostile(sub=[Frame(frame, "push", "after_subscribe")])
    async with channels_on(script) as (fake, channels, log):
        await channels.register(NAME, "*", recorder)
        await delivery_recovers(channels, recorder)
    assert fake.injected == [("sub", "after_subscribe:push")]
    assert channels.status is tidings.StatusType.closed
    assert_reported_and_reconnected(fake, log)
    assert {event for _, event, _ in recorder.calls} == {"e"}


REPLIES = {
    "bulk-foo": bulk(b"foo"),
    "empty-array": array(),
    "resp3-null": b"_\r\n",
    "nil-bulk": b"$-1\r\n",
    "resp3-true": b"#t\r\n",  # True == 1, but it is not an integer reply
    "resp3-false": b"#f\r\n",  # see PUSHES
    "resp3-double": b",1.5\r\n",
    "simple-string": simple("OK"),
    "unparsable": b"?garbage\r\n",
}


@pytest.mark.parametrize("frame", REPLIES.values(), ids=REPLIES.keys())
async def test_malformed_publish_reply(frame: bytes, recorder: Recorder) -> None:
    script = Hostile(pub=[Frame(frame, "reply", "instead_of_reply")])
    async with channels_on(script) as (fake, channels, log):
        await channels.register(NAME, "*", recorder)
        await channels.connect()
        try:
            received = await channels.publish(NAME, "e", 0)
        except tidings.PublishError:
            pass
        else:
            pytest.fail(f"publish returned {received!r} instead of raising PublishError")
        await delivery_recovers(channels, recorder)
    assert fake.injected == [("pub", "instead_of_reply:reply")]
    assert channels.status is tidings.StatusType.closed
    assert_reported_and_reconnected(fake, log)


@pytest.mark.parametrize("role", ["sub", "pub"])
async def test_unsolicited_reply_after_the_handshake(role: str, recorder: Recorder) -> None:
    """A reply to nothing, right behind the handshake replies: the stream is out of step."""
    script = Hostile(**{role: [Frame(integer(1), "extra", "after_handshake")]})
    async with channels_on(script) as (fake, channels, log):
        await channels.register(NAME, "*", recorder)
        await delivery_recovers(channels, recorder)
    assert fake.injected == [(role, "after_handshake:extra")]
    assert_reported_and_reconnected(fake, log)


async def test_refused_publish_keeps_the_connection(recorder: Recorder) -> None:
    """The control case: an error reply is a refusal, not a malformed reply."""
    script = Hostile(pub=[Frame(error("NOPERM no"), "refused", "instead_of_reply")])
    async with channels_on(script) as (fake, channels, log):
        await channels.connect()
        with pytest.raises(tidings.PublishError) as info:
            await channels.publish(NAME, "e", 0)
        assert isinstance(info.value.__cause__, tidings.ReplyError)
        assert info.value.__cause__.code == "NOPERM"
        assert await channels.publish(NAME, "e", 1) == 0
    assert fake.accepted == 2
    assert "disconnected" not in log.names


def test_script_base_class_is_well_behaved() -> None:
    assert Script().exhausted
    assert Hostile().exhausted
