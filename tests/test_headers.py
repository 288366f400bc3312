"""Headers: a mapping of str to str carried beside an event's data, on memory:// and a
real Redis.

``publish(..., headers=)`` is checked before any I/O and carried in the envelope (the
key left out when there are none, so such a message is byte for byte what it was
before headers existed); ``Event.headers`` is read-only; durable logs and consumer
groups keep them; what a remote party sends in their place is a counted decode error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from tests.helpers import Harness, MemoryHarness, Recorder, RedisHarness, eventually
from tests.otel import Split
from tidings import Channels, Json, Retention, Store, create_store
from tidings.testing import free_port, settle

pytestmark = pytest.mark.anyio


@pytest.fixture
def ns() -> str:
    """A namespace of the test's own: logs outlive a test on the shared redis-server."""
    return f"h{uuid.uuid4().hex[:8]}"


def handler(store: Store | str, ns: str, **options: Any) -> Channels:
    options.setdefault("publish_timeout", 5.0)
    return Channels(store, namespace=ns, **options)


@asynccontextmanager
async def raw_subscriber(store: Store, channel: str) -> AsyncIterator[list[bytes]]:
    """The bytes published on the broker channel ``channel`` (a PubSub, no protocol)."""
    got: list[bytes] = []
    async with store.pubsub(protocol=None) as pubsub:
        pubsub.add_client(lambda ch, message: got.append(message))
        await pubsub.subscribe(channel)
        yield got


async def raw_publish(store: Store, channel: str, payload: bytes) -> None:
    """Publish bytes as a remote party would (no tidings envelope made for it)."""
    async with store.pubsub(protocol=None) as pubsub:
        assert await pubsub.publish(channel, payload) == 1


def raw_append(broker: Harness, channel: str, payload: bytes) -> None:
    """Store and publish an entry of a durable channel as a remote party would."""
    if isinstance(broker, MemoryHarness):
        broker.hub.append(channel, payload, Retention())
        return
    assert isinstance(broker, RedisHarness)
    client = broker.server.client()
    entry: bytes = client.xadd(channel, {"envelope": payload})  # type: ignore[assignment]
    client.publish(channel, entry + b" " + payload)


def old_envelope(channel: str, event: str, data: Any) -> bytes:
    """The envelope as tidings encoded it before headers existed."""
    return Json().encode({"channel": channel, "event": event, "data": data})


class CarefulJson:
    """The default JSON codec, as a codec of the application's: its envelopes take the
    careful decoding path (the default codec has a faster one of its own)."""

    def __init__(self) -> None:
        self._json = Json()

    def encode(self, obj: Any, /) -> bytes:
        return self._json.encode(obj)

    def decode(self, payload: bytes, /) -> Any:
        return self._json.decode(payload)


# -- publish(..., headers=) -> Event.headers ----------------------------------------------


async def test_headers_reach_event_headers_read_only(broker: Harness, ns: str) -> None:
    headers = {"k": "v", "trace-id": "ünïcødé ✓", "empty": "", "K": "case matters"}
    async with handler(broker.store(), ns) as channels, channels.subscribe("c") as events:
        assert await channels.publish("c", "with", {"n": 1}, headers=headers) == 1
        await channels.publish("c", "without", 2)
        got, bare = await events.receive(), await events.receive()
    assert (got.event, got.data, got.id) == ("with", {"n": 1}, None)
    assert isinstance(got.headers, Mapping)
    assert dict(got.headers) == headers
    assert "headers={" in repr(got)
    with pytest.raises(TypeError):
        got.headers["k"] = "changed"  # type: ignore[index]
    with pytest.raises(TypeError):
        del got.headers["k"]  # type: ignore[attr-defined]
    assert got.headers["k"] == "v"
    assert bare.headers == {}
    assert "headers" not in repr(bare)
    with pytest.raises(TypeError):
        bare.headers["k"] = "v"  # type: ignore[index]


async def test_headers_are_taken_when_published(broker: Harness, ns: str) -> None:
    """The caller's mapping is read once: changing it afterwards changes nothing."""
    headers = {"k": "before"}
    async with handler(broker.store(), ns) as channels, channels.subscribe("c") as events:
        await channels.publish("c", "e", headers=headers)
        headers["k"] = "after"
        headers["new"] = "x"
        got = await events.receive()
    assert dict(got.headers) == {"k": "before"}


