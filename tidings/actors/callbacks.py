"""Calling user callbacks: sync or async, in order, with a failure policy.

A callback that raises is logged with its traceback and counted; it stays registered
unless it fails more than ``failure_limit`` times within ``failure_window`` seconds,
when it is removed (and that is logged too). Raising `CallbackError`
removes it at once, quietly.

What a call *ended as* is decided in one place, `outcome()`, and counted in one
place, `count()`: the dispatcher (sync and async calls alike) and a consumer group's
member (which then acknowledges, hands back or dead-letters the event) read the
same ladder, so a new kind of ending is added once.
"""

from __future__ import annotations

import enum
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import anyio

from ..errors import CallbackError, Retry
from ..policies.headers import NO_HEADERS, Headers
from ..policies.intensity import Intensity
from ..stats import Counters

__all__ = [
    "DEAF",
    "NO_META",
    "Dispatcher",
    "Interrupted",
    "Meta",
    "Outcome",
    "Registration",
    "Undelivered",
    "Unfinished",
    "Unfit",
    "Wrapper",
    "count",
    "named",
    "outcome",
]

#: ``Registration.since`` of a registration that may not be called yet (its
#: subscription is not confirmed): past every position, mailbox or log.
DEAF = 1 << 128


class Undelivered(Exception):
    """Raised by an internal callback that could not take a message (a full buffer).

    The dispatcher counts the message as ``dropped`` for that callback, not as
    delivered and not as a callback error.
    """


class Unfit(Exception):
    """Raised by a typed callback's wrapper for data that does not fit its schema.

    The dispatcher counts the message as a ``decode_error`` for that callback: it is
    not called, and that is not its failure.
    """


class Interrupted(Undelivered):
    """Raised by an iterator's callback for an event its consumer took and then gave
    up (cancelled): not done, but delivered (a work queue counts the delivery)."""


class Outcome(enum.Enum):
    """How one call of one callback for one message ended, and what it counts as
    (``Outcome.X.counter`` names the `Counters` field)."""

    #: It returned: delivered.
    DONE = "done"
    #: It raised `CallbackError`: delivered, and the callback is removed.
    FINISHED = "finished"
    #: An iterator could not take it (a full buffer, a consumer gone): dropped.
    UNDELIVERED = "undelivered"
    #: An iterator's consumer took it and gave it up (cancelled): dropped here, but a
    #: delivery as far as a work queue is concerned.
    INTERRUPTED = "interrupted"
    #: Its data does not fit the registration's schema: a decode error, not a failure.
    UNFIT = "unfit"
    #: It raised `tidings.Retry` (in a consumer group: a delivery to make again
    #: later; elsewhere a failure like any other).
    RETRY = "retry"
    #: It raised anything else: a callback error.
    FAILED = "failed"

    @property
    def counter(self) -> str:
        """The `Counters` field this outcome counts in."""
        return _COUNTERS[self]


_COUNTERS = {
    Outcome.DONE: "delivered",
    Outcome.FINISHED: "delivered",
    Outcome.UNDELIVERED: "dropped",
    Outcome.INTERRUPTED: "dropped",
    Outcome.UNFIT: "decode_errors",
    Outcome.RETRY: "retries",
    Outcome.FAILED: "callback_errors",
}


def outcome(exc: BaseException | None) -> Outcome:
    """The outcome of a call that raised ``exc`` (None: it returned).

    A `BaseException` that is not an `Exception` (a cancellation) is not an outcome:
    the caller lets it propagate, and never gets here with it.
    """
    if exc is None:
        return Outcome.DONE
    if isinstance(exc, CallbackError):
        return Outcome.FINISHED
    if isinstance(exc, Interrupted):
        return Outcome.INTERRUPTED
    if isinstance(exc, Undelivered):
        return Outcome.UNDELIVERED
    if isinstance(exc, Unfit):
        return Outcome.UNFIT
    if isinstance(exc, Retry):
        return Outcome.RETRY
    return Outcome.FAILED


def count(stats: Counters, result: Outcome) -> None:
    """Count one outcome in ``stats``."""
    field = _COUNTERS[result]
    setattr(stats, field, getattr(stats, field) + 1)


