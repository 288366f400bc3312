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

import dataclasses
import inspect
import json
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
from ..types import Event, Events
from .events import watch
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

#: A browser's ``?event=`` glob: at most this long, with at most this many ``*``
#: (each match costs the handler, and patterns with many stars backtrack).
MAX_GLOB, MAX_STARS = 200, 3

#: Seconds an ended stream (overflowed, or refused for now) asks an ``EventSource``
#: to wait before it reconnects (``retry:``).
RETRY_MS = 2000

#: Seconds an overflowed stream may take to send what it had queued, then it ends.
DRAIN_TIME = 5.0

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

    def names(self, channel: str) -> tuple[str, bool]:
        """A requested channel's name without the namespace prefix (a path may carry
        it: access is decided on the name the handler means), and whether it is
        durable.

        Raises:
            ValueError: not a valid channel name.
        """
        broker_name, name = self._namespace.names(channel)
        return name, self._registry.is_durable(broker_name)

    def wanted(self, channel: str, event: str, since: str | None) -> Wanted:
        """Check a watcher's arguments, as `Channels.subscribe()` would.

        Raises:
            ValueError: a bad channel name, event glob or id (naming it).
        """
        wanted = self._check(channel, event, "new" if since is None else since)
        if wanted.start is not None and wanted.start[1]:
            # The stream checks the id itself (`gap()`, a frame to that client): a
            # browser's id missing from the log is no news for the status channel.
            wanted = dataclasses.replace(wanted, start=(wanted.start[0], False))
        return wanted

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
            reason = "rewound"  # after the end of the log: not an id of this one
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
        if root and (path == root or path.startswith(root + "/")):  # mounted
            path = path[len(root) :]
        try:
            channel, durable = self._source.names(path.lstrip("/"))
        except ValueError:
            raise _Refused(404, "no such channel") from None
        if not self._allowed(channel):
            raise _Refused(404, "no such channel")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        event = query.get("event", ["*"])[-1]
        if len(event) > MAX_GLOB or event.count("*") > MAX_STARS:
            # A browser's pattern is matched in the handler: a bounded cost.
            raise _Refused(400, f"?event= takes at most {MAX_STARS} '*' in {MAX_GLOB} characters")
        last_id = _header(scope, b"last-event-id") or query.get("last_event_id", [None])[-1]
        try:
            # Plain channels have no log: the id is ignored (never refused).
            since = format_id(parse_id(last_id, "last event id")) if last_id and durable else None
            wanted = self._source.wanted(channel, event, since)
        except ValueError as exc:
            raise _Refused(400, str(exc)) from None
        if self._authorize is not None:
            verdict = self._authorize(scope, channel)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                raise _Refused(403, "forbidden")
        gap = None
        if since is not None and start_after(since)[1]:  # names an entry
            try:
                gap = await self._source.gap(channel, since)
            except BrokerError as exc:
                _logger.info("resume of %r deferred: %s", channel, exc)
                raise _Refused(503, "not serving events now") from None
            if gap is not None and gap["reason"] == "rewound":
                # Past the end of the log (a forged id, or a failover that lost the
                # end): from the end on, or it would hear nothing newer than it.
                wanted = self._source.wanted(channel, event, None)
        return _Request(channel, wanted, gap)

    async def _follow(
        self,
        request: _Request,
        receive: Receive,
        send: Send,
        opening: Callable[[], list[Message]],
        frame: Callable[[Event[Any]], Message],
        idle: Callable[[], Message] | None,
    ) -> tuple[str | None, bool]:
        """Send a client the ``opening()`` messages once its registration is in
        place (from then on it misses nothing), then its events, ``frame()`` making
        each message (``idle()`` after ``heartbeat`` seconds without one, if given),
        until the handler closes or, early, the client disconnects or overflows or
        `close()` ends it.

        Returns:
            Why it ended early (``"disconnect"``, ``"overflow"``, ``"shutdown"``, or
            ``"unavailable"``: it could not be placed), and whether it was opened.
        """
        stream = _Stream()
        async with anyio.create_task_group() as tasks:
            scope = tasks.cancel_scope
            self._open.add(scope)

            def overflowed() -> None:
                # Nothing more is queued for it: it sends what it has (so that each
                # reconnect of a client far behind gets further), then ends.
                self.overflowed += 1
                stream.ending = stream.ending or "overflow"
                self._open.discard(scope)
                scope.deadline = min(scope.deadline, anyio.current_time() + DRAIN_TIME)

            async def until_disconnected() -> None:
                while (await receive())["type"] not in ("http.disconnect", "websocket.disconnect"):
                    pass
                stream.ending = stream.ending or "disconnect"
                scope.cancel()

            try:
                tasks.start_soon(until_disconnected)
                if self._closing:  # closed while this one was being admitted
                    stream.ending = "shutdown"
                else:
                    await self._watch(request, stream, overflowed, send, opening, frame, idle)
                scope.cancel()  # the events ended: so does the wait for a disconnect
            finally:
                self._open.discard(scope)
        if self._closing and stream.ending is None:
            stream.ending = "shutdown"
        return stream.ending, stream.opened

    async def _watch(
        self,
        request: _Request,
        stream: _Stream,
        overflowed: Callable[[], None],
        send: Send,
        opening: Callable[[], list[Message]],
        frame: Callable[[Event[Any]], Message],
        idle: Callable[[], Message] | None,
    ) -> None:
        """`_follow()`'s loop."""
        heartbeat = self._heartbeat if idle is not None else math.inf
        try:
            async with self._source.watch(request.wanted, self._max_pending, overflowed) as events:
                for message in opening():
                    await send(message)
                stream.opened = True
                while True:
                    event: Event[Any] | None = None
                    try:
                        event = events.receive_nowait()
                    except anyio.WouldBlock:
                        if stream.ending == "overflow":  # all it had is sent
                            return
                        # The heartbeat times the wait only (a cancel scope and a
                        # timer: made only when there is a wait), never a send: an
                        # event in the middle of one would be lost to this client.
                        with anyio.move_on_after(heartbeat):
                            try:
                                event = await events.receive()
                            except anyio.EndOfStream:
                                return
                    except anyio.EndOfStream:  # the handler closed
                        return
                    if event is not None:
                        await send(frame(event))
                    elif idle is not None:
                        await send(idle())
        except (BrokerError, RuntimeError, OSError) as exc:
            # Not placed in time (no connection), the handler closing under it, or
            # the server refusing a send (the client went away): the stream is over,
            # and the client comes back when it can.
            _logger.info("stream of %r ended: %s", request.channel, exc)
            if not stream.opened:
                stream.ending = stream.ending or "unavailable"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, "method not allowed", [(b"allow", b"GET, HEAD")])
            return
        try:
            request = await self._admit(scope)
        except _Refused as refused:
            if refused.status == 503:  # for now: an EventSource tries again
                await _retry_later(send)
            else:  # for good (an EventSource gives up on any status but 200)
                await _respond(send, refused.status, str(refused))
            return
        if scope["method"] == "HEAD":
            await send(_sse_start())
            await send({"type": "http.response.body", "body": b""})
            return

        def opening() -> list[Message]:
            # The first bytes go out once the registration is in place: proxies and
            # EventSource see the stream open, and nothing published after is missed.
            messages = [_sse_start(), _body(b": ok\n\n")]
            if request.gap is not None:
                messages.append(_sse(None, "gap", request.gap))
            return messages

        ending, opened = await self._follow(
            request, receive, send, opening, lambda e: _sse(e.id, e.event, e.data), _idle
        )
        if opened:
            end = b"retry: %d\n\n" % RETRY_MS if ending == "overflow" else b""
            await _last(send, {"type": "http.response.body", "body": end, "more_body": False})
        elif ending != "disconnect":
            await _retry_later(send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            request = await self._admit(scope)
        except _Refused as refused:
            _logger.debug("websocket %s refused: %s", scope["path"], refused)
            code = TRY_AGAIN_LATER if refused.status == 503 else POLICY_VIOLATION
            await _last(send, {"type": "websocket.close", "code": code})
            return

        def opening() -> list[Message]:
            # Accepted once the registration is in place: nothing published after the
            # handshake is missed.
            messages: list[Message] = [{"type": "websocket.accept"}]
            if request.gap is not None:
                messages.append(_frame(None, request.channel, "gap", request.gap))
            return messages

        ending, _ = await self._follow(
            request,
            receive,
            send,
            opening,
            lambda e: _frame(e.id, e.channel, e.event, e.data),
            None,
        )
        if ending != "disconnect":
            code = {"overflow": TRY_AGAIN_LATER, "unavailable": TRY_AGAIN_LATER}.get(
                ending or "", GOING_AWAY
            )
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


class _Stream:
    """How a client's stream is going."""

    __slots__ = ("ending", "opened")

    def __init__(self) -> None:
        self.ending: str | None = None
        self.opened = False


async def _retry_later(send: Send) -> None:
    """An SSE response that ends at once and has the ``EventSource`` come back (any
    status but 200 would make it give up for good)."""
    await send(_sse_start())
    await send({"type": "http.response.body", "body": b"retry: %d\n\n" % RETRY_MS})


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


_msgspec_encode = msgspec.json.Encoder().encode


def _encode(value: Any) -> bytes:
    """JSON of what a decoder made: whatever it is (lone surrogates, objects of a
    custom protocol), a frame goes out; one event must not end every stream."""
    try:
        return _msgspec_encode(value)
    except (TypeError, ValueError, UnicodeError, msgspec.EncodeError):
        return json.dumps(value, ensure_ascii=True, default=repr).encode()


def _sse_start() -> Message:
    # Made anew for each response: middleware may change what it is given.
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [(name, value) for name, value in _SSE_HEADERS],
    }


def _body(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


def _idle() -> Message:
    return _body(b":\n\n")


def _sse(entry_id: str | None, event: str, data: Any) -> Message:
    """One Server-Sent Events frame (the event name on one line, whatever it holds)."""
    head = b"id: %s\n" % entry_id.encode() if entry_id is not None else b""
    name = event.replace("\r", " ").replace("\n", " ").encode("utf-8", "backslashreplace")
    return _body(b"%sevent: %s\ndata: %s\n\n" % (head, name, _encode(data)))


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
