"""Durable channels, sans-IO: retention, stream ids, where a reader starts.

A durable channel keeps its events in a log (a Redis stream; an in-process list on
``memory://``) whose entries have ids ``"<milliseconds>-<sequence>"``, increasing.
Everything here is pure: parsing and ordering ids, turning ``since=`` into the id a
reader starts after, and the retention a publish trims to.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_RETENTION",
    "ORIGIN",
    "SEQUENCE_BITS",
    "LogMark",
    "Retention",
    "StreamId",
    "parse_id",
    "position",
    "position_id",
    "recreated",
    "start_after",
]

#: A stream id as ``(milliseconds, sequence)``: tuples order like the ids.
StreamId = tuple[int, int]

#: Before every entry: ``since="all"`` starts after it.
ORIGIN = "0-0"

_MAX_SEQUENCE = 2**64 - 1


def parse_id(value: Any, what: str = "stream id") -> StreamId:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; a bare ``"1700000000000"`` is
    sequence 0.

    Raises:
        ValueError: not a stream id (naming the value).
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str like '1700000000000-0', not {value!r}")
    ms, _, seq = value.partition("-")
    try:
        parsed = (int(ms), int(seq) if seq else 0)
    except ValueError:
        raise ValueError(f"{what} must look like '1700000000000-0', got {value!r}") from None
    digits = value.isascii() and ms.isdigit() and (not seq or seq.isdigit())
    if not digits or parsed[0] > _MAX_SEQUENCE or parsed[1] > _MAX_SEQUENCE:
        raise ValueError(f"{what} must look like '1700000000000-0', got {value!r}")
    return parsed


def format_id(value: StreamId) -> str:
    """``(1700000000000, 3)`` -> ``"1700000000000-3"``."""
    return f"{value[0]}-{value[1]}"


#: A position is ``ms << SEQUENCE_BITS | sequence`` (see `position()`).
SEQUENCE_BITS = 64


def position(entry_id: str | bytes) -> int:
    """A stream id as one int that orders like it (``ms << 64 | sequence``): what a
    registration keeps as its place in a log, compared on every live message.

    Raises:
        ValueError: not an id.
    """
    # The hot path (every live message of a durable channel): plain digits, no
    # validation to repeat; anything else takes the careful way, and its error.
    # (str.isdigit takes any Unicode digit: ids are ASCII.)
    ms, _, seq = entry_id.partition(b"-" if type(entry_id) is bytes else "-")  # type: ignore[arg-type]
    if ms.isdigit() and seq.isdigit() and len(ms) < 20 and len(seq) < 20 and entry_id.isascii():
        return int(ms) << SEQUENCE_BITS | int(seq)
    parsed = parse_id(entry_id, "entry id")
    return parsed[0] << SEQUENCE_BITS | parsed[1]


def position_id(value: int) -> str:
    """The stream id of a `position()`."""
    return f"{value >> SEQUENCE_BITS}-{value & _MAX_SEQUENCE}"


def start_after(since: Any, now: StreamId | None = None) -> tuple[str, bool]:
    """Where a reader registered with ``since`` starts: the id *after* which events
    are delivered, and whether that id names an entry (then a reader finding it
    gone from the log knows events were lost in between).

    ``"all"`` starts after `ORIGIN`; an id after that id (an entry the caller
    has seen); a timezone-aware ``datetime`` at its millisecond (events stored at
    or after it). ``"new"`` is resolved by the caller (the log's last id when it
    registers) and is refused here.

    Raises:
        ValueError: anything else, naming it.
    """
    if since == "all":
        return ORIGIN, False
    if isinstance(since, _dt.datetime):
        if since.tzinfo is None:
            raise ValueError(
                f"since= takes a timezone-aware datetime (naive ones are ambiguous): {since!r}"
            )
        ms = int(since.timestamp() * 1000)
        return format_id((ms - 1, _MAX_SEQUENCE) if ms > 0 else (0, 0)), False
    if isinstance(since, str) and since not in ("new", ""):
        start = parse_id(since, "since=")
        return format_id(start), start != (0, 0)  # "0-0" names no entry: "all"
    raise ValueError(
        f"since= takes 'new', 'all', a stream id like '1700000000000-0' or an aware "
        f"datetime, not {since!r}"
    )


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of a durable channel's log the broker keeps.

    ``max_len``: about this many events (Redis trims in whole nodes: ``MAXLEN ~``,
    so a few more may stay). ``max_age``: events younger than this many seconds
    (by the server's clock). Both may be set; ``Retention()`` keeps everything,
    which only suits a channel whose volume is bounded some other way.

    A subscriber away for longer than retention misses what was trimmed; it is told
    with a ``gap`` event on the status channel, never silently.
    """

    max_len: int | None = None
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.max_len is not None and (
            type(self.max_len) is not int or self.max_len < 1  # bool is not a length
        ):
            raise ValueError(f"Retention(max_len=) must be an int >= 1, got {self.max_len!r}")
        if self.max_age is not None and (
            isinstance(self.max_age, bool)
            or not isinstance(self.max_age, int | float)
            or not self.max_age > 0
        ):
            raise ValueError(f"Retention(max_age=) must be > 0 seconds, got {self.max_age!r}")


#: Retention of a channel named in ``durable=`` without one of its own.
DEFAULT_RETENTION = Retention(max_len=10_000)


@dataclass(frozen=True, slots=True)
class LogMark:
    """What tells a log apart from another one made in its place (the first deleted,
    then appended to again): how many entries it has ever taken (Redis's
    ``entries-added``) and holds, and its first and last ids."""

    added: int
    length: int
    first_id: str | None
    last_id: str | None

    @property
    def removed(self) -> int:
        """Entries it has lost (trimmed, deleted one by one)."""
        return self.added - self.length


def recreated(before: LogMark, now: LogMark) -> bool:
    """Whether ``now`` marks a new log in place of the one ``before`` marked, rather
    than the same log later on.

    A log only takes entries and loses them, so both counts only grow; and while it
    loses none, its first entry stays. A new log shows as counts going down, or a
    different first entry with nothing lost. (Missed: a new log that, between the
    two marks, has both taken and lost more entries than the old one ever did, or
    whose first entry has the old one's id: made within the same millisecond.)
    """
    if now.added < before.added or now.removed < before.removed:
        return True
    return now.removed == before.removed and before.length > 0 and now.first_id != before.first_id
