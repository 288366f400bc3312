"""Events to browsers from a trio app: a plain ASGI app (no framework) around
`tidings.asgi.EventStream`, served by hypercorn on trio.

    python -m pip install '.[web]'   # from a clone of tidings; or: pip install hypercorn
    TIDINGS_URL=redis://localhost:6379/0 hypercorn --worker-class trio --workers 0 \\
        --graceful-timeout 2 --bind 127.0.0.1:8000 examples.web_trio:app

``GET /events/ticks`` (or a WebSocket there) streams the durable channel ``ticks``;
the app itself publishes a tick a second, from a task of the same handler's tree.
"""

from __future__ import annotations

import os
from typing import Any

import trio

import tidings
from tidings.asgi import EventStream

channels = tidings.Channels(
    os.environ.get("TIDINGS_URL", "redis://localhost:6379/0"),
    namespace="clock",
    durable={"ticks": tidings.Retention(max_age=3600)},
)
stream = EventStream(channels, allow=["ticks"])


async def ticking() -> None:
    for n in range(1_000_000_000):
        await channels.publish("ticks", "tick", n)
        await trio.sleep(1)


async def lifespan(receive: Any, send: Any) -> None:
    await receive()  # lifespan.startup
    async with channels, trio.open_nursery() as nursery:
        nursery.start_soon(ticking)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        stream.close()
        nursery.cancel_scope.cancel()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["path"].startswith("/events/"):
        await stream({**scope, "root_path": scope.get("root_path", "") + "/events"}, receive, send)
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found\n"})
