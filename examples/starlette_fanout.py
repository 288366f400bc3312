"""Fan tidings events out to browsers: a WebSocket chat and an SSE stream, on Starlette.

Run two (or more) app processes against one Redis; a message sent to one reaches the
browsers connected to every one of them:

    pip install tidings starlette uvicorn
    TIDINGS_URL=redis://localhost:6379/0 uvicorn examples.starlette_fanout:app --port 8001
    TIDINGS_URL=redis://localhost:6379/0 uvicorn examples.starlette_fanout:app --port 8002

- ``ws://host/ws/ROOM``: a chat. The server first says ``{"joined": ROOM}`` (from then
  on nothing sent to the room is missed), then relays every message of the room;
  what the browser sends is published to the room.
- ``http://host/sse/ROOM``: the room's messages as Server-Sent Events.

The handler is created at module level and owned by the app's lifespan: it can be
started again, so a second lifespan (a test suite's second ``TestClient``) works.
Each connection is one iterator over its room; a slow browser fills only its own
iterator's buffer (and, past ``max_pending``, its events are dropped and counted, with
a ``slow_consumer`` status event), never another's.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import tidings

channels = tidings.Channels(
    os.environ.get("TIDINGS_URL", "redis://localhost:6379/0"), namespace="chat"
)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with channels:  # connected (or retrying) before the first request
        yield


async def chat(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    await websocket.accept()
    async with channels.subscribe(room, "message") as messages:
        await websocket.send_json({"joined": room})

        async def relay() -> None:
            async for message in messages:
                await websocket.send_json(message.data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                while True:
                    text = await websocket.receive_text()
                    await channels.publish(room, "message", {"text": text})
            except WebSocketDisconnect:
                pass
            finally:
                tg.cancel_scope.cancel()


async def stream(request: Request) -> StreamingResponse:
    room = request.path_params["room"]

    async def events() -> AsyncIterator[str]:
        async with channels.subscribe(room, "message") as messages:
            yield f"event: joined\ndata: {json.dumps(room)}\n\n"
            async for message in messages:
                yield f"data: {json.dumps(message.data)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(
    routes=[WebSocketRoute("/ws/{room}", chat), Route("/sse/{room}", stream)],
    lifespan=lifespan,
)
