"""Subscription rounds: what is wanted subscribed, and the one task that makes it so.

Callers never send a subscription command themselves: they change what is
wanted and wait for a *round* of the session's sync loop, the only task that
talks to the subscriber connection. A caller cancelled while waiting leaves no
command half-done (the loop carries on) and its facade rolls back what it
wanted; the next round then undoes it on the broker. Rounds run one at a time,
so each round's plan starts from what the previous ones confirmed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio
from anyio.lowlevel import checkpoint

from ..brokers.base import TRANSIENT_REPLIES, Broker, ConnectionLost, Subscriber
from ..errors import ReplyError
from ..policies.subscriptions import Plan, Subscriptions

__all__ = ["OnRefused", "OnSubscribed", "SubscriptionRounds"]

#: Told which channels and patterns the broker refused (they are no longer wanted).
OnRefused = Callable[[tuple[str, ...], tuple[str, ...], ReplyError], None]
#: Told the channels a round just subscribed (the broker confirmed them): anything
#: published from now on reaches this connection.
OnSubscribed = Callable[[tuple[str, ...]], None]


class SubscriptionRounds:
    """The subscriptions of one connection supervisor, and its sync loop's rounds."""

    def __init__(
        self,
        broker: Broker,
        *,
        on_subscribed: OnSubscribed,
        on_refused: OnRefused,
        logger: logging.Logger,
    ) -> None:
        self.broker = broker
        self._subscriptions = Subscriptions()
        self._on_subscribed = on_subscribed
        self._on_refused = on_refused
        self._logger = logger
        # The subscriber of the session under way (None between sessions).
        self._subscriber: Subscriber | None = None
        # Set when the subscriptions changed; the session's sync loop waits for it.
        self._sync_wanted: anyio.Event | None = None
        self._next_round = _Round()

    def start(self) -> None:
        """The supervisor runs (in an event loop now)."""
        self._sync_wanted = anyio.Event()

    def reset(self) -> None:
        """The supervisor is to run again: a fresh round for the waiters."""
        self._next_round = _Round()

    def connected(self, subscriber: Subscriber) -> None:
        """A session began on ``subscriber``: rounds go to it."""
        self._subscriber = subscriber

    def lost(self) -> None:
        """The session ended: nothing is subscribed on the broker now. Waiters of
        rounds that will not run return: what they wanted stays wanted, and the next
        connection subscribes it."""
        self._subscriber = None
        self._subscriptions.lost()
        released, self._next_round = self._next_round, _Round()
        released.release()

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels wanted, in the order they were first wanted."""
        return tuple(self._subscriptions.channels)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns wanted, in the order they were first wanted."""
        return tuple(self._subscriptions.patterns)

    def wants(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> bool:
        """True when every one of these is wanted."""
        subscriptions = self._subscriptions
        return all(name in subscriptions.channels for name in channels) and all(
            name in subscriptions.patterns for name in patterns
        )

    async def subscribe(
        self,
        channels: tuple[str, ...] = (),
        patterns: tuple[str, ...] = (),
        mark: Callable[[], None] | None = None,
    ) -> None:
        """Want these subscriptions; while connected, return once the broker has them.

        Once it returns (connected), every message the broker sent before the
        subscription (or, for names already subscribed, before this call) has been
        handed to ``deliver``. ``mark`` is called once, at the point of the stream
        after which messages are new to the caller: at once for names not subscribed
        yet (no message for them can be queued), in the reader as the broker answers
        a round trip for names subscribed already (see `Subscriber.barrier()`),
        or when the connection is lost first. Without a connection it returns at
        once: the next connection subscribes everything wanted.

        Raises:
            ReplyError: the broker refused some of them; those are no longer wanted
                (and ``on_refused`` was told).
        """
        subscriptions = self._subscriptions
        subscriptions.want(channels, patterns)
        joined = self._next_round
        for name in channels:  # asked anew: an earlier refusal no longer answers
            joined.refused_channels.pop(name, None)
        for name in patterns:
            joined.refused_patterns.pop(name, None)
        wanted = self._sync_wanted
        connected = self._subscriber is not None and wanted is not None
        synced = subscriptions.synced(channels, patterns)
        if mark is None:
            mark = _nothing
        elif not (connected and synced):
            mark()  # nothing for these names can be queued yet
            mark = _nothing
        if not connected or wanted is None:
            await checkpoint()
            return
        if synced:
            # Nothing to send: a round trip is the proof instead, and its answer the mark.
            joined.marks.append(mark)
        wanted.set()
        await joined.done.wait()
        for name in channels:
            if name in joined.refused_channels:
                raise joined.refused_channels[name]
        for name in patterns:
            if name in joined.refused_patterns:
                raise joined.refused_patterns[name]

    def unsubscribe_nowait(
        self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()
    ) -> None:
        """Stop wanting these subscriptions; the sync loop unsubscribes soon."""
        self._subscriptions.unwant(channels, patterns)
        if self._sync_wanted is not None:
            self._sync_wanted.set()

    async def unsubscribe(
        self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()
    ) -> None:
        """Stop wanting these subscriptions at once; return once the broker confirmed.

        The change is made before the first await, so a caller cancelled while
        waiting has still unsubscribed (the sync loop carries it out).
        """
        self.unsubscribe_nowait(channels, patterns)
        if self._subscriber is None:
            await checkpoint()
            return
        await self._next_round.done.wait()

    @property
    def in_sync(self) -> bool:
        """True when the broker has confirmed everything wanted (and nothing more)."""
        return self._subscriptions.in_sync()

    async def sync_loop(self, subscriber: Subscriber) -> None:
        """Run a round whenever something changed (the session's only sync task)."""
        while True:
            assert self._sync_wanted is not None
            await self._sync_wanted.wait()
            self._sync_wanted = anyio.Event()
            await self.round(subscriber)

    async def round(self, subscriber: Subscriber) -> int:
        """Apply the subscription plan; return how many names were subscribed.

        Raises:
            one of CONNECTION_ERRORS: the connection failed (the round's waiters are
                released by the session's end).
        """
        joined, self._next_round = self._next_round, _Round()
        plan = self._subscriptions.plan()
        steps = (
            (subscriber.unsubscribe, Plan(unsubscribe=plan.unsubscribe)),
            (subscriber.punsubscribe, Plan(punsubscribe=plan.punsubscribe)),
            (subscriber.subscribe, Plan(subscribe=plan.subscribe)),
            (subscriber.psubscribe, Plan(psubscribe=plan.psubscribe)),
        )
        subscribed = 0
        try:
            for command, step in steps:
                if step:
                    subscribed += await self._apply(command, step, joined)
            if joined.marks:
                await subscriber.barrier(_calling(joined.marks))
        finally:  # failed with the connection too: what the waiters want stays wanted
            joined.release()
        return subscribed

    async def _apply(
        self, command: Callable[[Sequence[str]], Awaitable[None]], step: Plan, joined: _Round
    ) -> int:
        """Run one step of a plan; a refusal fails only the names refused."""
        names = step.subscribe or step.unsubscribe or step.psubscribe or step.punsubscribe
        try:
            await command(names)
        except ReplyError as exc:
            if exc.code in TRANSIENT_REPLIES:
                # Not a refusal: the slot moved, the server is loading... Start over
                # on a new connection (which asks the cluster where things live).
                raise ConnectionLost(f"{self.broker.url}: subscription deferred: {exc}") from exc
            if len(names) > 1:
                # The broker refuses a whole command for one name it may not have:
                # find which, one name at a time (rare, and only after a refusal).
                return sum(
                    [await self._apply(command, _alone(step, name), joined) for name in names]
                )
            self._refused(step, exc, joined)
            return 0
        self._subscriptions.applied(step)
        if step.subscribe:
            self._on_subscribed(tuple(step.subscribe))
        return len(step.subscribe) + len(step.psubscribe)

    def _refused(self, step: Plan, error: ReplyError, joined: _Round) -> None:
        if step.unsubscribe or step.punsubscribe:
            # Nothing to roll back: the subscription is not wanted either way.
            self._logger.warning("%s: unsubscribe refused: %s", self.broker.url, error)
            self._subscriptions.applied(step)
            return
        self._subscriptions.refused(step)
        # Callers who asked meanwhile wait for the next round, and what they wanted
        # was just forgotten: they are refused too (unless they ask anew).
        for waiting in (joined, self._next_round):
            for name in step.subscribe:
                waiting.refused_channels[name] = error
            for name in step.psubscribe:
                waiting.refused_patterns[name] = error
        self._logger.warning(
            "%s: subscription to %s refused, not retried: %s",
            self.broker.url,
            ", ".join(map(repr, step.subscribe or step.psubscribe)),
            error,
        )
        self._on_refused(tuple(step.subscribe), tuple(step.psubscribe), error)


class _Round:
    """One pass of the sync loop, as its waiters see it."""

    __slots__ = ("done", "marks", "refused_channels", "refused_patterns")

    def __init__(self) -> None:
        self.done = anyio.Event()
        #: Waiters whose names were all subscribed already: end with a barrier,
        #: calling these as the broker answers it.
        self.marks: list[Callable[[], None]] = []
        self.refused_channels: dict[str, ReplyError] = {}
        self.refused_patterns: dict[str, ReplyError] = {}

    def release(self) -> None:
        """The round is over (done, failed or never run): wake its waiters. Marks not
        called by a barrier are called now: what comes next is new to them."""
        _calling(self.marks)()
        self.done.set()


def _nothing() -> None:
    pass


def _calling(marks: list[Callable[[], None]]) -> Callable[[], None]:
    """One callback that calls each of ``marks`` (and forgets them: once only)."""

    def call() -> None:
        called = marks[:]
        marks.clear()
        for mark in called:
            mark()

    return call


def _alone(step: Plan, name: str) -> Plan:
    """The one-step plan ``step`` for ``name`` alone."""
    return Plan(
        *(
            [name] if names else []
            for names in (step.subscribe, step.unsubscribe, step.psubscribe, step.punsubscribe)
        )
    )
