"""Clients of `tidings.asgi.EventStream` for the tests.

`InProcess` drives the ASGI app directly (no server): the messages it sends are kept,
and its client can stop reading (``send`` blocks) or go away (a disconnect message).
`SSE` and `WebSocket` talk to a real server over TCP (h11 and wsproto, sans-IO, so
they run on trio and asyncio alike).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import h11
import wsproto
import wsproto.events as ws

from tidings.testing import free_port

Frame = dict[str, Any]
ROOT = Path(__file__).resolve().parent.parent


def parse_sse(text: str) -> list[Frame]:
    """Complete SSE frames in ``text`` (comments dropped), as {"id", "event", "data"}."""
    frames = []
    for block in text.split("\n\n")[:-1]:
        frame: Frame = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            frame[name] = json.loads(value) if name == "data" else value
        if "data" in frame:  # (a bare "retry:" is no event)
            frames.append(frame)
    return frames


class InProcess:
    """One request to an ASGI app, run in a task group of the test."""

    def __init__(
        self,
        path: str,
        *,
        kind: str = "http",
        method: str = "GET",
        query: str = "",
        headers: list[tuple[bytes, bytes]] | None = None,
        root_path: str = "",
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": kind,
            "path": root_path + path,
            "root_path": root_path,
            "query_string": query.encode(),
            "headers": headers or [],
            "method": method,
        }
        self.sent: list[dict[str, Any]] = []
        self._inbox: list[dict[str, Any]] = []
        self._arrived = anyio.Event()
        #: Cleared: the client stops reading (the app's sends wait).
        self.reading = anyio.Event()
        self.reading.set()
        self.done = False
        if kind == "websocket":
            self._inbox.append({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        while not self._inbox:
            await self._arrived.wait()
            self._arrived = anyio.Event()
        return self._inbox.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        await self.reading.wait()
        self.sent.append(message)

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        finally:
            self.done = True

    def disconnect(self) -> None:
        kind = "http.disconnect" if self.scope["type"] == "http" else "websocket.disconnect"
        self._inbox.append({"type": kind})
        self._arrived.set()

    @property
    def opened(self) -> bool:
        """The stream is open (its first bytes, or the handshake, went out): from
        then on the client misses nothing."""
        return any(m["type"] in ("http.response.body", "websocket.accept") for m in self.sent)

    @property
    def status(self) -> int | None:
        for message in self.sent:
            if message["type"] == "http.response.start":
                return int(message["status"])
        return None

    @property
    def body(self) -> str:
        return b"".join(
            m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"
        ).decode()

    @property
    def frames(self) -> list[Frame]:
        if self.scope["type"] == "http":
            return parse_sse(self.body)
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    @property
    def data(self) -> list[Any]:
        return [f["data"] for f in self.frames if f.get("event") != "gap"]

    @property
    def closed_with(self) -> int | None:
        for message in self.sent:
            if message["type"] == "websocket.close":
                return int(message.get("code", 1000))
        return None

    @property
    def ended(self) -> bool:
        """The response is complete (SSE), or the socket closed (WebSocket)."""
        return any(
            (m["type"] == "http.response.body" and not m.get("more_body", False))
            or m["type"] == "websocket.close"
            for m in self.sent
        )


class SSE:
    """A Server-Sent Events client over TCP, reading frames as they come."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._connection = h11.Connection(h11.CLIENT)
        self.status = 0
        self.headers: dict[str, str] = {}
        self._text = ""
        #: Everything the body held so far.
        self.body = ""
        self.frames: list[Frame] = []
        self.ended = False
        #: The server closed the connection in the middle of the response.
        self.cut = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls, port: int, target: str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[SSE]:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            client = cls(stream)
            request = h11.Request(
                method="GET",
                target=target,
                headers=[("host", f"127.0.0.1:{port}"), *(headers or {}).items()],
            )
            await stream.send(
                client._connection.send(request) + client._connection.send(h11.EndOfMessage())
            )
            await client._until_response()
            yield client

    async def _until_response(self) -> None:
        while not self.status:
            await self._read()

    async def _read(self) -> None:
        event = self._connection.next_event()
        while event is h11.NEED_DATA:
            try:
                data = await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                data = b""
            self._connection.receive_data(data)
            try:
                event = self._connection.next_event()
            except h11.RemoteProtocolError:  # cut, not ended: what a browser sees as an end too
                self.ended = self.cut = True
                return
        if isinstance(event, h11.Response):
            self.status = event.status_code
            self.headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            self.body += bytes(event.data).decode()
            self._text += bytes(event.data).decode()
            head, _, self._text = self._text.rpartition("\n\n")
            if head:
                self.frames.extend(parse_sse(head + "\n\n"))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            self.ended = True

    async def until(self, count: int) -> list[Frame]:
        """Read until ``count`` frames came (or the stream ended)."""
        while len(self.frames) < count and not self.ended:
            await self._read()
        return self.frames

    async def until_end(self) -> list[Frame]:
        while not self.ended:
            await self._read()
        return self.frames

    @property
    def data(self) -> list[Any]:
        return [f["data"] for f in self.frames if f.get("event") != "gap"]


