"""Events to browsers with Starlette: `tidings.asgi.EventStream` mounted at /events.

Run one or more app processes against one Redis; an event published through any of
them (or by any other process) reaches the browsers of all:

    python -m pip install '.[web]'   # from a clone of tidings; or: pip install starlette uvicorn
    TIDINGS_URL=redis://localhost:6379/0 uvicorn examples.web_starlette:app \\
        --port 8001 --timeout-graceful-shutdown 2

- ``GET /events/news`` (Server-Sent Events) or a WebSocket at the same path: the
  durable channel ``news``. A browser that reconnects (``EventSource`` does so by
  itself, sending ``Last-Event-ID``) gets what it missed, once and in order.
- ``GET /events/room-{name}``: a plain channel per room (live only).
- ``POST /publish/{channel}`` with a JSON body: publish it (event ``message``).
- ``GET /``: a page following ``news``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route

import tidings
from tidings.asgi import EventStream

channels = tidings.Channels(
    os.environ.get("TIDINGS_URL", "redis://localhost:6379/0"),
    namespace="web",
    durable={"news": tidings.Retention(max_len=10_000)},
)
stream = EventStream(channels, allow=["news", "room-*"])


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with channels:  # one handler for the process, for as long as it serves
        yield


async def publish(request: Request) -> JSONResponse:
    channel = request.path_params["channel"]
    if channel != "news" and not channel.startswith("room-"):
        return JSONResponse({"error": "no such channel"}, status_code=404)
    receivers = await channels.publish(channel, "message", await request.json())
    return JSONResponse({"receivers": receivers})


PAGE = """<!doctype html><meta charset="utf-8"><title>news</title><ol id="news"></ol>
<script>
  const source = new EventSource("/events/news");   // resumes by itself
  source.addEventListener("message", (event) => {
    const item = document.createElement("li");
    item.textContent = event.data;
    document.getElementById("news").appendChild(item);
  });
</script>"""


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


app = Starlette(
    routes=[
        Route("/", page),
        Route("/publish/{channel}", publish, methods=["POST"]),
        Mount("/events", stream),
    ],
    lifespan=lifespan,
)