async def test_a_message_without_headers_is_the_old_envelope(broker: Harness, ns: str) -> None:
    store = broker.store()
    async with (
        handler(store, ns, durable=["log"]) as channels,
        raw_subscriber(store, f"{ns}:c") as plain,
        raw_subscriber(store, f"{ns}:log") as durable,
    ):
        await channels.publish("c", "e", {"n": 1})
        await channels.publish("c", "e", {"n": 2}, headers=None)
        await channels.publish("c", "e", {"n": 3}, headers={})
        await channels.publish("c", "e", {"n": 4}, headers={"k": "v"})
        await channels.publish("log", "e", [1])
        await channels.publish("log", "e", [2], headers={"k": "v"})
        await eventually(lambda: len(plain) == 4 and len(durable) == 2)
    assert plain[:3] == [old_envelope("c", "e", {"n": n}) for n in (1, 2, 3)]
    assert all(b"headers" not in payload for payload in plain[:3])
    assert json.loads(plain[3]) == {
        "channel": "c",
        "event": "e",
        "data": {"n": 4},
        "headers": {"k": "v"},
    }
    # A durable channel's live message is "<entry id> <envelope>".
    first_id, _, first = durable[0].partition(b" ")
    assert first_id
    assert first == old_envelope("log", "e", [1])
    assert json.loads(durable[1].partition(b" ")[2])["headers"] == {"k": "v"}
    # ... and its log holds the envelope, the same bytes.
    if isinstance(broker, MemoryHarness):
        stored = [payload for _, payload in broker.hub.read(f"{ns}:log", "0", 10)]
    else:
        assert isinstance(broker, RedisHarness)
        entries: Any = broker.server.client().xrange(f"{ns}:log")
        stored = [fields[b"envelope"] for _, fields in entries]
    assert stored[0] == first
    assert json.loads(stored[1])["headers"] == {"k": "v"}


# -- checked before any I/O ---------------------------------------------------------------

BAD_HEADERS: list[tuple[Any, type[Exception]]] = [
    ([("k", "v")], TypeError),
    ("k=v", TypeError),
    (b"k=v", TypeError),
    ({1: "v"}, TypeError),
    ({b"k": "v"}, TypeError),
    ({"k": 1}, TypeError),
    ({"k": None}, TypeError),
    ({"k": b"v"}, TypeError),
    ({"k": ["v"]}, TypeError),
    ({"": "v"}, ValueError),
    ({"tidings-x": "v"}, ValueError),
    ({"tidings-": "v"}, ValueError),
    ({"fine": "v", "tidings-group": "g"}, ValueError),
]


@pytest.mark.parametrize(("headers", "error"), BAD_HEADERS)
async def test_bad_headers_raise_before_any_io(
    broker: Harness, ns: str, headers: Any, error: type[Exception]
) -> None:
    store = broker.store()
    # Never started: the check comes before "not running".
    with pytest.raises(error):
        await handler(store, ns).publish("c", "e", headers=headers)
    # Running: nothing is sent, nothing is counted.
    async with handler(store, ns) as channels, raw_subscriber(store, f"{ns}:c") as got:
        with pytest.raises(error):
            await channels.publish("c", "e", "bad", headers=headers)
        await channels.publish("c", "e", "good")
        await eventually(lambda: got)
        await settle(channels)
        stats = channels.stats()
    assert [json.loads(payload)["data"] for payload in got] == ["good"]
    assert (stats.published, stats.publish_errors) == (1, 0)


@pytest.mark.parametrize(("headers", "error"), BAD_HEADERS[::4])
async def test_bad_headers_raise_at_once_while_disconnected(
    broker: Harness, ns: str, headers: Any, error: type[Exception]
) -> None:
    """A publish waits for the connection (publish_timeout); bad headers do not."""
    if isinstance(broker, MemoryHarness):
        broker.hub.refusing = True
        store = broker.store()
    else:
        store = create_store(f"redis://127.0.0.1:{free_port()}")  # nobody listens there
    async with handler(store, ns, publish_timeout=30.0) as channels:
        assert channels.status.name != "connected"
        with anyio.fail_after(10), pytest.raises(error):
            await channels.publish("c", "e", headers=headers)
        assert channels.stats().publish_errors == 0


# -- durable channels and groups ------------------------------------------------------------


async def test_durable_channels_keep_headers_in_their_log(broker: Harness, ns: str) -> None:
    sent = [{"k": "1"}, None, {"k": "3", "other": "x"}]
    async with handler(broker.store(), ns, durable=["log"]) as producer:
        for n, headers in enumerate(sent):
            await producer.publish("log", "e", n, headers=headers)
    async with (
        handler(broker.store(), ns, durable=["log"]) as reader,
        reader.subscribe("log", since="all") as events,
    ):
        got = [await events.receive() for _ in sent]
    assert [e.data for e in got] == [0, 1, 2]
    assert [dict(e.headers) for e in got] == [h or {} for h in sent]
    assert all(e.id for e in got)