class Meta(NamedTuple):
    """What a delivery carries beside the callback's arguments, as data: the actor
    that has it hands it to the registrations that take it (iterators, for their
    `Event`), never through an attribute someone else reads later."""

    #: The event's entry id in its channel's log (durable channels), else None.
    id: str | None = None
    #: How many times a consumer group has delivered it, this time included.
    deliveries: int | None = None
    #: Its headers (read-only; empty when it has none).
    headers: Headers = NO_HEADERS


#: The metadata of a plain channel's message: none.
NO_META = Meta()


class Wrapper:
    """A callback wrapped by tidings (converted data, a span around the call) that
    stands for the callback itself: equal to it and hashed like it, so that the same
    callback is found, deduplicated and unregistered however it is wrapped."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[..., Any]) -> None:
        self.callback = callback

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Wrapper):
            return bool(self.callback == other.callback)
        return bool(self.callback == other)

    def __hash__(self) -> int:
        return hash(self.callback)

    def __repr__(self) -> str:
        return repr(self.callback)


def named(callback: Any) -> str:
    """A callback as a log line names it: ``module.qualified_name`` (through the
    wrappers tidings puts around it, and `functools.partial`), not its repr."""
    while isinstance(callback, Wrapper):
        callback = callback.callback
    while isinstance(callback, functools.partial):
        callback = callback.func
    target = callback if hasattr(callback, "__qualname__") else type(callback)
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", repr(target))
    return f"{module}.{name}" if module else name


class Registration:
    """One callback registered under one key (an event pattern, or a client)."""

    __slots__ = (
        "active",
        "callback",
        "cursor",
        "failures",
        "group",
        "key",
        "owner",
        "since",
        "takes_meta",
    )

    def __init__(
        self, key: str, callback: Callable[..., Any], owner: Any = None, *, takes_meta: bool = False
    ) -> None:
        self.key = key
        #: What holds the registration (a channel's state, a PubSub), for its removal.
        self.owner = owner
        self.callback = callback
        #: True for an iterator's feed: it is called with the delivery's `Meta` after
        #: the arguments, to build its `Event` from.
        self.takes_meta = takes_meta
        #: Its failure budget, made at its first failure (most callbacks never fail).
        self.failures: Intensity | None = None
        #: Cleared on removal, so a removal during a dispatch takes effect at once.
        self.active = True
        #: The mailbox position when it was added: it is not called for messages
        #: at or before it (they were published before it was registered). On a
        #: durable channel, the position (from the entry id) of the last event it
        #: was given or passed over.
        self.since = 0
        #: Durable channels: where a registration that starts in the past (``since=``)
        #: starts, until the channel's catch-up read takes it there.
        self.cursor: int | None = None
        #: The consumer group it belongs to (a work queue), or None.
        self.group: str | None = None

    def call(self, args: tuple[Any, ...], meta: Meta) -> Any:
        """Call the callback for one message (sync: its result may be awaitable)."""
        if self.takes_meta:
            return self.callback(*args, meta)
        return self.callback(*args)

    def __repr__(self) -> str:
        return f"<Registration {self.key!r} {self.callback!r}>"


class Dispatcher:
    """Calls registrations in order and applies the failure policy.

    ``dispatch`` is synchronous for as long as the callbacks are; at the first one
    that returns an awaitable it hands back a coroutine finishing the job, so a
    batch of sync callbacks costs no coroutine per message.
    """

    __slots__ = ("_logger", "_remove", "_stats", "failure_limit", "failure_window")

    def __init__(
        self,
        *,
        stats: Counters,
        logger: logging.Logger,
        remove: Callable[[Registration], None],
        failure_limit: int,
        failure_window: float,
    ) -> None:
        self._stats = stats
        self._logger = logger
        self._remove = remove
        self.failure_limit = failure_limit
        self.failure_window = failure_window

    def registration(
        self, key: str, callback: Callable[..., Any], owner: Any = None, *, takes_meta: bool = False
    ) -> Registration:
        """A new registration, to be dispatched by this dispatcher."""
        return Registration(key, callback, owner, takes_meta=takes_meta)

    def dispatch(
        self,
        registrations: tuple[Registration, ...],
        args: tuple[Any, ...],
        where: str,
        position: int,
        meta: Meta = NO_META,
        called: bool = False,
    ) -> Unfinished | None:
        """Call each active registration added before ``position`` with ``args``.

        A message that no registration takes is counted ``unrouted`` (``called``
        says an earlier part of this dispatch took it). Each call counts as its
        `outcome()` says.

        Returns:
            None when every call completed, else the `Unfinished` rest.
        """
        for index, registration in enumerate(registrations):
            if not registration.active or registration.since >= position:
                continue
            called = True
            try:
                if registration.takes_meta:
                    result = registration.callback(*args, meta)
                else:  # (inlined `Registration.call`: this is the hot loop)
                    result = registration.callback(*args)
            except Exception as exc:
                self.account(registration, exc, where)
                continue
            if result is not None and inspect.isawaitable(result):
                rest = registrations[index + 1 :]
                return Unfinished(self, result, registration, rest, args, where, position, meta)
            self._stats.delivered += 1
        if not called:
            self._stats.unrouted += 1
        return None

    def account(
        self,
        registration: Registration,
        exc: Exception | None,
        where: str,
        *,
        failed: Callable[[Registration, Exception, str], None] | None = None,
    ) -> Outcome:
        """Count a call that ended (raising ``exc``, or None) and apply the policy:
        a `CallbackError` removes the callback; another error is logged and counted
        against its failure budget (``failed``, if given, handles it instead: a
        consumer group retries the event rather than the callback)."""
        if exc is None:  # the common case, spelled out: a work queue's every job
            self._stats.delivered += 1
            return Outcome.DONE
        result = outcome(exc)
        count(self._stats, result)
        if result is Outcome.FINISHED:
            self._logger.debug(
                "%s: %s raised CallbackError, unregistered", where, named(registration.callback)
            )
            self.drop(registration)
        elif result is Outcome.FAILED or result is Outcome.RETRY:
            assert exc is not None
            (failed or self._failed)(registration, exc, where)
        return result

    def _failed(self, registration: Registration, exc: Exception, where: str) -> None:
        self._logger.error(
            "%s: callback %s for %r failed",
            where,
            named(registration.callback),
            registration.key,
            exc_info=exc,
        )
        failures = registration.failures
        if failures is None:
            failures = registration.failures = Intensity(self.failure_limit, self.failure_window)
        if failures.record(anyio.current_time()):
            self._logger.error(
                "%s: callback %s for %r removed: it failed more than %d times in %gs",
                where,
                named(registration.callback),
                registration.key,
                self.failure_limit,
                self.failure_window,
            )
            self.drop(registration)

    def drop(self, registration: Registration) -> None:
        """Remove a registration for good (its owner forgets it)."""
        if registration.active:
            registration.active = False
            self._stats.callbacks_removed += 1
            self._remove(registration)


class Unfinished:
    """The rest of a dispatch, from the first callback that returned an awaitable.

    `complete()` awaits it and calls the registrations after it; a message
    given up before that (its actor stopped first) is `abandon()`-ed.
    """

    __slots__ = (
        "_args",
        "_awaitable",
        "_dispatcher",
        "_meta",
        "_position",
        "_registration",
        "_rest",
        "_where",
    )

    def __init__(
        self,
        dispatcher: Dispatcher,
        awaitable: Awaitable[Any],
        registration: Registration,
        rest: tuple[Registration, ...],
        args: tuple[Any, ...],
        where: str,
        position: int,
        meta: Meta,
    ) -> None:
        self._dispatcher = dispatcher
        self._awaitable = awaitable
        self._registration = registration
        self._rest = rest
        self._args = args
        self._where = where
        self._position = position
        self._meta = meta

    async def complete(self) -> None:
        """Await the pending callback, then call the ones after it, in order."""
        dispatcher = self._dispatcher
        unfinished: Unfinished | None = self
        while unfinished is not None:
            error: Exception | None = None
            try:
                await unfinished._awaitable
            except Exception as exc:
                error = exc
            dispatcher.account(unfinished._registration, error, unfinished._where)
            unfinished = dispatcher.dispatch(
                unfinished._rest,
                unfinished._args,
                unfinished._where,
                unfinished._position,
                unfinished._meta,
                True,
            )

    def abandon(self) -> None:
        """Never to be completed: close the callback's coroutine (no "never awaited")."""
        close = getattr(self._awaitable, "close", None)
        if close is not None:
            close()
