"""Web fan-out: browsers following channels over Server-Sent Events or WebSocket.

Each browser connection is a *watcher* of the handler's subscriptions (`watch()`):
N browsers on one channel are N registrations on one subscription, never N broker
connections. A watcher never makes its channel wait; past ``max_pending`` events
waiting for a slow browser its connection is ended, and the browser, reconnecting
with the last id it got, resumes from the log (durable channels).

`Web` is the ASGI application (the `tidings.asgi.EventStream` facade delegates to
it); `Source` is what it needs of a `Channels` handler.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio
import msgspec

from ..brokers.base import Publisher
from ..errors import BrokerError
from ..policies.glob import compile_glob
from ..policies.names import Namespace
from ..policies.streams import LogMark, format_id, parse_id, start_after
from .events import Event, Events, watch
from .lifecycle import Runtime
from .registry import Registry, Wanted

__all__ = ["Access", "Source", "Web"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: ``authorize(scope, channel)``: may this request follow this channel? (sync or async)
Authorize = Callable[[Scope, str], "bool | Awaitable[bool]"]

#: WebSocket close codes: refused (policy), server going away, overflowed (try later).
POLICY_VIOLATION, GOING_AWAY, TRY_AGAIN_LATER = 1008, 1001, 1013

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each frame on, do not buffer
]

_logger = logging.getLogger("tidings.asgi")


class Source:
    """What the web needs of a handler: watchers, and whether a resume is whole."""

    def __init__(
        self,
        runtime: Runtime,
        registry: Registry,
        namespace: Namespace,
        check: Callable[[str, str, Any], Wanted],
    ) -> None:
        self._runtime = runtime
        self._registry = registry
        self._namespace = namespace
        # The handler's own argument checks: (channel, event glob, since) -> Wanted.
        self._check = check

    @property
    def running(self) -> bool:
        return self._runtime.state == "running"

    def durable(self, channel: str) -> bool:
        return self._registry.is_durable(self._namespace.broker_name(channel))

    def wanted(self, channel: str, event: str, since: str | None) -> Wanted:
        """Check a watcher's arguments, as `Channels.subscribe()` would.

        Raises:
            ValueError: a bad channel name, event glob or id (naming it).
        """
        return self._check(channel, event, "new" if since is None else since)

    def watch(
        self, wanted: Wanted, max_pending: int, on_overflow: Callable[[], None]
    ) -> AbstractAsyncContextManager[Events[Any]]:
        return watch(self._runtime, self._registry, wanted, max_pending, on_overflow)

    async def gap(self, channel: str, last_id: str) -> dict[str, Any] | None:
        """The gap a resume after ``last_id`` starts with (None: the log holds that
        entry, so everything after it is there to read)."""
        name = self._namespace.broker_name(channel)

        async def look(publisher: Publisher) -> tuple[list[Any], LogMark | None]:
            entries = await publisher.read(name, last_id, 1)
            if entries and entries[0][0] == last_id:
                return entries, None
            return entries, (await publisher.marks([name]))[0]

        entries, mark = await self._runtime.connection.query(f"read the log of {name!r}", look)
        if entries and entries[0][0] == last_id:
            return None
        next_id = entries[0][0] if entries else None
        if mark is None:
            reason = "deleted"
        elif not entries:
            reason = "missing"  # after the end of the log: not an id of this one
        else:
            reason = "trimmed" if mark.removed else "deleted"
        return {"channel": channel, "reason": reason, "last_id": last_id, "next_id": next_id}


@dataclass(frozen=True)
class Access:
    """Which channels may be followed: those matching one of ``allow`` (globs),
    then only if ``authorize(scope, channel)`` agrees."""

    allow: tuple[str, ...]
    authorize: Authorize | None

    def allowed(self) -> Callable[[str], bool]:
        matchers = [compile_glob(pattern) for pattern in self.allow]
        return lambda channel: any(match(channel) for match in matchers)


@dataclass(frozen=True, slots=True)
class _Request:
    channel: str
    wanted: Wanted
    #: The gap a resume starts with (the data of its ``gap`` frame), if any.
    gap: dict[str, Any] | None


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Web:
    """The ASGI application of `tidings.asgi.EventStream`."""

    def __init__(
        self,
        source: Source,
        access: Access,
        *,
        heartbeat: float,
        max_pending: int,
    ) -> None:
        self._source = source
        self._allowed = access.allowed()
        self._authorize = access.authorize
        self._heartbeat = heartbeat
        self._max_pending = max_pending
        # The cancel scope of each open stream: ended at once by `close()`.
        self._open: set[anyio.CancelScope] = set()
        self._closing = False
        #: Streams ended because their client fell more than max_pending behind.
        self.overflowed = 0

    @property
    def clients(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """End every open stream now (SSE responses finish, WebSockets close with
        1001); new ones are refused from now on."""
        self._closing = True
        for scope in tuple(self._open):
            scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"EventStream serves http and websocket, not {kind!r}")

    # -- requests ----------------------------------------------------------------------

    async def _admit(self, scope: Scope) -> _Request:
        """What a request asks for, or why it is refused (`_Refused`)."""
        if self._closing or not self._source.running:
            raise _Refused(503, "not serving events now")
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted: the path may still carry it
            path = path[len(root) :]
        channel = path.lstrip("/")
        if not channel or not self._allowed(channel):
            raise _Refused(404, "no such channel")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        event = query.get("event", ["*"])[-1]
        last_id = _header(scope, b"last-event-id") or query.get("last_event_id", [None])[-1]
        durable = self._source.durable(channel)
        try:
            since = format_id(parse_id(last_id, "last event id")) if last_id else None
            wanted = self._source.wanted(channel, event, since if durable else None)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        if self._authorize is not None:
            verdict = self._authorize(scope, channel)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                raise _Refused(403, "forbidden")
        gap = None
        if durable and since is not None and start_after(since)[1]:  # names an entry
            try:
                gap = await self._source.gap(channel, since)
            except BrokerError as exc:
                raise _Refused(503, f"the broker is unavailable: {exc}") from None
        return _Request(channel, wanted, gap)

    async def _follow(
        self,
        request: _Request,
        receive: Receive,
        send: Send,
        opening: list[Message],
        frame: Callable[[Event[Any]], Message],
        idle: Message | None,
    ) -> str | None:
        """Send a client ``opening`` once its registration is in place (from then on
        it misses nothing), then its events, ``frame()`` making each message
        (``idle`` after ``heartbeat`` seconds without one, if given), until the
        handler closes or, early, the client disconnects or overflows or `close()`
        ends it: then say which (``"disconnect"``, ``"overflow"``, ``"shutdown"``),
        or ``"unavailable"`` if it could not be registered (nothing was sent)."""
        ending: str | None = None
        heartbeat = self._heartbeat if idle is not None else math.inf
        async with anyio.create_task_group() as tasks:
            scope = tasks.cancel_scope
            self._open.add(scope)

            def overflowed() -> None:
                nonlocal ending
                self.overflowed += 1
                ending = ending or "overflow"
                # Over, as a client: a server that shields its writes (hypercorn on
                # trio) keeps a send to a client that stopped reading blocked until
                # the connection dies, but nothing more is queued for it.
                self._open.discard(scope)
                scope.cancel()

            async def until_disconnected() -> None:
                nonlocal ending
                while (await receive())["type"] not in ("http.disconnect", "websocket.disconnect"):
                    pass
                ending = ending or "disconnect"
                scope.cancel()

            try:
                tasks.start_soon(until_disconnected)
                if not await self._watch(
                    request, overflowed, send, opening, frame, idle, heartbeat
                ):
                    ending = "unavailable"
                scope.cancel()  # the events ended: so does the wait for a disconnect
            finally:
                self._open.discard(scope)
        if self._closing and ending is None:
            ending = "shutdown"
        return ending

    async def _watch(
        self,
        request: _Request,
        overflowed: Callable[[], None],
        send: Send,
        opening: list[Message],
        frame: Callable[[Event[Any]], Message],
        idle: Message | None,
        heartbeat: float,
    ) -> bool:
        """`_follow()`'s loop; False if the registration failed."""
        opened = False
        try:
            async with self._source.watch(request.wanted, self._max_pending, overflowed) as events:
                opened = True
                for message in opening:
                    await send(message)
                while True:
                    with anyio.move_on_after(heartbeat):
                        try:
                            event = await events.receive()
                        except anyio.EndOfStream:  # the handler closed
                            break
                        await send(frame(event))
                        continue
                    if idle is not None:  # (always: heartbeats are infinite without)
                        await send(idle)
        except (BrokerError, RuntimeError) as exc:
            # Not placed in time (no connection), the handler closing under it, or a
            # server refusing a send (the client went away): the stream is over, and
            # the client comes back when it can.
            _logger.info("stream of %r ended: %s", request.channel, exc)
        return opened

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, "method not allowed", [(b"allow", b"GET")])
            return
        try:
            request = await self._admit(scope)
        except _Refused as refused:
            await _respond(send, refused.status, str(refused))
            return
        if scope["method"] == "HEAD":
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        # The first bytes go out once the registration is in place: proxies and
        # EventSource see the stream open, and nothing published after is missed.
        opening: list[Message] = [
            {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS},
            {"type": "http.response.body", "body": b": ok\n\n", "more_body": True},
        ]
        if request.gap is not None:
            opening.append(_sse(None, "gap", request.gap))
        ending = await self._follow(
            request, receive, send, opening, lambda e: _sse(e.id, e.event, e.data), _IDLE
        )
        if ending == "unavailable":
            await _respond(send, 503, "the broker is unavailable")
        else:
            await _last(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            request = await self._admit(scope)
        except _Refused as refused:
            _logger.debug("websocket %s refused: %s", scope["path"], refused)
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        # Accepted once the registration is in place: nothing published after the
        # handshake is missed.
        opening: list[Message] = [{"type": "websocket.accept"}]
        if request.gap is not None:
            opening.append(_frame(None, request.channel, "gap", request.gap))
        ending = await self._follow(
            request,
            receive,
            send,
            opening,
            lambda e: _frame(e.id, e.channel, e.event, e.data),
            None,
        )
        if ending != "disconnect":
            code = {
                "overflow": TRY_AGAIN_LATER,
                "shutdown": GOING_AWAY,
                "unavailable": TRY_AGAIN_LATER,
            }.get(ending or "", 1000)
            await _last(send, {"type": "websocket.close", "code": code})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Served alone (not mounted), the stream ends its clients at shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _last(send: Send, message: Message) -> None:
    """A stream's last message: sent even from a cancelled stream (bounded), and
    not at all to a client that is gone."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(1), suppress(OSError):
        await send(message)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


_IDLE: Message = {"type": "http.response.body", "body": b":\n\n", "more_body": True}
_encode = msgspec.json.Encoder().encode


def _sse(entry_id: str | None, event: str, data: Any) -> Message:
    """One Server-Sent Events frame (the event name on one line, whatever it holds)."""
    head = b"id: %s\n" % entry_id.encode() if entry_id is not None else b""
    name = event.replace("\r", " ").replace("\n", " ").encode()
    body = b"%sevent: %s\ndata: %s\n\n" % (head, name, _encode(data))
    return {"type": "http.response.body", "body": body, "more_body": True}


def _frame(entry_id: str | None, channel: str, event: str, data: Any) -> Message:
    text = _encode({"id": entry_id, "channel": channel, "event": event, "data": data})
    return {"type": "websocket.send", "text": text.decode()}


async def _respond(
    send: Send, status: int, text: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = text.encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
