"""Events to browsers with FastAPI: `tidings.asgi.EventStream` mounted at /events.

    python -m pip install '.[web]'   # from a clone of tidings; or: pip install fastapi uvicorn
    TIDINGS_URL=redis://localhost:6379/0 uvicorn examples.web_fastapi:app \\
        --port 8000 --timeout-graceful-shutdown 2

``GET /events/orders`` streams the durable channel ``orders`` (Server-Sent Events, or
a WebSocket at the same path); ``POST /orders`` publishes one. Only signed-in users
(here: a request with an ``x-user`` header) may follow it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

import tidings
from tidings.asgi import EventStream

channels = tidings.Channels(
    os.environ.get("TIDINGS_URL", "redis://localhost:6379/0"),
    namespace="shop",
    durable={"orders": tidings.Retention(max_len=100_000)},
)


def signed_in(scope: dict[str, Any], channel: str) -> bool:
    """Who may follow ``channel``: the ASGI scope has the request's headers (and
    cookies), as any authentication middleware left them."""
    return any(name == b"x-user" for name, _ in scope["headers"])


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with channels:
        yield


app = FastAPI(lifespan=lifespan)
app.mount("/events", EventStream(channels, allow=["orders"], authorize=signed_in))


@app.post("/orders")
async def create_order(order: dict[str, Any]) -> dict[str, int]:
    return {"receivers": await channels.publish("orders", "created", order)}
