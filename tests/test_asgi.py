"""`tidings.asgi.EventStream`, driven as an ASGI app in process (no server), on
memory:// and a real Redis: access, frames, resume, gaps, slow clients, shutdown.

The same app under real servers (uvicorn on asyncio, hypercorn on trio) is in
test_asgi_servers.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import tidings
from tests.asgi_client import InProcess
from tests.helpers import FAST, Harness, MemoryHarness, eventually
from tests.redis_server import RedisServer
from tidings import Channels, Retention
from tidings.asgi import EventStream
from tidings.brokers.memory import Hub, MemoryBroker

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serving(
    broker: Harness, **options: Any
) -> AsyncIterator[tuple[Channels, EventStream, anyio.abc.TaskGroup]]:
    """A running handler (durable "log", plain "room-*"), its EventStream, and a
    task group to run requests in."""
    namespace = f"w{uuid.uuid4().hex[:8]}"
    channels = Channels(
        broker.store(),
        namespace=namespace,
        durable={"log": Retention(max_len=50)},
        backoff=FAST,
    )
    options.setdefault("allow", ["log", "room-*"])
    stream = EventStream(channels, **options)
    async with channels, anyio.create_task_group() as tasks:
        yield channels, stream, tasks
        tasks.cancel_scope.cancel()


async def open_request(
    stream: EventStream, tasks: anyio.abc.TaskGroup, path: str, **kw: Any
) -> InProcess:
    """A request, running, once its stream is open (or refused)."""
    client = InProcess(path, **kw)
    tasks.start_soon(client.run, stream)
    await eventually(lambda: client.done or client.opened)
    return client


async def test_a_channel_outside_allow_is_404_and_unauthorized_is_403(broker: Harness) -> None:
    seen: list[tuple[str, str]] = []

    async def authorize(scope: dict[str, Any], channel: str) -> bool:
        seen.append((scope["path"], channel))
        return channel != "room-secret"

    async with serving(broker, authorize=authorize) as (_, stream, tasks):
        for path, status in [("/other", 404), ("/", 404), ("/room-secret", 403)]:
            client = await open_request(stream, tasks, path)
            await eventually(lambda c=client: c.done)  # type: ignore[misc]
            assert client.status == status, path
            assert client.frames == []
        assert seen == [("/room-secret", "room-secret")]  # asked only within allow
        post = await open_request(stream, tasks, "/room-1", method="POST")
        await eventually(lambda: post.done)
        assert post.status == 405


def retried(client: InProcess) -> bool:
    """Refused for now: an SSE response (200, what keeps an EventSource trying) that
    ends at once, asking it to come back."""
    return client.status == 200 and client.ended and "retry: " in client.body


async def test_a_handler_that_is_not_running_has_browsers_come_back_later() -> None:
    channels = Channels("memory://", namespace="x")
    stream = EventStream(channels, allow=["*"])
    client = InProcess("/anything")
    await client.run(stream)  # before it runs
    assert retried(client)
    socket = InProcess("/anything", kind="websocket")
    await socket.run(stream)
    assert socket.closed_with == 1013  # try again later
    async with channels:
        pass
    after = InProcess("/anything")
    await after.run(stream)  # and once it is closed
    assert retried(after)


async def test_nothing_is_served_until_allowed() -> None:
    channels = Channels("memory://", namespace="x")
    stream = EventStream(channels)  # allow defaults to nothing
    async with channels:
        client = InProcess("/anything")
        await client.run(stream)
        assert client.status == 404


@pytest.mark.parametrize(
    ("query", "headers"),
    [("event=", []), ("last_event_id=nope", []), ("", [(b"last-event-id", b"12x")])],
)
async def test_bad_arguments_are_400_naming_them(
    broker: Harness, query: str, headers: list[tuple[bytes, bytes]]
) -> None:
    async with serving(broker) as (_, stream, tasks):
        client = await open_request(stream, tasks, "/log", query=query, headers=headers)
        await eventually(lambda: client.done)
        assert client.status == 400
        assert client.body.strip()


async def test_sse_frames_carry_ids_on_durable_channels_and_pick_events(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        log = await open_request(stream, tasks, "/log")
        room = await open_request(stream, tasks, "/room-1", query="event=said")
        assert log.status == room.status == 200
        await channels.publish("log", "made", {"n": 1})
        await channels.publish("room-1", "said", "hi")
        await channels.publish("room-1", "left", "bye")  # not picked
        await channels.publish("room-1", "said", "again")
        await eventually(lambda: len(log.frames) == 1 and len(room.frames) == 2)
        assert log.frames[0]["event"] == "made"
        assert log.frames[0]["data"] == {"n": 1}
        assert log.frames[0]["id"]
        assert [(f["event"], f["data"], "id" in f) for f in room.frames] == [
            ("said", "hi", False),
            ("said", "again", False),
        ]


async def test_a_browser_resumes_after_its_last_id_once_and_in_order(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        first = await open_request(stream, tasks, "/log")
        for n in range(5):
            await channels.publish("log", "e", n)
        await eventually(lambda: len(first.frames) == 5)
        first.disconnect()
        await eventually(lambda: first.done)
        for n in range(5, 10):  # while it was away
            await channels.publish("log", "e", n)
        last = first.frames[-1]["id"]
        again = await open_request(
            stream, tasks, "/log", headers=[(b"last-event-id", last.encode())]
        )
        await channels.publish("log", "e", 10)  # and live
        await eventually(lambda: again.data == list(range(5, 11)))
        ids = [f["id"] for f in again.frames]
        assert ids == sorted(ids)
        assert all(f["event"] != "gap" for f in again.frames)
        # The query parameter works the same (a WebSocket's way).
        by_query = await open_request(stream, tasks, "/log", query=f"last_event_id={last}")
        await eventually(lambda: by_query.data == list(range(5, 11)))


async def test_a_resume_the_log_cannot_serve_starts_with_a_gap_frame(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        first = await open_request(stream, tasks, "/log")
        await channels.publish("log", "e", 0)
        await eventually(lambda: len(first.frames) == 1)
        first.disconnect()
        gone = first.frames[0]["id"]
        for n in range(1, 301):  # retention is 50: 0 is trimmed
            await channels.publish("log", "e", n)
        again = await open_request(
            stream, tasks, "/log", headers=[(b"last-event-id", gone.encode())]
        )
        await eventually(lambda: again.data[-1:] == [300])
        gap = again.frames[0]
        assert gap["event"] == "gap"
        assert gap["data"]["reason"] == "trimmed"
        assert gap["data"]["last_id"] == gone
        assert again.frames[1]["id"] == gap["data"]["next_id"]
        kept = again.data
        assert kept == sorted(kept)
        assert len(set(kept)) == len(kept)


async def test_a_plain_channel_ignores_last_event_id(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        client = await open_request(stream, tasks, "/room-1", query="last_event_id=1-0")
        await channels.publish("room-1", "e", 1)
        await eventually(lambda: client.data == [1])


async def test_a_slow_client_is_ended_alone_and_the_others_get_everything(
    broker: Harness,
) -> None:
    async with serving(broker, max_pending=10) as (channels, stream, tasks):
        slow = await open_request(stream, tasks, "/log")
        fast = await open_request(stream, tasks, "/log")
        plain_fast = await open_request(stream, tasks, "/room-1")
        slow.reading = anyio.Event()  # stops reading: the app's sends wait
        for n in range(200):
            await channels.publish("log", "e", n)
            await channels.publish("room-1", "e", n)
            if n % 5 == 4:  # bursts of 5: the fast ones keep up, the slow one cannot
                await eventually(lambda n=n: fast.data[-1:] == plain_fast.data[-1:] == [n])  # type: ignore[misc]
        assert stream.overflowed == 1
        slow.reading.set()  # it reads again: it gets what was queued, then the end
        await eventually(lambda: slow.done)
        assert slow.data == list(range(len(slow.data)))
        assert 10 <= len(slow.data) <= 12  # its buffer, and the frame in its hands
        assert retried(slow)
        await eventually(lambda: fast.data == list(range(200)))
        await eventually(lambda: plain_fast.data == list(range(200)))
        assert stream.clients == 2


async def test_a_websocket_gets_json_frames_and_is_refused_before_accepting(
    broker: Harness,
) -> None:
    async with serving(broker, max_pending=5) as (channels, stream, tasks):
        refused = await open_request(stream, tasks, "/nope", kind="websocket")
        await eventually(lambda: refused.done)
        assert [m["type"] for m in refused.sent] == ["websocket.close"]
        assert refused.closed_with == 1008
        socket = await open_request(stream, tasks, "/log", kind="websocket")
        plain = await open_request(stream, tasks, "/room-2", kind="websocket")
        await channels.publish("log", "e", {"x": 1})
        await channels.publish("room-2", "said", "hi")
        await eventually(lambda: len(socket.frames) == 1 and len(plain.frames) == 1)
        assert socket.sent[0]["type"] == "websocket.accept"
        frame = socket.frames[0]
        assert (frame["channel"], frame["event"], frame["data"]) == ("log", "e", {"x": 1})
        assert frame["id"]
        assert plain.frames == [{"id": None, "channel": "room-2", "event": "said", "data": "hi"}]
        socket.reading = anyio.Event()  # a slow one: closed with 1013, try again later
        for n in range(50):
            await channels.publish("log", "e", n)
        await eventually(lambda: stream.overflowed == 1)
        socket.reading.set()
        await eventually(lambda: socket.done)
        assert socket.closed_with == 1013


async def test_close_ends_every_stream_and_refuses_new_ones(broker: Harness) -> None:
    async with serving(broker) as (_, stream, tasks):
        sse = await open_request(stream, tasks, "/log")
        socket = await open_request(stream, tasks, "/room-1", kind="websocket")
        stream.close()
        await eventually(lambda: sse.done and socket.done)
        assert sse.ended
        assert socket.closed_with == 1001
        late = await open_request(stream, tasks, "/log")
        await eventually(lambda: late.done)
        assert retried(late)
        assert stream.clients == 0


async def test_streams_end_when_the_handler_closes(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        sse = await open_request(stream, tasks, "/log")
        await channels.close()
        await eventually(lambda: sse.done)
        assert sse.ended


async def test_a_disconnect_removes_the_client_s_registration(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        clients = [await open_request(stream, tasks, "/room-1") for _ in range(3)]
        if not isinstance(broker, MemoryHarness):  # three browsers, one subscription
            assert broker.numsub(f"{channels.namespace}:room-1") == {
                f"{channels.namespace}:room-1": 1
            }
        for client in clients:
            client.disconnect()
        await eventually(lambda: all(c.done for c in clients))
        assert stream.clients == 0
        await eventually(lambda: "room-1" not in channels)


async def test_heartbeats_keep_an_idle_stream_talking(broker: Harness) -> None:
    async with serving(broker, heartbeat=0.01) as (_, stream, tasks):
        client = await open_request(stream, tasks, "/log")
        await eventually(lambda: client.body.count(":\n\n") >= 3)
        assert client.frames == []


async def test_mounted_under_a_prefix(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        client = await open_request(stream, tasks, "/room-9", root_path="/events")
        await channels.publish("room-9", "e", 1)
        await eventually(lambda: client.data == [1])


def test_bad_options_fail_at_construction() -> None:
    channels = Channels("memory://")
    with pytest.raises(TypeError, match="Channels"):
        EventStream("memory://")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allow"):
        EventStream(channels, allow="room-*")
    with pytest.raises(ValueError, match="allow"):
        EventStream(channels, allow=[""])
    with pytest.raises(TypeError, match="authorize"):
        EventStream(channels, authorize=True)  # type: ignore[arg-type]
    for heartbeat in (0, -1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="heartbeat"):
            EventStream(channels, heartbeat=heartbeat)  # type: ignore[arg-type]
    for bound in (0, 1.5, True):
        with pytest.raises(ValueError, match="max_pending"):
            EventStream(channels, max_pending=bound)  # type: ignore[arg-type]


async def test_open_streams_ride_through_a_redis_restart() -> None:
    """The handler reconnects under open streams: a durable channel's stream misses
    nothing (AOF keeps the log), a plain channel's goes on with what comes after."""
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    try:
        channels = Channels(
            server.url, namespace="r", durable={"log": Retention(max_len=1000)}, backoff=FAST
        )
        producer = Channels(server.url, namespace="r", durable=["log"], backoff=FAST)
        stream = EventStream(channels, allow=["log", "room-*"])
        async with channels, producer, anyio.create_task_group() as tasks:
            log = await open_request(stream, tasks, "/log")
            room = await open_request(stream, tasks, "/room-1")
            await producer.publish("log", "e", 0)
            await eventually(lambda: log.data == [0])
            server.kill()
            await anyio.to_thread.run_sync(server.start)
            await channels.connect()
            for n in range(1, 4):
                await producer.publish("log", "e", n)
            await eventually(lambda: log.data == [0, 1, 2, 3], limit=10)
            with anyio.fail_after(10):  # the plain channel: once resubscribed, live again
                while not room.data:
                    await producer.publish("room-1", "e", "after")
                    await anyio.sleep(0.02)
            assert not log.done
            assert not room.done
            tasks.cancel_scope.cancel()
    finally:
        server.close()


