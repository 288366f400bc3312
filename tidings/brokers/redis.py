"""The Redis broker: RESP over anyio byte streams, replies parsed by hiredis.

Two connections per handler:

- the **subscriber** carries every SUBSCRIBE/PSUBSCRIBE. Its reader hands messages on
  in batches (everything one ``receive`` brought), matches confirmations to the
  commands that asked for them (first in, first out), and checks a silent connection
  with PING: no reply within the timeout means the connection is dead (half-open TCP,
  a frozen server), whatever TCP believes.
- the **publisher** carries PUBLISH and PUBSUB queries. Concurrent commands are
  coalesced into one write; a reader task matches replies to callers in order. A
  caller cancelled while waiting leaves its slot in the queue, so its reply is read
  and discarded and never handed to the next caller (the failure behind redis-py's
  CVE-2023-28858); a send interrupted half-way discards the whole connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import hiredis
from anyio.streams.tls import TLSStream

from ..errors import BrokerError, ReplyError
from .base import Broker, Deliver, Message, Publisher, Subscriber
from .resp import decode_name, encode_command, encode_commands, encode_name, encode_publish
from .slots import key_slot
from .urls import RedisAddress

__all__ = [
    "Crew",
    "RedisBroker",
    "RedisPublisher",
    "RedisSubscriber",
]

#: Names per SUBSCRIBE command when many are (re)subscribed at once; all the
#: commands still go out in one write.
CHUNK = 512

#: What the reader returns while no reply is complete; not ``False``, which is a
#: reply too (RESP3 ``#f``, from a misbehaving server).
INCOMPLETE = object()

_CONFIRMATIONS = frozenset({b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe"})


def reply_error(url: str, reply: hiredis.ReplyError) -> ReplyError:
    """A command the server refused: ``.code`` is the first word of its answer.

    This is the one place an error reply becomes an exception; nothing parses an
    exception's text afterwards.
    """
    text = str(reply)
    return ReplyError(f"{url}: {text}", text.split(" ", 1)[0] or "ERR")


def violation(url: str, what: str, reply: object) -> BrokerError:
    """The error for a reply whose shape the command does not allow.

    The stream can no longer be trusted (a middlebox, a bug, replies out of step),
    so the connection is dropped and made again; callers see a lost connection.
    """
    shown = repr(reply)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return BrokerError(f"{url} broke the protocol: {what}: {shown}")


class _Connection:
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
        """Wait for data and feed it to :attr:`reader`; take replies with :meth:`reply`."""
        try:
            self.reader.feed(await self.stream.receive(65536))
        except anyio.EndOfStream:
            raise anyio.BrokenResourceError(f"{self.url} closed the connection") from None

    async def receive_within(self, seconds: float, *, due: bool) -> bool:
        """Like :meth:`receive`, for up to ``seconds``; False if nothing came.

        Args:
            due: a reply is awaited (else the wait is idle, and :meth:`reply_due`
                may shorten it meanwhile); see :attr:`overdue`.
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
            self._due = True
            self._wait.deadline = min(self._wait.deadline, anyio.current_time() + self.timeout)

    def silent(self, what: str) -> TimeoutError:
        """The error for a reply that did not come within the reply timeout."""
        return TimeoutError(f"{self.url} did not answer {what} within {self.timeout:g}s")

    def not_resp(self, exc: hiredis.ProtocolError) -> BrokerError:
        """The error for bytes that do not parse as RESP (the stream is unusable)."""
        return BrokerError(f"{self.url} sent something that is not RESP: {exc}")

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
            with anyio.move_on_after(1.0, shield=True):
                await self.stream.aclose()


async def open_connection(address: RedisAddress, role: str, reply_timeout: float) -> _Connection:
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
    connection = _Connection(stream, address.url, reply_timeout)
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
                raise BrokerError(f"{address.url}: {name} failed: {reply}") from refused
            if reply != b"OK":
                raise violation(address.url, f"{name} answered", reply)
    except BaseException:
        await connection.abort()
        raise
    return connection


