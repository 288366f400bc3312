"""A member of a consumer group: the work-queue delivery of a durable channel.

Each event of a durable channel goes to *one* member of a group, across processes
(Redis consumer groups). A member:

- **reads** entries the group has not handed out yet (``XREADGROUP``). It never
  blocks on the broker: the channel's live message says when there are new entries
  (the channel is subscribed anyway), and every claim round reads too, for
  producers that only write the log. So a member needs no connection of its own.
- **calls** the callbacks of its group whose pattern matches, in order, one entry at
  a time, and **acknowledges** the entry once they returned (``XACK``; acks are sent
  together, and always before the member waits on a callback).
- **hands back** an entry whose callback raised: it stays pending, marked idle past
  ``ack_wait``, so the next claim by any member redelivers it.
- **claims**, every claim interval, the entries pending for longer than
  ``ack_wait`` (a member that died, or is too slow), for any member
  (``XAUTOCLAIM``); each claim counts as a delivery.
- **buries** an entry that failed on its ``max_deliver``-th delivery (or cannot be
  decoded at all) in the dead-letter stream ``<channel>:dead``, acknowledges it,
  and tells the handler, which emits a ``dead_letter`` status event.

How many entries it takes per read adapts to how long its callbacks take: an entry
waits in hand while the ones before it run, and one that waited past ``ack_wait``
would be claimed by another member while still queued here.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..brokers.base import (
    COMMAND_ERRORS,
    CONNECTION_ERRORS,
    TRANSIENT_REPLIES,
    Claimed,
    Entry,
    Job,
    Publisher,
    ReadAhead,
)
from ..errors import ReplyError
from ..policies.backoff import Backoff
from ..policies.headers import DELIVERIES, NO_HEADERS, ORIGINAL_ID, REQUEUED_FOR
from ..policies.streams import Retention
from ..stats import Counters
from .callbacks import DEAF, Dispatcher, Meta, Outcome, Registration
from .dispatch import DECODE_ERRORS, Decode, decode_failed
from .failures import Failures, OnDead, last_words

__all__ = ["MAX_BATCH", "GroupMember", "Query"]

T = TypeVar("T")

#: The most entries a member takes per read or claim.
MAX_BATCH = 100
#: Seconds per entry past which a member watches the clock after every entry.
SLOW = 0.001
#: Entries taken by the first read, before the callbacks' pace is known.
FIRST_COUNT = 10
#: Claim calls per claim round at most (each scans a bounded part of the pending list).
CLAIMS_PER_ROUND = 10
#: A consumer idle for this many times ``ack_wait`` and holding nothing was left by a
#: killed process: any member removes it.
ABANDONED_AFTER = 10

#: Runs a command on the handler's command connection (waiting for it, bounded).
Query = Callable[[str, Callable[[Publisher], Awaitable[Any]]], Awaitable[Any]]
#: Told ``(reason, ids)`` when pending entries were lost (``"trimmed"``) or the group
#: was recreated (``"deleted"``).
OnLost = Callable[[str, list[str], "int | None"], None]

#: A retry to schedule: the entry, its ``(channel, event, data)``, its metadata, and
#: when it is due (``anyio.current_time()``).
_Retry = tuple[str, tuple[Any, ...], Meta, float]


class GroupMember:
    """This handler's membership of one consumer group of one durable channel.

    Supervised like an actor: `run()` works until `close()` (or
    `leave()`), may crash and be restarted, and keeps its state across.
    """

    def __init__(
        self,
        owner: Any,
        channel: str,
        group: str,
        consumer: str,
        *,
        query: Query,
        registrations_for: Callable[[str], tuple[Registration, ...]],
        decode: Decode,
        encode: Callable[[Any], bytes],
        dispatcher: Dispatcher,
        on_dead: OnDead,
        on_lost: OnLost,
        retention: Retention,
        ack_wait: float,
        max_deliver: int,
        claim_interval: float,
        retry_backoff: Backoff | None,
        stats: Counters,
        logger: logging.Logger,
        serial: int = 0,
    ) -> None:
        self.name = f"group {group!r} of {channel!r}" + (f" #{serial}" if serial else "")
        self.running = False
        #: The channel object its callbacks are given; the channel's broker name, the
        #: group, and its consumer name in the group (unique to this handler).
        self.owner, self.channel, self.group, self.consumer = owner, channel, group, consumer
        self._query = query
        self._registrations_for = registrations_for
        self._decode = decode
        # Counts each call's outcome and removes a callback that finished (raised
        # CallbackError); a failure is this member's to handle (the event is retried).
        self._dispatcher = dispatcher
        self._on_lost = on_lost
        self.ack_wait, self.max_deliver = ack_wait, max_deliver
        self._claim_interval = claim_interval
        # When the group's earliest scheduled retry is due (inf: none known).
        self._due_at = 0.0
        # Events the group had in hand at the last look (None: not looked yet).
        self._backlog: int | None = None
        self._stats = stats
        self._logger = logger
        # What becomes of a failed event: retried later, or buried.
        self._failures = Failures(
            self.name,
            channel,
            group,
            consumer,
            owner=owner,
            command=self._command,
            encode=encode,
            retry_backoff=retry_backoff,
            max_deliver=max_deliver,
            retention=retention,
            on_dead=on_dead,
            stats=stats,
            logger=logger,
        )
        # Entries done, to acknowledge with the next XACK.
        self._acks: list[str] = []
        # Retries asked while the connection was down, to schedule first thing.
        self._unscheduled: list[_Retry] = []
        # There may be entries to read (a live message came, or a read came back full).
        self._more = True
        self._wakeup = anyio.Event()
        self._claim_at = 0.0
        # Where the next claim scans the pending list from.
        self._cursor = "0-0"
        #: The last entry read: a group recreated (it was deleted) starts after it.
        self.last_read: str | None = None
        # Seconds an entry takes, on average (None until the first one).
        self._pace: float | None = None
        self._leaving = False
        self._left = anyio.Event()
        # Entries taken and not started yet, in order.
        self._queue: deque[Job] = deque()
        # The next read, asked before the entries in hand are worked (so the broker
        # answers meanwhile), with the acknowledgements that went with it.
        self._ahead: tuple[ReadAhead, list[str]] | None = None
        self._asked = 0
        # When the read ahead was asked, and when the entries being worked were.
        self._asked_at = self._taken_at = 0.0
        # Refusals logged already.
        self._said: set[str] = set()

    # -- what the handler calls ---------------------------------------------------------

    def wake(self) -> None:
        """New entries may be there (the channel's live message came)."""
        self._more = True
        if not self._wakeup.is_set():
            self._wakeup.set()

    async def leave(self) -> None:
        """Stop taking entries: hand back at once what was taken and not started,
        finish the one in hand, acknowledge what is done, and leave the group if
        nothing is pending for this member. Returns when done (the caller bounds
        the wait)."""
        self.close()
        await self._hand_back()  # now: not after the callback in hand
        await self._give_back_ahead()  # (its answer, taken here if the member has not)
        if self.running:
            await self._left.wait()

    def close(self) -> None:
        """Stop taking entries; `run()` leaves the group, then returns."""
        self._leaving = True
        self._wakeup.set()

    def discard(self) -> int:
        self.close()
        return 0

    # -- its task -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            # Cancelled (the handler's task tree is torn down), it cannot say goodbye:
            # what it holds is claimed by the others after ack_wait. Either way,
            # whoever waits for it to leave waits no more.
            self._left.set()

    async def _serve(self) -> None:
        while not self._leaving:
            try:
                await self._round()
            except ReplyError as exc:
                if exc.code == "NOGROUP":  # the log was deleted (or the group destroyed)
                    await self._recreate()
                elif exc.code in TRANSIENT_REPLIES:  # loading, moved ...: soon again
                    self._logger.info("%s: deferred: %s", self.name, exc)
                    await self._idle(0.1)
                else:  # refused (an ACL?): tried again each claim interval, said once
                    self._refused(exc)
                    await self._idle(self._claim_interval)
            except CONNECTION_ERRORS as exc:
                # The live stream was cut too: once subscribed again, the handler
                # wakes this member; until then it waits (never a busy loop).
                self._logger.debug("%s: connection lost: %s", self.name, exc)
                self._more = True
                await self._idle(self._claim_interval, at_least=0.05)
        await self._flush()
        await self._hand_back()
        await self._give_back_ahead()
        try:
            left = await self._command(
                lambda p: p.group_leave(self.channel, self.group, self.consumer)
            )
        except COMMAND_ERRORS as exc:  # its consumer entry stays, harmless
            self._logger.debug("%s: could not leave the group: %s", self.name, exc)
        else:
            if not left:
                self._logger.debug("%s: entries still pending, consumer kept", self.name)

    def _refused(self, exc: ReplyError) -> None:
        """Log a refusal at ERROR the first time, then quietly (it repeats every
        claim interval until the ACL changes)."""
        said = str(exc)
        if said not in self._said:
            self._said.add(said)
            self._logger.error(
                "%s: the broker refused a command (retried every %gs, logged once): %s",
                self.name,
                self._claim_interval,
                exc,
            )
        else:
            self._logger.debug("%s: refused again: %s", self.name, exc)

    async def _round(self) -> None:
        now = anyio.current_time()
        if now >= self._claim_at:
            self._claim_at = now + self._claim_interval
            await self._claim()
            await self._prune()
            await self._survey()
            self._more = True  # and read: entries may have come without a live copy
            self._due_at = min(self._due_at, now)  # (and other members' retries)
        if now >= self._due_at:
            await self._release_due()
        if self._leaving:
            return
        if self._more or self._ahead is not None:
            if self._ahead is None:
                await self._ask()
            entries, count = await self._answer()
            if len(entries) == count:  # a full read: there may be more
                self._more = True  # (set, never cleared here: a wake-up during the
                # read is for entries it may not have seen)
            if entries:
                self.last_read = entries[-1][0]
                now = anyio.current_time()
                if self._more and not self._leaving and now < min(self._claim_at, self._due_at):
                    # The next read goes out now, and the broker answers it while
                    # these are worked: the member never waits for the broker
                    # between two full batches. (Not when a claim round is due: its
                    # entries would wait for the claimed ones too.)
                    try:
                        await self._ask()
                    except CONNECTION_ERRORS as exc:  # these are worked all the same
                        self._logger.debug("%s: no read ahead: %s", self.name, exc)
                await self._work([(entry_id, payload, 1) for entry_id, payload in entries])
            return
        await self._flush()
        await self._idle(min(self._claim_at, self._due_at) - anyio.current_time())

    async def _ask(self) -> None:
        """Send the next read, with the acknowledgements due (one write)."""
        await self._schedule_deferred()
        count = self._count()
        ids, self._acks = self._acks, []
        # Cleared as the read goes out, not when its answer is taken: a wake-up while
        # a read asked ahead is in flight is for entries that read may not have seen.
        self._more = False
        try:
            ahead: ReadAhead = await self._command(
                lambda p: p.read_ahead(self.channel, self.group, self.consumer, count, ids)
            )
        except BaseException:
            self._acks[:0] = ids  # (acknowledging twice is harmless; never is not)
            self._more = True  # (and the read is still to be made)
            raise
        self._ahead = (ahead, ids)
        self._asked, self._asked_at = count, anyio.current_time()

    async def _answer(self) -> tuple[list[Entry], int]:
        """The entries of the read asked last, and how many it asked for."""
        assert self._ahead is not None
        (ahead, ids), self._ahead = self._ahead, None
        self._taken_at = self._asked_at
        try:
            acked, entries = await ahead.result()
        except CONNECTION_ERRORS:
            self._acks[:0] = ids
            raise
        except ReplyError as exc:
            if exc.code != "NOGROUP":  # (a group made again holds none of them)
                self._acks[:0] = ids  # the acks may not have been applied: again
            raise
        self._count_acks(acked, ids)
        return entries, self._asked

    async def _give_back_ahead(self) -> None:
        """Leaving: what a read asked ahead brought goes back (not started)."""
        if self._ahead is None:
            return
        try:
            entries, _ = await self._answer()
        except COMMAND_ERRORS as exc:  # claimed after ack_wait anyway
            self._logger.debug("%s: a read ahead not answered: %s", self.name, exc)
            return
        await self._flush()
        if entries:
            await self._release([(entry_id, 0) for entry_id, _ in entries])

    async def _idle(self, seconds: float, at_least: float = 0.0) -> None:
        """Wait for a wake-up, at most ``seconds``; ``at_least`` whatever comes."""
        if at_least:
            await anyio.sleep(at_least)
        if self._leaving:
            return
        self._wakeup = anyio.Event()
        if self._more:  # woken since it last looked
            return
        with anyio.move_on_after(max(seconds, 0.0)):
            await self._wakeup.wait()

    async def _claim(self) -> None:
        """Claim the entries pending past ``ack_wait``, for any member."""
        for _ in range(CLAIMS_PER_ROUND):
            claimed: Claimed = await self._command(
                lambda p: p.group_claim(
                    self.channel, self.group, self.consumer, self.ack_wait, self._cursor, MAX_BATCH
                )
            )
            self._cursor = claimed.next
            if claimed.lost:
                self._on_lost("trimmed", claimed.lost, len(claimed.lost))
            if claimed.jobs:
                self._logger.info(
                    "%s: claimed %d entries pending past ack_wait=%gs",
                    self.name,
                    len(claimed.jobs),
                    self.ack_wait,
                )
                await self._work(claimed.jobs)
            if claimed.next == "0-0" or self._leaving:
                return

    async def _survey(self) -> None:
        """Note what the group has in hand, for a ``deleted`` gap (see `Failures`)."""
        backlog = await self._failures.backlog()
        if backlog is not None:
            self._backlog = backlog

    async def _prune(self) -> None:
        await self._failures.prune_abandoned(self.ack_wait * ABANDONED_AFTER)

    async def _recreate(self) -> None:
        start = self.last_read or "$"
        try:
            created = await self._command(lambda p: p.group_create(self.channel, self.group, start))
        except ReplyError as exc:
            self._logger.error("%s: cannot recreate the group: %s", self.name, exc)
            await self._idle(self._claim_interval)
            return
        self._acks.clear()  # nothing is pending in a new group
        self._queue.clear()
        self._ahead = None
        self._cursor = "0-0"
        if not created:  # another member did it (and reports it)
            self._logger.debug("%s: the group was recreated by another member", self.name)
            return
        self._logger.warning(
            "%s: the group was gone (its log deleted?): recreated, from %s on", self.name, start
        )
        self._on_lost("deleted", [], self._backlog)

    # -- entries ------------------------------------------------------------------------

    async def _work(self, jobs: list[Job]) -> None:
        """Handle entries in order; those not started when it leaves go back. Their
        acknowledgements go with the next read (or before the member waits)."""
        queue = self._queue
        queue.extend(jobs)
        started, handled = anyio.current_time(), 0
        # What it holds must not idle past ack_wait here (claimed from under it,
        # run twice) when the callbacks turn out slower than their pace said: a
        # look at the clock every job while they are slow, every 16 while fast.
        kept, every = self._taken_at, 1 if self._pace is None or self._pace > SLOW else 16
        while queue and not self._leaving:
            await self._handle(queue.popleft())
            handled += 1
            if handled % every == 0 and anyio.current_time() - kept > self.ack_wait / 4:
                await self._keep_held()
                kept = anyio.current_time()
        if handled:  # the pace is the batch's: one clock read per batch, not per job
            took = (anyio.current_time() - started) / handled
            pace = self._pace
            self._pace = took if pace is None else pace + (took - pace) * 0.3
        if self._leaving:
            await self._flush()
            await self._hand_back()

    async def _hand_back(self) -> None:
        """Release the entries taken and not started (their delivery uncounted: it
        did not take place)."""
        if self._queue:
            jobs = list(self._queue)
            self._queue.clear()
            await self._release([(i, deliveries - 1) for i, _, deliveries in jobs])

    def _count(self) -> int:
        """Entries to take at once: as many as it can start within an eighth of
        ``ack_wait`` at the callbacks' pace (a read ahead waits for the batch before
        it: an entry is started within a quarter of ``ack_wait`` of being taken)."""
        if self._pace is None:
            return FIRST_COUNT
        return max(1, min(MAX_BATCH, int(self.ack_wait / 8 / max(self._pace, 1e-6))))

    async def _handle(self, job: Job) -> None:
        entry_id, payload, deliveries = job
        stats = self._stats
        stats.replayed += 1  # read from the log (its live copy was superseded)
        if deliveries > self.max_deliver:
            # Claimed from members that never acknowledged it (they died, or hung):
            # running it again could take this one down too.
            await self._failures.bury(
                job,
                f"delivered {deliveries - 1} times without an acknowledgement "
                f"(ack_wait={self.ack_wait:g}s); not run again",
            )
            return
        try:
            key, args, headers = self._decode(self.owner, payload)
        except DECODE_ERRORS as exc:
            decode_failed(stats, self._logger, self.name, exc)
            await self._failures.bury(job, f"undecodable: {exc}")  # it never will be
            return
        total, original = deliveries, entry_id
        if headers is not None:  # (rare: most events have none)
            requeued = headers.get(REQUEUED_FOR)
            if requeued is not None and requeued != self.group:
                stats.unrouted += 1  # another group's retry or requeued dead letter
                self._acks.append(entry_id)
                return
            if requeued is not None:
                # A retry is a new entry: it carries the deliveries before it, and
                # the id of the event's first entry (what its Event.id stays).
                total += _carried(headers)
                if total > deliveries:
                    original = headers.get(ORIGINAL_ID, entry_id)
        if total > 1:
            stats.redeliveries += 1
        # The hot loop of a work queue, spelled out in one frame: every callback of
        # the group in order; the metadata made only if one takes it (or fails).
        meta: Meta | None = None
        verdict: _Verdict | None = None
        called = done = False
        for registration in self._registrations_for(key):
            if not registration.active or registration.since == DEAF:
                continue  # removed, or its register() has not returned yet
            called = True
            try:
                if registration.takes_meta:
                    if meta is None:
                        meta = Meta(original, total, headers or NO_HEADERS)
                    result = registration.callback(*args, meta)
                else:
                    result = registration.callback(*args)
                if result is not None and inspect.isawaitable(result):
                    await self._flush()  # what is done is acknowledged before any wait
                    await self._await_job(job, result)
            except Exception as exc:
                if meta is None:
                    meta = Meta(original, total, headers or NO_HEADERS)
                if verdict is None:
                    verdict = _Verdict()
                failed = self._failures.logger_for(meta)
                outcome = self._dispatcher.account(registration, exc, self.name, failed=failed)
                verdict.add(outcome, exc)
                continue
            stats.delivered += 1
            done = True
        if called and verdict is None:
            self._acks.append(entry_id)  # (the common case: every callback returned)
            return
        verdict = verdict or _Verdict()
        verdict.called, verdict.done = called, verdict.done or done
        meta = meta or Meta(original, total, headers or NO_HEADERS)
        await self._conclude(job, verdict, meta, args)

    async def _await_job(self, job: Job, awaitable: Awaitable[Any]) -> None:
        """Await an async callback within ``ack_wait``, keeping what this member
        holds its own meanwhile (see `Failures.bounded()`)."""
        await self._failures.bounded(awaitable, self.ack_wait, lambda: [job, *self._held()])

    async def _keep_held(self) -> None:
        if self._leaving:
            return
        await self._failures.keep(list(self._queue))
        # (Its answer came before the one just awaited: it is in by now.)
        await self._failures.keep(self._held()[len(self._queue) :])

    def _held(self) -> list[Job]:
        """The entries this member holds and has not started: queued, and those of
        its read ahead (once they are in)."""
        if self._leaving:  # handed back, or being: a keep now would undo that
            return []
        ahead = self._ahead[0].ready() if self._ahead is not None else []
        return [*self._queue, *((entry_id, payload, 1) for entry_id, payload in ahead)]

    async def _conclude(
        self, job: Job, verdict: _Verdict, meta: Meta, args: tuple[Any, ...]
    ) -> None:
        """Acknowledge, hand back, retry later or dead-letter an event handled."""
        entry_id, _, deliveries = job
        total = meta.deliveries or deliveries
        if not verdict.called:  # no callback of this group takes it (here): done with it
            self._stats.unrouted += 1
        if verdict.unfit is not None and not verdict.settled:
            await self._failures.bury(job, f"does not fit the schema: {verdict.unfit}", total)
        elif verdict.error is not None and total >= self.max_deliver:
            await self._failures.bury(
                job, last_words(verdict.error, total, self.max_deliver), total
            )
        elif verdict.error is not None:
            delay = self._failures.delay(verdict.error, total)
            if delay > 0:
                await self._retry_later(entry_id, args, meta, delay)
            else:
                await self._release([(entry_id, deliveries)])
                self._claim_at = anyio.current_time()  # redeliver it soon, not in ack_wait
        elif verdict.handed_back and not verdict.done:
            # (An iterator that gave up an event another callback of the group did
            # here does not make it run twice.) A delivery counts if a consumer had it.
            await self._release([(entry_id, deliveries if verdict.counted else deliveries - 1)])
            self._claim_at = anyio.current_time()
        else:
            self._acks.append(entry_id)

    async def _retry_later(
        self, entry_id: str, args: tuple[Any, ...], meta: Meta, delay: float
    ) -> None:
        await self._flush()  # (what is done first: the copy's acknowledgement is atomic)
        await self._schedule((entry_id, args, meta, anyio.current_time() + delay))

    async def _schedule(self, retry: _Retry) -> None:
        """Schedule a retry, due at its time whenever it is asked; on a lost
        connection, kept and asked again before anything else (the entry stays
        this member's: another one claiming it in ``ack_wait`` would run it early)."""
        entry_id, args, meta, due = retry
        delay = max(due - anyio.current_time(), 0.0)
        try:
            scheduled = await self._failures.schedule(entry_id, args, meta, delay)
        except CONNECTION_ERRORS as exc:
            self._unscheduled.append(retry)
            self._logger.debug("%s: retry of %s deferred: %s", self.name, entry_id, exc)
            return
        if scheduled:
            self._due_at = min(self._due_at, due)

    async def _release_due(self) -> None:
        """Append the group's retries that are due to the log (any member may)."""
        moved, wait = await self._failures.release_due()
        now = anyio.current_time()
        self._due_at = now + wait if wait is not None else math.inf
        if moved:
            self._more = True

    async def _flush(self) -> None:
        """Acknowledge the entries done, and schedule the retries asked while the
        connection was down (each kept for the next try if it is down: an ack or a
        retry is never lost here, only late)."""
        await self._schedule_deferred()
        if not self._acks:
            return
        ids, self._acks = self._acks, []
        try:
            acked: int | ReplyError = await self._command(
                lambda p: p.group_ack(self.channel, self.group, ids)
            )
        except ReplyError as exc:
            acked = exc
        except CONNECTION_ERRORS as exc:
            self._acks[:0] = ids
            self._logger.debug("%s: acks deferred: %s", self.name, exc)
            return
        self._count_acks(acked, ids)

    async def _schedule_deferred(self) -> None:
        if self._unscheduled:
            retries, self._unscheduled = self._unscheduled, []
            for retry in retries:
                await self._schedule(retry)

    def _count_acks(self, acked: int | ReplyError, ids: list[str]) -> None:
        if not isinstance(acked, ReplyError):
            self._stats.acked += len(ids)
        elif acked.code in TRANSIENT_REPLIES:  # busy, loading...: sent again, later
            self._acks[:0] = ids
            self._logger.debug("%s: %d acks deferred: %s", self.name, len(ids), acked)
        else:  # the group is gone (NOGROUP), or refused for good: moot
            self._logger.warning("%s: %d acks refused: %s", self.name, len(ids), acked)

    async def _release(self, jobs: list[tuple[str, int]]) -> None:
        """Hand entries back for the next claim, by any member: ``(id, the delivery
        count it keeps)``."""
        try:
            await self._command(
                lambda p: p.group_release(
                    self.channel, self.group, self.consumer, jobs, self.ack_wait
                )
            )
        except COMMAND_ERRORS as exc:  # claimed after ack_wait anyway
            self._logger.debug("%s: entries not handed back: %s", self.name, exc)

    async def _command(self, command: Callable[[Publisher], Awaitable[T]]) -> T:
        result: T = await self._query(f"consumer group {self.group!r}", command)
        return result

    def __repr__(self) -> str:
        return f"<GroupMember {self.name!r} consumer={self.consumer!r}>"


class _Verdict:
    """What the callbacks of a group made of one event."""

    __slots__ = ("called", "counted", "done", "error", "handed_back", "unfit")

    def __init__(self) -> None:
        self.called = self.done = self.handed_back = self.counted = False
        #: A failure (or a `tidings.Retry`): the event is to run again, or die.
        self.error: Exception | None = None
        self.unfit: str | None = None

    @property
    def settled(self) -> bool:
        """A callback did it, failed on it or handed it back."""
        return self.done or self.error is not None or self.handed_back

    def add(self, outcome: Outcome, raised: Exception | None) -> None:
        if outcome is Outcome.UNFIT:  # its schema refused the data: it never will fit
            self.unfit = str(raised)
        elif outcome in (Outcome.UNDELIVERED, Outcome.INTERRUPTED):
            self.handed_back = True  # an iterator gave it up: it goes back
            self.counted = self.counted or outcome is Outcome.INTERRUPTED
        elif outcome in (Outcome.FAILED, Outcome.RETRY):
            if self.error is None or outcome is Outcome.FAILED:
                self.error = raised
        else:  # returned, or raised CallbackError (and was unregistered)
            self.done = True


def _carried(headers: Any) -> int:
    """The deliveries a retry's copy carries from before it (0: none, or unreadable)."""
    text = headers.get(DELIVERIES) if headers else None
    return int(text) if isinstance(text, str) and text.isascii() and text.isdigit() else 0
