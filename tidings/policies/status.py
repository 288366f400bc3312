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
import random
from typing import Any

from .backoff import Backoff

__all__ = ["Reconnect", "StatusMachine", "StatusType"]


class StatusType(enum.IntEnum):
    """Where a connection is in its life."""

    initialised = 1
    connecting = 2
    connected = 3
    disconnected = 4
    closed = 5

    def __str__(self) -> str:
        """The name (``str(StatusType.connected) == "connected"``), not the number."""
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


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


class Reconnect:
    """The reconnect policy: attempt numbers, delays, ``down_for`` and the last error.

    The connection supervisor tells it what happened (an attempt starts, a
    connection is made, an attempt or a connection fails, the end) and gets back
    the status event's data, and after a failure the delay before the next attempt.
    Attempt numbers count attempts since the last successful connection:
    ``connecting`` carries the attempt about to be made, ``disconnected`` the one
    that failed (0 when an established connection was lost). After attempt *n*
    fails the wait is ``backoff.delay(n)``; after a lost connection it is
    ``backoff.delay(1)``, so the first retry comes quickly. Every move goes through
    `StatusMachine`: an illegal one raises and changes nothing.

    >>> from tidings.policies.backoff import Backoff
    >>> policy = Reconnect(Backoff(initial=1, jitter=False))
    >>> policy.connecting()["attempt"]
    1
    >>> policy.disconnected("refused", now=0.0)[1]
    1.0
    """

    __slots__ = (
        "_backoff",
        "_connected_before",
        "_deaf_since",
        "_rng",
        "attempt",
        "last_error",
        "machine",
    )

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self._backoff = backoff
        self._rng = rng if rng is not None else random.Random()
        self.machine = StatusMachine()
        #: The current attempt since the last successful connection (0 while connected).
        self.attempt = 0
        #: What ended the latest attempt or connection; None once connected again.
        self.last_error: str | None = None
        self._deaf_since: float | None = None
        self._connected_before = False

    @property
    def status(self) -> StatusType:
        """The current status."""
        return self.machine.status

    def connecting(self) -> dict[str, Any]:
        """An attempt begins."""
        data = self.machine.move(StatusType.connecting, attempt=self.attempt + 1)
        self.attempt += 1
        return data

    def connected(self, now: float) -> tuple[dict[str, Any], bool]:
        """The attempt succeeded; returns the event data and whether it is a reconnection."""
        again = self._connected_before
        extra: dict[str, Any] = {}
        if again and self._deaf_since is not None:
            extra["down_for"] = now - self._deaf_since
        data = self.machine.move(StatusType.connected, attempt=self.attempt, **extra)
        self._connected_before, self.last_error, self.attempt = True, None, 0
        return data, again

    def disconnected(self, error: str, now: float) -> tuple[dict[str, Any], float]:
        """The attempt or the connection failed; returns the event data and the delay."""
        if self.machine.status is StatusType.connected:
            self._deaf_since = now  # deaf from now until the next connection
        delay = self._backoff.delay(max(1, self.attempt), self._rng)
        data = self.machine.move(
            StatusType.disconnected, attempt=self.attempt, retry_in=delay, error=error
        )
        self.last_error = error
        return data, delay

    def closed(self) -> dict[str, Any] | None:
        """The end; None when it was closed already (closing twice is no move)."""
        if self.machine.status is StatusType.closed:
            return None
        return self.machine.move(StatusType.closed, error=None)