# -- what a review of the first version found -------------------------------------------


async def test_a_browser_far_behind_gets_further_at_each_reconnect(broker: Harness) -> None:
    """A resume past ``max_pending`` events: each attempt sends what it queued, then
    ends; the next starts after the last id it got, until the browser is live."""
    async with serving(broker, max_pending=10) as (channels, stream, tasks):
        for n in range(35):
            await channels.publish("log", "e", n)
        got: list[int] = []
        last = "0-0"
        for _ in range(10):
            client = await open_request(
                stream, tasks, "/log", headers=[(b"last-event-id", last.encode())]
            )
            have = len(got)
            await eventually(lambda c=client, h=have: c.done or h + len(c.data) >= 35)  # type: ignore[misc]
            got += client.data
            last = client.frames[-1]["id"] if client.frames else last
            if len(got) >= 35:
                break
            assert client.data  # progress every time
        assert got == list(range(35))


async def test_a_slow_send_is_never_given_up_for_a_heartbeat(broker: Harness) -> None:
    async with serving(broker, heartbeat=0.001) as (channels, stream, tasks):
        client = await open_request(stream, tasks, "/log")
        for n in range(20):
            client.reading = anyio.Event()  # each send waits past many heartbeats
            await channels.publish("log", "e", n)
            await anyio.sleep(0.01)
            client.reading.set()
        await eventually(lambda: client.data == list(range(20)))


