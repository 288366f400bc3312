"""Validation and namespacing of channel and event names (sans-IO).

A channel called ``orders`` in namespace ``shop`` is ``shop:orders`` on the broker.
Every check here runs before any I/O, so bad input fails at the call that made it.
"""

from __future__ import annotations

from typing import Any

from .cache import BoundedCache

__all__ = ["DELIMITER", "InvalidName", "Namespace", "check_name", "check_namespace"]

DELIMITER = ":"
#: Channel names a namespace remembers as checked.
KNOWN_NAMES = 65536


class InvalidName(ValueError, TypeError):
    """A name that is not a non-empty ``str`` (or misplaces the delimiter).

    It is a `ValueError`, as the API contract promises, and also a
    `TypeError`, which is what Python code usually expects for a non-``str``.
    """


def _check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a non-empty str, not {type(value).__name__}: {value!r}")
    if not value:
        raise InvalidName(f"{what} must be a non-empty str, got ''")
    return value


def check_name(value: Any, what: str) -> str:
    """Return ``value`` if it is a non-empty ``str``: what every name that is not a
    channel's must be (an event name or pattern, a consumer or group name, a PubSub
    channel or pattern). ``what`` names it in the error."""
    return _check_str(value, what)


def _check_segments(value: str, what: str) -> str:
    if "" in value.split(DELIMITER):
        raise InvalidName(
            f"{what} {value!r} has the delimiter {DELIMITER!r} at the start, at the end "
            "or doubled; use it only between non-empty parts"
        )
    return value


def check_namespace(value: Any) -> str:
    """Return a valid namespace; ``None`` and ``''`` mean no namespace."""
    if value is None or value == "":
        return ""
    return _check_segments(_check_str(value, "namespace"), "namespace")


class Namespace:
    """Maps the names users see to the names on the broker and back."""

    __slots__ = ("_known", "_prefix", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._prefix = f"{name}{DELIMITER}" if name else ""
        # Names already checked -> (broker name, user name): a publish loop on one
        # channel validates it once.
        self._known: BoundedCache[str, tuple[str, str]] = BoundedCache(KNOWN_NAMES)

    def names(self, channel: Any) -> tuple[str, str]:
        """Validate ``channel``; return its name on the broker and without prefix."""
        if type(channel) is str:
            known = self._known.get(channel)
            if known is not None:
                return known
        name = _check_segments(_check_str(channel, "channel name"), "channel name")
        full = name if not self._prefix or name.startswith(self._prefix) else self._prefix + name
        return self._known.remember(name, (full, self.user_name(full)))

    def broker_name(self, channel: Any) -> str:
        """Validate ``channel`` and return its name on the broker (prefixed)."""
        return self.names(channel)[0]

    def user_name(self, broker_name: str) -> str:
        """The name without the namespace prefix."""
        if self._prefix and broker_name.startswith(self._prefix):
            return broker_name[len(self._prefix) :]
        return broker_name