async def test_durable_channels_keep_headers_across_a_reconnect(broker: Harness, ns: str) -> None:
    split = Split(broker, ns, ["log"])
    producer = split.producer()
    async with split.running(producer):
        subscriber = split.subscriber()
        async with subscriber, subscriber.subscribe("log") as events:
            await producer.publish("log", "e", 0, headers={"at": "before"})
            assert dict((await events.receive()).headers) == {"at": "before"}
            async with split.cut_off(subscriber):
                for n in range(1, 4):
                    await producer.publish("log", "e", n, headers={"at": "away", "n": str(n)})
            got = [await events.receive() for _ in range(3)]
            replayed = subscriber.stats().replayed
    assert [e.data for e in got] == [1, 2, 3]
    assert [dict(e.headers) for e in got] == [{"at": "away", "n": str(n)} for n in (1, 2, 3)]
    assert replayed >= 3  # read back from the log


async def test_group_iterators_get_headers(broker: Harness, ns: str) -> None:
    durable = {"jobs": Retention(max_len=1000)}
    async with (
        handler(broker.store(), ns, durable=durable) as member,
        handler(broker.store(), ns, durable=durable) as producer,
        member.subscribe("jobs", group="workers") as jobs,
    ):
        await producer.publish("jobs", "job", 1, headers={"tenant": "acme"})
        await producer.publish("jobs", "job", 2)
        first, second = await jobs.receive(), await jobs.receive()
    assert (first.data, first.deliveries) == (1, 1)
    assert dict(first.headers) == {"tenant": "acme"}
    assert second.headers == {}
    with pytest.raises(TypeError):
        first.headers["tenant"] = "other"  # type: ignore[index]


# -- what a remote party sends ----------------------------------------------------------------

MALFORMED = [
    b'{"event":"e","headers":[1]}',
    b'{"event":"e","headers":{"a":1}}',
    b'{"event":"e","headers":{"a":null}}',
    b'{"event":"e","headers":{"a":["b"]}}',
    b'{"event":"e","headers":{"a":{"b":"c"}}}',
    b'{"event":"e","headers":"a=b"}',
    b'{"event":"e","headers":1}',
    b'{"event":"e","headers":true}',
    b'{"event":"e","data":1,"headers":{"ok":"v","bad":2},"extra":1}',
]

ACCEPTED: list[tuple[bytes, dict[str, str]]] = [
    (b'{"event":"e","headers":{}}', {}),
    (b'{"event":"e","headers":null}', {}),
    (b'{"event":"e"}', {}),
    (b'{"event":"e","headers":{"a":"b","":"empty name"}}', {"a": "b", "": "empty name"}),
    (b'{"event":"e","headers":{"tidings-x":"theirs"}}', {"tidings-x": "theirs"}),
    (b'{"event":"e","headers":{"a":"b"},"extra":[1]}', {"a": "b"}),
]

CODECS = [pytest.param(None, id="fast-json"), pytest.param(CarefulJson, id="careful-json")]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("payload", MALFORMED)
async def test_malformed_headers_are_a_counted_decode_error(
    broker: Harness, ns: str, payload: bytes, codec: Any
) -> None:
    store = broker.store()
    recorder = Recorder()
    protocol = codec() if codec is not None else None
    async with handler(store, ns, protocol=protocol) as channels:
        await channels.register("c", "*", recorder)
        async with channels.subscribe("c") as events:
            await raw_publish(store, f"{ns}:c", payload)
            await channels.publish("c", "after", "fine", headers={"k": "v"})
            got = await events.receive()
            await eventually(lambda: recorder.calls)
        stats = channels.stats()
        assert channels.status.name == "connected"  # the handler carries on
    assert (got.event, dict(got.headers)) == ("after", {"k": "v"})
    assert recorder.calls == [("c", "after", "fine")]
    assert stats.decode_errors == 1


@pytest.mark.parametrize("payload", MALFORMED[:2])
async def test_malformed_headers_in_a_durable_log_are_a_counted_decode_error(
    broker: Harness, ns: str, payload: bytes
) -> None:
    recorder = Recorder()
    async with handler(broker.store(), ns, durable=["log"]) as channels:
        await channels.register("log", "*", recorder)
        raw_append(broker, f"{ns}:log", payload)
        await channels.publish("log", "after", "fine")
        await eventually(lambda: recorder.calls)
        await settle(channels)
        stats = channels.stats()
    assert recorder.calls == [("log", "after", "fine")]
    assert stats.decode_errors == 1


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("payload", "headers"), ACCEPTED)
async def test_well_formed_headers_from_a_remote_party_are_accepted(
    broker: Harness, ns: str, payload: bytes, headers: dict[str, str], codec: Any
) -> None:
    """Both decoding paths accept the same envelopes (names are checked when
    publishing, not when receiving: a remote party's are taken as they are)."""
    store = broker.store()
    protocol = codec() if codec is not None else None
    async with (
        handler(store, ns, protocol=protocol) as channels,
        channels.subscribe("c") as events,
    ):
        await raw_publish(store, f"{ns}:c", payload)
        got = await events.receive()
        stats = channels.stats()
    assert got.event == "e"
    assert dict(got.headers) == headers
    assert stats.decode_errors == 0