def _lost(url: str, exc: BaseException) -> BaseException:
    """The error for callers whose reply will never come."""
    if isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError):
        return exc
    return anyio.BrokenResourceError(f"connection to {url} lost: {type(exc).__name__}: {exc}")


class _Awaited:
    """A reply (or confirmation) that a caller waits for."""

    __slots__ = ("error", "event", "remaining", "value")

    def __init__(self, remaining: int = 1) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.remaining = remaining

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()

    async def wait(self) -> Any:
        await self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


_SHARDED_CONFIRMATIONS = frozenset({b"ssubscribe", b"sunsubscribe"})


class RedisSubscriber(Subscriber):
    """The subscriber connection.

    Everything the connection is asked goes through one queue of expected answers
    (:attr:`_expected`), matched first in, first out: (un)subscribe confirmations,
    the PONGs of health checks and barriers, and the error reply of a refused
    command, which fails that command alone. Anything else is a protocol violation
    and ends the connection. Messages read before an answer are delivered before the
    answer is matched, so a confirmed subscription or a passed :meth:`barrier` means
    every earlier message has been handed to ``deliver``.

    With ``sharded=True`` it speaks sharded pub/sub (Redis 7): SSUBSCRIBE and
    SUNSUBSCRIBE, one command per hash slot, ``smessage`` pushes. An ``sunsubscribe``
    nobody asked for means the server stopped serving a channel (its slot moved, or
    the node is being failed over): that ends the connection, and the supervisor
    resubscribes everything where the cluster now says it lives.
    """

    def __init__(
        self, connection: _Connection, health_check_interval: float, *, sharded: bool = False
    ) -> None:
        self._connection = connection
        self._health_check_interval = health_check_interval
        self._sharded = sharded
        self._message = b"smessage" if sharded else b"message"
        self._confirmations = _SHARDED_CONFIRMATIONS if sharded else _CONFIRMATIONS
        # Answers come back in the order the commands went out; None for a health
        # check nobody waits for.
        self._expected: deque[tuple[bytes, _Awaited | None]] = deque()

    async def run(self, deliver: Deliver) -> None:
        connection = self._connection
        # Channel names repeat: decode each once (bounded by what is subscribed).
        names: dict[bytes, str] = {}
        next_reply = connection.reader.gets
        message, expected = self._message, self._expected
        try:
            while True:
                # Waiting for an answer, silence is bounded by the reply timeout;
                # idle, by the health-check interval, after which a PING must come back.
                due = bool(expected)
                idle = connection.timeout if due else self._health_check_interval
                if not await connection.receive_within(idle, due=due):
                    if connection.overdue:
                        kind = expected[0][0]
                        raise connection.silent(
                            "PING" if kind == b"pong" else kind.decode().upper()
                        )
                    if expected:
                        continue  # sent as an idle wait ended: wait for its answer
                    expected.append((b"pong", None))  # a health check: the answer is the proof
                    with anyio.fail_after(connection.timeout):  # a frozen peer stops reading too
                        await connection.send(encode_command("PING"))
                    continue
                batch: list[Message] = []
                while (reply := next_reply()) is not INCOMPLETE:
                    # The hot path first: a well-formed message push.
                    if (
                        type(reply) is list
                        and len(reply) == 3
                        and reply[0] == message
                        and type(reply[1]) is bytes
                        and type(reply[2]) is bytes
                    ):
                        raw = reply[1]
                        name = names.get(raw)
                        if name is None:
                            if len(names) > 4096:  # many short-lived channels: start over
                                names.clear()
                            name = names[raw] = decode_name(raw)
                        batch.append((name, reply[2]))
                        continue
                    if (
                        type(reply) is list
                        and len(reply) == 4
                        and reply[0] == b"pmessage"
                        and type(reply[1]) is bytes
                        and type(reply[2]) is bytes
                        and type(reply[3]) is bytes
                    ):
                        batch.append((decode_name(reply[2]), reply[3]))
                        continue
                    if batch:  # what came before an answer is delivered before it
                        await deliver(batch)
                        batch = []
                    self._answer(reply)
                if batch:
                    await deliver(batch)
        except hiredis.ProtocolError as exc:
            self._fail_expected(exc)
            raise connection.not_resp(exc) from exc
        except BaseException as exc:
            self._fail_expected(exc)
            raise

    def _answer(self, reply: Any) -> None:
        """Match an answer (not a message) to the command that asked for it."""
        url = self._connection.url
        if isinstance(reply, hiredis.ReplyError):
            if not self._expected:
                raise violation(url, "an error nobody asked for", reply)
            awaited = self._expected.popleft()[1]
            if awaited is None:
                raise violation(url, "PING answered", reply)
            awaited.fail(reply_error(url, reply))
            return
        if reply == b"PONG" or (
            type(reply) is list and len(reply) == 2 and reply[0] == b"pong"
        ):  # the two shapes: outside and inside subscribed mode
            kind, name = b"pong", b""
        elif (
            type(reply) is list
            and len(reply) == 3
            and type(reply[0]) is bytes
            and reply[0] in self._confirmations
            and type(reply[1]) is bytes
            and type(reply[2]) is int
        ):
            kind, name = reply[0], reply[1]
        else:
            raise violation(url, "not a pub/sub reply", reply)
        if not self._expected or self._expected[0][0] != kind:
            if kind == b"sunsubscribe":
                raise BrokerError(
                    f"{url} stopped serving sharded channel "
                    f"{decode_name(name)!r} (its slot moved or the node is failing over)"
                )
            raise violation(url, "an answer nobody asked for", reply)
        awaited = self._expected[0][1]
        if awaited is None:
            self._expected.popleft()
            return
        awaited.remaining -= 1
        if awaited.remaining == 0:
            self._expected.popleft()
            awaited.event.set()

    def _fail_expected(self, exc: BaseException) -> None:
        error = _lost(self._connection.url, exc)
        while self._expected:
            awaited = self._expected.popleft()[1]
            if awaited is not None:
                awaited.fail(error)

    def _chunks(self, names: Sequence[str]) -> list[Sequence[str]]:
        """Names per command: up to CHUNK, and (sharded) all of one hash slot."""
        if not self._sharded:
            return [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
        by_slot: dict[int, list[str]] = {}
        for name in names:
            by_slot.setdefault(key_slot(encode_name(name)), []).append(name)
        return [
            group[i : i + CHUNK] for group in by_slot.values() for i in range(0, len(group), CHUNK)
        ]

    async def _ask(self, data: bytes, waits: list[tuple[bytes, _Awaited]]) -> None:
        """Send ``data``, expecting ``waits``; return when all came, raise the first error."""
        if not self._expected:
            self._connection.reply_due()
        self._expected.extend(waits)
        await self._connection.send(data)
        error: BaseException | None = None
        for _, awaited in waits:
            try:
                # Bounded even while other traffic keeps the connection busy.
                with anyio.fail_after(self._connection.timeout):
                    await awaited.wait()
            except ReplyError as exc:  # that chunk alone was refused; the others stand
                error = error or exc
        if error is not None:
            raise error

    async def _command(self, name: str, names: Sequence[str]) -> None:
        if self._sharded:
            name = "S" + name
        kind = name.lower().encode()
        chunks = self._chunks(names)
        await self._ask(
            encode_commands((name, *chunk) for chunk in chunks),
            [(kind, _Awaited(len(chunk))) for chunk in chunks],
        )

    async def subscribe(self, channels: Sequence[str]) -> None:
        await self._command("SUBSCRIBE", channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        await self._command("UNSUBSCRIBE", channels)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        await self._command("PSUBSCRIBE", patterns)

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        await self._command("PUNSUBSCRIBE", patterns)

    async def barrier(self) -> None:
        await self._ask(encode_command("PING"), [(b"pong", _Awaited())])

    async def aclose(self) -> None:
        self._fail_expected(anyio.ClosedResourceError("closed"))
        await self._connection.aclose()


class Crew:
    """Tasks that live and die together, started at once or later.

    The first to fail cancels the others, and :meth:`run` raises that failure bare
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
        finally:  # cancelled too: no task may join a crew that is gone
            self._tg, self._ended = None, True
        if self.error is not None:
            raise self.error

    def start(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Add a task (it starts with ``run`` if that has not begun yet).

        Raises:
            anyio.BrokenResourceError: the crew failed or ended: its connections are
                going away, and so must the caller's request.
        """
        self.check()
        if self._tg is None:
            self._pending.append(loop)
        else:
            self._tg.start_soon(self._guard, loop)

    def check(self) -> None:
        """Raise if the crew can take no more tasks (see :meth:`start`)."""
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


class RedisPublisher(Publisher):
    """The command connection: pipelined commands, replies matched in order.

    Two tasks, run by :meth:`run`: an *outbox* writer, the only task that writes to
    the socket, sends everything queued since its last write in one go; a reader
    matches replies to callers first in, first out. Callers only queue a command and
    wait for their reply, so cancelling a caller can never cut a write in half.

    Every wait is bounded: while a reply is due, ``reply_timeout`` seconds of silence
    mean the connection is dead (a stalled peer, an expired NAT entry); while idle,
    a PING goes out every ``health_check_interval`` so that a dead connection is
    found before a publish needs it. A reply of the wrong shape for its command
    ends the connection: nothing read after it could be trusted.
    """

    def __init__(self, connection: _Connection, health_check_interval: float) -> None:
        self._connection = connection
        self._health_check_interval = health_check_interval
        self._waiting: deque[_Reply] = deque()
        self._outgoing: list[bytes] = []
        self._wake_writer: anyio.Event | None = None
        # Set (and replaced) after each read that answered someone: one event per
        # batch of replies, not one per command.
        self._replied = anyio.Event()
        self._error: BaseException | None = None
        self._names: dict[str, bytes] = {}  # channel names, encoded once

    async def run(self) -> None:
        crew = Crew(on_failure=lambda exc: self._fail_all(exc, original=True))
        await crew.run(self._write_loop, self._read_loop)

    async def _read_loop(self) -> None:
        connection = self._connection
        url = connection.url
        waiting = self._waiting
        try:
            while True:
                due = bool(waiting)
                timeout = connection.timeout if due else self._health_check_interval
                if not await connection.receive_within(timeout, due=due):
                    if connection.overdue:
                        raise connection.silent(waiting[0].what)
                    if waiting:
                        continue  # sent as an idle wait ended: wait for its reply
                    self._queue(_PING, _is_pong, "PING")  # a health check nobody waits for
                    continue
                answered = False
                while (reply := connection.reader.gets()) is not INCOMPLETE:
                    if not waiting:
                        raise violation(url, "a reply nobody asked for", reply)
                    awaited = waiting.popleft()
                    awaited.done = answered = True
                    if isinstance(reply, hiredis.ReplyError):
                        awaited.error = reply_error(url, reply)
                    elif awaited.check is None or awaited.check(reply):
                        awaited.value = reply
                    else:
                        awaited.error = violation(url, f"{awaited.what} answered", reply)
                        raise awaited.error
                if answered:
                    replied, self._replied = self._replied, anyio.Event()
                    replied.set()
        except hiredis.ProtocolError as exc:
            raise connection.not_resp(exc) from exc

    async def _write_loop(self) -> None:
        stream = self._connection.stream
        while True:
            if not self._outgoing:
                self._wake_writer = anyio.Event()
                await self._wake_writer.wait()
                continue
            data = b"".join(self._outgoing)
            self._outgoing.clear()
            await stream.send(data)

    def _fail_all(self, exc: BaseException, *, original: bool = False) -> None:
        if self._error is None:
            # run() re-raises the original failure; waiting callers get "lost".
            self._error = exc if original else _lost(self._connection.url, exc)
        error = _lost(self._connection.url, self._error)
        while self._waiting:
            awaited = self._waiting.popleft()
            awaited.error, awaited.done = error, True
        self._replied.set()

    async def execute(
        self, *args: bytes | str | int, check: Callable[[Any], bool] | None = None
    ) -> Any:
        """Send a command and return its reply.

        Args:
            check: tells whether a reply has a shape this command may return; a
                reply that fails it ends the connection.

        Raises:
            ReplyError: the server refused the command.
            BrokerError: the reply failed ``check`` (the connection is dropped).
            anyio.BrokenResourceError: the connection was lost.
        """
        what = args[0] if isinstance(args[0], str) else "the command"
        return await self._execute(encode_command(*args), check, what)

    async def _execute(self, command: bytes, check: Callable[[Any], bool] | None, what: str) -> Any:
        if self._error is not None:
            raise _lost(self._connection.url, self._error)
        awaited = self._queue(command, check, what)
        while not awaited.done:
            await self._replied.wait()
        if awaited.error is not None:
            raise awaited.error
        return awaited.value

    def _queue(self, command: bytes, check: Callable[[Any], bool] | None, what: str) -> _Reply:
        """Queue a command for the writer; return where its reply will land."""
        awaited = _Reply(check, what)
        if not self._waiting:
            self._connection.reply_due()
        self._waiting.append(awaited)
        self._outgoing.append(command)
        wake = self._wake_writer
        if wake is not None:
            self._wake_writer = None
            wake.set()
        return awaited

    async def publish(self, channel: str, payload: bytes) -> int:
        name = self._names.get(channel)
        if name is None:
            if len(self._names) > 4096:
                self._names.clear()
            name = self._names[channel] = encode_name(channel)
        received: int = await self._execute(encode_publish(name, payload), is_int, "PUBLISH")
        return received

    async def numsub(self, channels: Sequence[str]) -> dict[str, int]:
        reply = await self.execute("PUBSUB", "NUMSUB", *channels, check=is_numsub)
        return {decode_name(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}

    async def numpat(self) -> int:
        count: int = await self.execute("PUBSUB", "NUMPAT", check=is_int)
        return count

    async def channels(self, pattern: str | None = None) -> list[str]:
        args = ("PUBSUB", "CHANNELS") if pattern is None else ("PUBSUB", "CHANNELS", pattern)
        return [decode_name(name) for name in await self.execute(*args, check=is_names)]

    async def aclose(self) -> None:
        self._fail_all(anyio.ClosedResourceError("closed"))
        await self._connection.aclose()


_PING = encode_command("PING")


def is_int(reply: object) -> bool:
    """An integer reply (PUBLISH, PUBSUB NUMPAT)."""
    return type(reply) is int


def _is_pong(reply: object) -> bool:
    return reply == b"PONG"


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


class _Reply:
    """A reply a caller waits for; filled in by the reader."""

    __slots__ = ("check", "done", "error", "value", "what")

    def __init__(self, check: Callable[[Any], bool] | None, what: str) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.check = check
        self.what = what


class RedisBroker(Broker):
    """Connections to one Redis server."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self.url = address.url

    async def open_subscriber(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Subscriber:
        connection = await open_connection(self.address, "sub", reply_timeout)
        return RedisSubscriber(connection, health_check_interval)

    async def open_publisher(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Publisher:
        connection = await open_connection(self.address, "pub", reply_timeout)
        return RedisPublisher(connection, health_check_interval)
