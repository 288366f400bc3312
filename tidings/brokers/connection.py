"""The RESP byte stream: connecting, the handshake, reading replies, classifying them.

One connection is an anyio byte stream (TCP, TLS or a unix socket) and a
`hiredis.Reader`. This is the one place where transport failures are
translated (a closed stream is an `anyio.BrokenResourceError`; bytes that are
not RESP, or a reply of a shape its command does not allow, a
`ConnectionLost`: the connection is then dropped) and where an error
reply becomes a `ReplyError` (a refused command; the connection is
fine). Nothing else parses a reply's or an exception's text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import hiredis
from anyio.streams.tls import TLSStream

from .._util import cleanup_scope
from ..errors import ReplyError
from .base import ConnectionLost
from .resp import encode_commands
from .urls import RedisAddress

__all__ = [
    "INCOMPLETE",
    "Connection",
    "Linked",
    "is_int",
    "is_names",
    "is_numsub",
    "lost",
    "open_connection",
    "reply_error",
    "violation",
]

#: What the reader returns while no reply is complete; not ``False``, which is a
#: reply too (RESP3 ``#f``, from a misbehaving server).
INCOMPLETE = object()


def reply_error(url: str, reply: hiredis.ReplyError) -> ReplyError:
    """A command the server refused: ``.code`` is the first word of its answer.

    This is the one place an error reply becomes an exception; nothing parses an
    exception's text afterwards.
    """
    text = str(reply)
    return ReplyError(f"{url}: {text}", text.split(" ", 1)[0] or "ERR")


def violation(url: str, what: str, reply: object) -> ConnectionLost:
    """The error for a reply whose shape the command does not allow.

    The stream can no longer be trusted (a middlebox, a bug, replies out of step),
    so the connection is dropped and made again; callers see a lost connection.
    """
    shown = repr(reply)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConnectionLost(f"{url} broke the protocol: {what}: {shown}")


class Connection:
    """A byte stream with a RESP reader; one writer at a time."""

    def __init__(self, stream: anyio.abc.ByteStream, url: str, timeout: float) -> None:
        self.stream = stream
        self.url = url
        self.timeout = timeout
        self.reader = hiredis.Reader(notEnoughData=INCOMPLETE)
        self._send_lock = anyio.Lock()
        self._wait: anyio.CancelScope | None = None
        self._due = False
        self.closed = False

    async def send(self, data: bytes) -> None:
        """Write ``data``; callers bound the wait (a full socket buffer can block)."""
        async with self._send_lock:
            if self.closed:
                raise anyio.ClosedResourceError(f"connection to {self.url} is closed")
            try:
                await self.stream.send(data)
            except BaseException:
                # Part of a command may have gone out: nothing sent after it on this
                # connection could be trusted, so the connection is discarded.
                await self.abort()
                raise

    async def receive(self) -> None:
        """Wait for data and feed it to `reader`; take replies with `reply()`."""
        try:
            self.reader.feed(await self.stream.receive(65536))
        except anyio.EndOfStream:
            raise anyio.BrokenResourceError(f"{self.url} closed the connection") from None

    async def receive_within(self, seconds: float, *, due: bool) -> bool:
        """Like `receive()`, for up to ``seconds``; False if nothing came.

        Args:
            due: a reply is awaited (else the wait is idle, and `reply_due()`
                may shorten it meanwhile); see `overdue`.
        """
        self._due = due
        with anyio.move_on_after(seconds) as wait:
            self._wait = wait
            await self.receive()
        self._wait = None
        return not wait.cancelled_caught

    @property
    def overdue(self) -> bool:
        """After a wait that ended in silence: whether a reply was due all along.

        False when the wait was idle and a command went out just as it ended: its
        reply then gets a full wait of its own.
        """
        return self._due

    def reply_due(self) -> None:
        """A reply is now awaited: a longer wait (a health-check interval) is cut to
        the reply timeout, so a silent peer is found in time."""
        if self._wait is not None and not self._due:
            deadline = anyio.current_time() + self.timeout
            # Only a shorter wait makes the reply due within it; an idle wait about
            # to end anyway ends as idle, and the reply gets a full wait after it.
            if deadline < self._wait.deadline:
                self._due = True
                self._wait.deadline = deadline

    def silent(self, what: str) -> TimeoutError:
        """The error for a reply that did not come within the reply timeout."""
        return TimeoutError(f"{self.url} did not answer {what} within {self.timeout:g}s")

    def not_resp(self, exc: hiredis.ProtocolError) -> ConnectionLost:
        """The error for bytes that do not parse as RESP (the stream is unusable)."""
        return ConnectionLost(f"{self.url} sent something that is not RESP: {exc}")

    async def read(self) -> list[Any]:
        """Wait for data and return every complete reply it finished (maybe none)."""
        await self.receive()
        replies = []
        try:
            while (reply := self.reader.gets()) is not INCOMPLETE:
                replies.append(reply)
        except hiredis.ProtocolError as exc:
            raise self.not_resp(exc) from exc
        return replies

    async def abort(self) -> None:
        if not self.closed:
            self.closed = True
            await anyio.aclose_forcefully(self.stream)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            with cleanup_scope():
                await self.stream.aclose()


async def open_connection(address: RedisAddress, role: str, reply_timeout: float) -> Connection:
    """Connect and handshake: AUTH, SELECT and CLIENT SETNAME in one round trip."""
    stream: anyio.abc.ByteStream
    if address.path is not None:
        stream = await anyio.connect_unix(address.path)
    else:
        stream = await anyio.connect_tcp(address.host, address.port)
        if address.tls is not None:
            try:
                stream = await TLSStream.wrap(
                    stream,
                    hostname=address.host,
                    ssl_context=address.tls,
                    standard_compatible=False,
                )
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
    connection = Connection(stream, address.url, reply_timeout)
    try:
        commands: list[tuple[bytes | str | int, ...]] = []
        if address.password is not None:
            if address.username is not None:
                commands.append(("AUTH", address.username, address.password))
            else:
                commands.append(("AUTH", address.password))
        if address.db:
            commands.append(("SELECT", address.db))
        commands.append(("CLIENT", "SETNAME", f"{address.client_name}-{role}"))
        await connection.send(encode_commands(commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            replies.extend(await connection.read())
        if len(replies) > len(commands):
            raise violation(address.url, "more replies than commands", replies[len(commands)])
        for command, reply in zip(commands, replies, strict=True):
            name = " ".join(str(part) for part in command[:2] if part != address.password)
            if isinstance(reply, hiredis.ReplyError):
                # The connection cannot be used: this is a failed connection attempt,
                # not a refused command of the caller's (the cause keeps the code).
                refused = reply_error(address.url, reply)
                raise ConnectionLost(f"{address.url}: {name} failed: {reply}") from refused
            if reply != b"OK":
                raise violation(address.url, f"{name} answered", reply)
    except BaseException:
        await connection.abort()
        raise
    return connection


def lost(url: str, exc: BaseException) -> BaseException:
    """The error for callers whose reply will never come."""
    if isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError):
        return exc
    return anyio.BrokenResourceError(f"connection to {url} lost: {type(exc).__name__}: {exc}")


class Linked:
    """Tasks that live and die together, started at once or later.

    The first to fail cancels the others, and `run()` raises that failure bare
    (never an exception group), which is what the connection supervisor expects of
    a connection's ``run``.
    """

    def __init__(self, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self._on_failure = on_failure
        self._tg: anyio.abc.TaskGroup | None = None
        self._pending: list[Callable[[], Awaitable[None]]] = []
        self._ended = False
        self.error: BaseException | None = None

    async def run(self, *loops: Callable[[], Awaitable[None]]) -> None:
        """Run ``loops`` (and tasks started meanwhile) until one fails or all end."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for loop in (*loops, *self._pending):
                    tg.start_soon(self._guard, loop)
                self._pending.clear()
        finally:  # cancelled too: no task may join a set that is gone
            self._tg, self._ended = None, True
        if self.error is not None:
            raise self.error

    def start(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Add a task (it starts with ``run`` if that has not begun yet).

        Raises:
            anyio.BrokenResourceError: the tasks failed or ended: their connections are
                going away, and so must the caller's request.
        """
        self.check()
        if self._tg is None:
            self._pending.append(loop)
        else:
            self._tg.start_soon(self._guard, loop)

    def check(self) -> None:
        """Raise if no more tasks can be linked (see `start()`)."""
        if self._ended or self.error is not None:
            raise anyio.BrokenResourceError(f"connection lost: {self.error!r}")

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except Exception as exc:
            if self.error is None:
                self.error = exc
                if self._on_failure is not None:
                    self._on_failure(exc)
            if self._tg is not None:
                self._tg.cancel_scope.cancel()


def is_int(reply: object) -> bool:
    """An integer reply (PUBLISH, PUBSUB NUMPAT)."""
    return type(reply) is int


def is_names(reply: object) -> bool:
    """A list of bulk strings (PUBSUB CHANNELS)."""
    return type(reply) is list and all(type(name) is bytes for name in reply)


def is_numsub(reply: object) -> bool:
    """Name, count, name, count... (PUBSUB NUMSUB and SHARDNUMSUB)."""
    return (
        type(reply) is list
        and len(reply) % 2 == 0
        and all(type(name) is bytes for name in reply[::2])
        and all(type(count) is int for count in reply[1::2])
    )
