"""What must be subscribed, and what the broker has confirmed (sans-IO).

Users change the *wanted* sets at any time; the connection supervisor applies the
difference in batches, and after a reconnect applies everything again. Keeping the
two apart makes "register while disconnected" and "resubscribe after reconnect" the
same operation.
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


class Subscriptions:
    """Wanted and confirmed channel and pattern subscriptions of one connection."""

    __slots__ = ("active_channels", "active_patterns", "channels", "patterns")

    def __init__(self) -> None:
        # Insertion-ordered, so resubscription happens in registration order.
        self.channels: dict[str, None] = {}
        self.patterns: dict[str, None] = {}
        self.active_channels: set[str] = set()
        self.active_patterns: set[str] = set()

    def want(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> None:
        """Add to what must be subscribed."""
        self.channels.update(dict.fromkeys(channels))
        self.patterns.update(dict.fromkeys(patterns))

    def unwant(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> None:
        """Remove from what must be subscribed."""
        for name in channels:
            self.channels.pop(name, None)
        for pattern in patterns:
            self.patterns.pop(pattern, None)

    def plan(self) -> Plan:
        """The difference between wanted and confirmed."""
        return Plan(
            subscribe=[c for c in self.channels if c not in self.active_channels],
            unsubscribe=[c for c in self.active_channels if c not in self.channels],
            psubscribe=[p for p in self.patterns if p not in self.active_patterns],
            punsubscribe=[p for p in self.active_patterns if p not in self.patterns],
        )

    def applied(self, plan: Plan) -> None:
        """Record that the broker confirmed every command of ``plan``."""
        self.active_channels.update(plan.subscribe)
        self.active_channels.difference_update(plan.unsubscribe)
        self.active_patterns.update(plan.psubscribe)
        self.active_patterns.difference_update(plan.punsubscribe)

    def lost(self) -> None:
        """The connection is gone: nothing is confirmed any more."""
        self.active_channels.clear()
        self.active_patterns.clear()

    def synced(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> bool:
        """True when these names are in the state that is wanted for them."""
        return all((c in self.channels) == (c in self.active_channels) for c in channels) and all(
            (p in self.patterns) == (p in self.active_patterns) for p in patterns
        )
