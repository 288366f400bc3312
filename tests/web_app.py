"""A raw ASGI app around `tidings.asgi.EventStream`, for the tests that run it under
real servers (uvicorn on asyncio, hypercorn on trio) and a real browser.

- ``/events/{channel}``: the EventStream (durable ``log``; plain ``room-*``;
  ``room-secret`` is refused by ``authorize``);
- ``/stats``: ``{"clients", "overflowed"}`` as JSON;
- ``/``: a page whose ``EventSource`` follows ``log`` and lists what it got.

Configured by the environment: ``TIDINGS_URL``, ``TIDINGS_NAMESPACE``, and
``TIDINGS_MAX_PENDING`` / ``TIDINGS_HEARTBEAT`` (optional).
"""

from __future__ import annotations

import json
import os
from typing import Any

import tidings
from tidings.asgi import EventStream

channels = tidings.Channels(
    os.environ.get("TIDINGS_URL", "memory://"),
    namespace=os.environ.get("TIDINGS_NAMESPACE", "web"),
    durable={"log": tidings.Retention(max_len=100_000)},
    backoff=tidings.Backoff(initial=0.05, cap=0.5),
)
stream = EventStream(
    channels,
    allow=["log", "room-*"],
    authorize=lambda scope, channel: channel != "room-secret",
    heartbeat=float(os.environ.get("TIDINGS_HEARTBEAT", "15")),
    max_pending=int(os.environ.get("TIDINGS_MAX_PENDING", "1000")),
)

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>tidings</title></head>
<body><ol id="got"></ol>
<script>
  // Every event of "log", once each, in order, across reconnects: EventSource sends
  // Last-Event-ID by itself when it reconnects.
  window.got = [];
  window.opened = 0;
  const source = new EventSource("/events/log");
  source.onopen = () => { window.opened += 1; };
  source.addEventListener("e", (message) => {
    window.got.push(JSON.parse(message.data));
    const item = document.createElement("li");
    item.textContent = message.data;
    document.getElementById("got").appendChild(item);
  });
  source.addEventListener("gap", (message) => { window.gap = JSON.parse(message.data); });
</script></body></html>
"""


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    if path.startswith("/events/"):
        await stream({**scope, "root_path": scope.get("root_path", "") + "/events"}, receive, send)
    elif path == "/stats":
        body = json.dumps({"clients": stream.clients, "overflowed": stream.overflowed})
        await respond(send, 200, body.encode(), b"application/json")
    elif path == "/":
        await respond(send, 200, PAGE, b"text/html; charset=utf-8")
    else:
        await respond(send, 404, b"not found\n", b"text/plain")


async def lifespan(receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    async with channels:  # one handler for the process, for as long as it serves
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        stream.close()
    await send({"type": "lifespan.shutdown.complete"})


async def respond(send: Any, status: int, body: bytes, kind: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]}
    )
    await send({"type": "http.response.body", "body": body})
