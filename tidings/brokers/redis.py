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

import abc
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import hiredis

from ..errors import ReplyError
from ..policies.cache import BoundedCache
from ..policies.streams import LogMark, Retention
from .base import (
    Broker,
    Claimed,
    ConnectionLost,
    ConsumerInfo,
    DeadEntry,
    Dedupe,
    Deliver,
    Entry,
    GroupInfo,
    Message,
    Outgoing,
    Publisher,
    ReadAhead,
    Sent,
    StreamInfo,
    Subscriber,
    dead_key,
    dedupe_key,
    legacy_position_key,
    position_key,
    retry_key,
)
from .connection import (
    INCOMPLETE,
    Connection,
    Linked,
    is_int,
    is_names,
    is_numsub,
    lost,
    open_connection,
    reply_error,
    violation,
)
from .resp import (
    decode_name,
    encode_around,
    encode_command,
    encode_commands,
    encode_name,
    encode_publish,
)
from .slots import key_slot
from .urls import RedisAddress

__all__ = [
    "RedisBroker",
    "RedisPublisher",
    "RedisSubscriber",
]

#: Names per SUBSCRIBE command when many are (re)subscribed at once; all the
#: commands still go out in one write.
CHUNK = 512
#: Channel names a connection remembers encoded (or decoded): bounded, for the many
#: short-lived channels some applications make.
NAME_CACHE_SIZE = 65536

