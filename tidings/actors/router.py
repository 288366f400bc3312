"""The router: channel name -> actor, and the one hop from the reader to the actors.

Data flows from the reader (left) to the actors (right)::

    reader ──deliver(batch)──► Router ─┬─ handle_now(group) ──► actor, in place
                                       └─ put(group) ──► Mailbox ──► actor's task

A batch (everything one read of the connection brought) is grouped by channel in
one pass. An actor with no task (idle, mailbox empty) handles its group in place,
right here; it needs a task only when a callback awaits (or it crashed: its
supervisor decides), and the router asks for one. An actor that has a task gets its
group in its mailbox, in one put: a burst on one channel costs one put, not one per
message. Either way a channel's messages are handled in order.

A message for a channel with no actor (unsubscribed a moment ago) is counted
``unrouted``; what a full mailbox refuses is counted ``dropped``, and the first drop
of an *episode* (from the first drop until the actor has emptied the mailbox) is
reported once, not once per message (`starts_episode()`: the one slow-consumer
rule, which an iterator's buffer follows too).

A router with a *catch-all* actor (`Router.catch_all()`: a `PubSub`'s clients) gives
it every message, whatever its channel, as ``(channel, payload)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..brokers.base import Message
from ..stats import Counters
from .base import Actor
from .mailbox import Mailbox

__all__ = ["Router", "handle_in_place", "starts_episode"]

#: Told ``(channel, dropped)`` at the start of each slow-consumer episode.
OnSlowConsumer = Callable[[str, int], None]
#: Starts a task for an actor that needs one, given what it raised if it crashed.
Spawn = Callable[[Actor[Any], Exception | None], None]


class Router:
    """Actors by channel name (only the owning handler changes them)."""

    __slots__ = ("_actors", "_all", "_on_slow_consumer", "_spawn", "_stats")

    def __init__(self, stats: Counters, on_slow_consumer: OnSlowConsumer, spawn: Spawn) -> None:
        self._stats = stats
        self._on_slow_consumer = on_slow_consumer
        self._spawn = spawn
        self._actors: dict[str, Actor[Any]] = {}
        # The actor every message goes to, if this router has one route only.
        self._all: Actor[Any] | None = None

    def catch_all(self, actor: Actor[Any] | None) -> None:
        """Route every message to ``actor``, as ``(channel, payload)`` (None: stop)."""
        self._all = actor

    def __contains__(self, name: str) -> bool:
        return name in self._actors

    def __len__(self) -> int:
        return len(self._actors)

    def __iter__(self) -> Iterator[tuple[str, Actor[Any]]]:
        if self._all is not None:
            return iter(((CATCH_ALL, self._all),))
        return iter(tuple(self._actors.items()))

    def get(self, name: str) -> Actor[Any] | None:
        """The actor of ``name``, if it has one."""
        return self._actors.get(name)

    def add(self, name: str, actor: Actor[Any]) -> None:
        """Route messages for ``name`` to ``actor`` from now on."""
        self._actors[name] = actor

    def remove(self, name: str) -> Actor[Any] | None:
        """Stop routing ``name``; return its actor (its owner stops it)."""
        return self._actors.pop(name, None)

    async def deliver(self, batch: list[Message]) -> None:
        """Route a batch from the reader: one hop, one handling or put per channel."""
        stats = self._stats
        stats.received += len(batch)
        if self._all is not None:
            await self._give(CATCH_ALL, self._all, batch)
            return
        actors = self._actors
        if len(batch) == 1:  # a quiet connection: no grouping to do
            name, payload = batch[0]
            actor = actors.get(name)
            if actor is None:
                stats.unrouted += 1
            elif not actor.running:
                try:
                    rest = actor.handle_now([payload])
                except Exception as exc:
                    rest = crashed_in_place(actor, exc, self._spawn)
                if rest is not None:
                    await self._hand_over(name, actor, rest)
            else:
                await self._put(name, actor, [payload])
            return
        # One pass; a burst on one channel (the common case) makes one group.
        groups: dict[str, list[bytes]] = {}
        for name, payload in batch:
            group = groups.get(name)
            if group is None:
                groups[name] = [payload]
            else:
                group.append(payload)
        for name, payloads in groups.items():
            actor = actors.get(name)
            if actor is None:
                stats.unrouted += len(payloads)
            elif not actor.running:
                # Inline, not through handle_in_place: with 10,000 busy channels
                # most groups hold one message, and every call counts.
                try:
                    rest = actor.handle_now(payloads)
                except Exception as exc:
                    rest = crashed_in_place(actor, exc, self._spawn)
                if rest is not None:
                    await self._hand_over(name, actor, rest)
            else:
                await self._put(name, actor, payloads)

    async def _give(self, name: str, actor: Actor[Any], items: list[Any]) -> None:
        if actor.running:
            await self._put(name, actor, items)
            return
        rest = handle_in_place(actor, items, self._spawn)
        if rest:
            await self._put(name, actor, rest)

    async def _hand_over(self, name: str, actor: Actor[Any], rest: list[Any]) -> None:
        """The actor needs a task (unless it crashed, it has none yet); then its
        mailbox takes what it did not handle."""
        if not actor.running:
            self._spawn(actor, None)
        if rest:
            await self._put(name, actor, rest)

    async def _put(self, name: str, actor: Actor[Any], payloads: list[Any]) -> None:
        mailbox = actor.mailbox
        was_overflowing = mailbox.overflowing
        dropped = await mailbox.put(payloads)
        if dropped and not actor.overflowed(dropped):
            self._stats.dropped += dropped
            if starts_episode(mailbox, was_overflowing):
                self._on_slow_consumer(name, dropped)

    def put_nowait(self, name: str, items: list[Any]) -> int | None:
        """Queue local messages (status events) for an actor that is not lazy
        (whose messages always go through its mailbox), without waiting.

        Returns:
            How many were dropped, or None when ``name`` has no such actor.
        """
        actor = self._actors.get(name)
        if actor is None or actor.lazy:
            return None
        return actor.mailbox.put_nowait(items)


#: The name the catch-all actor goes by (in iteration and slow-consumer reports).
CATCH_ALL = "*"


def starts_episode(mailbox: Mailbox[Any], was_overflowing: bool) -> bool:
    """True when a drop from ``mailbox`` starts a slow-consumer episode (the one rule
    for every bounded buffer: a channel's mailbox, an iterator's).

    An episode runs from a mailbox's first drop until its consumer has emptied it:
    one report each, however many messages it drops. A closed mailbox (its channel
    is being dropped, or the handler is stopping) reports nothing.
    """
    return not was_overflowing and not mailbox.closed


def handle_in_place(actor: Actor[Any], items: list[Any], spawn: Spawn) -> list[Any] | None:
    """Let an actor with no task handle ``items`` in place, and ``spawn`` it a task
    if it needs one (a callback awaits, or it crashed).

    Returns:
        What is left for its mailbox (queue it after the task was asked for).
    """
    try:
        rest = actor.handle_now(items)
    except Exception as exc:
        return crashed_in_place(actor, exc, spawn)
    if rest is not None:
        spawn(actor, None)
    return rest


def crashed_in_place(actor: Actor[Any], exc: Exception, spawn: Spawn) -> list[Any]:
    """An actor crashed handling a batch in place: its supervisor takes the crash
    (restart or escalate); return the rest of the batch, for its mailbox."""
    rest = actor.give_back()
    spawn(actor, exc)
    return rest
