"""Counters kept by a handler, and the frozen record ``stats()`` returns."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["Counters", "Stats"]


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a handler's counters (all monotonic, since it was created).

    Attributes:
        published: publishes the broker accepted.
        publish_errors: publishes that raised `PublishError`.
        received: messages read from the broker connection.
        delivered: callback calls that returned normally or raised
            `CallbackError` (iterator events included); status
            events are counted apart, in ``status_events``.
        dropped: messages discarded: a mailbox or iterator buffer was full, or
            they were still queued for a channel when it was unregistered or the
            handler closed.
        decode_errors: payloads the protocol could not decode (logged, skipped).
        callback_errors: callback calls that raised (logged with their traceback).
        callbacks_removed: callbacks removed for failing too often, or by raising
            `CallbackError`.
        reconnects: connections established after the first one.
        resubscribes: channels and patterns subscribed again after a reconnect.
        actor_restarts: crashed actors restarted by their supervisor.
        unrouted: messages no callback took: for a channel nobody is subscribed
            to any more (they arrive in the short window after an unsubscribe), or
            whose event matched no registered pattern.
        status_events: status-channel events delivered to callbacks.
        replayed: events of durable channels read from their log (after a
            reconnect, an overflow, for ``since=``, or by a consumer group, each
            delivery counted), not received live; their
            callback calls are counted in ``delivered`` like any other.
        superseded: live messages of durable channels not dispatched because
            their entry was (or is to be) delivered from the log instead: a live
            copy of an event a catch-up read already delivered, or one a full
            mailbox refused and the next read recovers; and the live copy of an
            event that only consumer groups take (they read it from the log).
        acked: events of consumer groups acknowledged (their callbacks returned).
        dead_lettered: events of consumer groups moved to the dead-letter stream.
        redeliveries: events of consumer groups delivered again (an earlier delivery
            failed, or was not acknowledged in time).
        retries: events of consumer groups whose callback raised `tidings.Retry`
            (delivered again later).
        deduplicated: publishes with a ``key=`` published within the dedupe window
            already: nothing was stored or delivered.

    With one callback (or iterator) per message, every message received ends as
    exactly one of: ``received == delivered + callback_errors + dropped + unrouted
    + decode_errors + superseded - replayed``.
    """

    published: int = 0
    publish_errors: int = 0
    received: int = 0
    delivered: int = 0
    dropped: int = 0
    decode_errors: int = 0
    callback_errors: int = 0
    callbacks_removed: int = 0
    reconnects: int = 0
    resubscribes: int = 0
    actor_restarts: int = 0
    unrouted: int = 0
    status_events: int = 0
    replayed: int = 0
    superseded: int = 0
    acked: int = 0
    dead_lettered: int = 0
    redeliveries: int = 0
    retries: int = 0
    deduplicated: int = 0


_NAMES = tuple(f.name for f in fields(Stats))


class Counters:
    """The mutable twin of `Stats`, bumped on the hot path (plain slots).

    The attributes are spelled out for the type checker; a test keeps them in step
    with `Stats`.
    """

    __slots__ = _NAMES

    published: int
    publish_errors: int
    received: int
    delivered: int
    dropped: int
    decode_errors: int
    callback_errors: int
    callbacks_removed: int
    reconnects: int
    resubscribes: int
    actor_restarts: int
    unrouted: int
    status_events: int
    replayed: int
    superseded: int
    acked: int
    dead_lettered: int
    redeliveries: int
    retries: int
    deduplicated: int

    def __init__(self) -> None:
        for name in _NAMES:
            setattr(self, name, 0)

    def snapshot(self) -> Stats:
        """A frozen copy of the current values."""
        return Stats(*(getattr(self, name) for name in _NAMES))