_CONFIRMATIONS = frozenset({b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe"})


class _Awaited:
    """A reply (or confirmation) that a caller waits for."""

    __slots__ = ("error", "event", "on_answer", "remaining", "value")

    def __init__(self, remaining: int = 1, on_answer: Callable[[], None] | None = None) -> None:
        self.event = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.remaining = remaining
        #: Called by the reader the moment the (last) answer is matched.
        self.on_answer = on_answer

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
    (`_expected`), matched first in, first out: (un)subscribe confirmations,
    the PONGs of health checks and barriers, and the error reply of a refused
    command, which fails that command alone. Anything else is a protocol violation
    and ends the connection. Messages read before an answer are delivered before the
    answer is matched, so a confirmed subscription or a passed `barrier()` means
    every earlier message has been handed to ``deliver``.

    With ``sharded=True`` it speaks sharded pub/sub (Redis 7): SSUBSCRIBE and
    SUNSUBSCRIBE, one command per hash slot, ``smessage`` pushes. An ``sunsubscribe``
    nobody asked for means the server stopped serving a channel (its slot moved, or
    the node is being failed over): that ends the connection, and the supervisor
    resubscribes everything where the cluster now says it lives.
    """

    def __init__(
        self, connection: Connection, health_check_interval: float, *, sharded: bool = False
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
        names: BoundedCache[bytes, str] = BoundedCache(NAME_CACHE_SIZE)
        known_name = names.get  # (bound once: a dict subclass's methods cost a lookup)
        next_reply = connection.reader.gets
        message, expected = self._message, self._expected
        url = connection.url
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
                    # The hot path first: a well-formed message push. (The channel's
                    # type is checked once per name, when it enters the cache.)
                    if type(reply) is list and len(reply) == 3:
                        kind, raw, payload = reply
                        if kind == message and type(payload) is bytes:
                            try:
                                name = known_name(raw)
                            except TypeError:  # unhashable: not a channel name
                                raise violation(url, "a message push", reply) from None
                            if name is None:
                                if type(raw) is not bytes:
                                    raise violation(url, "a message push", reply)
                                name = names.remember(raw, decode_name(raw))
                            batch.append((name, payload))
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
                raise ConnectionLost(
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
            if awaited.on_answer is not None:
                awaited.on_answer()
            awaited.event.set()

    def _fail_expected(self, exc: BaseException) -> None:
        error = lost(self._connection.url, exc)
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

    async def barrier(self, on_answer: Callable[[], None]) -> None:
        await self._ask(encode_command("PING"), [(b"pong", _Awaited(on_answer=on_answer))])

    async def aclose(self) -> None:
        self._fail_expected(anyio.ClosedResourceError("closed"))
        await self._connection.aclose()


class _Commands(Publisher):
    """The commands of tidings' `Publisher` contract, in Redis: what each sends and
    how its reply is read. How a command travels (pipelined, matched, bounded) is the
    connection's (`RedisPublisher`)."""

    #: How a durable publish reaches subscribers ("SPUBLISH" on a sharded cluster).
    publish_verb: str
    # False once the server refused a script (an ACL without scripting).
    _scripting: bool
    _connection: Connection
    # Channel names, encoded once.
    _names: BoundedCache[str, bytes]
    _appends: BoundedCache[tuple[str, Retention, str], tuple[bytes, bytes]]

    @abc.abstractmethod
    async def execute(
        self, *args: bytes | str | int, check: Callable[[Any], bool] | None = None
    ) -> Any:
        """Send a command and return its reply (see `RedisPublisher.execute()`)."""

    @abc.abstractmethod
    async def execute_all(
        self, commands: Sequence[tuple[Sequence[bytes | str | int], Callable[[Any], bool]]]
    ) -> list[Any]:
        """Send commands in one round trip (see `RedisPublisher.execute_all()`)."""

    @abc.abstractmethod
    async def _execute(self, command: bytes, check: Callable[[Any], bool] | None, what: str) -> Any:
        """Send one encoded command (the hot path: publish encodes its own)."""

    @abc.abstractmethod
    async def _execute_many(
        self, commands: Sequence[tuple[bytes, Callable[[Any], bool], str]]
    ) -> list[Any]:
        """Send encoded commands in one write; their replies in order, a refused
        command's as its `ReplyError` (returned, not raised)."""

    async def publish(self, channel: str, payload: bytes) -> int:
        name = self._names.get(channel)
        if name is None:
            name = self._names.remember(channel, encode_name(channel))
        received: int = await self._execute(encode_publish(name, payload), is_int, "PUBLISH")
        return received

    async def append(
        self, channel: str, payload: bytes, retention: Retention, dedupe: Dedupe | None = None
    ) -> tuple[str | None, int]:
        if self._scripting:
            args = self._append_args(channel, payload, retention, dedupe)
            try:
                reply = await self._execute(
                    self._encode_append(channel, payload, retention, dedupe, args),
                    _is_appended,
                    "EVALSHA",
                )
            except ReplyError as exc:
                if exc.code == "NOSCRIPT":  # a restarted or failed-over server
                    reply = await self.execute("EVAL", APPEND.source, *args, check=_is_appended)
                elif exc.code == "NOPERM":
                    reply = None
                    self._no_scripts(exc)
                else:
                    raise
            if reply is not None:
                return _appended(reply)
        return await self._append_by_commands(channel, payload, retention, dedupe)

    def _append_args(
        self, channel: str, payload: bytes, retention: Retention, dedupe: Dedupe | None
    ) -> tuple[bytes | str | int, ...]:
        """The APPEND script's keys and arguments."""
        max_len = b"" if retention.max_len is None else b"%d" % retention.max_len
        max_age = b"" if retention.max_age is None else b"%d" % int(retention.max_age * 1000)
        if dedupe is None:
            return (1, channel, payload, max_len, max_age, self.publish_verb, b"")
        window = b"%d" % max(int(dedupe.window * 1000), 1)
        key = dedupe_key(channel, dedupe.key)
        return (2, channel, key, payload, max_len, max_age, self.publish_verb, window)

    def _encode_append(
        self,
        channel: str,
        payload: bytes,
        retention: Retention,
        dedupe: Dedupe | None,
        args: tuple[bytes | str | int, ...],
    ) -> bytes:
        """The APPEND command, encoded; without a dedupe key all but the payload is
        the same for a channel each time, encoded once (the durable publish's hot
        path: encoding its nine arguments one by one was a fifth of its cost)."""
        if dedupe is not None:
            return encode_command("EVALSHA", APPEND.sha, *args)
        key = (channel, retention, self.publish_verb)
        around = self._appends.get(key)
        if around is None:
            around = self._appends.remember(
                key, encode_around(("EVALSHA", APPEND.sha, *args[:2]), args[3:])
            )
        head, tail = around
        return b"%b$%d\r\n%b\r\n%b" % (head, len(payload), payload, tail)

    def _no_scripts(self, exc: ReplyError) -> None:
        self._scripting = False
        _logger.warning(
            "%s: scripts are not allowed (%s); durable publishes take two "
            "commands, XADD then %s, and are no longer atomic (an "
            "idempotent publish whose append fails after its key was "
            "recorded is lost: a retry with the key is taken for a repeat)",
            self._connection.url,
            exc,
            self.publish_verb,
        )

    async def _append_by_commands(
        self, channel: str, payload: bytes, retention: Retention, dedupe: Dedupe | None
    ) -> tuple[str | None, int]:
        """An append where scripts are refused: not atomic (see `_no_scripts`)."""
        if dedupe is not None:
            window = b"%d" % max(int(dedupe.window * 1000), 1)
            fresh = await self.execute(
                "SET", dedupe_key(channel, dedupe.key), "1", "NX", "PX", window, check=_is_set_nx
            )
            if fresh is None:
                return None, 0
        trim = ("MAXLEN", "~", retention.max_len) if retention.max_len is not None else ()
        entry = await self.execute("XADD", channel, *trim, "*", "envelope", payload, check=_is_id)
        if retention.max_age is not None:
            # The client's clock, here.
            oldest = time.time_ns() // 1_000_000 - int(retention.max_age * 1000)
            await self.execute("XTRIM", channel, "MINID", "~", oldest, check=is_int)
        received: int = await self.execute(
            self.publish_verb, channel, b"%s %s" % (entry, payload), check=is_int
        )
        return entry.decode("ascii"), received

    async def send_many(self, items: Sequence[Outgoing]) -> list[Sent | ReplyError]:
        """Every item's command in one write, then their replies (see
        `Publisher.send_many()`); an append the server cannot script right now
        (NOSCRIPT after a restart, NOPERM) is made again alone, in order."""
        commands: list[tuple[bytes, Callable[[Any], bool], str]] = []
        # As the commands are made: another task may meet a refused script meanwhile.
        scripted, loaded = self._scripting, False
        for channel, payload, retention, dedupe in items:
            if retention is None:
                commands.append((self._encode_publish(channel, payload), is_int, "PUBLISH"))
            elif scripted:
                args = self._append_args(channel, payload, retention, dedupe)
                if not loaded:
                    # The first append by its source, which loads the script: after
                    # a restart the others are not all refused NOSCRIPT, then redone
                    # behind appends another producer's EVAL let through.
                    command = encode_command("EVAL", APPEND.source, *args)
                    loaded = True
                else:
                    command = self._encode_append(channel, payload, retention, dedupe, args)
                commands.append((command, _is_appended, "EVALSHA"))
        replies = iter(await self._execute_many(commands) if commands else ())
        outcomes: list[Sent | ReplyError] = []
        for channel, payload, retention, dedupe in items:
            if retention is not None and not scripted:
                outcomes.append(await self._one_more(channel, payload, retention, dedupe))
                continue
            reply = next(replies)
            if retention is None:
                outcomes.append(reply if isinstance(reply, ReplyError) else (None, reply))
            elif isinstance(reply, ReplyError) and reply.code in ("NOSCRIPT", "NOPERM"):
                outcomes.append(await self._one_more(channel, payload, retention, dedupe))
            else:
                outcomes.append(reply if isinstance(reply, ReplyError) else _appended(reply))
        return outcomes

    async def _one_more(
        self, channel: str, payload: bytes, retention: Retention, dedupe: Dedupe | None
    ) -> Sent | ReplyError:
        try:
            return await self.append(channel, payload, retention, dedupe)
        except ReplyError as exc:
            return exc

    def _encode_publish(self, channel: str, payload: bytes) -> bytes:
        if self.publish_verb != "PUBLISH":
            return encode_command(self.publish_verb, channel, payload)
        name = self._names.get(channel)
        if name is None:
            name = self._names.remember(channel, encode_name(channel))
        return encode_publish(name, payload)

    async def read(self, channel: str, start: str, count: int) -> list[Entry]:
        reply = await self.execute("XRANGE", channel, start, "+", "COUNT", count, check=_is_entries)
        return _entries(reply)

    async def tail(self, channel: str) -> str | None:
        reply = await self.execute("XREVRANGE", channel, "+", "-", "COUNT", 1, check=_is_entries)
        return reply[0][0].decode("ascii") if reply else None

    async def tails(self, channels: Sequence[str]) -> list[str | None]:
        replies = await self.execute_all(
            [(("XREVRANGE", channel, "+", "-", "COUNT", 1), _is_entries) for channel in channels]
        )
        return [reply[0][0].decode("ascii") if reply else None for reply in replies]

    async def marks(self, channels: Sequence[str]) -> list[LogMark | None]:
        kinds = await self.execute_all([(("TYPE", channel), _is_status) for channel in channels])
        streams = [
            channel for channel, kind in zip(channels, kinds, strict=True) if kind == b"stream"
        ]
        # A log deleted between the two round trips: refused, and asked again next time.
        infos = await self.execute_all(
            [(("XINFO", "STREAM", channel), _is_info) for channel in streams]
        )
        found = dict(zip(streams, map(_mark, infos), strict=True))
        return [found.get(channel) for channel in channels]

    async def load_position(self, channel: str, consumer: str) -> str | None:
        found = await self.get_id(position_key(channel, consumer))
        if found is None:  # saved by a release before 0.2, maybe (the next save moves it)
            found = await self.get_id(legacy_position_key(channel, consumer))
        return found

    async def get_id(self, key: str) -> str | None:
        """The stream id kept under ``key`` (None: no such key)."""
        reply = await self.execute("GET", key, check=_is_optional_id)
        return reply.decode("ascii") if reply is not None else None

    async def save_position(self, channel: str, consumer: str, entry_id: str) -> None:
        await self.execute("SET", position_key(channel, consumer), entry_id, check=_is_ok)

    async def group_create(self, channel: str, group: str, start: str) -> bool:
        try:
            await self.execute("XGROUP", "CREATE", channel, group, start, "MKSTREAM", check=_is_ok)
        except ReplyError as exc:
            if exc.code == "BUSYGROUP":
                return False
            raise
        return True

    async def group_read(self, channel: str, group: str, consumer: str, count: int) -> list[Entry]:
        reply = await self.execute(
            "XREADGROUP",
            "GROUP",
            group,
            consumer,
            "COUNT",
            count,
            "STREAMS",
            channel,
            ">",
            check=_is_streams,
        )
        return [] if reply is None else _entries(reply[0][1])

    async def group_claim(
        self, channel: str, group: str, consumer: str, min_idle: float, start: str, count: int
    ) -> Claimed:
        reply = await self.execute(
            "XAUTOCLAIM",
            channel,
            group,
            consumer,
            _ms(min_idle),
            start,
            "COUNT",
            count,
            check=_is_autoclaimed,
        )
        entries = _entries([entry for entry in reply[1] if entry is not None])
        counts = await self.execute_all(
            [(("XPENDING", channel, group, i, i, 1, consumer), _is_pending) for i, _ in entries]
        )
        jobs = [
            (entry_id, payload, found[0][3])
            for (entry_id, payload), found in zip(entries, counts, strict=True)
            if found  # acknowledged meanwhile (by the member that was late): done
        ]
        lost = [i.decode("ascii") for i in reply[2]] if len(reply) == 3 else []
        return Claimed(jobs, lost, reply[0].decode("ascii"))

    async def group_ack(self, channel: str, group: str, ids: Sequence[str]) -> int:
        acked: int = await self.execute("XACK", channel, group, *ids, check=is_int)
        return acked

    async def group_release(
        self, channel: str, group: str, consumer: str, jobs: Sequence[tuple[str, int]], idle: float
    ) -> None:
        by_count: dict[int, list[str]] = {}
        for entry_id, deliveries in jobs:
            by_count.setdefault(deliveries, []).append(entry_id)
        idle_ms = _ms(idle)

        def options(count: int) -> tuple[str | int, ...]:
            return ("IDLE", idle_ms, "RETRYCOUNT", count, "JUSTID")

        await self.execute_all(
            [
                (
                    (*("XCLAIM", channel, group, consumer, 0), *ids, *options(count)),
                    _is_ids,
                )
                for count, ids in by_count.items()
            ]
        )

    async def group_leave(self, channel: str, group: str, consumer: str) -> bool:
        try:
            pending = await self.execute(
                "XPENDING", channel, group, "-", "+", 1, consumer, check=_is_pending
            )
            if pending:
                return False
            await self.execute("XGROUP", "DELCONSUMER", channel, group, consumer, check=is_int)
        except ReplyError as exc:
            if exc.code == "NOGROUP":
                return True
            raise
        return True

    async def group_prune(self, channel: str, group: str, idle: float, keep: str) -> int:
        removed = await self._script(PRUNE, (channel,), (group, _ms(idle), keep))
        return int(removed or 0)  # (no scripts: consumers are left, as before)

    async def group_retry(
        self,
        channel: str,
        group: str,
        consumer: str,
        entry_id: str,
        payload: bytes,
        delay: float,
    ) -> bool:
        keys = (channel, retry_key(channel, group))
        args = (group, entry_id, payload, _ms(delay), consumer)
        scheduled = await self._script(RETRY_LATER, keys, args)
        if scheduled is not None:
            return bool(scheduled)
        # No scripts: check, schedule, then acknowledge (claimed by another member in
        # between, or a failure in between: done twice, never lost).
        held = await self.execute(
            "XPENDING", channel, group, entry_id, entry_id, 1, consumer, check=_is_pending
        )
        if not held:
            return False
        due = time.time_ns() // 1_000_000 + _ms(delay)  # the client's clock, here
        await self.execute("ZADD", keys[1], due, payload, check=is_int)
        await self.execute("XACK", channel, group, entry_id, check=is_int)
        return True

    async def group_due(
        self, channel: str, group: str, count: int, retention: Retention
    ) -> tuple[int, float | None]:
        keys = (channel, retry_key(channel, group))
        max_len = b"" if retention.max_len is None else b"%d" % retention.max_len
        reply = await self._script(RELEASE_DUE, keys, (count, max_len, self.publish_verb))
        if reply:
            moved, wait = reply
            return moved, (wait / 1000 if wait >= 0 else None)
        # No scripts: append, then unschedule (a failure in between: appended twice).
        now = time.time_ns() // 1_000_000
        due = await self.execute(
            "ZRANGEBYSCORE", keys[1], "-inf", now, "LIMIT", 0, count, check=_is_names
        )
        for payload in due:
            await self.append(channel, payload, retention)
            await self.execute("ZREM", keys[1], payload, check=is_int)
        first = await self.execute("ZRANGE", keys[1], 0, 0, "WITHSCORES", check=_is_names)
        wait = (float(first[1]) - time.time_ns() // 1_000_000) / 1000 if first else None
        return len(due), (max(wait, 0.0) if wait is not None else None)

    async def _script(
        self, script: _Script, keys: Sequence[str], args: Sequence[bytes | str | int]
    ) -> Any:
        """Run a script (by digest, by text after NOSCRIPT); None when scripts are
        refused (said once: the caller takes its two-command way)."""
        if not self._scripting:
            return None
        call = (len(keys), *keys, *args)
        try:
            return await self.execute("EVALSHA", script.sha, *call, check=_is_script_reply)
        except ReplyError as exc:
            if exc.code == "NOSCRIPT":
                return await self.execute("EVAL", script.source, *call, check=_is_script_reply)
            if exc.code != "NOPERM":
                raise
            self._scripting = False
            _logger.warning(
                "%s: scripts are not allowed (%s); tidings takes two commands where it "
                "would take one (durable publishes, idempotent publishes and delayed "
                "retries are no longer atomic: an event may be stored or run twice)",
                self._connection.url,
                exc,
            )
            return None

    async def add_dead(
        self, channel: str, fields: Sequence[tuple[str, bytes]], retention: Retention
    ) -> str:
        key = dead_key(channel)
        trim = ("MAXLEN", "~", retention.max_len) if retention.max_len is not None else ()
        flat = [item for pair in fields for item in pair]
        entry: bytes = await self.execute("XADD", key, *trim, "*", *flat, check=_is_id)
        if retention.max_age is not None:
            oldest = time.time_ns() // 1_000_000 - _ms(retention.max_age)
            await self.execute("XTRIM", key, "MINID", "~", oldest, check=is_int)
        return entry.decode("ascii")

    async def read_dead(self, channel: str, count: int, start: str = "+") -> list[DeadEntry]:
        reply = await self.execute(
            "XREVRANGE", dead_key(channel), start, "-", "COUNT", count, check=_is_entries
        )
        return [(entry_id.decode("ascii"), _fields(fields)) for entry_id, fields in reply]

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        key = dead_key(channel)
        if ids is not None:
            if not ids:
                return 0
            deleted: int = await self.execute("XDEL", key, *ids, check=is_int)
            return deleted
        # Counted and deleted as one step: a dead letter buried in between is not
        # deleted uncounted.
        replies = await self.execute_all(
            [
                (("MULTI",), _is_ok),
                (("XLEN", key), _is_queued),
                (("DEL", key), _is_queued),
                (("EXEC",), _is_executed),
            ]
        )
        length, _ = replies[3]
        if isinstance(length, hiredis.ReplyError):  # WRONGTYPE: not a stream
            raise reply_error(self._connection.url, length)
        return int(length)

    async def stream_info(self, key: str) -> StreamInfo | None:
        kind, length, first, last = await self.execute_all(
            [
                (("TYPE", key), _is_status),
                (("XLEN", key), is_int),
                (("XRANGE", key, "-", "+", "COUNT", 1), _is_entries),
                (("XREVRANGE", key, "+", "-", "COUNT", 1), _is_entries),
            ]
        )
        if kind == b"none":
            return None
        return StreamInfo(
            length,
            first[0][0].decode("ascii") if first else None,
            last[0][0].decode("ascii") if last else None,
        )

    async def group_info(self, channel: str) -> list[GroupInfo]:
        if await self.execute("TYPE", channel, check=_is_status) == b"none":
            return []
        groups = [
            _pairs(group)
            for group in await self.execute("XINFO", "GROUPS", channel, check=_is_infos)
        ]
        consumers = await self.execute_all(
            [(("XINFO", "CONSUMERS", channel, group[b"name"]), _is_infos) for group in groups]
        )
        found = []
        for group, members in zip(groups, consumers, strict=True):
            lag = group.get(b"lag")
            found.append(
                GroupInfo(
                    decode_name(group[b"name"]),
                    tuple(
                        ConsumerInfo(
                            decode_name(member[b"name"]),
                            int(member[b"pending"]),
                            int(member[b"idle"]) / 1000 if b"idle" in member else None,
                        )
                        for member in map(_pairs, members)
                    ),
                    int(group[b"pending"]),
                    int(lag) if type(lag) is int else None,
                    group[b"last-delivered-id"].decode("ascii"),
                )
            )
        return found

    async def scan_streams(self, match: str) -> list[str]:
        found: set[str] = set()
        cursor = b"0"
        while True:
            cursor, keys = await self.execute(
                "SCAN", cursor, "MATCH", match, "COUNT", 1000, "TYPE", "stream", check=_is_scan
            )
            found.update(decode_name(key) for key in keys)
            if cursor == b"0":
                return sorted(found)

    async def numsub(self, channels: Sequence[str]) -> dict[str, int]:
        reply = await self.execute("PUBSUB", "NUMSUB", *channels, check=is_numsub)
        return {decode_name(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}

    async def numpat(self) -> int:
        count: int = await self.execute("PUBSUB", "NUMPAT", check=is_int)
        return count

    async def channels(self, pattern: str | None = None) -> list[str]:
        args = ("PUBSUB", "CHANNELS") if pattern is None else ("PUBSUB", "CHANNELS", pattern)
        return [decode_name(name) for name in await self.execute(*args, check=is_names)]


class RedisPublisher(_Commands):
    """The command connection: pipelined commands, replies matched in order.

    Three tasks, run by `run()`: an *outbox* writer, the only task that writes
    to the socket, sends everything queued since its last write in one go; a reader
    matches replies to callers first in, first out; a watchdog bounds every wait.
    Callers only queue a command and wait for their reply, so cancelling a caller
    can never cut a write in half.

    Every wait is bounded: while a reply is due, ``reply_timeout`` seconds without a
    byte mean the connection is dead (a stalled peer, an expired NAT entry); while
    idle, a PING goes out every ``health_check_interval`` so that a dead connection
    is found before a publish needs it. A reply of the wrong shape for its command
    ends the connection: nothing read after it could be trusted. (The watchdog looks
    at a count of reads twice per reply timeout, rather than the reader entering a
    cancel scope per read: that cost 15% of publish throughput.)
    """

    def __init__(self, connection: Connection, health_check_interval: float) -> None:
        self._connection = connection
        self._health_check_interval = health_check_interval
        #: How a durable publish reaches subscribers ("SPUBLISH" on a sharded cluster).
        self.publish_verb = "PUBLISH"
        # False once the server refused a script (an ACL without scripting).
        self._scripting = True
        self._waiting: deque[_Reply] = deque()
        self._outgoing: list[bytes] = []
        self._wake_writer: anyio.Event | None = None
        # Set (and replaced) after each read that answered someone: one event per
        # batch of replies, not one per command.
        self._replied = anyio.Event()
        self._error: BaseException | None = None
        # Channel names, encoded once.
        self._names: BoundedCache[str, bytes] = BoundedCache(NAME_CACHE_SIZE)
        # A durable channel's APPEND command, encoded around its payload.
        self._appends: BoundedCache[tuple[str, Retention, str], tuple[bytes, bytes]] = BoundedCache(
            NAME_CACHE_SIZE
        )
        #: Reads so far: the watchdog's evidence that the peer is alive.
        self._reads = 0
        # Set when a reply becomes due on an idle connection: wakes the watchdog.
        self._became_due: anyio.Event | None = None
        # Writes taken from the outbox, and written, so far; set after a write when
        # someone waits for theirs to be out (`read_ahead`).
        self._taken = self._written = 0
        self._wrote: anyio.Event | None = None

    async def run(self) -> None:
        tasks = Linked(on_failure=lambda exc: self._fail_all(exc, original=True))
        await tasks.run(self._write_loop, self._read_loop, self._watchdog)

    async def _watchdog(self) -> None:
        """Raise when a due reply meets ``reply_timeout`` of silence; PING when idle."""
        connection, waiting = self._connection, self._waiting
        half = connection.timeout / 2
        while True:
            if not waiting:
                self._became_due = anyio.Event()
                with anyio.move_on_after(self._health_check_interval):
                    await self._became_due.wait()
                self._became_due = None
                if not waiting:
                    self._queue(_PING, _is_pong, "PING")  # a health check nobody waits for
            # A reply is due: two half-timeouts in a row without a read is silence
            # of at least the timeout (and at most one and a half).
            silent = 0
            while waiting and silent < 2:
                reads = self._reads
                await anyio.sleep(half)
                silent = silent + 1 if self._reads == reads else 0
            if waiting:
                raise connection.silent(waiting[0].what)

    async def _read_loop(self) -> None:
        connection = self._connection
        url = connection.url
        waiting = self._waiting
        try:
            while True:
                await connection.receive()
                self._reads += 1
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
            self._taken += 1
            taken = self._taken
            await stream.send(data)
            self._written = taken
            if self._wrote is not None:
                self._wrote.set()
                self._wrote = None

    def _fail_all(self, exc: BaseException, *, original: bool = False) -> None:
        if self._error is None:
            # run() re-raises the original failure; waiting callers get "lost".
            self._error = exc if original else lost(self._connection.url, exc)
        error = lost(self._connection.url, self._error)
        while self._waiting:
            awaited = self._waiting.popleft()
            awaited.error, awaited.done = error, True
        self._replied.set()
        if self._wrote is not None:
            self._wrote.set()

    async def execute(
        self, *args: bytes | str | int, check: Callable[[Any], bool] | None = None
    ) -> Any:
        """Send a command and return its reply.

        Args:
            check: tells whether a reply has a shape this command may return; a
                reply that fails it ends the connection.

        Raises:
            ReplyError: the server refused the command.
            ConnectionLost: the reply failed ``check`` (the connection is dropped).
            anyio.BrokenResourceError: the connection was lost.
        """
        what = args[0] if isinstance(args[0], str) else "the command"
        return await self._execute(encode_command(*args), check, what)

    async def _execute(self, command: bytes, check: Callable[[Any], bool] | None, what: str) -> Any:
        if self._error is not None:
            raise lost(self._connection.url, self._error)
        return await self._reply(self._queue(command, check, what))

    async def _reply(self, awaited: _Reply) -> Any:
        while not awaited.done:
            await self._replied.wait()
        if awaited.error is not None:
            raise awaited.error
        return awaited.value

    async def execute_all(
        self, commands: Sequence[tuple[Sequence[bytes | str | int], Callable[[Any], bool]]]
    ) -> list[Any]:
        """Send commands in one go (one round trip) and return their replies, in order.

        Raises:
            ReplyError: the first command the server refused (the replies after it
                are read and discarded, as a cancelled caller's are).
        """
        if self._error is not None:
            raise lost(self._connection.url, self._error)
        queued = [
            self._queue(encode_command(*args), check, str(args[0])) for args, check in commands
        ]
        return [await self._reply(awaited) for awaited in queued]

    async def read_ahead(
        self, channel: str, group: str, consumer: str, count: int, acks: Sequence[str]
    ) -> ReadAhead:
        """Queue the XACK and the XREADGROUP, and return once they are written: the
        server works on them while the caller works on what it has."""
        if self._error is not None:
            raise lost(self._connection.url, self._error)
        ack = None
        if acks:
            ack = self._queue(encode_command("XACK", channel, group, *acks), is_int, "XACK")
        read = self._queue(
            encode_command(
                "XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", channel, ">"
            ),
            _is_streams,
            "XREADGROUP",
        )
        out = self._taken + 1  # the next write takes them (the outbox holds them now)
        while self._written < out:
            if self._error is not None:
                raise lost(self._connection.url, self._error)
            if self._wrote is None:
                self._wrote = anyio.Event()
            await self._wrote.wait()
        return _Ahead(self, ack, read)

    async def _execute_many(
        self, commands: Sequence[tuple[bytes, Callable[[Any], bool], str]]
    ) -> list[Any]:
        if self._error is not None:
            raise lost(self._connection.url, self._error)
        queued = [self._queue(command, check, what) for command, check, what in commands]
        replies: list[Any] = []
        for awaited in queued:
            while not awaited.done:
                await self._replied.wait()
            error = awaited.error
            if error is None:
                replies.append(awaited.value)
            elif isinstance(error, ReplyError):
                replies.append(error)
            else:
                raise error
        return replies

    def _queue(self, command: bytes, check: Callable[[Any], bool] | None, what: str) -> _Reply:
        """Queue a command for the writer; return where its reply will land."""
        awaited = _Reply(check, what)
        if not self._waiting and self._became_due is not None:
            self._became_due.set()
        self._waiting.append(awaited)
        self._outgoing.append(command)
        wake = self._wake_writer
        if wake is not None:
            self._wake_writer = None
            wake.set()
        return awaited

    async def aclose(self) -> None:
        self._fail_all(anyio.ClosedResourceError("closed"))
        await self._connection.aclose()


_PING = encode_command("PING")

_logger = logging.getLogger("tidings")


class _Script:
    """A Lua script, sent by its digest (EVALSHA), by its text after NOSCRIPT."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


#: A durable publish, atomic on the server: XADD (trimmed), then (S)PUBLISH of
#: "<id> <envelope>". KEYS[1]: the channel, which is also the stream's key (one
#: hash slot). ARGV: envelope, max_len or "", max_age in ms or "", the publish verb.
APPEND = _Script(
    """
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then
  return {'', 0}
end
local id
if ARGV[2] ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'envelope', ARGV[1])
else
  id = redis.call('XADD', KEYS[1], '*', 'envelope', ARGV[1])
end
if ARGV[3] ~= '' then
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', oldest - tonumber(ARGV[3])))
end
return {id, redis.call(ARGV[4], KEYS[1], id .. ' ' .. ARGV[1])}
"""
)


def _is_script_reply(reply: object) -> bool:
    return type(reply) is int or (
        type(reply) is list and all(type(item) in (int, bytes) for item in reply)
    )


def _is_names(reply: object) -> bool:
    return type(reply) is list and all(type(item) is bytes for item in reply)


def _is_set_nx(reply: object) -> bool:
    return reply is None or reply == b"OK"


def _appended(reply: list[Any]) -> tuple[str | None, int]:
    """The APPEND script's reply: the entry's id ("" for a repeated key), receivers."""
    return (reply[0].decode("ascii") or None), reply[1]


def _is_appended(reply: object) -> bool:
    return (
        type(reply) is list
        and len(reply) == 2
        and type(reply[0]) is bytes
        and type(reply[1]) is int
    )


def _is_id(reply: object) -> bool:
    return type(reply) is bytes


def _is_optional_id(reply: object) -> bool:
    return reply is None or type(reply) is bytes


def _is_ok(reply: object) -> bool:
    return reply == b"OK"


def _is_queued(reply: object) -> bool:
    return reply == b"QUEUED"


def _is_executed(reply: object) -> bool:
    """EXEC's answer to MULTI, XLEN, DEL, EXEC: a reply each (a refusal included)."""
    return (
        type(reply) is list
        and len(reply) == 2
        and all(type(item) is int or isinstance(item, hiredis.ReplyError) for item in reply)
    )


def _is_status(reply: object) -> bool:
    return type(reply) is bytes


def _is_infos(reply: object) -> bool:
    """XINFO GROUPS' or XINFO CONSUMERS' answer: a list of flat name/value lists."""
    return type(reply) is list and all(
        type(item) is list and len(item) % 2 == 0 and all(type(n) is bytes for n in item[::2])
        for item in reply
    )


def _is_info(reply: object) -> bool:
    """XINFO STREAM's answer: a flat name/value list."""
    return type(reply) is list and len(reply) % 2 == 0 and all(type(n) is bytes for n in reply[::2])


def _mark(info: list[Any]) -> LogMark | None:
    """A log's mark from XINFO STREAM (None: Redis before 7.0 does not count what
    was added)."""
    fields = _pairs(info)
    added, length = fields.get(b"entries-added"), fields.get(b"length")
    if type(added) is not int or type(length) is not int:
        return None
    first, last = fields.get(b"recorded-first-entry-id"), fields.get(b"last-generated-id")
    return LogMark(
        added,
        length,
        first.decode("ascii") if type(first) is bytes and length else None,
        last.decode("ascii") if type(last) is bytes else None,
    )


def _fields(flat: list[bytes]) -> dict[str, bytes]:
    """A stream entry's fields by name."""
    return {flat[i].decode("utf-8", "replace"): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _pairs(flat: list[Any]) -> dict[bytes, Any]:
    """A flat ``[name, value, ...]`` reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _is_scan(reply: object) -> bool:
    return (
        type(reply) is list
        and len(reply) == 2
        and type(reply[0]) is bytes
        and type(reply[1]) is list
        and all(type(key) is bytes for key in reply[1])
    )


def _is_entries(reply: object) -> bool:
    """XRANGE's answer: ``[[id, [field, value, ...]], ...]``."""
    return type(reply) is list and all(
        type(entry) is list
        and len(entry) == 2
        and type(entry[0]) is bytes
        and type(entry[1]) is list
        and all(type(item) is bytes for item in entry[1])
        for entry in reply
    )


def _is_streams(reply: object) -> bool:
    """XREADGROUP's answer for one stream: nil, or ``[[key, entries]]``."""
    return reply is None or (
        type(reply) is list
        and len(reply) == 1
        and type(reply[0]) is list
        and len(reply[0]) == 2
        and _is_entries(reply[0][1])
    )


def _is_autoclaimed(reply: object) -> bool:
    """XAUTOCLAIM's answer: ``[next id, entries, deleted ids]`` (Redis 7; 6.2 has
    no deleted ids, and a nil in place of each deleted entry)."""
    return (
        type(reply) is list
        and len(reply) in (2, 3)
        and type(reply[0]) is bytes
        and type(reply[1]) is list
        and _is_entries([entry for entry in reply[1] if entry is not None])
        and (len(reply) == 2 or _is_ids(reply[2]))
    )


def _is_ids(reply: object) -> bool:
    return type(reply) is list and all(type(item) is bytes for item in reply)


def _is_pending(reply: object) -> bool:
    """XPENDING's extended answer: ``[[id, consumer, idle ms, deliveries], ...]``."""
    return type(reply) is list and all(
        type(item) is list
        and len(item) == 4
        and type(item[0]) is bytes
        and type(item[1]) is bytes
        and type(item[2]) is int
        and type(item[3]) is int
        for item in reply
    )


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _entries(reply: list[list[Any]]) -> list[Entry]:
    return [(entry_id.decode("ascii"), _envelope(fields)) for entry_id, fields in reply]


def _envelope(fields: list[bytes]) -> bytes:
    """The ``envelope`` field of an entry (b"" if it has none: a decode error later)."""
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == b"envelope":
            return fields[index + 1]
    return b""


def _is_pong(reply: object) -> bool:
    return reply == b"PONG"


class _Ahead(ReadAhead):
    """A `RedisPublisher.read_ahead()` in flight: its replies, when they come."""

    __slots__ = ("_ack", "_publisher", "_read", "_read_entries")

    def __init__(self, publisher: RedisPublisher, ack: _Reply | None, read: _Reply) -> None:
        self._publisher, self._ack, self._read = publisher, ack, read
        self._read_entries: list[Entry] | None = None

    def ready(self) -> list[Entry]:
        read = self._read
        if not read.done or read.error is not None:
            return []
        return self._parsed(read.value)

    def _parsed(self, reply: Any) -> list[Entry]:
        if self._read_entries is None:
            self._read_entries = [] if reply is None else _entries(reply[0][1])
        return self._read_entries

    async def result(self) -> tuple[int | ReplyError, list[Entry]]:
        acked: int | ReplyError = 0
        if self._ack is not None:
            try:
                acked = await self._publisher._reply(self._ack)
            except ReplyError as exc:
                acked = exc
        return acked, self._parsed(await self._publisher._reply(self._read))


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


#: A delayed retry, atomic on the server: if the entry that failed is still pending
#: for this consumer (no other member claimed it meanwhile), schedule the event's new
#: envelope at the server's time plus the delay, and acknowledge the entry. KEYS: the
#: channel (its stream), the group's schedule. ARGV: group, entry id, envelope, ms,
#: consumer. Returns 1 if scheduled, 0 if not.
RETRY_LATER = _Script(
    """
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[5]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)

#: Due retries back into the log: each appended (trimmed) and published as a durable
#: publish is, and unscheduled, in one step. KEYS: the channel, the group's schedule.
#: ARGV: how many at most, max_len or "", the publish verb. Returns {appended, ms
#: until the next one is due or -1}.
RELEASE_DUE = _Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, payload in ipairs(due) do
  local id
  if ARGV[2] ~= '' then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'envelope', payload)
  else
    id = redis.call('XADD', KEYS[1], '*', 'envelope', payload)
  end
  redis.call(ARGV[3], KEYS[1], id .. ' ' .. payload)
  redis.call('ZREM', KEYS[2], payload)
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local wait = -1
if first[2] then wait = math.max(tonumber(first[2]) - now, 0) end
return {#due, wait}
"""
)

#: Consumers left by killed processes: every consumer of the group (but ARGV[3]) that
#: holds nothing and has been idle for longer than ARGV[2] ms is deleted, at once (a
#: consumer cannot take an entry between the look and the deletion). KEYS: the
#: channel. ARGV: group, ms, the consumer to keep.
PRUNE = _Script(
    """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do fields[consumer[i]] = consumer[i + 1] end
  if fields['name'] ~= ARGV[3] and tonumber(fields['pending']) == 0
      and tonumber(fields['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    removed = removed + 1
  end
end
return removed
"""
)
