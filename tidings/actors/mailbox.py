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
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

import anyio

__all__ = ["Mailbox", "Overflow"]

T = TypeVar("T")
Overflow = Literal["drop", "block"]


class Mailbox(Generic[T]):
    """Batches of messages for one actor; bounded by the number of messages."""

    __slots__ = (
        "_pending",
        "_recv",
        "_send",
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
        # Every batch holds at least one message and at most max_pending messages
        # wait, so the stream never holds more than max_pending batches: a send on
        # it can never block.
        self._send, self._recv = anyio.create_memory_object_stream[list[T]](max_pending)
        self._pending = 0
        self._space: anyio.Event | None = None
        #: True from the first drop until the actor empties the mailbox.
        self.overflowing = False
        #: True once closed: puts drop everything.
        self.closed = False
        #: Messages ever queued, and ever taken out: the position of a message is
        #: its ordinal among ``routed``, which is how a registration added later
        #: knows which messages came before it.
        self.routed = 0
        self.taken = 0

    @property
    def pending(self) -> int:
        """Messages waiting to be taken by the actor."""
        return self._pending

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
        self._send.send_nowait(items)
        self._pending += len(items)
        self.routed += len(items)
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
            self._send.send_nowait(chunk)
            self._pending += len(chunk)
            self.routed += len(chunk)
        return 0

    def _took(self, batch: list[T]) -> list[T]:
        self._pending -= len(batch)
        self.taken += len(batch)
        if self._pending == 0:
            self.overflowing = False
        if self._space is not None:
            self._space.set()
            self._space = None
        return batch

    async def get(self) -> list[T]:
        """The next batch.

        Raises:
            anyio.EndOfStream: the mailbox was closed and is empty.
        """
        return self._took(await self._recv.receive())

    def get_nowait(self) -> list[T]:
        """The next batch, without waiting.

        Raises:
            anyio.WouldBlock: nothing is waiting.
            anyio.EndOfStream: the mailbox was closed and is empty.
        """
        return self._took(self._recv.receive_nowait())

    def close(self) -> None:
        """No more puts; the actor drains what is queued, then sees EndOfStream."""
        self.closed = True
        self._send.close()
        if self._space is not None:
            self._space.set()

    def discard(self) -> int:
        """Close both ends, dropping whatever is still queued; return how many."""
        self.close()
        self._recv.close()
        discarded, self._pending = self._pending, 0
        return discarded

    def __repr__(self) -> str:
        return f"<Mailbox pending={self._pending}/{self.max_pending} overflow={self.overflow!r}>"
