"""Calling user callbacks: sync or async, in order, with a failure policy.

A callback that raises is logged with its traceback and counted; it stays registered
unless it fails more than ``failure_limit`` times within ``failure_window`` seconds,
when it is removed (and that is logged too). Raising `CallbackError`
removes it at once, quietly.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .._stats import Counters
from ..errors import CallbackError
from ..policies.intensity import Intensity

__all__ = [
    "DEAF",
    "Dispatcher",
    "Interrupted",
    "Registration",
    "Undelivered",
    "Unfinished",
    "Unfit",
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


class Registration:
    """One callback registered under one key (an event pattern, or a client)."""

    __slots__ = ("active", "callback", "cursor", "failures", "group", "key", "owner", "since")

    def __init__(self, key: str, callback: Callable[..., Any], owner: Any = None) -> None:
        self.key = key
        #: What holds the registration (a Channel, a PubSub), for its removal.
        self.owner = owner
        self.callback = callback
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
        self, key: str, callback: Callable[..., Any], owner: Any = None
    ) -> Registration:
        """A new registration (its failures are counted against this dispatcher's
        budget)."""
        return Registration(key, callback, owner)

    def dispatch(
        self,
        registrations: tuple[Registration, ...],
        args: tuple[Any, ...],
        where: str,
        position: int,
        called: bool = False,
    ) -> Unfinished | None:
        """Call each active registration added before ``position`` with ``args``.

        A message that no registration takes is counted ``unrouted`` (``called``
        says an earlier part of this dispatch took it). A call that returns, or
        raises `CallbackError`, counts as ``delivered``; one that
        raises anything else as a ``callback_error``.

        Returns:
            None when every call completed, else the `Unfinished` rest.
        """
        for index, registration in enumerate(registrations):
            if not registration.active or registration.since >= position:
                continue
            called = True
            try:
                result = registration.callback(*args)
            except CallbackError:
                self._stats.delivered += 1
                self._unregister(registration, where)
                continue
            except Undelivered:
                self._stats.dropped += 1
                continue
            except Unfit:  # its schema refused the data (logged by the schema's wrapper)
                self._stats.decode_errors += 1
                continue
            except Exception as exc:
                self._failed(registration, exc, where)
                continue
            if result is not None and inspect.isawaitable(result):
                rest = registrations[index + 1 :]
                return Unfinished(self, result, registration, rest, args, where, position)
            self._stats.delivered += 1
        if not called:
            self._stats.unrouted += 1
        return None

    def _unregister(self, registration: Registration, where: str) -> None:
        self._logger.debug("%s: %r raised CallbackError, unregistered", where, registration)
        self._drop(registration)

    def _failed(self, registration: Registration, exc: Exception, where: str) -> None:
        self._stats.callback_errors += 1
        self._logger.error(
            "%s: callback %r for %r failed",
            where,
            registration.callback,
            registration.key,
            exc_info=exc,
        )
        failures = registration.failures
        if failures is None:
            failures = registration.failures = Intensity(self.failure_limit, self.failure_window)
        if failures.record(anyio.current_time()):
            self._logger.error(
                "%s: callback %r for %r removed: it failed more than %d times in %gs",
                where,
                registration.callback,
                registration.key,
                self.failure_limit,
                self.failure_window,
            )
            self._drop(registration)

    def _drop(self, registration: Registration) -> None:
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
    ) -> None:
        self._dispatcher = dispatcher
        self._awaitable = awaitable
        self._registration = registration
        self._rest = rest
        self._args = args
        self._where = where
        self._position = position

    async def complete(self) -> None:
        """Await the pending callback, then call the ones after it, in order."""
        dispatcher = self._dispatcher
        unfinished: Unfinished | None = self
        while unfinished is not None:
            stats, registration = dispatcher._stats, unfinished._registration
            try:
                await unfinished._awaitable
            except CallbackError:
                stats.delivered += 1
                dispatcher._unregister(registration, unfinished._where)
            except Exception as exc:
                dispatcher._failed(registration, exc, unfinished._where)
            else:
                stats.delivered += 1
            unfinished = dispatcher.dispatch(
                unfinished._rest, unfinished._args, unfinished._where, unfinished._position, True
            )

    def abandon(self) -> None:
        """Never to be completed: close the callback's coroutine (no "never awaited")."""
        close = getattr(self._awaitable, "close", None)
        if close is not None:
            close()
