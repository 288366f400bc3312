"""The connection supervisor: owns the broker connections and the status.

It connects (a subscriber and a publisher connection), resubscribes everything
that is wanted, reports ``connected``, then reads until the connection is lost; then
it reports ``disconnected``, waits a back-off delay and tries again, forever, until
it is closed. What each transition says, and how long to wait, is decided by the
sans-IO `Reconnect` policy; every transition is
reported to ``on_status``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint

from .._util import cleanup_scope
from ..brokers.base import (
    COMMAND_ERRORS,
    CONNECTION_ERRORS,
    Broker,
    ConnectionLost,
    Dedupe,
    Deliver,
    Outgoing,
    Publisher,
    Subscriber,
)
from ..errors import BrokerError, PublishError, ReplyError, TidingsError
from ..policies.backoff import Backoff
from ..policies.status import Reconnect, StatusType
from ..policies.streams import Retention
from ..stats import Counters
from .rounds import OnRefused, OnSubscribed, SubscriptionRounds

__all__ = ["ConnectionSupervisor"]

T = TypeVar("T")
OnStatus = Callable[[StatusType, dict[str, Any]], None]


def describe(exc: BaseException) -> str:
    """One line naming an exception and its root cause, for status events and logs.

    >>> try:
    ...     raise OSError("connect failed") from ExceptionGroup(
    ...         "", [ConnectionRefusedError(111, "Connection refused")])
    ... except OSError as exc:
    ...     describe(exc)
    'OSError: connect failed (ConnectionRefusedError: [Errno 111] Connection refused)'
    """
    text = _one(exc)
    cause = exc.__cause__
    while isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if cause is not None:
        text = f"{text} ({_one(cause)})"
    return text


def _one(exc: BaseException) -> str:
    text = str(exc)
    # ConnectionLost is internal: users know it (and status events name it) as the
    # public BrokerError it is.
    name = BrokerError.__name__ if type(exc) is ConnectionLost else type(exc).__name__
    return f"{name}: {text}" if text else name


class ConnectionSupervisor:
    """Connect, resubscribe, read; on failure back off and reconnect, until closed."""

    def __init__(
        self,
        broker: Broker,
        *,
        deliver: Deliver,
        on_status: OnStatus,
        on_refused: OnRefused,
        on_subscribed: OnSubscribed,
        backoff: Backoff,
        connect_timeout: float,
        publish_timeout: float,
        health_check_interval: float,
        stats: Counters,
        logger: logging.Logger,
        fail_fast: bool = False,
    ) -> None:
        self.broker = broker
        # Raise from run() if the first attempt fails, rather than retry.
        self._fail_fast = fail_fast
        #: What is wanted subscribed, and the rounds that make it so.
        self.rounds = SubscriptionRounds(
            broker, on_subscribed=on_subscribed, on_refused=on_refused, logger=logger
        )
        self._deliver = deliver
        self._on_status = on_status
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._health_check_interval = health_check_interval
        self._stats = stats
        self._logger = logger
        self._backoff = backoff
        self._policy = Reconnect(backoff)
        # The live connections; set by the session task only.
        self._subscriber: Subscriber | None = None
        # The publisher is usable (``_publisher``) only once connected.
        self._publisher: Publisher | None = None
        self._session_publisher: Publisher | None = None
        self._session_scope: anyio.CancelScope | None = None
        self._lost = _Lost()
        # Created by run(), inside the event loop.
        self._run_scope: anyio.CancelScope | None = None
        self._changed: anyio.Event | None = None
        self._finished: anyio.Event | None = None

    def reset(self) -> None:
        """Make a closed supervisor ready to run again (the handler is started again):
        a fresh status (``initialised``) and reconnect policy; what is wanted stays
        wanted, and the first connection subscribes it."""
        self._policy = Reconnect(self._backoff)
        self._lost = _Lost()
        self.rounds.reset()
        self._run_scope = None

    @property
    def status(self) -> StatusType:
        """The current status."""
        return self._policy.status

    @property
    def last_error(self) -> str | None:
        """The error that ended the latest attempt or connection; None once connected."""
        return self._policy.last_error

    # -- the supervision loop ---------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect and stay connected until `aclose()` or cancellation.

        It reports started once the first attempt has connected or failed, so a
        healthy broker is connected (and subscribed) by the time the caller goes on,
        and a dead one delays the caller by at most ``connect_timeout``. With
        ``fail_fast``, a first attempt that fails ends it instead.

        Raises:
            BrokerError: ``fail_fast``, and the first attempt failed (the cause chained).
        """
        # Waiters of a previous run (a handler started again) look again, at this one.
        previous, self._changed, self._finished = self._changed, anyio.Event(), anyio.Event()
        if previous is not None:
            previous.set()
        self.rounds.start()
        ready = _Once(task_status.started)
        if self._policy.status is StatusType.closed:  # closed before it started
            ready()
            self._finished.set()
            return
        failed: BaseException | None = None
        try:
            with anyio.CancelScope() as self._run_scope:
                while True:
                    self._report(StatusType.connecting, self._policy.connecting())
                    error = await self._session(ready)
                    if self._fail_fast and not ready.called:  # never connected
                        failed = error
                    else:
                        ready()
                    data, delay = self._policy.disconnected(describe(error), anyio.current_time())
                    if failed is not None:
                        data["retry_in"] = None  # it will not be
                    self._report(StatusType.disconnected, data)
                    if failed is not None:
                        raise BrokerError(
                            f"cannot connect to {self.broker.url} (fail_fast=True): "
                            f"{describe(failed)}"
                        ) from failed
                    await anyio.sleep(delay)
        finally:
            # Closed (or cancelled) during the first attempt: the caller of start()
            # is told it started, then sees the status closed. (Failing fast, it is
            # told why instead.)
            if failed is None:
                ready()
            self._close()
            self._finished.set()

    async def _session(self, ready: Callable[[], None]) -> BaseException:
        """One connection's life; returns the error that ended it."""
        subscriber: Subscriber | None = None
        publisher: Publisher | None = None
        lost = self._lost = _Lost()
        try:
            try:
                with anyio.fail_after(self._connect_timeout):
                    subscriber = await self.broker.open_subscriber(
                        health_check_interval=self._health_check_interval,
                        reply_timeout=self._connect_timeout,
                    )
                    publisher = await self.broker.open_publisher(
                        health_check_interval=self._health_check_interval,
                        reply_timeout=self._publish_timeout,
                    )
            except COMMAND_ERRORS as exc:  # refused too: a failed attempt
                lost.record(exc)
                return lost.error
            async with anyio.create_task_group() as tg:
                self._session_scope = tg.cancel_scope
                self._subscriber = subscriber
                self.rounds.connected(subscriber)
                self._session_publisher = publisher
                tg.start_soon(self._read, subscriber, subscriber.run, self._deliver)
                tg.start_soon(self._read, publisher, publisher.run)
                try:
                    resubscribed = await self.rounds.round(subscriber)
                except COMMAND_ERRORS as exc:
                    self._lose(exc, subscriber)
                else:
                    self._publisher = publisher
                    self._connected(resubscribed)
                    ready()
                    tg.start_soon(self._read, subscriber, self.rounds.sync_loop, subscriber)
                    await anyio.sleep_forever()
        finally:
            self._subscriber = self._publisher = self._session_publisher = None
            self._session_scope = None
            self.rounds.lost()
            for connection in (publisher, subscriber):
                if connection is not None:
                    with cleanup_scope(), suppress(*COMMAND_ERRORS):
                        await connection.aclose()
        return lost.error

    def _connected(self, resubscribed: int) -> None:
        data, again = self._policy.connected(anyio.current_time())
        if again:
            self._stats.reconnects += 1
            self._stats.resubscribes += resubscribed
        self._report(StatusType.connected, data)

    async def _read(
        self, connection: Subscriber | Publisher, read: Callable[..., Awaitable[None]], *args: Any
    ) -> None:
        """Run a task of a connection (its reader, the sync loop); its end ends the session."""
        try:
            await read(*args)
        except COMMAND_ERRORS as exc:  # either way, the session ends
            self._lose(exc, connection)
        else:
            self._lose(anyio.BrokenResourceError("the broker closed the connection"), connection)

    def _lose(self, exc: BaseException, connection: Subscriber | Publisher) -> None:
        """Record that the current session's connection failed, and end the session."""
        if connection is not self._subscriber and connection is not self._session_publisher:
            return  # a failure of a connection already replaced
        if connection is self._publisher:
            # No command goes to it any more: the next one waits for the next session.
            self._publisher = None
        if self._lost.record(exc):
            self._logger.warning("connection to %s lost: %s", self.broker.url, describe(exc))
        if self._session_scope is not None:
            self._session_scope.cancel()

    def _report(self, new: StatusType, data: dict[str, Any]) -> None:
        server = self.broker.server
        if server is not None and new in (StatusType.connected, StatusType.disconnected):
            data = {**data, "server": server}  # the one it found (Sentinel), or lost
        level = logging.INFO if new is not StatusType.disconnected else logging.WARNING
        self._logger.log(level, "%s: %s %s", self.broker.url, new.name, _summary(data))
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()
        self._on_status(new, data)

    def _close(self) -> None:
        data = self._policy.closed()
        if data is not None:  # else closed already
            self._report(StatusType.closed, data)

    # -- subscriptions (see `SubscriptionRounds`) ----------------------------------------

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels wanted, in the order they were first wanted."""
        return self.rounds.channels

    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns wanted, in the order they were first wanted."""
        return self.rounds.patterns

    def wants(self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> bool:
        """True when every one of these is wanted."""
        return self.rounds.wants(channels, patterns)

    async def subscribe(
        self,
        channels: tuple[str, ...] = (),
        patterns: tuple[str, ...] = (),
        mark: Callable[[], None] | None = None,
    ) -> None:
        """See `SubscriptionRounds.subscribe()`."""
        await self.rounds.subscribe(channels, patterns, mark)

    def unsubscribe_nowait(
        self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()
    ) -> None:
        """Stop wanting these subscriptions; the sync loop unsubscribes soon."""
        self.rounds.unsubscribe_nowait(channels, patterns)

    async def unsubscribe(
        self, channels: tuple[str, ...] = (), patterns: tuple[str, ...] = ()
    ) -> None:
        """See `SubscriptionRounds.unsubscribe()`."""
        await self.rounds.unsubscribe(channels, patterns)

    @property
    def in_sync(self) -> bool:
        """True when the broker has confirmed everything wanted (and nothing more)."""
        return self.rounds.in_sync

    # -- commands ---------------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        payload: bytes,
        retention: Retention | None = None,
        dedupe: Dedupe | None = None,
    ) -> int:
        """Publish, waiting up to ``publish_timeout`` for a connection; with a
        ``retention``, store it in the channel's log too (a durable channel), unless
        ``dedupe`` finds its key published within its window (then it returns 0).

        Raises:
            PublishError: no connection in time, closed, or lost while publishing.
        """
        publisher = self._publisher  # connected: no wait, not even a coroutine
        if publisher is None:
            publisher = await self._ready(PublishError, f"publish to {channel!r}")
        try:
            if retention is None:
                received = await publisher.publish(channel, payload)
            else:
                entry, received = await publisher.append(channel, payload, retention, dedupe)
                if entry is None:  # its key was published within the window: a repeat
                    self._stats.deduplicated += 1
                    return 0
        except ReplyError as exc:  # refused: the connection itself is fine
            self._stats.publish_errors += 1
            raise PublishError(f"the broker refused the publish to {channel!r}: {exc}") from exc
        except CONNECTION_ERRORS as exc:
            self._lose(exc, publisher)
            self._stats.publish_errors += 1
            raise PublishError(
                f"connection to {self.broker.url} lost while publishing to {channel!r} "
                f"(the broker may or may not have received it): {describe(exc)}"
            ) from exc
        self._stats.published += 1
        return received

    async def publish_many(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish (or append) every item in as few writes as the broker allows,
        waiting like `publish()`; the receiver counts in order (0 for a repeated key).

        Raises:
            PublishError: no connection in time, closed, or lost while publishing
                (some items may have been published); or the broker refused an item
                (the message says which; the others were published).
        """
        publisher = self._publisher
        if publisher is None:
            publisher = await self._ready(
                PublishError, f"publish {len(items)} events", events=len(items)
            )
        stats = self._stats
        try:
            outcomes = await publisher.send_many(items)
        except ReplyError as exc:  # refused before any item (a cluster's slot map)
            stats.publish_errors += len(items)
            raise PublishError(
                f"the broker refused the publish of {len(items)} events: {exc}"
            ) from exc
        except CONNECTION_ERRORS as exc:
            self._lose(exc, publisher)
            stats.publish_errors += len(items)
            raise PublishError(
                f"connection to {self.broker.url} lost while publishing {len(items)} events "
                f"(the broker may have received some or all of them): {describe(exc)}"
            ) from exc
        counts: list[int] = []
        refused: tuple[int, ReplyError] | None = None
        for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            if isinstance(outcome, ReplyError):
                stats.publish_errors += 1
                refused = refused or (index, outcome)
                counts.append(0)
            elif item[2] is not None and outcome[0] is None:  # a repeated key
                stats.deduplicated += 1
                counts.append(0)
            else:
                stats.published += 1
                counts.append(outcome[1])
        if refused is not None:
            index, first = refused
            failed = sum(isinstance(outcome, ReplyError) for outcome in outcomes)
            raise PublishError(
                f"the broker refused the publish of item {index} (to {items[index][0]!r}): "
                f"{first}; {failed} of {len(items)} refused, the others published"
            ) from first
        return counts

    async def query(self, what: str, command: Callable[[Publisher], Awaitable[T]]) -> T:
        """Run a query on the publisher connection, waiting like `publish()`.

        Raises:
            ConnectionLost: (a `tidings.BrokerError`) no connection in time, closed,
                or lost meanwhile.
            ReplyError: the broker refused the command (the connection is fine).
        """
        publisher = self._publisher or await self._ready(ConnectionLost, what)
        try:
            return await command(publisher)
        except CONNECTION_ERRORS as exc:  # a ReplyError (refused) is the caller's
            self._lose(exc, publisher)
            raise ConnectionLost(
                f"connection to {self.broker.url} lost during {what}: {describe(exc)}"
            ) from exc

    async def _ready(self, error: type[TidingsError], what: str, events: int = 1) -> Publisher:
        """The publisher once connected, waiting up to ``publish_timeout``; a
        `PublishError` counts ``events`` publish errors."""
        with anyio.move_on_after(self._publish_timeout):
            # Read through a call: the session task replaces it while we wait.
            while (publisher := self._current_publisher()) is None:
                if self._policy.status is StatusType.closed or self._changed is None:
                    if error is PublishError:
                        self._stats.publish_errors += events
                    raise error(f"cannot {what}: the connection to {self.broker.url} is closed")
                await self._changed.wait()
            return publisher
        if error is PublishError:
            self._stats.publish_errors += events
        cause = self._policy.last_error
        last = f" (last error: {cause})" if cause else ""
        raise error(
            f"cannot {what}: not connected to {self.broker.url} "
            f"within publish_timeout={self._publish_timeout:g}s{last}"
        )

    def _current_publisher(self) -> Publisher | None:
        return self._publisher

    async def wait_connected(self) -> None:
        """Return once connected.

        Raises:
            anyio.ClosedResourceError: closed before a connection was made.
        """
        while self._policy.status is not StatusType.connected:
            if self._policy.status is StatusType.closed or self._changed is None:
                raise anyio.ClosedResourceError("closed before the connection was made")
            await self._changed.wait()
        await checkpoint()

    async def aclose(self) -> None:
        """Stop the loop, close the connections, report ``closed``; idempotent."""
        if self._run_scope is None:
            self._close()
            await checkpoint()
            return
        self._run_scope.cancel()
        assert self._finished is not None
        await self._finished.wait()


class _Lost:
    """The first error that ended a session (later ones are consequences)."""

    __slots__ = ("_error",)

    def __init__(self) -> None:
        self._error: BaseException | None = None

    def record(self, error: BaseException) -> bool:
        """Keep ``error`` if it is the first; True if it was."""
        if self._error is not None:
            return False
        self._error = error
        return True

    @property
    def error(self) -> BaseException:
        return self._error or anyio.BrokenResourceError("connection lost")


class _Once:
    """Calls a function the first time it is called, and never again."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn: Callable[[], object] | None = fn

    @property
    def called(self) -> bool:
        return self._fn is None

    def __call__(self) -> None:
        if self._fn is not None:
            fn, self._fn = self._fn, None
            fn()


def _summary(data: dict[str, Any]) -> str:
    # Seconds to the millisecond: a log line is read by people.
    return " ".join(
        f"{key}={round(value, 3) if type(value) is float else value!r}"
        for key, value in data.items()
        if key not in ("status",) and value
    )
