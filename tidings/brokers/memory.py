"""The embedded broker: an in-process hub with Redis pub/sub semantics.

Stores created from ``memory://NAME`` share the hub called NAME (it lives as long
as a store uses it); every ``memory://`` store without a name has a private hub.

Semantics follow Redis: exact channels and glob patterns; a connection subscribed to a
channel and to a matching pattern receives the message once for each, and PUBLISH
counts both; NUMSUB ignores patterns; NUMPAT counts distinct patterns; CHANNELS lists
channels with an exact subscriber. Like Redis's ``client-output-buffer-limit pubsub``,
a subscriber that falls more than ``max_buffered`` messages behind is disconnected,
with a warning, rather than letting memory grow without bound.

A hub can also be told to fail (`Hub.kill_connections()`, `Hub.refusing`)
or to refuse commands as an ACL would (`Hub.allowed_channels`), which is how the
supervision logic is exercised without any server.
"""

from __future__ import annotations

import bisect
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ..errors import ReplyError
from ..policies.glob import compile_glob
from ..policies.streams import LogMark, Retention, StreamId, format_id, parse_id
from .base import (
    Broker,
    Claimed,
    ConsumerInfo,
    DeadEntry,
    Dedupe,
    Deliver,
    Entry,
    GroupInfo,
    Job,
    Message,
    Outgoing,
    Publisher,
    Sent,
    StreamInfo,
    Subscriber,
    dead_key,
    dedupe_key,
    position_key,
    retry_key,
)

__all__ = ["DEFAULT_MAX_BUFFERED", "Hub", "MemoryBroker"]

logger = logging.getLogger("tidings")

#: Messages a subscriber may fall behind before the hub disconnects it.
DEFAULT_MAX_BUFFERED = 1_000_000

_HUBS: weakref.WeakValueDictionary[str, Hub] = weakref.WeakValueDictionary()


