"""Exponential back-off with full jitter (sans-IO)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait between connection attempts.

    Attempt ``n`` (1-based) waits a random time in ``[0, min(cap, initial * factor**(n-1))]``
    ("full jitter"), so that many clients cut off by one outage do not reconnect in
    lock-step. The sequence restarts after a successful (re)subscription.

    Args:
        initial: ceiling of the first delay, in seconds.
        factor: growth of the ceiling per failed attempt.
        cap: the largest ceiling, in seconds.
        jitter: False makes every delay its ceiling (predictable, for tests and demos).

    Examples:
        >>> Backoff(initial=0.5, cap=4.0, jitter=False).delays(6)
        [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    """

    initial: float = 0.2
    factor: float = 2.0
    cap: float = 16.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if not self.initial > 0:
            raise ValueError(f"Backoff.initial must be > 0 seconds, got {self.initial!r}")
        if not self.factor >= 1:
            raise ValueError(f"Backoff.factor must be >= 1, got {self.factor!r}")
        if not self.cap >= self.initial:
            raise ValueError(
                f"Backoff.cap ({self.cap!r}) must be >= Backoff.initial ({self.initial!r})"
            )

    def ceiling(self, attempt: int) -> float:
        """The largest delay after failed attempt number ``attempt`` (1-based)."""
        # Exponent clamped so a long outage never overflows the float.
        return min(self.cap, self.initial * self.factor ** min(attempt - 1, 64))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay after failed attempt number ``attempt``."""
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return (rng or _RNG).uniform(0.0, ceiling)

    def delays(self, count: int) -> list[float]:
        """The first ``count`` delays (handy to see a policy)."""
        return [self.delay(n) for n in range(1, count + 1)]


_RNG = random.Random()
