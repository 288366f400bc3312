"""The programs of docs/web.md, run as the page says: examples/web_starlette.py and
examples/web_fastapi.py under uvicorn, examples/web_trio.py under hypercorn on trio,
each over a real Redis, with clients over TCP."""

from __future__ import annotations

import anyio
import pytest

from tests.asgi_client import SSE, App, WebSocket
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def test_starlette_an_event_reaches_browsers_on_every_app_process(
    redis_server: RedisServer,
) -> None:
    one = App("uvicorn", "examples.web_starlette:app", redis_server.url)
    two = App("uvicorn", "examples.web_starlette:app", redis_server.url)
    try:
        await one.start()
        await two.start()
        async with (
            SSE.open(one.port, "/events/news") as alice,
            WebSocket.open(two.port, "/events/news") as bob,
            SSE.open(two.port, "/events/room-lobby") as lobby,
        ):
            assert (await one.post("/publish/news", {"text": "one"}))["receivers"] == 2
            await two.post("/publish/news", {"text": "two"})
            await one.post("/publish/room-lobby", {"text": "hi"})
            expected = [{"text": "one"}, {"text": "two"}]
            assert [f["data"] for f in await alice.until(2)] == expected
            assert [f["data"] for f in await bob.until(2)] == expected
            assert [f["data"] for f in await lobby.until(1)] == [{"text": "hi"}]
        last = alice.frames[-1]["id"]
        await one.post("/publish/news", {"text": "three"})  # while nobody listens
        async with SSE.open(two.port, "/events/news", {"last-event-id": last}) as back:
            assert [f["data"] for f in await back.until(1)] == [{"text": "three"}]
        async with SSE.open(one.port, "/") as page:
            await page.until_end()
            assert 'new EventSource("/events/news")' in page.body
    finally:
        one.kill()
        two.kill()


async def test_fastapi_streams_to_signed_in_users_only(redis_server: RedisServer) -> None:
    app = App("uvicorn", "examples.web_fastapi:app", redis_server.url)
    try:
        await app.start()
        async with SSE.open(app.port, "/events/orders") as stranger:
            assert stranger.status == 403
        async with SSE.open(app.port, "/events/orders", {"x-user": "ann"}) as ann:
            await app.post("/orders", {"id": 1})
            (frame,) = await ann.until(1)
            assert (frame["event"], frame["data"]) == ("created", {"id": 1})
    finally:
        app.kill()


async def test_trio_app_under_hypercorn_ticks_and_resumes(redis_server: RedisServer) -> None:
    app = App("hypercorn", "examples.web_trio:app", redis_server.url)
    try:
        await app.start()
        async with SSE.open(app.port, "/events/ticks") as first:
            (tick,) = await first.until(1)
        assert tick["event"] == "tick"
        async with WebSocket.open(app.port, f"/events/ticks?last_event_id={tick['id']}") as again:
            (after,) = await again.until(1)
        assert after["data"] == tick["data"] + 1  # the next one, not a repeat
        with anyio.fail_after(10):
            assert app.process is not None
            app.process.terminate()
            while app.process.poll() is None:
                await anyio.sleep(0.05)
    finally:
        app.kill()