class Hub:
    """The shared state of one in-process broker. All methods are synchronous."""

    def __init__(self, name: str = "", max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        self.name = name
        self.max_buffered = max_buffered
        #: While True, new connections fail with ConnectionRefusedError.
        self.refusing = False
        #: A glob, like an ACL user's ``&pattern``: while set, SUBSCRIBE or PUBLISH
        #: of a channel that does not match it (and PSUBSCRIBE of a pattern that is
        #: not that glob) is refused with ``NOPERM``, the whole command, as Redis does.
        self.allowed_channels: str | None = None
        self._channels: dict[str, set[_MemorySubscriber]] = {}
        #: The logs of durable channels (Redis: one stream per channel).
        self._logs: dict[str, _Log] = {}
        #: Dead-letter streams, by key.
        self._dead: dict[str, _Log] = {}
        #: Named consumers' checkpoints (Redis: plain keys), by key.
        self.positions: dict[str, str] = {}
        # Idempotency keys remembered (Redis: keys with an expiry) -> until when.
        self._dedupe: dict[str, float] = {}
        # Groups' schedules of delayed retries (Redis: sorted sets): [(due ms, payload)].
        self._retries: dict[str, list[tuple[int, bytes]]] = {}
        self._patterns: dict[str, tuple[Callable[[str], bool], set[_MemorySubscriber]]] = {}
        self._connections: set[_MemorySubscriber | _MemoryPublisher] = set()

    @classmethod
    def named(cls, name: str) -> Hub:
        """The hub shared by every ``memory://NAME`` store with this name."""
        hub = _HUBS.get(name)
        if hub is None:
            hub = _HUBS[name] = cls(name)
        return hub

    # -- the broker's commands -------------------------------------------------------

    def check_allowed(self, names: Sequence[str], *, patterns: bool = False) -> None:
        """Refuse a command naming a channel (or pattern) outside `allowed_channels`.

        Raises:
            ReplyError: ``NOPERM``, as Redis answers an ACL user.
        """
        allowed = self.allowed_channels
        if allowed is None:
            return
        matches = compile_glob(allowed)
        if any((name != allowed) if patterns else not matches(name) for name in names):
            raise ReplyError(
                f"memory://{self.name}: NOPERM this user has no permissions to access "
                "one of the channels used as arguments",
                "NOPERM",
            )

    def publish(self, channel: str, payload: bytes) -> int:
        """Deliver to every matching subscription; return how many there were."""
        received = 0
        subscribers = self._channels.get(channel)
        if subscribers:
            message = (channel, payload)
            for subscriber in tuple(subscribers):
                subscriber.push(message)
            received = len(subscribers)
        if self._patterns:
            for matches, subscribers in tuple(self._patterns.values()):
                if matches(channel):
                    for subscriber in tuple(subscribers):
                        subscriber.push((channel, payload))
                    received += len(subscribers)
        return received

    def append(
        self,
        channel: str,
        payload: bytes,
        retention: Retention,
        dedupe: Dedupe | None = None,
        *,
        live: bool = True,
    ) -> tuple[str | None, int]:
        """XADD (trimmed to ``retention``) and PUBLISH ``"<id> <payload>"``, at once
        (``live=False``: no PUBLISH, as a producer that only writes the stream); with
        ``dedupe``, nothing at all if its key is remembered (see `Publisher.append`)."""
        if dedupe is not None and not self._remember(dedupe_key(channel, dedupe.key), dedupe):
            return None, 0
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = _Log()
        now = time.time_ns() // 1_000_000
        entry = log.add(payload, now)
        log.trim(retention, now)
        if not live:
            return entry, 0
        return entry, self.publish(channel, b"%s %s" % (entry.encode(), payload))

    def _remember(self, key: str, dedupe: Dedupe) -> bool:
        """SET key NX PX window: True if the key was not remembered (now it is)."""
        now = time.monotonic()
        until = self._dedupe.get(key)
        if until is not None and until > now:
            return False
        if len(self._dedupe) >= 1024:  # forget the expired ones now and then
            self._dedupe = {k: t for k, t in self._dedupe.items() if t > now}
        self._dedupe[key] = now + dedupe.window
        return True

    def read(self, channel: str, start: str, count: int) -> list[Entry]:
        """XRANGE channel start + COUNT count."""
        log = self._logs.get(channel)
        return log.read(parse_id(start), count) if log is not None else []

    def tail(self, channel: str) -> str | None:
        """The last id of a channel's log, None when it has none."""
        log = self._logs.get(channel)
        return format_id(log.ids[-1]) if log is not None and log.ids else None

    def marks(self, channels: Sequence[str]) -> list[LogMark | None]:
        """XINFO STREAM's counts of each channel's log."""
        found: list[LogMark | None] = []
        for channel in channels:
            log = self._logs.get(channel)
            found.append(None if log is None else log.mark())
        return found

    def delete_log(self, channel: str) -> bool:
        """DEL the log of a channel (fault injection); True if there was one."""
        return self._logs.pop(channel, None) is not None

    def trim_log(self, channel: str, keep: int) -> None:
        """XTRIM channel MAXLEN keep (fault injection: a reader away too long)."""
        log = self._logs.get(channel)
        if log is not None:
            drop = max(len(log.ids) - keep, 0)
            del log.ids[:drop]
            del log.payloads[:drop]

    # Consumer groups, as Redis keeps them: a group's position in the log, and its
    # pending entries (id -> [consumer, when handed out (ms), deliveries]).

    def _group(self, channel: str, group: str) -> _Group:
        log = self._logs.get(channel)
        found = log.groups.get(group) if log is not None else None
        if found is None:
            raise ReplyError(
                f"memory://{self.name}: NOGROUP No such key {channel!r} or consumer group "
                f"{group!r}",
                "NOGROUP",
            )
        return found

    def group_create(self, channel: str, group: str, start: str) -> bool:
        """XGROUP CREATE channel group start MKSTREAM."""
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = _Log()
        if group in log.groups:
            return False
        tail = log.ids[-1] if log.ids else (0, 0)
        log.groups[group] = _Group(tail if start == "$" else parse_id(start))
        return True

    def group_read(self, channel: str, group: str, consumer: str, count: int) -> list[Entry]:
        """XREADGROUP GROUP group consumer COUNT count STREAMS channel >."""
        found = self._group(channel, group)
        log = self._logs[channel]
        entries = log.read_after(found.last, count)
        now = _now()
        for entry_id, _ in entries:
            found.pending[parse_id(entry_id)] = [consumer, now, 1]
        if entries:
            found.last = parse_id(entries[-1][0])
        found.consumers[consumer] = now
        return entries

    def group_claim(
        self, channel: str, group: str, consumer: str, min_idle: float, start: str, count: int
    ) -> Claimed:
        """XAUTOCLAIM channel group consumer min_idle start COUNT count, with each
        claimed entry's delivery count."""
        found = self._group(channel, group)
        found.consumers[consumer] = _now()
        log = self._logs[channel]
        due = _now() - round(min_idle * 1000)
        jobs: list[Job] = []
        lost: list[str] = []
        ids = sorted(i for i in found.pending if i >= parse_id(start))
        for entry_id in ids:
            if len(jobs) == count:
                return Claimed(jobs, lost, format_id(entry_id))
            state = found.pending[entry_id]
            if state[1] > due:
                continue
            payload = log.get(entry_id)
            if payload is None:
                del found.pending[entry_id]
                lost.append(format_id(entry_id))
                continue
            state[0], state[1], state[2] = consumer, _now(), state[2] + 1
            jobs.append((format_id(entry_id), payload, state[2]))
        return Claimed(jobs, lost, "0-0")

    def group_ack(self, channel: str, group: str, ids: Sequence[str]) -> int:
        """XACK channel group id..."""
        log = self._logs.get(channel)
        found = log.groups.get(group) if log is not None else None
        if found is None:
            return 0
        return sum(found.pending.pop(parse_id(i), None) is not None for i in ids)

    def group_release(
        self, channel: str, group: str, consumer: str, jobs: Sequence[tuple[str, int]], idle: float
    ) -> None:
        """XCLAIM channel group consumer 0 id... IDLE idle RETRYCOUNT n JUSTID."""
        found = self._group(channel, group)
        for entry_id, deliveries in jobs:
            state = found.pending.get(parse_id(entry_id))
            if state is not None:
                state[0], state[1], state[2] = consumer, _now() - round(idle * 1000), deliveries

    def group_leave(self, channel: str, group: str, consumer: str) -> bool:
        """XGROUP DELCONSUMER, if nothing is pending for the consumer."""
        log = self._logs.get(channel)
        found = log.groups.get(group) if log is not None else None
        if found is None:
            return True
        if any(state[0] == consumer for state in found.pending.values()):
            return False
        found.consumers.pop(consumer, None)
        return True

    def group_prune(self, channel: str, group: str, idle: float, keep: str) -> int:
        """XGROUP DELCONSUMER every consumer but ``keep`` idle past ``idle`` seconds
        that holds nothing."""
        log = self._logs.get(channel)
        found = log.groups.get(group) if log is not None else None
        if found is None:
            return 0
        held = {state[0] for state in found.pending.values()}
        since = _now() - round(idle * 1000)
        gone = [
            consumer
            for consumer, seen in found.consumers.items()
            if consumer != keep and consumer not in held and seen < since
        ]
        for consumer in gone:
            del found.consumers[consumer]
        return len(gone)

    def pending(self, channel: str, group: str) -> dict[str, tuple[str, int]]:
        """A group's pending entries: id -> (consumer, deliveries) (for tests)."""
        return {
            format_id(i): (state[0], state[2])
            for i, state in sorted(self._group(channel, group).pending.items())
        }

    def consumers(self, channel: str, group: str) -> set[str]:
        """The consumers a group knows (for tests)."""
        return set(self._group(channel, group).consumers)

    def group_retry(
        self,
        channel: str,
        group: str,
        consumer: str,
        entry_id: str,
        payload: bytes,
        delay: float,
    ) -> bool:
        """If ``consumer`` holds the entry: ZADD the group's schedule (due after
        ``delay``), then XACK, at once."""
        held = self._group(channel, group).pending.get(parse_id(entry_id))
        if held is None or held[0] != consumer:
            return False
        schedule = self._retries.setdefault(retry_key(channel, group), [])
        schedule.append((_now() + round(delay * 1000), payload))
        schedule.sort(key=lambda item: item[0])
        self.group_ack(channel, group, [entry_id])
        return True

    def group_due(
        self, channel: str, group: str, count: int, retention: Retention
    ) -> tuple[int, float | None]:
        """Append the due retries of a group's schedule (at most ``count``)."""
        schedule = self._retries.get(retry_key(channel, group), [])
        now = _now()
        moved = 0
        while schedule and schedule[0][0] <= now and moved < count:
            _, payload = schedule.pop(0)
            self.append(channel, payload, retention)
            moved += 1
        return moved, (max(schedule[0][0] - now, 0) / 1000 if schedule else None)

    def add_dead(
        self, channel: str, fields: Sequence[tuple[str, bytes]], retention: Retention
    ) -> str:
        """XADD <channel>:dead (trimmed to ``retention``) with these fields."""
        key = dead_key(channel)
        log = self._dead.get(key)
        if log is None:
            log = self._dead[key] = _Log()
        now = _now()
        entry = log.add(dict(fields), now)
        log.trim(retention, now)
        return entry

    def dead_letters(self, channel: str) -> list[tuple[str, dict[str, bytes]]]:
        """The entries of a channel's dead-letter stream, oldest first."""
        log = self._dead.get(dead_key(channel))
        return [] if log is None else log.read((0, 0), len(log.ids))

    def read_dead(self, channel: str, count: int, start: str = "+") -> list[DeadEntry]:
        """XREVRANGE <channel>:dead start - COUNT count."""
        log = self._dead.get(dead_key(channel))
        if log is None:
            return []
        end = len(log.ids) if start == "+" else bisect.bisect_right(log.ids, parse_id(start))
        return [
            (format_id(log.ids[i]), dict(log.payloads[i]))
            for i in range(end - 1, max(end - count, 0) - 1, -1)
        ]

    def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        """DEL <channel>:dead (returning its length), or XDEL <channel>:dead id..."""
        key = dead_key(channel)
        log = self._dead.get(key)
        if log is None:
            return 0
        if ids is None:
            del self._dead[key]
            return len(log.ids)
        removed = 0
        for entry_id in {parse_id(i) for i in ids}:
            index = bisect.bisect_left(log.ids, entry_id)
            if index < len(log.ids) and log.ids[index] == entry_id:
                del log.ids[index]
                del log.payloads[index]
                removed += 1
        return removed

    def stream_info(self, key: str) -> StreamInfo | None:
        """XLEN, and the first and last ids, of a log or a dead-letter stream."""
        log = self._logs.get(key) or self._dead.get(key)
        if log is None:
            return None
        ids = log.ids
        return StreamInfo(
            len(ids), format_id(ids[0]) if ids else None, format_id(ids[-1]) if ids else None
        )

    def group_info(self, channel: str) -> list[GroupInfo]:
        """XINFO GROUPS, and XINFO CONSUMERS of each, of a channel's log."""
        log = self._logs.get(channel)
        if log is None:
            return []
        found = []
        for name, group in log.groups.items():
            held = [state[0] for state in group.pending.values()]
            consumers = tuple(
                ConsumerInfo(consumer, held.count(consumer), None)
                for consumer in sorted(set(group.consumers) | set(held))
            )
            lag = len(log.ids) - bisect.bisect_right(log.ids, group.last)
            found.append(GroupInfo(name, consumers, len(group.pending), lag, format_id(group.last)))
        return found

    def scan_streams(self, match: str) -> list[str]:
        """SCAN 0 MATCH match TYPE stream, to the end."""
        matches = compile_glob(match)
        return sorted(key for key in (*self._logs, *self._dead) if matches(key))

    def numsub(self, channels: Sequence[str]) -> dict[str, int]:
        """PUBSUB NUMSUB."""
        return {name: len(self._channels.get(name, ())) for name in channels}

    def numpat(self) -> int:
        """PUBSUB NUMPAT."""
        return len(self._patterns)

    def active_channels(self, pattern: str | None = None) -> list[str]:
        """PUBSUB CHANNELS [pattern]."""
        if pattern is None:
            return list(self._channels)
        matches = compile_glob(pattern)
        return [name for name in self._channels if matches(name)]

    # -- fault injection ---------------------------------------------------------------

    def kill_connections(self, reason: str = "connection killed by the memory hub") -> int:
        """Break every open connection, as ``CLIENT KILL`` would; return how many."""
        connections = tuple(self._connections)
        for connection in connections:
            connection.break_(reason)
        return len(connections)

    # -- bookkeeping used by the connections -------------------------------------------

    def _connect(self, connection: _MemorySubscriber | _MemoryPublisher) -> None:
        if self.refusing:
            raise ConnectionRefusedError(f"memory hub {self.name!r} is refusing connections")
        self._connections.add(connection)

    def _disconnect(self, connection: _MemorySubscriber | _MemoryPublisher) -> None:
        self._connections.discard(connection)
        if isinstance(connection, _MemorySubscriber):
            self._unsubscribe(connection, list(connection.channels))
            self._punsubscribe(connection, list(connection.patterns))

    def _subscribe(self, subscriber: _MemorySubscriber, channels: Sequence[str]) -> None:
        for name in channels:
            self._channels.setdefault(name, set()).add(subscriber)
            subscriber.channels.add(name)

    def _unsubscribe(self, subscriber: _MemorySubscriber, channels: Sequence[str]) -> None:
        for name in channels:
            subscribers = self._channels.get(name)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._channels[name]
            subscriber.channels.discard(name)

    def _psubscribe(self, subscriber: _MemorySubscriber, patterns: Sequence[str]) -> None:
        for pattern in patterns:
            entry = self._patterns.get(pattern)
            if entry is None:
                entry = self._patterns[pattern] = (compile_glob(pattern), set())
            entry[1].add(subscriber)
            subscriber.patterns.add(pattern)

    def _punsubscribe(self, subscriber: _MemorySubscriber, patterns: Sequence[str]) -> None:
        for pattern in patterns:
            entry = self._patterns.get(pattern)
            if entry is not None:
                entry[1].discard(subscriber)
                if not entry[1]:
                    del self._patterns[pattern]
            subscriber.patterns.discard(pattern)

    def __repr__(self) -> str:
        return (
            f"<Hub {self.name!r} channels={len(self._channels)} "
            f"patterns={len(self._patterns)} connections={len(self._connections)}>"
        )


class _MemoryConnection:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.broken: str | None = None
        self._on_break: anyio.Event | None = None
        hub._connect(self)  # type: ignore[arg-type]

    def break_(self, reason: str) -> None:
        if self.broken is None:
            self.broken = reason
            self.hub._disconnect(self)  # type: ignore[arg-type]
            if self._on_break is not None:
                self._on_break.set()

    async def wait_broken(self) -> None:
        """Sleep until the connection breaks, then raise."""
        if self.broken is None:
            self._on_break = anyio.Event()
            await self._on_break.wait()
        self.check()

    def check(self) -> None:
        if self.broken is not None:
            raise anyio.BrokenResourceError(self.broken)

    async def aclose(self) -> None:
        self.break_("closed")
        await checkpoint()


class _MemorySubscriber(_MemoryConnection, Subscriber):
    def __init__(self, hub: Hub) -> None:
        self.channels: set[str] = set()
        self.patterns: set[str] = set()
        # Written by publishers (any task), swapped out whole by the reader.
        self._inbox: list[Message] = []
        self._wakeup: anyio.Event | None = None
        # Messages taken from the inbox, and handed to deliver, since connecting;
        # a barrier waits until everything in the inbox at its call is delivered.
        self._taken = 0
        self._delivered = 0
        self._barriers: list[tuple[int, anyio.Event, Callable[[], None]]] = []
        super().__init__(hub)

    def push(self, message: Message) -> None:
        inbox = self._inbox
        inbox.append(message)
        if len(inbox) > self.hub.max_buffered:
            lost = len(inbox)
            inbox.clear()
            logger.warning(
                "memory hub %r disconnected a subscriber %d messages behind "
                "(max_buffered=%d); those messages are lost",
                self.hub.name,
                lost,
                self.hub.max_buffered,
            )
            self.break_(f"subscriber fell {lost} messages behind (max_buffered)")
        if self._wakeup is not None:
            self._wakeup.set()

    def break_(self, reason: str) -> None:
        super().break_(reason)
        if self._wakeup is not None:
            self._wakeup.set()
        for _, passed, _ in self._barriers:
            passed.set()

    async def run(self, deliver: Deliver) -> None:
        # What was pushed before a kill is delivered first, as a socket's buffered
        # bytes are read before its EOF.
        while True:
            if not self._inbox:
                self.check()
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                self._wakeup = None
                continue
            batch, self._inbox = self._inbox, []
            self._taken += len(batch)
            await deliver(batch)
            self._delivered += len(batch)
            if self._barriers:
                self._pass_barriers()
            # One checkpoint per batch, so a flood cannot starve other tasks.
            await checkpoint()

    def _pass_barriers(self) -> None:
        waiting = []
        for barrier in self._barriers:
            target, passed, on_answer = barrier
            if target <= self._delivered:
                on_answer()  # here, in the reader, before the next batch
                passed.set()
            else:
                waiting.append(barrier)
        self._barriers = waiting

    async def barrier(self, on_answer: Callable[[], None]) -> None:
        self.check()
        target = self._taken + len(self._inbox)
        if target <= self._delivered:
            on_answer()
            await checkpoint()
            return
        passed = anyio.Event()
        self._barriers.append((target, passed, on_answer))
        await passed.wait()
        self.check()

    async def _command(
        self,
        apply: Callable[[_MemorySubscriber, Sequence[str]], None],
        names: Sequence[str],
        check: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        # Either the whole command happens or, if cancelled, none of it.
        await checkpoint_if_cancelled()
        self.check()
        if check is not None:
            check(names)
        apply(self, names)
        await cancel_shielded_checkpoint()

    async def subscribe(self, channels: Sequence[str]) -> None:
        await self._command(self.hub._subscribe, channels, self.hub.check_allowed)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        await self._command(self.hub._unsubscribe, channels)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        await self._command(
            self.hub._psubscribe,
            patterns,
            lambda names: self.hub.check_allowed(names, patterns=True),
        )

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        await self._command(self.hub._punsubscribe, patterns)


#: A publish on memory:// is always a cancellation point, and a schedule point at
#: least once every this many publishes. Yielding on every one would cost three task
#: switches per message (publisher, reader, actor); this lets batches form while a
#: publishing loop still cannot starve other tasks.
SCHEDULE_EVERY = 64


class _MemoryPublisher(_MemoryConnection, Publisher):
    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self._unyielded = 0

    async def run(self) -> None:
        await self.wait_broken()  # there are no replies to read: they are immediate

    async def publish(self, channel: str, payload: bytes) -> int:
        await checkpoint_if_cancelled()
        self.check()
        if self.hub.allowed_channels is not None:
            self.hub.check_allowed((channel,))
        received = self.hub.publish(channel, payload)
        self._unyielded += 1
        if self._unyielded >= SCHEDULE_EVERY:
            self._unyielded = 0
            await cancel_shielded_checkpoint()
        return received

    async def append(
        self, channel: str, payload: bytes, retention: Retention, dedupe: Dedupe | None = None
    ) -> tuple[str | None, int]:
        await checkpoint_if_cancelled()
        self.check()
        if self.hub.allowed_channels is not None:
            self.hub.check_allowed((channel,))
        appended = self.hub.append(channel, payload, retention, dedupe)
        await cancel_shielded_checkpoint()
        return appended

    async def send_many(self, items: Sequence[Outgoing]) -> list[Sent | ReplyError]:
        # All at once, as one pipelined write reaches Redis: no other task runs
        # between two of them.
        await checkpoint_if_cancelled()
        self.check()
        hub = self.hub
        outcomes: list[Sent | ReplyError] = []
        for channel, payload, retention, dedupe in items:
            try:
                if hub.allowed_channels is not None:
                    hub.check_allowed((channel,))
                if retention is None:
                    outcomes.append((None, hub.publish(channel, payload)))
                else:
                    outcomes.append(hub.append(channel, payload, retention, dedupe))
            except ReplyError as exc:
                outcomes.append(exc)
        await cancel_shielded_checkpoint()
        return outcomes

    async def read(self, channel: str, start: str, count: int) -> list[Entry]:
        await checkpoint()
        self.check()
        return self.hub.read(channel, start, count)

    async def tail(self, channel: str) -> str | None:
        await checkpoint()
        self.check()
        return self.hub.tail(channel)

    async def load_position(self, channel: str, consumer: str) -> str | None:
        await checkpoint()
        self.check()
        return self.hub.positions.get(position_key(channel, consumer))

    async def save_position(self, channel: str, consumer: str, entry_id: str) -> None:
        await checkpoint_if_cancelled()
        self.check()
        self.hub.positions[position_key(channel, consumer)] = entry_id
        await cancel_shielded_checkpoint()

    async def group_create(self, channel: str, group: str, start: str) -> bool:
        await self._command((channel,))
        return self.hub.group_create(channel, group, start)

    async def group_read(self, channel: str, group: str, consumer: str, count: int) -> list[Entry]:
        await self._command((channel,))
        return self.hub.group_read(channel, group, consumer, count)

    async def group_claim(
        self, channel: str, group: str, consumer: str, min_idle: float, start: str, count: int
    ) -> Claimed:
        await self._command((channel,))
        return self.hub.group_claim(channel, group, consumer, min_idle, start, count)

    async def group_ack(self, channel: str, group: str, ids: Sequence[str]) -> int:
        await self._command((channel,))
        return self.hub.group_ack(channel, group, ids)

    async def group_release(
        self, channel: str, group: str, consumer: str, jobs: Sequence[tuple[str, int]], idle: float
    ) -> None:
        await self._command((channel,))
        self.hub.group_release(channel, group, consumer, jobs, idle)

    async def group_leave(self, channel: str, group: str, consumer: str) -> bool:
        await self._command((channel,))
        return self.hub.group_leave(channel, group, consumer)

    async def group_prune(self, channel: str, group: str, idle: float, keep: str) -> int:
        await self._command((channel,))
        return self.hub.group_prune(channel, group, idle, keep)

    async def group_retry(
        self,
        channel: str,
        group: str,
        consumer: str,
        entry_id: str,
        payload: bytes,
        delay: float,
    ) -> bool:
        await self._command((channel,))
        return self.hub.group_retry(channel, group, consumer, entry_id, payload, delay)

    async def group_due(
        self, channel: str, group: str, count: int, retention: Retention
    ) -> tuple[int, float | None]:
        await self._command((channel,))
        return self.hub.group_due(channel, group, count, retention)

    async def add_dead(
        self, channel: str, fields: Sequence[tuple[str, bytes]], retention: Retention
    ) -> str:
        await self._command((dead_key(channel),))
        return self.hub.add_dead(channel, fields, retention)

    async def read_dead(self, channel: str, count: int, start: str = "+") -> list[DeadEntry]:
        await self._command((dead_key(channel),))
        return self.hub.read_dead(channel, count, start)

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        await self._command((dead_key(channel),))
        return self.hub.delete_dead(channel, ids)

    async def marks(self, channels: Sequence[str]) -> list[LogMark | None]:
        await self._command(channels)
        return self.hub.marks(channels)

    async def stream_info(self, key: str) -> StreamInfo | None:
        await self._command((key,))
        return self.hub.stream_info(key)

    async def group_info(self, channel: str) -> list[GroupInfo]:
        await self._command((channel,))
        return self.hub.group_info(channel)

    async def scan_streams(self, match: str) -> list[str]:
        await checkpoint()
        self.check()
        return self.hub.scan_streams(match)

    async def _command(self, keys: Sequence[str]) -> None:
        """Before a command on keys: a checkpoint, then fail as Redis would (a lost
        connection, or keys outside ``allowed_channels``)."""
        await checkpoint()
        self.check()
        if self.hub.allowed_channels is not None:
            self.hub.check_allowed(keys)

    async def numsub(self, channels: Sequence[str]) -> dict[str, int]:
        await checkpoint()
        self.check()
        return self.hub.numsub(channels)

    async def numpat(self) -> int:
        await checkpoint()
        self.check()
        return self.hub.numpat()

    async def channels(self, pattern: str | None = None) -> list[str]:
        await checkpoint()
        self.check()
        return self.hub.active_channels(pattern)


def _now() -> int:
    """The wall clock in milliseconds, as Redis tells idle times."""
    return time.time_ns() // 1_000_000


class _Group:
    """One consumer group of a log."""

    __slots__ = ("consumers", "last", "pending")

    def __init__(self, last: StreamId) -> None:
        #: The id of the last entry handed out.
        self.last = last
        #: id -> [consumer, when handed out (ms), deliveries]
        self.pending: dict[StreamId, list[Any]] = {}
        #: consumer -> when it last read or claimed (ms)
        self.consumers: dict[str, int] = {}


class _Log:
    """One durable channel's entries, oldest first (a Redis stream, in process)."""

    __slots__ = ("added", "groups", "ids", "last", "payloads")

    def __init__(self) -> None:
        self.ids: list[StreamId] = []
        self.payloads: list[Any] = []
        self.groups: dict[str, _Group] = {}
        #: Entries ever added, and the id given last (a log that lost its entries
        #: still remembers them, as Redis's stream does).
        self.added = 0
        self.last: StreamId = (0, 0)

    def mark(self) -> LogMark:
        return LogMark(
            self.added,
            len(self.ids),
            format_id(self.ids[0]) if self.ids else None,
            format_id(self.last) if self.added else None,
        )

    def get(self, entry_id: StreamId) -> Any:
        """The payload of an entry, None if it is not (or no longer) in the log."""
        index = bisect.bisect_left(self.ids, entry_id)
        if index < len(self.ids) and self.ids[index] == entry_id:
            return self.payloads[index]
        return None

    def read_after(self, last: StreamId, count: int) -> list[Entry]:
        first = bisect.bisect_right(self.ids, last)
        return [
            (format_id(self.ids[i]), self.payloads[i])
            for i in range(first, min(first + count, len(self.ids)))
        ]

    def add(self, payload: Any, now: int) -> str:
        # Ids never go back, like Redis's (not even past entries trimmed away).
        last = self.last
        entry = (last[0], last[1] + 1) if self.added and last[0] >= now else (now, 0)
        self.added += 1
        self.last = entry
        self.ids.append(entry)
        self.payloads.append(payload)
        return format_id(entry)

    def trim(self, retention: Retention, now: int) -> None:
        drop = 0
        if retention.max_len is not None:
            drop = max(drop, len(self.ids) - retention.max_len)
        if retention.max_age is not None:
            oldest = (now - int(retention.max_age * 1000), 0)
            drop = max(drop, bisect.bisect_left(self.ids, oldest))
        if drop:
            del self.ids[:drop]
            del self.payloads[:drop]

    def read(self, start: StreamId, count: int) -> list[Any]:
        first = bisect.bisect_left(self.ids, start)
        return [
            (format_id(self.ids[i]), self.payloads[i])
            for i in range(first, min(first + count, len(self.ids)))
        ]


class MemoryBroker(Broker):
    """Connections to one `Hub`."""

    system = "memory"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.url = f"memory://{hub.name}"

    async def open_subscriber(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Subscriber:
        await checkpoint()
        return _MemorySubscriber(self.hub)

    async def open_publisher(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Publisher:
        await checkpoint()
        return _MemoryPublisher(self.hub)
