"""What must be subscribed, and what the broker has confirmed (sans-IO).

Users change the *wanted* sets at any time; the connection supervisor applies the
difference in batches, and after a reconnect applies everything again. Keeping the
two apart makes "register while disconnected" and "resubscribe after reconnect" the
same operation.

Only names changed since the last sync are examined (they are *dirty*), so a
thousand registrations one after another cost a thousand small plans, not a
thousand scans of everything registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Plan", "Subscriptions"]


@dataclass(slots=True)
class Plan:
    """The commands that bring the broker in line with what is wanted."""

    subscribe: list[str] = field(default_factory=list)
    unsubscribe: list[str] = field(default_factory=list)
    psubscribe: list[str] = field(default_factory=list)
    punsubscribe: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.subscribe or self.unsubscribe or self.psubscribe or self.punsubscribe)


class _Kind:
    """One kind of subscription (channels, or patterns)."""

    __slots__ = ("active", "dirty", "wanted")

    def __init__(self) -> None:
        # Insertion-ordered, so resubscription happens in registration order.
        self.wanted: dict[str, None] = {}
        self.active: set[str] = set()
        self.dirty: dict[str, None] = {}

    def want(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.wanted[name] = None
            self.dirty[name] = None

    def unwant(self, names: tuple[str, ...]) -> None:
        for name in names:
            self.wanted.pop(name, None)
            self.dirty[name] = None

    def plan(self) -> tuple[list[str], list[str]]:
        """(to add, to remove); forgets dirty names that turn out to be in sync."""
        add, remove = [], []
        for name in tuple(self.dirty):
            wanted, active = name in self.wanted, name in self.active
            if wanted and not active:
                add.append(name)
            elif active and not wanted:
                remove.append(name)
            else:
                del self.dirty[name]
        return add, remove

    def added(self, names: list[str]) -> None:
        self.active.update(names)
        self._clean(names)

    def removed(self, names: list[str]) -> None:
        self.active.difference_update(names)
        self._clean(names)

    def _clean(self, names: list[str]) -> None:
        # A name changed again while its command was in flight is dirty (again: a
        # plan made meanwhile may have forgotten it, seeing it in sync before the
        # command landed), so that the next plan undoes the command.
        for name in names:
            if (name in self.wanted) == (name in self.active):
                self.dirty.pop(name, None)
            else:
                self.dirty[name] = None

    def in_sync(self) -> bool:
        """True when every name changed is as wanted (changes nothing)."""
        return all((name in self.wanted) == (name in self.active) for name in self.dirty)

    def forget(self, names: list[str]) -> None:
        for name in names:
            self.wanted.pop(name, None)
            self.dirty.pop(name, None)
            self.active.discard(name)

    def lost(self) -> None:
        self.active.clear()
        self.dirty = dict(self.wanted)


class Subscriptions:
    """Wanted and confirmed channel and pattern subscriptions of one connection."""

    __slots__ = ("_channels", "_patterns")

    def __init__(self) -> None:
        self._channels = _Kind()
        self._patterns = _Kind()

    @property
    def channels(self) -> dict[str, None]:
        """The channels wanted, in the order they were first wanted."""
        return self._channels.wanted

    @property
    def patterns(self) -> dict[str, None]:
        """The patterns wanted, in the order they were first wanted."""
        return self._patterns.wanted

    def want(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> None:
        """Add to what must be subscribed."""
        self._channels.want(channels)
        self._patterns.want(patterns)

    def unwant(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> None:
        """Remove from what must be subscribed."""
        self._channels.unwant(channels)
        self._patterns.unwant(patterns)

    def in_sync(self) -> bool:
        """True when the broker has confirmed everything wanted, and nothing more."""
        return self._channels.in_sync() and self._patterns.in_sync()

    def plan(self) -> Plan:
        """The difference between wanted and confirmed, for the names changed."""
        subscribe, unsubscribe = self._channels.plan()
        psubscribe, punsubscribe = self._patterns.plan()
        return Plan(subscribe, unsubscribe, psubscribe, punsubscribe)

    def applied(self, plan: Plan) -> None:
        """Record that the broker confirmed every command of ``plan``."""
        self._channels.added(plan.subscribe)
        self._channels.removed(plan.unsubscribe)
        self._patterns.added(plan.psubscribe)
        self._patterns.removed(plan.punsubscribe)

    def refused(self, plan: Plan) -> None:
        """The broker refused the subscriptions of ``plan``: they are no longer wanted.

        They are forgotten, not retried: a refused name is never sent again (on a
        reconnect included) until it is wanted anew.
        """
        self._channels.forget(plan.subscribe)
        self._patterns.forget(plan.psubscribe)

    def lost(self) -> None:
        """The connection is gone: nothing is confirmed any more."""
        self._channels.lost()
        self._patterns.lost()

    def synced(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> bool:
        """True when these names are in the state that is wanted for them."""
        ch, pa = self._channels, self._patterns
        return all((c in ch.wanted) == (c in ch.active) for c in channels) and all(
            (p in pa.wanted) == (p in pa.active) for p in patterns
        )
