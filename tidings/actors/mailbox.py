"""A bounded mailbox that carries batches.

Data flows from the reader (left) to one actor (right)::

    reader ──put(batch)──► [ batch | batch | … ] ──get()──► actor

It is bounded in *messages*, not batches: ``max_pending`` is the most messages that
may wait in it. What happens when it is full is the ``overflow`` policy:

- ``"drop"``: the messages that do not fit are discarded; ``put`` returns how many,
  and the caller counts them and tells the application (a ``slow_consumer`` event).
  The reader never waits, so one slow channel cannot stall the others.
- ``"block"``: ``put`` waits for room. Nothing is discarded here, but the reader
  stops reading, every channel on the connection waits, and the broker buffers
  instead (Redis disconnects a subscriber past ``client-output-buffer-limit``).

A mailbox is a list of batches and two events created only while someone waits: an
idle one costs about 150 bytes, which is what lets 100,000 channels each keep one
(an anyio memory object stream costs kilobytes, idle or not).
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

__all__ = ["Mailbox", "Overflow"]

T = TypeVar("T")
Overflow = Literal["drop", "block"]


class Mailbox(Generic[T]):
    """Batches of messages for one actor; bounded by the number of messages."""

    __slots__ = (
        "_batches",
        "_discarded",
        "_pending",
        "_ready",
        "_space",
        "closed",
        "max_pending",
        "overflow",
        "overflowing",
        "routed",
        "taken",
    )

    def __init__(self, max_pending: int, overflow: Overflow = "drop") -> None:
        self.max_pending = max_pending
        self.overflow = overflow
        # Made when the first batch is queued: most mailboxes never queue one (their
        # actor handles messages in place).
        self._batches: list[list[T]] | None = None
        self._pending = 0
        # Set when a batch arrives (or the mailbox closes), for a waiting get().
        self._ready: anyio.Event | None = None
        # Set when the actor takes a batch (or the mailbox closes), for a blocked put().
        self._space: anyio.Event | None = None
        self._discarded = False
        #: True from the first drop until the actor empties the mailbox.
        self.overflowing = False
        #: True once closed: puts drop everything.
        self.closed = False
        #: Messages ever queued (or handled in place, by ``Actor.handle_now``), and ever
        #: taken out: the position of a message is its ordinal among ``routed``,
        #: which is how a registration added later knows which came before it.
        self.routed = 0
        self.taken = 0

    @property
    def pending(self) -> int:
        """Messages waiting to be taken by the actor."""
        return self._pending

    def _queue(self, items: list[T]) -> None:
        if self._batches is None:
            self._batches = [items]
        else:
            self._batches.append(items)
        self._pending += len(items)
        self.routed += len(items)
        if self._ready is not None:
            self._ready.set()
            self._ready = None

    def put_nowait(self, items: list[T]) -> int:
        """Queue what fits; return how many messages were dropped (all, once closed)."""
        if self.closed:
            return len(items)
        room = self.max_pending - self._pending
        if room <= 0:
            self.overflowing = True
            return len(items)
        dropped = 0
        if len(items) > room:
            dropped = len(items) - room
            items = items[:room]
            self.overflowing = True
        self._queue(items)
        return dropped

    async def put(self, items: list[T]) -> int:
        """Queue ``items`` under the overflow policy; return how many were dropped.

        In ``"drop"`` mode this never waits (and is no checkpoint). In ``"block"``
        mode a mailbox closed while the put waits drops what had not fit: its
        channel is gone, and the router must go on with the others.
        """
        if self.overflow == "drop":
            return self.put_nowait(items)
        while items:
            if self.closed:
                return len(items)
            room = self.max_pending - self._pending
            if room <= 0:
                if self._space is None:
                    self._space = anyio.Event()
                await self._space.wait()
                continue
            chunk, items = items[:room], items[room:]
            self._queue(chunk)
        return 0

    def unbypass(self, count: int) -> None:
        """Un-count the last ``count`` messages an actor was given in place (counted
        as routed and taken at once: ``Actor.handle_now``), to be queued after all."""
        self.routed -= count
        self.taken -= count

    def get_nowait(self) -> list[T]:
        """The next batch, without waiting.

        Raises:
            anyio.WouldBlock: nothing is waiting.
            anyio.EndOfStream: the mailbox was closed and is empty.
            anyio.ClosedResourceError: the mailbox was discarded.
        """
        batches = self._batches
        if not batches:
            if self._discarded:
                raise anyio.ClosedResourceError
            if self.closed:
                raise anyio.EndOfStream
            raise anyio.WouldBlock
        batch = batches.pop(0)
        self._pending -= len(batch)
        self.taken += len(batch)
        if self._pending == 0:
            self.overflowing = False
        if self._space is not None:
            self._space.set()
            self._space = None
        return batch

    async def get(self) -> list[T]:
        """The next batch (a checkpoint, as a receive should be).

        Raises:
            anyio.EndOfStream: the mailbox was closed and is empty.
            anyio.ClosedResourceError: the mailbox was discarded.
        """
        await checkpoint_if_cancelled()
        waited = False
        while True:
            try:
                batch = self.get_nowait()
            except anyio.WouldBlock:
                if self._ready is None:
                    self._ready = anyio.Event()
                await self._ready.wait()
                waited = True
                continue
            if not waited:
                await cancel_shielded_checkpoint()
            return batch

    def wake(self) -> None:
        """Make a waiting `get()` return an empty batch: the actor has work
        that is not in its mailbox."""
        if self._ready is not None:
            self._queue([])

    def close(self) -> None:
        """No more puts; the actor drains what is queued, then sees EndOfStream."""
        self.closed = True
        for waiting in (self._ready, self._space):
            if waiting is not None:
                waiting.set()
        self._ready = self._space = None

    def discard(self) -> int:
        """Close, dropping whatever is still queued; return how many messages."""
        self.close()
        self._discarded = True
        self._batches = None
        discarded, self._pending = self._pending, 0
        return discarded

    def __repr__(self) -> str:
        return f"<Mailbox pending={self._pending}/{self.max_pending} overflow={self.overflow!r}>"
