"""`tidings.asgi.EventStream` under real servers, each a process of its own: hypercorn
on trio (the trio backend's runs) and uvicorn on asyncio (the asyncio backend's), with
the docs' shutdown settings, a real Redis, and clients over TCP.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.asgi_client import SSE, App, WebSocket
from tests.helpers import FAST
from tests.redis_server import RedisServer
from tidings import Channels, Retention

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def running_app(
    redis_server: RedisServer, anyio_backend: str, **env: str
) -> AsyncIterator[tuple[App, Channels]]:
    """The app under the server of this backend, and a producer on the same Redis."""
    namespace = f"s{uuid.uuid4().hex[:8]}"
    server = "hypercorn" if anyio_backend == "trio" else "uvicorn"
    app = App(server, "tests.web_app:app", redis_server.url, namespace, **env)
    durable = {"log": Retention(max_len=100_000)}
    producer = Channels(redis_server.url, namespace=namespace, durable=durable, backoff=FAST)
    try:
        await app.start()
        async with producer:
            yield app, producer
    finally:
        app.kill()


async def test_sse_and_websocket_clients_follow_channels_across_processes(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    async with running_app(redis_server, anyio_backend) as (app, producer):
        async with (
            SSE.open(app.port, "/events/log") as sse,
            WebSocket.open(app.port, "/events/log") as websocket,
            SSE.open(app.port, "/events/room-1?event=said") as room,
        ):
            assert sse.status == room.status == 200
            assert sse.headers["content-type"].startswith("text/event-stream")
            assert websocket.accepted
            for n in range(10):
                await producer.publish("log", "e", {"n": n})
            await producer.publish("room-1", "left", "bye")  # not picked
            await producer.publish("room-1", "said", "hi")
            assert [f["data"] for f in await sse.until(10)] == [{"n": n} for n in range(10)]
            assert [f["data"] for f in await websocket.until(10)] == [{"n": n} for n in range(10)]
            assert [f["id"] for f in sse.frames] == [f["id"] for f in websocket.frames]
            assert all(f["channel"] == "log" and f["event"] == "e" for f in websocket.frames)
            assert await room.until(1) == [{"event": "said", "data": "hi"}]
        for target, status in [("/events/elsewhere", 404), ("/events/room-secret", 403)]:
            async with SSE.open(app.port, target) as refused:
                assert refused.status == status
            async with WebSocket.open(app.port, target) as refused_socket:
                assert refused_socket.accepted is False


async def test_a_browser_resumes_after_a_disconnect_and_after_an_app_restart(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    async with running_app(redis_server, anyio_backend) as (app, producer):
        for n in range(5):
            await producer.publish("log", "e", n)
        async with SSE.open(app.port, "/events/log?last_event_id=0-0") as sse:
            await sse.until(5)
        last = sse.frames[-1]["id"]
        for n in range(5, 8):  # while it was away
            await producer.publish("log", "e", n)
        app.kill()  # and the app goes down too
        for n in range(8, 10):
            await producer.publish("log", "e", n)
        await app.start()
        async with SSE.open(app.port, "/events/log", {"last-event-id": last}) as again:
            await again.until(5)
            await producer.publish("log", "e", 10)  # then live
            await again.until(6)
        assert again.data == list(range(5, 11))
        ids = [f["id"] for f in again.frames]
        assert ids == sorted(ids)
        assert ids[0] > last
        async with WebSocket.open(app.port, f"/events/log?last_event_id={last}") as websocket:
            assert [f["data"] for f in await websocket.until(6)] == list(range(5, 11))


async def test_a_client_that_stops_reading_is_ended_alone(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    async with (
        running_app(redis_server, anyio_backend, max_pending="100") as (app, producer),
        await anyio.connect_tcp("127.0.0.1", app.port) as stalled,
        SSE.open(app.port, "/events/log") as reader,
    ):
        await stalled.send(b"GET /events/log HTTP/1.1\r\nhost: x\r\n\r\n")  # never read
        filler = "x" * 2000  # thousands of events, megabytes: past any socket buffer
        for burst in range(0, 3000, 50):  # the reader keeps up (50 < max_pending)
            for n in range(burst, burst + 50):
                await producer.publish("log", "e", [n, filler])
            await reader.until(burst + 50)
        assert [f["data"][0] for f in reader.frames] == list(range(3000))
        # The stalled stream is over (its last write given up): the reader is left.
        stats: dict[str, int] = {}
        with anyio.fail_after(10):
            while stats.get("clients") != 1:
                stats = await app.stats()
        assert stats["overflowed"] == 1


async def test_sigterm_ends_every_open_stream_and_the_process(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    async with (
        running_app(redis_server, anyio_backend) as (app, _),
        SSE.open(app.port, "/events/log") as sse,
        WebSocket.open(app.port, "/events/room-1") as websocket,
    ):
        assert app.process is not None
        app.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):  # a liveness bound (the docs say five seconds)
            await sse.until_end()
            assert await websocket.until_closed() in (1001, 1012, 1006)
            while app.process.poll() is None:
                await anyio.sleep(0.05)
        # Done shutting down, both servers raise the signal again (the exit status
        # says what ended them, as a process manager expects).
        assert app.process.returncode in (0, -signal.SIGTERM)
