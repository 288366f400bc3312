"""The options of a handler: keyword arguments with defaults, validated up front."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

from .actors.mailbox import Overflow
from .policies.backoff import Backoff

__all__ = ["DEFAULT_RETRY_BACKOFF", "OptionArgs", "Options"]

#: The default ``retry_backoff``: 1 s, 2 s, 4 s... up to a minute, no jitter.
DEFAULT_RETRY_BACKOFF = Backoff(initial=1.0, factor=2.0, cap=60.0, jitter=False)


@dataclass(frozen=True, slots=True)
class Options:
    """Options shared by `Channels` and `PubSub`.

    Attributes:
        publish_timeout: seconds a publish (or query) waits for a connection before
            raising `PublishError`.
        connect_timeout: seconds allowed to connect and handshake, and for the broker
            to confirm a (un)subscription.
        backoff: the delay policy between connection attempts.
        health_check_interval: seconds of silence on the subscriber connection after
            which it is checked with a PING (brokers that support it).
        max_pending: the most messages waiting in one channel's mailbox.
        overflow: ``"drop"`` (discard and count, emit ``slow_consumer``) or
            ``"block"`` (stop reading until there is room) when a mailbox is full.
        callback_failure_limit: failures a callback may have within
            ``callback_failure_window`` seconds before it is removed.
        callback_failure_window: see ``callback_failure_limit``.
        max_restarts: crashed-actor restarts allowed within ``restart_window``
            seconds before the crash escalates and ends ``run``.
        restart_window: see ``max_restarts``.
        close_timeout: seconds ``close`` lets actors finish what is queued.
        recheck_interval: seconds between the reads an idle durable channel makes
            of its log, to pick up events stored without their live copy (a
            producer that only writes the stream, or a publish whose live copy
            was lost); ``Channels`` with durable channels only.
        ack_wait: seconds a consumer group's member may hold an event without
            acknowledging it; past that, any member may claim it and it is
            delivered again (consumer groups only).
        max_deliver: deliveries of an event of a consumer group before one that
            still fails moves to the dead-letter stream (consumer groups only).
        fail_fast: if the first connection attempt fails, ``run()`` and ``async with``
            raise `BrokerError` with the cause, instead of retrying in
            the background (a service that cannot start without its broker says
            so at once).
        retry_backoff: when a consumer group's callback fails (or raises
            `tidings.Retry` without a delay), the event is delivered again, to any
            member, no earlier than this back-off's delay for that attempt (default
            1 s, doubling up to 60 s, no jitter); None delivers it again at once.
        dedupe_window: seconds a ``publish(..., key=)`` on a durable channel is
            remembered: a publish with the same key within it is dropped (the window
            of the handler that published first applies).
        telemetry: ``False`` turns off the OpenTelemetry spans and metrics a
            `Channels` handler records when ``opentelemetry-api`` is installed (see
            the "Observability" page); without it there is nothing to turn off.
    """

    publish_timeout: float = 10.0
    connect_timeout: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)
    health_check_interval: float = 30.0
    max_pending: int = 10_000
    overflow: Overflow = "drop"
    callback_failure_limit: int = 5
    callback_failure_window: float = 60.0
    max_restarts: int = 5
    restart_window: float = 10.0
    close_timeout: float = 5.0
    recheck_interval: float = 5.0
    ack_wait: float = 30.0
    max_deliver: int = 5
    fail_fast: bool = False
    retry_backoff: Backoff | None = field(default_factory=lambda: DEFAULT_RETRY_BACKOFF)
    dedupe_window: float = 120.0
    telemetry: bool = True

    def __post_init__(self) -> None:
        for name in (
            "publish_timeout",
            "connect_timeout",
            "health_check_interval",
            "callback_failure_window",
            "restart_window",
            "close_timeout",
            "recheck_interval",
            "dedupe_window",
            "ack_wait",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not value > 0
                or math.isnan(value)
            ):
                raise ValueError(f"option {name} must be a number of seconds > 0, got {value!r}")
        for name in ("fail_fast", "telemetry"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"option {name} must be True or False, got {getattr(self, name)!r}")
        if math.isinf(self.ack_wait):
            raise ValueError(
                f"option ack_wait must be a finite number of seconds, got {self.ack_wait!r}"
            )
        for name, low in (
            ("max_pending", 1),
            ("callback_failure_limit", 0),
            ("max_restarts", 0),
            ("max_deliver", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"option {name} must be an int >= {low}, got {value!r}")
        if self.overflow not in ("drop", "block"):
            raise ValueError(f"option overflow must be 'drop' or 'block', got {self.overflow!r}")
        if not isinstance(self.backoff, Backoff):
            raise TypeError(f"option backoff must be a tidings.Backoff, got {self.backoff!r}")
        if self.retry_backoff is not None and not isinstance(self.retry_backoff, Backoff):
            raise TypeError(
                f"option retry_backoff must be a tidings.Backoff or None, "
                f"got {self.retry_backoff!r}"
            )

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> Options:
        """Build from keyword arguments, naming any that is unknown.

        Raises:
            TypeError: an unknown option, or a ``backoff`` that is not a Backoff.
            ValueError: an option with a bad value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"the options are: {', '.join(sorted(known))}"
            )
        return cls(**options)


class OptionArgs(TypedDict, total=False):
    """The options as keyword arguments (``Channels(url, **options)``), typed: a
    misspelt option or a value of the wrong type is a type checker's error too, not
    only a runtime one. (A test keeps it in step with `Options`.)"""

    publish_timeout: float
    connect_timeout: float
    backoff: Backoff
    health_check_interval: float
    max_pending: int
    overflow: Overflow
    callback_failure_limit: int
    callback_failure_window: float
    max_restarts: int
    restart_window: float
    close_timeout: float
    recheck_interval: float
    ack_wait: float
    max_deliver: int
    fail_fast: bool
    retry_backoff: Backoff | None
    dedupe_window: float
    telemetry: bool