async def test_an_event_json_cannot_encode_does_not_end_the_streams() -> None:
    hub = Hub("asgi-poison")
    channels = Channels(tidings.Store(MemoryBroker(hub)), namespace="p", durable=["log"])
    stream = EventStream(channels, allow=["log"])
    async with channels, anyio.create_task_group() as tasks:
        client = await open_request(stream, tasks, "/log")
        # A producer in another language: valid JSON, a lone surrogate in it.
        envelope = b'{"channel": "log", "event": "e", "data": "\\ud800"}'
        hub.append("p:log", envelope, Retention())
        await channels.publish("log", "e", "after")
        await eventually(lambda: len(client.data) == 2)
        assert client.data[1] == "after"
        assert not client.done
        tasks.cancel_scope.cancel()


@pytest.mark.parametrize("path", ["/w:secret", "/room-1:", "/room-a::b"])
async def test_paths_that_are_not_allowed_names_are_404(broker: Harness, path: str) -> None:
    async with serving(broker, allow=["room-*", "*:public"]) as (_, stream, tasks):
        client = await open_request(stream, tasks, path)
        await eventually(lambda: client.done)
        assert client.status == 404


async def test_the_namespace_prefix_in_a_path_gains_nothing(broker: Harness) -> None:
    asked: list[str] = []
    async with serving(broker, authorize=lambda s, c: asked.append(c) or True) as (
        channels,
        stream,
        tasks,
    ):
        client = await open_request(stream, tasks, f"/{channels.namespace}:secret")
        await eventually(lambda: client.done)
        assert client.status == 404  # "secret" is not allowed, prefix or not
        allowed = await open_request(stream, tasks, f"/{channels.namespace}:room-1")
        assert allowed.status == 200
        assert asked == ["room-1"]  # authorize sees the name the handler means


