"""A bounded lookup cache: the one shape every memo in tidings takes.

Names checked once (a publish loop on one channel), broker names decoded once (a
reader on 10,000 channels), event names matched once against a channel's patterns:
each is a dict read on a hot path, bounded because its keys come from outside (any
number of channels or event names). Once full it keeps what it has instead of
evicting: clearing or cycling it would make a loop over more keys than it holds miss
on every key, while keeping it serves the first ``limit`` keys at full speed and the
rest at the uncached cost.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A dict that stops growing at ``limit`` entries.

    Read it as a dict (``cache.get(key)``: C speed, no method of ours on the hot
    path); fill it with `remember()`; empty it with ``clear()`` when what it caches
    changes.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: K, value: V) -> V:
        """Keep ``value`` under ``key`` if there is room; return ``value``."""
        if len(self) < self.limit:
            self[key] = value
        return value
