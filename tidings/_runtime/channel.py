"""One channel name's registrations: the public `Channel` and the state behind it.

`ChannelState` holds the registrations of one name, by event pattern; the
`Channel` users see (and callbacks are given) is a read-only view of it, as trio's
memory channels are thin endpoints over one state object. Only the registry changes
a state, synchronously; an actor only reads the tuples its lookups return, so a
change never disturbs a dispatch under way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..actors.callbacks import Registration
from ..policies.cache import BoundedCache
from ..policies.glob import compile_glob
from ..types import Channel

__all__ = ["Channel", "ChannelState"]

#: Distinct event names (and group, event pairs) whose registrations a channel
#: remembers: event names are open-ended.
LOOKUP_CACHE_SIZE = 1024


class ChannelState:
    """The registrations of one channel name (changed by the registry only)."""

    __slots__ = (
        "_plain",
        "broker_name",
        "channel",
        "durable",
        "found",
        "local",
        "name",
        "patterns",
        "takes_meta",
    )

    def __init__(
        self, name: str, broker_name: str, *, durable: bool = False, local: bool = False
    ) -> None:
        self.name = name
        self.broker_name = broker_name
        self.durable = durable
        self.local = local
        #: The face users and callbacks see.
        self.channel = Channel(self)
        #: Pattern -> callback key (see `callback_key`) -> registration: finding a
        #: duplicate is one lookup, however many callbacks a pattern has.
        self.patterns: dict[str, dict[object, Registration]] = {}
        #: Event -> registrations (outside groups); (group, event) -> a group's. The
        #: actor reads it directly on its hot path; it is cleared (never replaced)
        #: on every change.
        self.found: BoundedCache[Any, tuple[Registration, ...]] = BoundedCache(LOOKUP_CACHE_SIZE)
        # Every registration outside groups, made when asked (a durable channel's
        # actor asks per event).
        self._plain: tuple[Registration, ...] | None = None
        #: True when a registration outside groups takes a delivery's metadata (an
        #: iterator, a traced callback): a durable channel's actor makes it only then.
        self.takes_meta = False

    def __repr__(self) -> str:
        return f"<ChannelState {self.broker_name!r} events={list(self.patterns)!r}>"

    # -- reading (actors) --------------------------------------------------------------

    def registrations_for(self, event: str) -> tuple[Registration, ...]:
        """The registrations outside groups whose pattern matches ``event``, in
        registration order."""
        found = self.found.get(event)
        if found is None:
            found = self.found.remember(event, self._matching(event, None))
        return found

    def group_registrations_for(self, group: str, event: str) -> tuple[Registration, ...]:
        """The registrations of consumer group ``group`` whose pattern matches ``event``."""
        found = self.found.get((group, event))
        if found is None:
            found = self.found.remember((group, event), self._matching(event, group))
        return found

    def _matching(self, event: str, group: str | None) -> tuple[Registration, ...]:
        return tuple(
            registration
            for pattern, registrations in self.patterns.items()
            if compile_glob(pattern)(event)
            for registration in registrations.values()
            if registration.group == group
        )

    def registrations(self) -> tuple[Registration, ...]:
        """Every registration outside groups."""
        if self._plain is None:
            self._plain = tuple(r for r in self.all_registrations() if r.group is None)
        return self._plain

    def all_registrations(self) -> list[Registration]:
        """Every registration, those of consumer groups included."""
        return [r for registrations in self.patterns.values() for r in registrations.values()]

    def group_names(self) -> set[str]:
        """The consumer groups with registrations here."""
        return {r.group for r in self.all_registrations() if r.group is not None}

    # -- changing (the registry) -------------------------------------------------------

    def has(self, pattern: str, callback: Callable[..., Any], group: str | None = None) -> bool:
        registrations = self.patterns.get(pattern)
        return registrations is not None and callback_key(callback, group) in registrations

    def add(self, registration: Registration) -> bool:
        """Add a registration; False if its callback is registered already."""
        registrations = self.patterns.setdefault(registration.key, {})
        key = callback_key(registration.callback, registration.group)
        if key in registrations:
            return False
        registrations[key] = registration
        self._changed()
        return True

    def remove(self, registration: Registration) -> bool:
        """Remove this very registration (deactivated at once); False if it is not
        here (removed already, or replaced)."""
        registrations = self.patterns.get(registration.key)
        key = callback_key(registration.callback, registration.group)
        if registrations is None or registrations.get(key) is not registration:
            return False
        registration.active = False
        del registrations[key]
        if not registrations:
            del self.patterns[registration.key]
        self._changed()
        return True

    def find(
        self, pattern: str, callback: Callable[..., Any], group: str | None = None
    ) -> Registration | None:
        """The registration of ``callback`` under ``pattern`` (and ``group``)."""
        registrations = self.patterns.get(pattern)
        if registrations is None:
            return None
        return registrations.get(callback_key(callback, group))

    def _changed(self) -> None:
        self.found.clear()
        self._plain = None
        self.takes_meta = any(r.takes_meta for r in self.registrations())


class _Unhashable:
    """A callback that cannot be a dict key, compared with ``==`` as ever (all of
    them share one hash bucket: rare, and correct)."""

    __slots__ = ("callback",)

    def __init__(self, callback: object) -> None:
        self.callback = callback

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable) and bool(self.callback == other.callback)

    def __hash__(self) -> int:
        return 0


def callback_key(callback: object, group: str | None = None) -> object:
    """How a channel finds a callback among those of a pattern (a callback of a
    consumer group is another registration than the same one outside it)."""
    try:
        hash(callback)
    except TypeError:
        callback = _Unhashable(callback)
    return callback if group is None else (group, callback)
