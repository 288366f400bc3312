"""The actor of a durable channel: live messages carry log ids; gaps are read back.

A durable channel's live message is ``b"<id> <envelope>"``: the id of the entry its
publish stored in the channel's log. The actor turns ids into *positions* (ints that
order like the ids) and keeps, per registration, the position of the last event it
was given or passed over (``Registration.since``). That one rule gives every
guarantee: a registration is called for an event only if the event is past its
position, so nothing reaches it twice or out of order, whichever way the event
came (live, or read from the log).

Whenever the live stream may have missed something (the subscription was made or
made again, the mailbox overflowed, a registration starts in the past), the actor
is given a *catch-up* chore: before any more live messages it reads the log from the
lowest position of its registrations to the end, and dispatches what it reads. Live
messages queued meanwhile are then passed over (``superseded``). If the entry it
last dispatched is no longer in the log, events were lost in between (trimmed past
retention, the log deleted, or ids went back after a failover): it says so with a
``gap`` report, never silently.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import anyio

from ..brokers.base import COMMAND_ERRORS, CONNECTION_ERRORS, TRANSIENT_REPLIES, Entry
from ..errors import ReplyError
from ..policies.headers import NO_HEADERS, REQUEUED_FOR
from ..policies.streams import SEQUENCE_BITS, LogMark, position, position_id
from .base import Pending
from .callbacks import DEAF, NO_META, Meta, Registration, Unfinished
from .dispatch import DECODE_ERRORS, DispatchActor, decode_failed
from .mailbox import Mailbox

__all__ = ["CATCH_UP_BATCH", "DurableActor", "Upkeep"]

#: Entries asked for per read of the log by a catch-up.
CATCH_UP_BATCH = 1000


#: Told ``(reason, last id, next id or None)`` when events were lost.
OnGap = Callable[[str, str, str | None], None]


class Wakeable(Protocol):
    """What a durable channel tells of new entries (a consumer group's member)."""

    def wake(self) -> None:
        """New entries may be in the log."""


class DurableActor(DispatchActor):
    """Dispatches a durable channel's events in log order, reading back what the
    live stream missed."""

    __slots__ = (
        "_broken",
        "_hinted",
        "_mark",
        "_on_gap",
        "_only",
        "_read",
        "_registrations",
        "_reported",
        "_tail",
        "_takes_meta",
        "_until",
        "first",
        "groups",
        "last",
        "newest",
        "verify",
    )

    def __init__(
        self,
        name: str,
        mailbox: Mailbox[Any],
        *,
        registrations: Callable[[], Sequence[Registration]],
        read: Callable[[str, int], Awaitable[list[Entry]]],
        tail: Callable[[], Awaitable[str | None]],
        mark: Callable[[], Awaitable[LogMark | None]],
        on_gap: OnGap,
        takes_meta: Callable[[], bool] = lambda: True,
        **dispatch: Any,
    ) -> None:
        """``dispatch``: the arguments of `DispatchActor` (it is lazy)."""
        super().__init__(name, mailbox, lazy=True, **dispatch)
        self._registrations = registrations
        # Whether a registration takes a delivery's metadata (its id...).
        self._takes_meta = takes_meta
        self._read = read
        self._tail = tail
        self._mark = mark
        self._on_gap = on_gap
        #: The position of the last event dispatched (0: none yet).
        self.last = 0
        #: The newest position seen, live or in the log (0: none yet).
        self.newest = 0
        #: The first position dispatched (0: none yet).
        self.first = 0
        # The hint for a publisher that does not declare the channel durable: given.
        self._hinted = False
        #: Positions registrations start after that name entries (``since=<id>``, a
        #: consumer's checkpoint): the next catch-up checks they are in the log,
        #: and reports a gap with the reason given here if not.
        self.verify: dict[int, str] = {}
        # The mailbox position up to which live messages precede the gap a pending
        # catch-up is for.
        self._until = 0
        # The last position a gap was reported after (its entry is known gone).
        self._reported = 0
        # A pending catch-up is for a break in the live stream (all registrations).
        self._broken = False
        # The registrations a catch-up under way is for, when not all of them.
        self._only: set[Registration] | None = None
        #: The consumer groups this handler is a member of on the channel: woken
        #: by every live message (they read the entries themselves).
        self.groups: list[Wakeable] = []

    def catch_up(self, broken: bool = True) -> None:
        """Read the log before any more live messages (the caller starts a task,
        or wakes this one, so that it happens).

        ``broken``: the live stream may have missed events (a reconnect, an
        overflow), and every registration reads on from where it is. Otherwise
        only registrations that start in the past (``since=``) read the log; the
        others go on with the live stream, whose messages in hand count.

        The live messages received so far came before whatever may be missing: they
        are dispatched first, then the log is read from the last of them. (Asked
        again before it ran, the earlier point stands: messages received after it
        may come after the gap.)
        """
        if self.chores is None:
            self._until = self.mailbox.routed
        self._broken = self._broken or broken
        self.chores = self._catch_up
        self.mailbox.wake()

    def overflowed(self, dropped: int) -> bool:
        """The mailbox refused ``dropped`` live messages: read them from the log."""
        self._stats.superseded += dropped
        self.catch_up()
        return True

    def consume(self) -> Pending | None:
        if self._only is None and not self.groups and self.first:
            return self._consume_live()
        return self._consume()

    def _consume_live(self) -> Pending | None:
        """The common case, spelled out in one frame (a durable channel's live
        stream should cost what a plain one does): every registration takes the
        batch, no consumer group here, and each event is new. Ids are read as
        positions with no validation to repeat (an id `int()` cannot read is no
        entry id); whether a registration takes metadata is asked once per batch,
        and registrations are advanced once per batch (positions only grow, and
        nothing reads them while this loop runs)."""
        batch, stats, owner = self._batch, self._stats, self.owner
        decode, found, lookup = self._decode, self._found.get, self._registrations_for
        dispatch, name = self._dispatcher.dispatch, self.name
        wants_meta = self._takes_meta()
        start = last = done = self.last
        try:
            while (index := self._next) < len(batch):
                self._next = index + 1
                message: bytes = batch[index]
                entry_id, _, payload = message.partition(b" ")
                ms, _, seq = entry_id.partition(b"-")
                # (bytes.isdigit: ASCII digits only; no sign, space or underscore
                # int() would take; the lengths bound both parts to 64 bits.)
                if ms.isdigit() and seq.isdigit() and len(ms) < 20 and len(seq) < 20:
                    at = int(ms) << SEQUENCE_BITS | int(seq)
                else:
                    self._no_entry_id(message)
                    continue
                if at <= last:
                    stats.superseded += 1  # a catch-up read dispatched it already
                    continue
                last = at
                try:
                    key, args, headers = decode(owner, payload)
                except DECODE_ERRORS as exc:
                    where = self.where(owner, payload) if self.where is not None else name
                    decode_failed(stats, self._logger, where, exc)
                    done = at
                    continue
                if headers is not None and REQUEUED_FOR in headers:
                    stats.unrouted += 1  # a consumer group's (see `_dispatch`)
                    done = at
                    continue
                registrations = found(key)
                if registrations is None:
                    registrations = lookup(key)
                if not registrations:
                    stats.unrouted += 1
                    done = at
                    continue
                meta = (
                    Meta(entry_id.decode("ascii"), None, headers or NO_HEADERS)
                    if wants_meta
                    else NO_META
                )
                unfinished = dispatch(registrations, args, name, at, meta)
                if unfinished is not None:
                    return _ThenAdvance(unfinished, self, at)
                done = at
        finally:
            self.last = last
            if last > self.newest:
                self.newest = last
            if done > start:
                self._advance(done)
        return None

    def _consume(self) -> Pending | None:
        batch, stats = self._batch, self._stats
        while (index := self._next) < len(batch):
            self._next = index + 1
            message: bytes = batch[index]
            entry_id, _, payload = message.partition(b" ")
            try:
                at = position(entry_id)
            except ValueError:
                self._no_entry_id(message)
                continue
            if at > self.newest:
                self.newest = at
            if at <= self.last:
                stats.superseded += 1  # a catch-up read dispatched it already
                continue
            if self.groups:
                for member in self.groups:  # new entries: theirs to read
                    member.wake()
                if not self._registrations():
                    self.last = at
                    stats.superseded += 1  # only groups take it, from the log
                    continue
            pending = self._dispatch(entry_id.decode("ascii"), at, payload)
            if pending is not None:
                return pending
        return None

    def _no_entry_id(self, message: bytes) -> None:
        """A live message without an entry id: most likely a plain publish by a
        producer that does not declare the channel durable. Counted as a decode
        error; the first one says what is wrong, as the bare error would not."""
        where = self.where(self.owner, message) if self.where is not None else self.name
        if not self._hinted:
            self._hinted = True
            self._logger.warning(
                "%s: no entry id in a live message (%r): its publisher does not "
                "declare the channel durable (Channels(durable=[...]) on both sides), "
                "so it was not stored in the log and no consumer group gets it",
                where,
                message[:80],
            )
            self._stats.decode_errors += 1
            return
        decode_failed(
            self._stats, self._logger, where, ValueError(f"no entry id: {message[:80]!r}")
        )

    def _dispatch(self, entry_id: str, at: int, payload: bytes) -> Pending | None:
        """Dispatch one event at position ``at`` to the registrations before it
        (only those in `_only`, when a catch-up is for them alone)."""
        only = self._only
        if only is None:
            self.last = at
        if not self.first:
            self.first = at
        try:
            key, args, headers = self._decode(self.owner, payload)
        except DECODE_ERRORS as exc:
            where = self.where(self.owner, payload) if self.where is not None else self.name
            decode_failed(self._stats, self._logger, where, exc)
            self._advance(at)
            return None
        if headers is not None and REQUEUED_FOR in headers:
            # A consumer group's retry or requeued dead letter: that group's alone
            # (its members read it from the log); subscribers had the event already.
            self._stats.unrouted += 1
            self._advance(at)
            return None
        registrations = self._found.get(key)
        if registrations is None:
            registrations = self._registrations_for(key)
        if only is not None:
            registrations = tuple(r for r in registrations if r in only)
        # (A NamedTuple per event is a tenth of its cost: made when someone takes it.)
        meta = Meta(entry_id, None, headers or NO_HEADERS) if self._takes_meta() else NO_META
        unfinished = (
            self._dispatcher.dispatch(registrations, args, self.name, at, meta)
            if registrations
            else None
        )
        if not registrations:
            self._stats.unrouted += 1
        if unfinished is None:
            self._advance(at)
            return None
        return _ThenAdvance(unfinished, self, at)

    def behind(self) -> int | None:
        """The position of the registration furthest behind (None: none placed)."""
        return min((r.since for r in self._registrations() if r.since < DEAF), default=None)

    def _advance(self, at: int) -> None:
        """Every registration has now been given, or passed over, position ``at``."""
        for registration in self._only if self._only is not None else self._registrations():
            if registration.since < at:
                registration.since = at

    async def _consume_until(self, until: int) -> None:
        """Dispatch the live messages up to mailbox position ``until`` (no further)."""
        while True:
            end = until - self._base  # how many of this batch came before it
            if self._next < min(end, len(self._batch)):
                batch = self._batch
                self._batch = batch[:end]
                try:
                    pending = self.consume()
                finally:
                    self._batch = batch
                if pending is not None:
                    await self._interruptible(pending)
                continue
            if end <= len(self._batch):
                return
            try:
                self._take(self.mailbox.get_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return

    async def _catch_up(self) -> None:
        """Read the log from the lowest registration's position to its end."""
        self.chores = None  # set again if asked again meanwhile
        broken, self._broken = self._broken, False
        await self._consume_until(self._until)
        registrations = self._registrations()
        starting = []
        for registration in registrations:
            if registration.cursor is not None:  # starts in the past: from now on
                registration.since, registration.cursor = registration.cursor, None
                starting.append(registration)
        if not broken:  # the live stream is whole: only the newcomers read the log
            registrations = starting
        # From the registration furthest behind (the deaf ones wait for their
        # subscription, and another catch-up after it).
        cursor = min((r.since for r in registrations if r.since < DEAF), default=None)
        if cursor is None:
            return
        self._only = None if broken else set(registrations)
        try:
            await self._read_from(cursor, broken)
        finally:
            self._only = None

    async def _read_from(self, cursor: int, broken: bool) -> None:
        # Entries that must still be in the log: where the live stream stopped, and
        # the ids registrations asked to start after.
        expect = {p: reason for p, reason in self.verify.items() if p >= cursor}
        self.verify.clear()
        if broken and self.last and cursor <= self.last and self.last != self._reported:
            expect[self.last] = "trimmed"
        self._logger.debug("%s: catch-up after %s", self.name, position_id(cursor))
        while True:
            try:
                entries = await self._read(position_id(cursor), CATCH_UP_BATCH)
            except ReplyError as exc:
                if exc.code in TRANSIENT_REPLIES:  # busy, loading, moved: read again
                    self._logger.info("%s: log read deferred: %s", self.name, exc)
                    self._retry(broken, expect)
                    await anyio.sleep(0.1)
                    return
                # Not a stream, say: reading again will not help, and what it
                # held is out of reach.
                self._logger.error("%s: cannot read the log: %s", self.name, exc)
                self._report("missing", cursor, None)
                return
            except CONNECTION_ERRORS as exc:
                if self.mailbox.closed:
                    return  # stopping: nothing more to deliver
                # The connection is gone: the live stream was cut too, and is
                # resubscribed; read again (waiting for the connection, bounded).
                self._logger.info("%s: log read failed, retrying: %s", self.name, exc)
                self._retry(broken, expect)
                await anyio.sleep(0.01)  # never a busy loop, whatever the error
                return
            for expected, reason in sorted(expect.items()):
                reached = next((e for e in entries if position(e[0]) >= expected), None)
                if reached is not None:
                    if position(reached[0]) != expected:
                        if reason == "trimmed" and await self._never_trimmed():
                            reason = "deleted"
                        self._report(reason, expected, reached[0])
                    del expect[expected]
                elif len(entries) < CATCH_UP_BATCH:  # the log ends before it
                    if expected != self.last:  # not ours: the caller's id is not there
                        self._report("missing", expected, None)
                    else:
                        try:
                            tail = await self._tail()
                        except COMMAND_ERRORS:  # read it all again next time
                            self._retry(broken, expect)
                            await anyio.sleep(0.01)
                            return
                        self._gap(expected, tail)
                    del expect[expected]
            fresh = [
                (entry_id, at, payload)
                for entry_id, payload in entries
                if (at := position(entry_id)) > cursor
            ]
            if fresh and fresh[-1][1] > self.newest:
                self.newest = fresh[-1][1]
            for entry_id, at, payload in fresh:
                if self.mailbox.closed:
                    return  # stopping: the rest is not delivered
                self._stats.replayed += 1
                pending = self._dispatch(entry_id, at, payload)
                if pending is not None:
                    await self._interruptible(pending)
            if len(entries) < CATCH_UP_BATCH or not fresh:
                return
            cursor = fresh[-1][1]

    def _gap(self, last: int, tail: str | None) -> None:
        """The log ends (at ``tail``) before the entry last dispatched: say why."""
        if tail is None:
            self._report("deleted", last, None)
        else:
            # Ids went back: a failover to a replica that had not seen the latest
            # entries. Those are lost; new entries get ids from the new master's
            # clock, after the ones delivered (registrations keep their positions,
            # so a copy of an old event still in hand is not delivered twice).
            self._report("rewound", last, tail)

    async def _never_trimmed(self) -> bool:
        """Whether the log has never lost an entry: then one it does not hold was in
        another log, deleted since (this one was made by later appends)."""
        try:
            mark = await self._mark()
        except COMMAND_ERRORS:  # cannot tell: trimmed, as far as anyone knows
            return False
        return mark is not None and mark.removed == 0

    def replaced(self, before: LogMark, now: LogMark) -> None:
        """The log was deleted, and a new one made in its place, since ``before``
        (the upkeep's marks tell): its history is gone, whether or not this channel
        had delivered all of it."""
        self._on_gap("deleted", before.last_id or "0-0", now.first_id)

    def _retry(self, broken: bool, expect: dict[int, str]) -> None:
        """Read again later (what this read still had to check, checked then).

        A read for the newcomers alone (``since=``) gives them their place back, as
        a cursor, and deafness until then: the next catch-up reads their past from
        where this one got to, and no live message takes them past it meanwhile.
        """
        self._broken = self._broken or broken
        if not broken and self._only is not None:
            for registration in self._only:
                if registration.cursor is None and registration.since < DEAF:
                    registration.cursor, registration.since = registration.since, DEAF
        self.verify.update(expect)
        self.chores = self._catch_up

    def _report(self, reason: str, last: int, next_id: str | None) -> None:
        """A gap after position ``last``, reported once (until the channel moves on)."""
        if last == self.last:
            self._reported = last
        self._on_gap(reason, position_id(last), next_id)


class _ThenAdvance:
    """An event's unfinished dispatch, then its registrations' positions advance."""

    __slots__ = ("_actor", "_at", "_unfinished")

    def __init__(self, unfinished: Unfinished, actor: DurableActor, at: int) -> None:
        self._unfinished = unfinished
        self._actor = actor
        self._at = at

    async def complete(self) -> None:
        await self._unfinished.complete()
        self._actor._advance(self._at)

    def abandon(self) -> None:
        self._unfinished.abandon()


#: Seconds between checkpoints of named consumers' positions.
CHECKPOINT_INTERVAL = 1.0


class Upkeep:
    """The periodic chores of a handler's durable channels.

    About once a second it saves the positions of named consumers (``consumer=``):
    what a restart finds is at most a second old, and the events after it are
    delivered again (at least once; ``Event.id`` tells repeats apart). Every
    ``recheck_interval`` seconds it has the idle channels read their logs, for
    events stored without a live copy, and every channel check that its log is the
    one it was (not deleted and made again). Supervised like an actor (it has no mailbox:
    ``close`` just ends it).
    """

    def __init__(
        self,
        save: Callable[[str, str, str], Awaitable[None]],
        recheck: Callable[[], Awaitable[None]],
        recheck_interval: float,
        logger: logging.Logger,
        interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        self.name = "durable upkeep"
        self.running = False
        self._save = save
        self._recheck = recheck
        self._recheck_interval = recheck_interval
        self._logger = logger
        self._interval = min(interval, recheck_interval)
        #: registration -> [channel, consumer, position saved last]
        self._watched: dict[Registration, list[Any]] = {}
        self._closed = anyio.Event()

    def watch(self, registration: Registration, channel: str, consumer: str) -> None:
        """Checkpoint ``registration``'s position as ``consumer`` of ``channel`` (the
        first save is where it starts: a restart then resumes from there even if
        nothing came meanwhile)."""
        self._watched[registration] = [channel, consumer, -1]

    async def run(self) -> None:
        recheck_at = anyio.current_time() + self._recheck_interval
        while not self._closed.is_set():
            with anyio.move_on_after(self._interval):
                await self._closed.wait()
            await self.flush()
            if anyio.current_time() >= recheck_at and not self._closed.is_set():
                recheck_at = anyio.current_time() + self._recheck_interval
                await self._recheck()

    async def flush(self) -> None:
        """Save every position that moved since it was saved last."""
        for registration, entry in list(self._watched.items()):
            if not registration.active:
                del self._watched[registration]
                continue
            at = registration.since
            if at >= DEAF or at == entry[2]:
                continue
            try:
                await self._save(entry[0], entry[1], position_id(at))
            except ReplyError as exc:  # refused (an ACL?): the others may still go
                self._logger.warning("checkpoint of consumer %r refused: %s", entry[1], exc)
                continue
            except CONNECTION_ERRORS as exc:  # next time, then
                self._logger.debug("checkpoint of %r not saved: %s", entry[1], exc)
                return
            entry[2] = at

    def close(self) -> None:
        self._closed.set()

    def discard(self) -> int:
        self._closed.set()
        return 0
