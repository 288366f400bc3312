"""The connection status model (sans-IO).

::

    initialised ──► connecting ──► connected
                        ▲   │          │
                        │   ▼          ▼
                        └─ disconnected ◄┘        any state ──► closed (last)

A status never follows itself. Each transition produces the data delivered with the
status event.
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["StatusMachine", "StatusType"]


class StatusType(enum.IntEnum):
    """Where a connection is in its life."""

    initialised = 1
    connecting = 2
    connected = 3
    disconnected = 4
    closed = 5


_ALLOWED: dict[StatusType, frozenset[StatusType]] = {
    StatusType.initialised: frozenset({StatusType.connecting, StatusType.closed}),
    StatusType.connecting: frozenset(
        {StatusType.connected, StatusType.disconnected, StatusType.closed}
    ),
    StatusType.connected: frozenset({StatusType.disconnected, StatusType.closed}),
    StatusType.disconnected: frozenset({StatusType.connecting, StatusType.closed}),
    StatusType.closed: frozenset(),
}


class StatusMachine:
    """Tracks the status and validates every transition."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = StatusType.initialised

    def can_move(self, new: StatusType) -> bool:
        """True when ``new`` is a legal next status."""
        return new in _ALLOWED[self.status]

    def move(
        self,
        new: StatusType,
        *,
        attempt: int = 0,
        retry_in: float | None = None,
        error: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Enter ``new`` and return the event data describing the transition.

        Raises:
            RuntimeError: the transition is not in the state machine (a bug).
        """
        if not self.can_move(new):
            raise RuntimeError(f"illegal status transition {self.status.name} -> {new.name}")
        previous, self.status = self.status, new
        return {
            "status": new.name,
            "previous": previous.name,
            "attempt": attempt,
            "retry_in": retry_in,
            "error": error,
            **extra,
        }