async def test_a_glob_that_would_cost_the_handler_is_refused(broker: Harness) -> None:
    async with serving(broker) as (_, stream, tasks):
        client = await open_request(stream, tasks, "/log", query="event=*?*?*?*?*?!")
        await eventually(lambda: client.done)
        assert client.status == 400
        assert "event" in client.body


async def test_a_resume_id_past_the_end_starts_at_the_end(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        await channels.publish("log", "e", 0)
        status: list[str] = []
        await channels.register(
            channels.status_channel.name, "gap", lambda c, e, d: status.append(d)
        )
        future = "99999999999999-0"
        client = await open_request(stream, tasks, "/log", query=f"last_event_id={future}")
        await channels.publish("log", "e", 1)
        await eventually(lambda: client.data == [1])
        assert client.frames[0]["event"] == "gap"
        assert client.frames[0]["data"]["reason"] == "rewound"
        assert status == []  # a browser's id is no news for the application


async def test_close_while_a_request_is_admitted_ends_it(broker: Harness) -> None:
    admitted = anyio.Event()
    go = anyio.Event()

    async def authorize(scope: dict[str, Any], channel: str) -> bool:
        admitted.set()
        await go.wait()
        return True

    async with serving(broker, authorize=authorize) as (_, stream, tasks):
        client = InProcess("/log")
        tasks.start_soon(client.run, stream)
        await admitted.wait()
        stream.close()
        go.set()
        await eventually(lambda: client.done)
        assert retried(client)
        assert stream.clients == 0


async def test_plain_channels_ignore_even_a_malformed_last_event_id(broker: Harness) -> None:
    async with serving(broker) as (channels, stream, tasks):
        client = await open_request(stream, tasks, "/room-1", headers=[(b"last-event-id", b"x")])
        await channels.publish("room-1", "e", 1)
        await eventually(lambda: client.data == [1])
