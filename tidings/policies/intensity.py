"""Counting failures in a sliding window (sans-IO).

One piece serves two policies: a supervisor's restart intensity ("at most N restarts
in T seconds, then escalate") and a callback's failure budget ("removed when it fails
more than N times in T seconds").
"""

from __future__ import annotations

from collections import deque

__all__ = ["Intensity"]


class Intensity:
    """At most ``limit`` events within ``window`` seconds.

    Examples:
        >>> budget = Intensity(limit=2, window=10.0)
        >>> budget.record(0.0), budget.record(1.0), budget.record(2.0)
        (False, False, True)
        >>> budget.record(20.0)  # the earlier events have left the window
        False
    """

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit!r}")
        if window <= 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        self.limit = limit
        self.window = window
        # Allocated at the first event: most callbacks never fail, and an empty
        # deque costs more than half a kilobyte.
        self._times: deque[float] | None = None

    def record(self, now: float) -> bool:
        """Record one event at time ``now``; True when the limit is now exceeded."""
        times = self._times
        if times is None:
            times = self._times = deque()
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        return len(times) > self.limit

    def __len__(self) -> int:
        """Events currently inside the window (as of the last ``record``)."""
        return len(self._times) if self._times is not None else 0
