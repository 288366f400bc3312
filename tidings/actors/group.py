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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from .._stats import Counters
from ..brokers.base import (
    COMMAND_ERRORS,
    CONNECTION_ERRORS,
    TRANSIENT_REPLIES,
    Claimed,
    Entry,
    Job,
    Publisher,
)
from ..errors import ReplyError
from ..policies.headers import NO_HEADERS
from ..policies.streams import Retention
from .callbacks import DEAF, Dispatcher, Meta, Outcome, Registration
from .dispatch import DECODE_ERRORS, Decode, decode_failed

__all__ = ["MAX_BATCH", "GroupMember", "Query"]

T = TypeVar("T")

#: The most entries a member takes per read or claim.
MAX_BATCH = 100
#: Entries taken by the first read, before the callbacks' pace is known.
FIRST_COUNT = 10
#: Claim calls per claim round at most (each scans a bounded part of the pending list).
CLAIMS_PER_ROUND = 10
#: How much of an error's text a dead letter keeps.
ERROR_TEXT = 1000

#: Runs a command on the handler's command connection (waiting for it, bounded).
Query = Callable[[str, Callable[[Publisher], Awaitable[Any]]], Awaitable[Any]]
#: Told ``(entry id, deliveries, error, dead-letter id)`` for each entry buried.
OnDead = Callable[[str, int, str, str], None]
#: Told ``(reason, ids)`` when pending entries were lost (``"trimmed"``) or the group
#: was recreated (``"deleted"``).
OnLost = Callable[[str, list[str]], None]


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
        dispatcher: Dispatcher,
        on_dead: OnDead,
        on_lost: OnLost,
        retention: Retention,
        ack_wait: float,
        max_deliver: int,
        claim_interval: float,
        stats: Counters,
        logger: logging.Logger,
        serial: int = 0,
    ) -> None:
        self.name = f"group {group!r} of {channel!r}" + (f" #{serial}" if serial else "")
        self.running = False
        #: The channel object its callbacks are given.
        self.owner = owner
        self.channel = channel
        self.group = group
        #: Its consumer name in the group (unique to this handler).
        self.consumer = consumer
        self._query = query
        self._registrations_for = registrations_for
        self._decode = decode
        # Counts each call's outcome and removes a callback that finished (raised
        # CallbackError); a failure is this member's to handle (the event is retried).
        self._dispatcher = dispatcher
        self._on_dead = on_dead
        self._on_lost = on_lost
        self._retention = retention
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self._claim_interval = claim_interval
        self._stats = stats
        self._logger = logger
        # Entries done, to acknowledge with the next XACK.
        self._acks: list[str] = []
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
        self._queue: list[Job] = []
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
        await self._flush()
        now = anyio.current_time()
        if now >= self._claim_at:
            self._claim_at = now + self._claim_interval
            await self._claim()
            self._more = True  # and read: entries may have come without a live copy
        if self._leaving:
            return
        if self._more:
            self._more = False
            count = self._count()
            entries: list[Entry] = await self._command(
                lambda p: p.group_read(self.channel, self.group, self.consumer, count)
            )
            if len(entries) == count:  # a full read: there may be more
                self._more = True  # (set, never cleared here: a wake-up during the
                # read is for entries it may not have seen)
            if entries:
                self.last_read = entries[-1][0]
                await self._work([(entry_id, payload, 1) for entry_id, payload in entries])
            return
        await self._idle(self._claim_at - anyio.current_time())

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
                self._on_lost("trimmed", claimed.lost)
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
        self._cursor = "0-0"
        if not created:  # another member did it (and reports it)
            self._logger.debug("%s: the group was recreated by another member", self.name)
            return
        self._logger.warning(
            "%s: the group was gone (its log deleted?): recreated, from %s on", self.name, start
        )
        self._on_lost("deleted", [])

    # -- entries ------------------------------------------------------------------------

    async def _work(self, jobs: list[Job]) -> None:
        """Handle entries in order; those not started when it leaves go back."""
        queue = self._queue
        queue.extend(jobs)
        while queue and not self._leaving:
            job = queue.pop(0)
            started = anyio.current_time()
            await self._handle(job)
            took = anyio.current_time() - started
            pace = self._pace
            self._pace = took if pace is None else pace + (took - pace) * 0.3
        await self._flush()
        if self._leaving:
            await self._hand_back()

    async def _hand_back(self) -> None:
        """Release the entries taken and not started (their delivery uncounted: it
        did not take place)."""
        if self._queue:
            jobs, self._queue[:] = list(self._queue), []
            await self._release([(i, deliveries - 1) for i, _, deliveries in jobs])

    def _count(self) -> int:
        """Entries to take at once: as many as it can start within a quarter of
        ``ack_wait`` at the callbacks' pace."""
        if self._pace is None:
            return FIRST_COUNT
        return max(1, min(MAX_BATCH, int(self.ack_wait / 4 / max(self._pace, 1e-6))))

    async def _handle(self, job: Job) -> None:
        entry_id, payload, deliveries = job
        owner, stats = self.owner, self._stats
        stats.replayed += 1  # read from the log (its live copy was superseded)
        if deliveries > 1:
            stats.redeliveries += 1
        if deliveries > self.max_deliver:
            # Claimed from members that never acknowledged it (they died, or hung):
            # running it again could take this one down too.
            await self._bury(
                job,
                f"delivered {deliveries - 1} times without an acknowledgement "
                f"(ack_wait={self.ack_wait:g}s); not run again",
            )
            return
        try:
            key, args, headers = self._decode(owner, payload)
        except DECODE_ERRORS as exc:
            decode_failed(stats, self._logger, self.name, exc)
            await self._bury(job, f"undecodable: {exc}")  # it never will be
            return
        called = failed = handed_back = counted = done = False
        error: Exception | None = None
        unfit: str | None = None
        meta = Meta(entry_id, deliveries, headers or NO_HEADERS)
        for registration in self._registrations_for(key):
            if not registration.active or registration.since == DEAF:
                continue  # removed, or its register() has not returned yet
            called = True
            raised: Exception | None = None
            try:
                result = registration.call(args, meta)
                if result is not None and inspect.isawaitable(result):
                    await self._flush()  # what is done is acknowledged before any wait
                    await result
            except Exception as exc:
                raised = exc
            outcome = self._dispatcher.account(
                registration, raised, self.name, failed=self._failed_job(entry_id, deliveries)
            )
            if outcome is Outcome.UNFIT:  # its schema refused the data: it never will fit
                unfit = str(raised)
            elif outcome in (Outcome.UNDELIVERED, Outcome.INTERRUPTED):
                handed_back = True  # an iterator gave it up: it goes back
                counted = counted or outcome is Outcome.INTERRUPTED
            elif outcome is Outcome.FAILED:
                failed, error = True, raised
            else:  # returned, or raised CallbackError (and was unregistered)
                done = True
        if not called:  # no callback of this group takes it (here): done with it
            stats.unrouted += 1
        if unfit is not None and not (done or failed or handed_back):
            await self._bury(job, f"does not fit the schema: {unfit}")
        elif failed and deliveries >= self.max_deliver:
            await self._bury(job, f"{type(error).__name__}: {error}")
        elif failed or (handed_back and not done):
            # (An iterator that gave up an event another callback of the group did
            # here does not make it run twice.) A delivery counts if a consumer had it.
            await self._release([(entry_id, deliveries if failed or counted else deliveries - 1)])
            self._claim_at = anyio.current_time()  # redeliver it soon, not in ack_wait
        else:
            self._acks.append(entry_id)

    def _failed_job(
        self, entry_id: str, deliveries: int
    ) -> Callable[[Registration, Exception, str], None]:
        """How a callback failure on this delivery is logged (the event is retried,
        or dead-lettered: the callback is not counted against a failure budget)."""

        def failed(registration: Registration, exc: Exception, where: str) -> None:
            self._logger.error(
                "%s: callback %r for %r failed on entry %s (delivery %d of %d)",
                where,
                registration.callback,
                registration.key,
                entry_id,
                deliveries,
                self.max_deliver,
                exc_info=exc,
            )

        return failed

    async def _flush(self) -> None:
        """Acknowledge the entries done (kept for the next try if the connection is
        down: an ack is never lost here, only late)."""
        if not self._acks:
            return
        ids, self._acks = self._acks, []
        try:
            await self._command(lambda p: p.group_ack(self.channel, self.group, ids))
        except ReplyError as exc:  # the group is gone (NOGROUP), or refused: moot
            self._logger.warning("%s: %d acks refused: %s", self.name, len(ids), exc)
            return
        except CONNECTION_ERRORS as exc:
            self._acks[:0] = ids
            self._logger.debug("%s: acks deferred: %s", self.name, exc)
            return
        self._stats.acked += len(ids)

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

    async def _bury(self, job: Job, error: str) -> None:
        """Move an entry to the dead-letter stream, then acknowledge it (in that
        order: a failure in between leaves it pending, and buried again later)."""
        entry_id, payload, deliveries = job
        fields = [
            ("envelope", payload),
            ("id", entry_id.encode()),
            ("group", self.group.encode()),
            ("consumer", self.consumer.encode()),
            ("deliveries", b"%d" % deliveries),
            ("error", error[:ERROR_TEXT].encode("utf-8", "replace")),
        ]
        try:
            dead_id: str = await self._command(
                lambda p: p.add_dead(self.channel, fields, self._retention)
            )
            await self._command(lambda p: p.group_ack(self.channel, self.group, [entry_id]))
        except COMMAND_ERRORS as exc:  # still pending: tried again later
            self._logger.error("%s: entry %s not dead-lettered: %s", self.name, entry_id, exc)
            return
        self._stats.dead_lettered += 1
        self._on_dead(entry_id, deliveries, error, dead_id)

    async def _command(self, command: Callable[[Publisher], Awaitable[T]]) -> T:
        result: T = await self._query(f"consumer group {self.group!r}", command)
        return result

    def __repr__(self) -> str:
        return f"<GroupMember {self.name!r} consumer={self.consumer!r}>"
