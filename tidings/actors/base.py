"""The actor loop: one task, one mailbox, state no other task touches."""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Awaitable
from typing import Generic, TypeVar

import anyio

from .mailbox import Mailbox

__all__ = ["Actor"]

T = TypeVar("T")


class Actor(abc.ABC, Generic[T]):
    """Takes batches from its mailbox and handles them one message at a time.

    The actor is restartable: ``run`` may be called again after it raised, and goes
    on with the messages after the one that crashed it (the backlog survives), so a
    crash loses exactly one message.
    """

    def __init__(self, name: str, mailbox: Mailbox[T]) -> None:
        self.name = name
        self.mailbox = mailbox
        self._backlog: deque[T] = deque()

    @abc.abstractmethod
    def handle(self, message: T) -> Awaitable[None] | None:
        """Handle one message; return an awaitable only if there is waiting to do."""

    async def run(self) -> None:
        """Handle messages until the mailbox is closed and drained."""
        backlog, handle, get = self._backlog, self.handle, self.mailbox.get
        while True:
            while backlog:
                pending = handle(backlog.popleft())
                if pending is not None:
                    await pending
            try:
                backlog.extend(await get())
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return  # drained after close(), or discarded by its supervisor

    async def drain(self) -> None:
        """Handle what is queued now, without waiting for more (used at shutdown)."""
        backlog = self._backlog
        while True:
            while backlog:
                pending = self.handle(backlog.popleft())
                if pending is not None:
                    await pending
            try:
                backlog.extend(self.mailbox.get_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                return

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} backlog={len(self._backlog)} {self.mailbox!r}>"
        )
