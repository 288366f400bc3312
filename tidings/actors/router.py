"""The router: channel name -> mailbox, and the one hop from the reader to the actors.

Data flows from the reader (left) to the actors (right)::

    reader ──deliver(batch)──► Router ──put(group)──► Mailbox ──► actor

A batch (everything one read of the connection brought) is grouped by channel in
one pass, and each group is put into its channel's mailbox at once: a burst on one
channel costs one put, not one per message. A message for a channel with no mailbox
(unsubscribed a moment ago) is counted ``unrouted``; what a full mailbox refuses is
counted ``dropped``, and the first drop of an *episode* (from the first drop until
the actor has emptied the mailbox) is reported once, not once per message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .._stats import Counters
from ..brokers.base import Message
from .mailbox import Mailbox

__all__ = ["Router"]

#: Told ``(channel, dropped)`` at the start of each slow-consumer episode.
OnSlowConsumer = Callable[[str, int], None]


class Router:
    """Mailboxes by channel name (only the owning handler changes them)."""

    __slots__ = ("_mailboxes", "_on_slow_consumer", "_stats")

    def __init__(self, stats: Counters, on_slow_consumer: OnSlowConsumer) -> None:
        self._stats = stats
        self._on_slow_consumer = on_slow_consumer
        self._mailboxes: dict[str, Mailbox[Any]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._mailboxes

    def __iter__(self) -> Iterator[tuple[str, Mailbox[Any]]]:
        return iter(tuple(self._mailboxes.items()))

    def get(self, name: str) -> Mailbox[Any] | None:
        """The mailbox of ``name``, if it has one."""
        return self._mailboxes.get(name)

    def add(self, name: str, mailbox: Mailbox[Any]) -> None:
        """Route messages for ``name`` to ``mailbox`` from now on."""
        self._mailboxes[name] = mailbox

    def remove(self, name: str) -> Mailbox[Any] | None:
        """Stop routing ``name``; return its mailbox (its owner closes it)."""
        return self._mailboxes.pop(name, None)

    async def deliver(self, batch: list[Message]) -> None:
        """Route a batch from the reader to the mailboxes: one hop, one put per channel."""
        stats = self._stats
        stats.received += len(batch)
        # One pass; a burst on one channel (the common case) makes one group.
        groups: dict[str, list[bytes]] = {}
        for name, payload in batch:
            group = groups.get(name)
            if group is None:
                groups[name] = [payload]
            else:
                group.append(payload)
        mailboxes = self._mailboxes
        for name, payloads in groups.items():
            mailbox = mailboxes.get(name)
            if mailbox is None:
                stats.unrouted += len(payloads)
                continue
            was_overflowing = mailbox.overflowing
            dropped = await mailbox.put(payloads)
            if dropped:
                stats.dropped += dropped
                if not was_overflowing and not mailbox.closed:
                    self._on_slow_consumer(name, dropped)

    def put_nowait(self, name: str, items: list[Any]) -> int | None:
        """Queue local messages (status events) without waiting.

        Returns:
            How many were dropped, or None when ``name`` has no mailbox.
        """
        mailbox = self._mailboxes.get(name)
        if mailbox is None:
            return None
        return mailbox.put_nowait(items)
