"""What a consumer group's member does with an event that failed.

A failed delivery (a callback raised, ran past ``ack_wait``, or raised
`tidings.Retry`) is run again later, or, past ``max_deliver``, buried in the
dead-letter stream. `Failures` holds that policy and the commands that carry it out,
for one member; the member decides *when* (`actors/group.py`).

- **Retry later.** The entry is acknowledged and a copy of its event scheduled for
  the group, due after the retry back-off's delay for that attempt (or the delay
  `Retry` asked for), on the broker, in one step (`Publisher.group_retry`). The copy
  carries the event's first id and its delivery count in headers, and names the group
  it is for (`REQUEUED_FOR`): other groups acknowledge it unrun, subscribers skip it.
- **Bury.** The entry goes to ``<channel>:dead`` with its envelope, id, group,
  consumer, delivery count and error, then is acknowledged (in that order: a failure
  in between leaves it pending, and buried again later).
- **Say it.** An expected retry is one INFO line; an unexpected error a WARNING, with
  its traceback on the event's first delivery only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from ..brokers.base import COMMAND_ERRORS, Job, Publisher
from ..errors import ReplyError, Retry
from ..policies.backoff import Backoff
from ..policies.headers import DELIVERIES, ORIGINAL_ID, REQUEUED_FOR
from ..policies.streams import Retention
from ..stats import Counters
from .callbacks import Meta, Registration, named

__all__ = ["ERROR_TEXT", "Failures"]

T = TypeVar("T")

#: How much of an error's text a dead letter keeps.
ERROR_TEXT = 1000
#: Due retries a member appends to the log per look.
DUE_BATCH = 100

#: Runs a command on the handler's command connection (waiting for it, bounded).
Command = Callable[[Callable[[Publisher], Awaitable[Any]]], Awaitable[Any]]
#: Told ``(entry id, deliveries, error, dead-letter id)`` for each entry buried.
OnDead = Callable[[str, int, str, str], None]


class Failures:
    """The failure policy of one member of one consumer group."""

    def __init__(
        self,
        name: str,
        channel: str,
        group: str,
        consumer: str,
        *,
        owner: Any,
        command: Command,
        encode: Callable[[Any], bytes],
        retry_backoff: Backoff | None,
        max_deliver: int,
        retention: Retention,
        on_dead: OnDead,
        stats: Counters,
        logger: logging.Logger,
    ) -> None:
        self.name = name
        self.channel = channel
        self.group = group
        self.consumer = consumer
        # The channel object (its name goes in a retry's envelope).
        self._owner = owner
        self._command = command
        self._encode = encode
        #: The delay before a failed event runs again (None: at once).
        self.retry_backoff = retry_backoff
        self.max_deliver = max_deliver
        self._retention = retention
        self._on_dead = on_dead
        self._stats = stats
        self._logger = logger

    def delay(self, error: Exception, attempt: int) -> float:
        """Seconds before an event that failed delivery ``attempt`` is run again (0:
        at once)."""
        if isinstance(error, Retry) and error.delay is not None:
            return float(error.delay)
        backoff = self.retry_backoff
        return backoff.delay(attempt) if backoff is not None else 0.0

    async def schedule(
        self, entry_id: str, args: tuple[Any, ...], meta: Meta, delay: float
    ) -> bool:
        """Acknowledge the entry and schedule a copy of it for this group, due in
        ``delay`` seconds; False if it is no longer this member's (another claimed
        it) or the broker refused (it stays pending, and is claimed after
        ``ack_wait`` instead).

        Raises:
            one of CONNECTION_ERRORS: ask again once connected (nothing was done).
        """
        headers = {
            **meta.headers,
            REQUEUED_FOR: self.group,
            ORIGINAL_ID: meta.id or entry_id,
            DELIVERIES: str(meta.deliveries),
        }
        _, event, data = args
        payload = self._encode(
            {"channel": self._owner.name, "event": event, "data": data, "headers": headers}
        )
        try:
            scheduled: bool = await self._command(
                lambda p: p.group_retry(
                    self.channel, self.group, self.consumer, entry_id, payload, delay
                )
            )
        except ReplyError as exc:
            self._logger.warning(
                "%s: entry %s not scheduled for a retry: %s", self.name, entry_id, exc
            )
            return False
        if not scheduled:
            self._logger.info(
                "%s: entry %s not scheduled for a retry: another member claimed it",
                self.name,
                entry_id,
            )
        return scheduled

    async def release_due(self) -> tuple[int, float | None]:
        """Append the group's retries that are due to the log (any member may).

        Returns:
            How many, and the seconds until the next is due (None: none scheduled).
        """
        due: tuple[int, float | None] = await self._command(
            lambda p: p.group_due(self.channel, self.group, DUE_BATCH, self._retention)
        )
        return due

    def logger_for(self, meta: Meta) -> Callable[[Registration, Exception, str], None]:
        """How a failure of a callback on this delivery is said (see the module)."""

        def failed(registration: Registration, exc: Exception, where: str) -> None:
            if isinstance(exc, Retry):
                self._logger.info(
                    "%s: %s asked to retry event %s (delivery %s of %d): %s",
                    where,
                    named(registration.callback),
                    meta.id,
                    meta.deliveries,
                    self.max_deliver,
                    exc,
                )
                return
            self._logger.warning(
                "%s: callback %s for %r failed on event %s (delivery %s of %d): %s",
                where,
                named(registration.callback),
                registration.key,
                meta.id,
                meta.deliveries,
                self.max_deliver,
                f"{type(exc).__name__}: {exc}",
                exc_info=exc if meta.deliveries == 1 else None,
            )

        return failed

    async def bounded(
        self, awaitable: Awaitable[Any], limit: float, held: Callable[[], list[Job]]
    ) -> None:
        """Await an async callback, cancelled once it runs past ``limit`` (the
        member's ``ack_wait``): a hung job costs its own delivery (failed: retried,
        or dead-lettered), not the group's. Meanwhile the entries ``held()`` names
        (the one in hand, those queued behind it) stay this member's: their idle
        time is reset every third of ``limit``, so that no other member claims them
        while they wait here.

        Raises:
            TimeoutError: it ran past ``limit``, and was cancelled.
        """
        failed: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep, limit / 3, held)
            with anyio.move_on_after(limit) as scope:
                try:
                    await awaitable
                except Exception as exc:  # raised as it is (not in an exception group)
                    failed = exc
            tg.cancel_scope.cancel()
        if failed is not None:
            raise failed
        if scope.cancelled_caught:
            raise TimeoutError(f"the callback ran past ack_wait={limit:g}s and was cancelled")

    async def _keep(self, every: float, held: Callable[[], list[Job]]) -> None:
        while True:
            await anyio.sleep(every)
            await self.keep(held())

    async def keep(self, held: list[Job]) -> None:
        """Reset the idle time of entries this member holds (delivery counts kept),
        so that no other member claims them while they wait here."""
        if not held:
            return
        jobs = [(entry_id, deliveries) for entry_id, _, deliveries in held]

        async def keep(publisher: Publisher) -> None:
            await publisher.group_release(self.channel, self.group, self.consumer, jobs, 0)

        try:
            await self._command(keep)
        except COMMAND_ERRORS as exc:  # claimed by others after ack_wait, then
            self._logger.debug("%s: entries in hand not kept: %s", self.name, exc)

    async def backlog(self) -> int | None:
        """What the group has in hand, pending or not handed out yet (None: the
        group is not there): if it is lost, that is what a ``deleted`` gap says
        went with it."""
        infos = await self._command(lambda p: p.group_info(self.channel))
        info = next((i for i in infos if i.name == self.group), None)
        return info.pending + (info.lag or 0) if info is not None else None

    async def prune_abandoned(self, idle: float) -> None:
        """Remove the consumers that killed processes left in the group: idle for
        ``idle`` seconds and holding nothing (a live member reads every claim
        interval, and what it holds is pending)."""
        removed = await self._command(
            lambda p: p.group_prune(self.channel, self.group, idle, self.consumer)
        )
        if removed:
            self._logger.info(
                "%s: removed %d consumers idle for over %gs and holding nothing",
                self.name,
                removed,
                idle,
            )

    async def bury(self, job: Job, error: str, deliveries: int | None = None) -> None:
        """Move an entry to the dead-letter stream, then acknowledge it.
        ``deliveries``: the event's own count, when it is a retry's copy."""
        entry_id, payload, count = job
        deliveries = deliveries or count
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


def last_words(error: Exception, deliveries: int, max_deliver: int) -> str:
    """A dead letter's error, for an event whose last delivery failed."""
    if isinstance(error, Retry):
        return f"asked to retry ({error}) on its last delivery ({deliveries} of {max_deliver})"
    return f"{type(error).__name__}: {error}"
