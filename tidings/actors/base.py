"""The actor loop: one mailbox, one behaviour, state no other task touches.

An actor runs in one of two ways, with the same observable order:

- **in its own task** (`Actor.run()`, started by its supervisor), taking batches
  from its mailbox and waiting for more;
- **in place** (`Actor.handle_now()`), called by the router with a batch while the
  actor has no task: its mailbox is empty, so nothing can come before that batch, and
  as long as every callback is synchronous the batch is handled to the end right there.
  The first callback that needs an await stops it: the rest of the batch (that awaited
  call first) needs a task, and the router asks the supervisor for one.

A *lazy* actor gives its task back (``run`` returns) once its mailbox is empty and
nothing in the last stretch awaited: an idle channel with synchronous callbacks
costs no task, however many there are (the Erlang ``hibernate`` idea).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio

from ..stats import Counters
from .mailbox import Mailbox

__all__ = ["Actor", "Pending"]

T = TypeVar("T")

_NOTHING: list[Any] = []


class Pending(Protocol):
    """The rest of one message's handling, which needs an await."""

    async def complete(self) -> None:
        """Finish handling the message."""

    def abandon(self) -> None:
        """The message will never be finished (its actor was stopped first)."""


class Actor(abc.ABC, Generic[T]):
    """Takes batches from its mailbox and consumes them, message by message.

    The actor is restartable: ``run`` may be called again after it raised, and goes
    on with the message after the one that crashed it (the batch and the position
    in it survive: ``consume`` advances `_next` before handling a message), so
    a crash loses exactly one message.
    """

    __slots__ = (
        "_base",
        "_batch",
        "_next",
        "_pending",
        "_stats",
        "chores",
        "lazy",
        "mailbox",
        "name",
        "running",
        "waiting",
    )

    def __init__(self, name: str, mailbox: Mailbox[T], stats: Counters, *, lazy: bool) -> None:
        self.name = name
        self.mailbox = mailbox
        self._stats = stats
        #: Gives its task back when idle (see the module's docstring).
        self.lazy = lazy
        #: True while a task runs it: the router then queues for it instead of
        #: calling `handle_now()` (set and cleared by its supervisor).
        self.running = False
        #: True while its task waits for mail (it has nothing in hand: `idle`).
        self.waiting = False
        # The batch being consumed and the index of its next message. (A list and
        # an index, not a deque: an idle deque costs 600 bytes per channel.) Never
        # mutated, only replaced: every idle actor can share one empty list.
        self._batch: list[T] = _NOTHING
        self._next = 0
        # The mailbox position of the batch's first message, minus one: message
        # ``i`` of the batch is at position ``_base + i + 1``.
        self._base = 0
        # A message whose handling awaits, taken over from handle_now by run.
        self._pending: Pending | None = None
        #: Work outside the mailbox that ``run`` does first (set it, then wake
        #: the mailbox or start a task): a durable channel's catch-up read.
        self.chores: Callable[[], Awaitable[None]] | None = None

    @abc.abstractmethod
    def consume(self) -> Pending | None:
        """Handle the rest of `_batch`, advancing `_next` before each message.

        This is the hot loop: one frame for a whole batch. It stops at the first
        message whose handling needs an await and returns that rest (``_next`` is
        already past the message); None when the batch is done.
        """

    @property
    def backlog(self) -> int:
        """Messages taken from the mailbox and not yet handled."""
        return len(self._batch) - self._next

    @property
    def idle(self) -> bool:
        """True when it has handled everything it was given and waits for more (or
        has no task): nothing queued, nothing in hand, no chore, no callback
        running. What `Runtime.all_idle()` (and so ``tidings.testing.settle()``)
        waits for."""
        return not (
            self.mailbox.pending
            or self.backlog
            or self._pending is not None
            or self.chores is not None
            or (self.running and not self.waiting)
        )

    def handle_now(self, batch: list[T]) -> list[T] | None:
        """Handle ``batch`` in place (no task runs this actor; its mailbox is empty).

        Returns:
            None when the whole batch was handled. Otherwise a message needs an
            await: start a task running `run()`, which finishes that message
            first, and queue the messages returned (the rest of the batch, not yet
            started) in the mailbox, under its bound and overflow policy.

        Raises:
            Exception: the behaviour crashed (on a message it has now skipped);
                supervise it like a crash in `run()`, and queue what
                `give_back()` returns.
        """
        if self.chores is not None:
            return batch  # its task does the chores first: queue all of it
        mailbox, count = self.mailbox, len(batch)
        # Positions advance as if the batch went through the mailbox.
        mailbox.routed += count
        mailbox.taken += count
        self._batch, self._next, self._base = batch, 0, mailbox.taken - count
        pending = self.consume()
        if pending is None:
            return None
        self._pending = pending
        return self.give_back()

    def overflowed(self, dropped: int) -> bool:
        """Its mailbox refused ``dropped`` messages: True if the actor gets them back
        by itself (a durable channel reads its log), False if they are lost."""
        return False

    def give_back(self) -> list[T]:
        """End the batch handled in place here, returning its messages not started.

        They were never in the mailbox, so they must go through it now: a batch
        handed over whole must not escape the mailbox's bound.
        """
        rest = self._batch[self._next :]
        if rest:
            self._batch = self._batch[: self._next]
            self.mailbox.unbypass(len(rest))
        return rest

    async def run(self) -> None:
        """Consume batches until the mailbox is closed and drained (or, when lazy,
        until there is nothing left to do)."""
        mailbox = self.mailbox
        awaited = False
        while True:
            # The message in hand first (a chore must not overtake it), then chores.
            pending, self._pending = self._pending, None
            if pending is not None:
                awaited = True
                await self._interruptible(pending)
                continue
            if self.chores is not None:
                await self.chores()
                continue  # asked again meanwhile? (a chore may reschedule itself)
            pending = self.consume()
            if pending is not None:
                awaited = True
                await self._interruptible(pending)
                continue
            try:
                batch = mailbox.get_nowait()
            except anyio.WouldBlock:
                if self.lazy and not awaited:
                    return  # idle, and nothing awaited lately: give the task back
                awaited = False
                self.waiting = True
                try:
                    batch = await mailbox.get()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                finally:
                    self.waiting = False
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return  # drained after close(), or discarded by its supervisor
            self._take(batch)

    async def drain(self) -> None:
        """Consume what is queued now, without waiting for more (used at shutdown)."""
        while True:
            pending, self._pending = self._pending, None
            if pending is None:
                pending = self.consume()
            if pending is not None:
                await self._interruptible(pending)
                continue
            try:
                self._take(self.mailbox.get_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return

    def close(self) -> None:
        """Take no more messages; ``run`` drains what is queued, then returns."""
        self.mailbox.close()

    def discard(self) -> int:
        """Close the mailbox and skip the backlog; return how many messages that was.

        It may be called from a callback of this very actor (one that unregisters
        the last callback of its channel): ``consume`` then ends its batch here.
        A message whose async callback is interrupted is counted by ``run``; one
        whose task never got to start it is abandoned and counted here.
        """
        discarded = self.mailbox.discard() + self.backlog
        self._next = len(self._batch)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.abandon()
            discarded += 1
        return discarded

    async def _interruptible(self, pending: Pending) -> None:
        """Finish a message; if the actor is stopped meanwhile, it was never
        delivered: it counts as dropped."""
        try:
            await pending.complete()
        except BaseException:
            self._stats.dropped += 1
            raise

    def _take(self, batch: list[T]) -> None:
        self._batch, self._next = batch, 0
        self._base = self.mailbox.taken - len(batch)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} backlog={self.backlog} {self.mailbox!r}>"