class WebSocket:
    """A WebSocket client over TCP (wsproto)."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.accepted: bool | None = None
        self.status = 0
        self.frames: list[Frame] = []
        self.closed_with: int | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, port: int, target: str) -> AsyncIterator[WebSocket]:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            client = cls(stream)
            await stream.send(
                client._connection.send(ws.Request(host=f"127.0.0.1:{port}", target=target))
            )
            while client.accepted is None:
                await client._read()
            yield client

    async def _read(self) -> None:
        try:
            data: bytes | None = await self._stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            data = None
        self._connection.receive_data(data)
        for event in self._connection.events():
            if isinstance(event, ws.AcceptConnection):
                self.accepted = True
            elif isinstance(event, ws.RejectConnection):
                self.accepted, self.status = False, event.status_code
            elif isinstance(event, ws.TextMessage):
                self.frames.append(json.loads(event.data))
            elif isinstance(event, ws.CloseConnection):
                self.closed_with = event.code
                if self._connection.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    await self._stream.send(self._connection.send(event.response()))
        if data is None and self.closed_with is None:
            self.closed_with = 1006  # gone without a close frame
        if self.accepted is None and data is None:
            self.accepted = False

    async def until(self, count: int) -> list[Frame]:
        while len(self.frames) < count and self.closed_with is None:
            await self._read()
        return self.frames

    async def until_closed(self) -> int:
        while self.closed_with is None:
            await self._read()
        return self.closed_with

    @property
    def data(self) -> list[Any]:
        return [f["data"] for f in self.frames if f.get("event") != "gap"]


class App:
    """An ASGI app (``target``: ``module:app``) served by uvicorn (asyncio) or hypercorn
    (trio), with the docs' shutdown settings, in a process of its own; ``env``:
    ``TIDINGS_<NAME>`` variables."""

    def __init__(
        self, server: str, target: str, redis_url: str, namespace: str = "", **env: str
    ) -> None:
        self.server = server
        self.target = target
        self.port = free_port()
        self.env = {
            **os.environ,
            "TIDINGS_URL": redis_url,
            "TIDINGS_NAMESPACE": namespace,
            **{f"TIDINGS_{k.upper()}": v for k, v in env.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.server == "hypercorn":  # the docs' settings: open streams end at SIGTERM
            return [sys.executable, "-m", "hypercorn", "--worker-class", "trio",
                    "--workers", "0", "--graceful-timeout", "1",
                    "--bind", f"127.0.0.1:{self.port}", self.target]  # fmt: skip
        return [sys.executable, "-m", "uvicorn", "--port", str(self.port),
                "--timeout-graceful-shutdown", "1", "--log-level", "warning",
                self.target]  # fmt: skip

    async def start(self) -> None:
        self.process = self._spawn()
        with anyio.fail_after(20):
            while not self._serving():
                await anyio.sleep(0.02)

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A session of its own: killing it kills whatever it started.
        return subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _serving(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "the app process died"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    async def stats(self) -> dict[str, int]:
        async with SSE.open(self.port, "/stats") as response:  # (any GET will do)
            await response.until_end()
            return json.loads(response.body)

    async def post(self, path: str, body: object, headers: dict[str, str] | None = None) -> Any:
        """POST ``body`` as JSON; the JSON reply."""
        return await post(self.port, path, body, headers)


async def post(port: int, path: str, body: object, headers: dict[str, str] | None = None) -> Any:
    """POST ``body`` as JSON to 127.0.0.1:``port``; the JSON reply (an error for a
    status other than 200)."""
    data = json.dumps(body).encode()
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=path,
        headers=[
            ("host", f"127.0.0.1:{port}"),
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            *(headers or {}).items(),
        ],
    )
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(
            connection.send(request)
            + connection.send(h11.Data(data=data))
            + connection.send(h11.EndOfMessage())
        )
        status, reply = 0, b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive())
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                reply += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
    assert status == 200, (status, reply)
    return json.loads(reply)
