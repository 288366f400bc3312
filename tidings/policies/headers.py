"""Headers: a mapping of str to str carried beside an event's data (sans-IO).

They travel in the envelope (``{"channel", "event", "data", "headers"}``; the key is
left out when there are none, so a message without headers is byte for byte what it
was before headers existed). Trace context travels in them (``traceparent``...).
Names starting with ``tidings-`` are tidings' own (work queues and dead letters add
theirs): an application may not set them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "DELIVERIES",
    "ERROR",
    "GROUP",
    "NO_HEADERS",
    "ORIGINAL_ID",
    "REQUEUED_FOR",
    "RESERVED_PREFIX",
    "Headers",
    "check_headers",
    "decoded_headers",
]

#: What an event's headers are: read-only.
Headers = Mapping[str, str]
#: The headers of an event that has none.
NO_HEADERS: Headers = MappingProxyType({})
#: The prefix of the header names tidings sets itself.
RESERVED_PREFIX = "tidings-"
#: An event appended to a durable channel's log again, for one consumer group only (a
#: retry after its delay, a dead letter requeued): that group's members run it, other
#: groups' members acknowledge it unrun, durable subscribers outside groups skip it.
REQUEUED_FOR = "tidings-requeued-for"
#: The id of the event's first entry, when it was appended again (a retry).
ORIGINAL_ID = "tidings-original-id"
#: The group a dead letter comes from.
GROUP = "tidings-group"
#: How many deliveries an event has had (a retry carries its count on; a dead letter
#: says how many it had).
DELIVERIES = "tidings-deliveries"
#: Why a dead letter was buried.
ERROR = "tidings-error"


def check_headers(headers: Any) -> dict[str, str] | None:
    """Check headers given to a publish (before any I/O); return them as a plain dict,
    or None when there are none.

    Raises:
        TypeError: not a mapping, or a name or value that is not a ``str``.
        ValueError: an empty name, or one of tidings' own (``tidings-...``).
    """
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"headers must be a mapping of str to str, not {type(headers).__name__}: "
            f"{headers!r:.80}"
        )
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if type(name) is not str or type(value) is not str:
            raise TypeError(f"headers must map str to str, got {name!r:.40}: {value!r:.40}")
        if not name:
            raise ValueError("a header name must be a non-empty str, got ''")
        if name.lower().startswith(RESERVED_PREFIX):
            raise ValueError(
                f"header {name!r}: names starting with {RESERVED_PREFIX!r} are tidings' own"
            )
        checked[name] = value
    return checked or None


def decoded_headers(value: Any) -> Headers | None:
    """The headers of a decoded envelope, read-only (None: there are none).

    Raises:
        ValueError: anything but an object of strings (whoever can publish chooses it).
    """
    if value is None:
        return None
    if type(value) is not dict or not all(
        type(name) is str and type(item) is str for name, item in value.items()
    ):
        raise ValueError(f"'headers' must be an object of strings, got {value!r:.80}")
    return MappingProxyType(value) if value else None
