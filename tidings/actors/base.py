"""The actor loop: one task, one mailbox, state no other task touches."""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from typing import Generic, TypeVar

import anyio

from .._stats import Counters
from .mailbox import Mailbox

__all__ = ["Actor"]

T = TypeVar("T")


class Actor(abc.ABC, Generic[T]):
    """Takes batches from its mailbox and consumes them, message by message.

    The actor is restartable: ``run`` may be called again after it raised, and goes
    on with the message after the one that crashed it (the batch and the position
    in it survive: ``consume`` advances :attr:`_next` before handling a message), so
    a crash loses exactly one message.
    """

    def __init__(self, name: str, mailbox: Mailbox[T], stats: Counters) -> None:
        self.name = name
        self.mailbox = mailbox
        self._stats = stats
        # The batch being consumed and the index of its next message. (A list and
        # an index, not a deque: an idle deque costs 600 bytes per channel.)
        self._batch: list[T] = []
        self._next = 0
        # The mailbox position of the batch's first message, minus one: message
        # ``i`` of the batch is at position ``_base + i + 1``.
        self._base = 0

    @abc.abstractmethod
    async def consume(self) -> None:
        """Handle the rest of :attr:`_batch`, advancing :attr:`_next` before each message.

        This is the hot loop: one frame for a whole batch, no await unless a
        callback needs one.
        """

    @property
    def backlog(self) -> int:
        """Messages taken from the mailbox and not yet handled."""
        return len(self._batch) - self._next

    async def run(self) -> None:
        """Consume batches until the mailbox is closed and drained."""
        get = self.mailbox.get
        while True:
            if self._next < len(self._batch):
                await self.consume()
            try:
                self._take(await get())
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return  # drained after close(), or discarded by its supervisor

    async def drain(self) -> None:
        """Consume what is queued now, without waiting for more (used at shutdown)."""
        while True:
            await self.consume()
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
        A message whose async callback is interrupted is counted by ``consume``.
        """
        discarded = self.mailbox.discard() + self.backlog
        self._next = len(self._batch)
        return discarded

    async def _interruptible(self, pending: Awaitable[None]) -> None:
        """Await the rest of a dispatch; if the actor is stopped meanwhile, the
        message was never delivered: it counts as dropped."""
        try:
            await pending
        except BaseException:
            self._stats.dropped += 1
            raise

    def _take(self, batch: list[T]) -> None:
        self._batch, self._next = batch, 0
        self._base = self.mailbox.taken - len(batch)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} backlog={self.backlog} {self.mailbox!r}>"
