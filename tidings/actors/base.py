"""The actor loop: one task, one mailbox, state no other task touches."""

from __future__ import annotations

import abc
from collections import deque
from typing import Generic, TypeVar

import anyio

from .mailbox import Mailbox

__all__ = ["Actor"]

T = TypeVar("T")


class Actor(abc.ABC, Generic[T]):
    """Takes batches from its mailbox and consumes them, message by message.

    The actor is restartable: ``run`` may be called again after it raised, and goes
    on with the messages after the one that crashed it (the backlog survives, and
    ``consume`` takes each message off it before handling it), so a crash loses
    exactly one message.
    """

    def __init__(self, name: str, mailbox: Mailbox[T]) -> None:
        self.name = name
        self.mailbox = mailbox
        self._backlog: deque[T] = deque()

    @abc.abstractmethod
    async def consume(self, backlog: deque[T]) -> None:
        """Handle every message of ``backlog``, taking each off before handling it.

        This is the hot loop: one frame for a whole batch, no await unless a
        callback needs one.
        """

    async def run(self) -> None:
        """Consume batches until the mailbox is closed and drained."""
        backlog, get = self._backlog, self.mailbox.get
        while True:
            if backlog:
                await self.consume(backlog)
            try:
                backlog.extend(await get())
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return  # drained after close(), or discarded by its supervisor

    async def drain(self) -> None:
        """Consume what is queued now, without waiting for more (used at shutdown)."""
        while True:
            await self.consume(self._backlog)
            try:
                self._backlog.extend(self.mailbox.get_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} backlog={len(self._backlog)} {self.mailbox!r}>"
        )
