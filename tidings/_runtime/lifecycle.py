"""The runtime of a handler: its task tree, its life cycle, its router, its counters.

A handler (`Channels` or `PubSub`) owns one `Runtime`, the root of a small task
tree::

    run() ── task group ─┬─ ActorSupervisor ── one task per busy actor
                         └─ ConnectionSupervisor ── session ── readers, sync loop

The runtime owns the `Router` and hands ``router.deliver`` to the connection
supervisor: the reader's batches go straight to the actors, never through a facade.
What is the handler's own it is told as `Hooks` (what to do on a status change or a
refused subscription, which actors exist from the start, the last clean-up). The
runtime wires the supervisors to each other; they never import each other. It runs
either in the caller's nursery (``await nursery.start(handler.run)``) or in its own
(``async with handler:``). Nothing outlives it: leaving ``async with``, or ``run``
returning or being cancelled, ends every task and closes every connection.

`Lifecycle` is the public face both handlers show (``run``, ``connect``,
``close``, ``status``...): thin methods that delegate to ``self._runtime``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint

from .._util import CLEANUP_TIMEOUT, cleanup_scope, collapse_exception_group
from ..actors.base import Actor
from ..actors.callbacks import Dispatcher, Registration
from ..actors.router import Router
from ..brokers.base import Broker
from ..options import Options
from ..policies.status import StatusType
from ..stats import Counters, Stats
from ..supervisors.actors import ActorSupervisor
from ..supervisors.connection import ConnectionSupervisor, OnStatus
from ..supervisors.rounds import OnRefused, OnSubscribed

__all__ = ["Hooks", "Lifecycle", "Runtime", "running", "runtime_of"]

_State = Literal["new", "running", "closed"]


def _ignore(*args: Any) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Hooks:
    """What a handler gives its runtime (each has a default that does nothing)."""

    #: Told a callback a dispatcher removed (failing, or finished).
    removed: Callable[[Registration], None] = _ignore
    #: Starts the actors that exist before any subscription.
    start_actors: Callable[[], None] = _ignore
    #: Last clean-up, shielded and bounded, on every way out of ``run``.
    after_run: Callable[[], Awaitable[None]] = checkpoint
    #: Told every status transition (a handler with no status channel ignores them).
    on_status: OnStatus = _ignore
    #: Told the subscriptions the broker refused, no longer wanted (a handler that
    #: keeps nothing per subscription ignores it).
    on_refused: OnRefused = _ignore
    #: Told the channels a round subscribed (a handler with durable channels
    #: reads back what it may have missed).
    on_subscribed: OnSubscribed = _ignore
    #: Last words while the connection is still up, on the way to closing
    #: (shielded, bounded): a handler with named consumers saves their positions.
    before_close: Callable[[], Awaitable[None]] = checkpoint
    #: Told ``(channel, dropped)`` at the start of each slow-consumer episode, after
    #: the runtime logged it (a handler with a status channel reports it there).
    on_slow_consumer: Callable[[str, int], None] = _ignore
    #: How logs name a route of the router (default: the broker's channel name).
    describe: Callable[[str], str] = repr
    #: Waits until the handler's work outside the actors is done, for `settle()`
    #: (a handler with consumer groups: every entry of their logs handled).
    settle: Callable[[], Awaitable[None]] = checkpoint


#: The runtimes running in this process, for whoever must close them all (``tidings
#: run`` on SIGTERM); weak: a handler dropped without closing is not kept alive here.
_RUNNING: weakref.WeakSet[Runtime] = weakref.WeakSet()


def running() -> list[Runtime]:
    """The runtimes running in this process now."""
    return [runtime for runtime in list(_RUNNING) if runtime.state == "running"]


class Runtime:
    """One handler's supervisors, counters and life cycle."""

    def __init__(
        self,
        broker: Broker,
        options: Options,
        logger: logging.Logger | None,
        *,
        kind: str,
    ) -> None:
        self.options = options
        self.logger = logger if logger is not None else logging.getLogger("tidings")
        self.stats = Counters()
        self.kind = kind  # "Channels" or "PubSub", for messages
        #: What the handler that owns this runtime does at each turn (set once, by
        #: the handler's own composition, before it runs).
        self.hooks = Hooks()
        self.actors = ActorSupervisor(
            max_restarts=options.max_restarts,
            restart_window=options.restart_window,
            stats=self.stats,
            logger=self.logger,
        )
        #: Channel name -> actor: the one hop from the reader to the actors.
        self.router = Router(self.stats, self.slow_consumer, self.spawn)
        self.connection = ConnectionSupervisor(
            broker,
            deliver=self.router.deliver,
            on_status=lambda status, data: self.hooks.on_status(status, data),
            on_refused=lambda channels, patterns, error: self.hooks.on_refused(
                channels, patterns, error
            ),
            on_subscribed=lambda names: self.hooks.on_subscribed(names),
            backoff=options.backoff,
            connect_timeout=options.connect_timeout,
            publish_timeout=options.publish_timeout,
            health_check_interval=options.health_check_interval,
            stats=self.stats,
            logger=self.logger,
            fail_fast=options.fail_fast,
        )
        self.state: _State = "new"
        #: True while running and not asked to stop: one flag for the hot paths.
        self.accepting = False
        self._stopping: anyio.Event | None = None
        # Set once the last words of this run were said (None: not begun).
        self._said: anyio.Event | None = None
        # Set once a run has wound down (a new one may start after a close).
        self._ended: anyio.Event | None = None
        self._context: AbstractAsyncContextManager[Any] | None = None

    def new_dispatcher(
        self, stats: Counters, removed: Callable[[Registration], None]
    ) -> Dispatcher:
        """A dispatcher counting into ``stats``, with the options' failure policy,
        telling ``removed`` each callback it removes."""
        return Dispatcher(
            stats=stats,
            logger=self.logger,
            remove=removed,
            failure_limit=self.options.callback_failure_limit,
            failure_window=self.options.callback_failure_window,
        )

    def slow_consumer(self, name: str, dropped: int) -> None:
        """A mailbox or an iterator's buffer began to overflow (see
        `starts_episode()`): say so, once per episode."""
        self.logger.warning(
            "%s is not keeping up: its buffer is full (max_pending=%d), dropping messages",
            self.hooks.describe(name),
            self.options.max_pending,
        )
        self.hooks.on_slow_consumer(name, dropped)

    def spawn(self, actor: Actor[Any], crashed: Exception | None) -> None:
        """Give a lazy actor a task (the router found it needs one)."""
        if self.accepting and self.actors.running:
            self.actors.start(actor, crashed)
        else:  # stopping: nothing runs callbacks any more
            self.stats.dropped += actor.discard()

    async def run(self, name: str, task_status: anyio.abc.TaskStatus[None]) -> None:
        """See `Lifecycle.run()` (``name`` is the handler's, for the error)."""
        if self.state == "running":
            if self._stopping is None or not self._stopping.is_set() or self._ended is None:
                raise RuntimeError(f"{name} is running already: it runs once at a time")
            await self._ended.wait()  # closed, and winding down: then again
        if self.state == "closed":  # started again: keeping its registrations
            self.connection.reset()
        self._stopping = anyio.Event()
        self._ended = anyio.Event()
        self._said = None
        self.state = "running"
        _RUNNING.add(self)
        with collapse_exception_group():
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(self.actors.run)
                    self.hooks.start_actors()
                    self.accepting = True  # actors can be started from now on
                    await tg.start(self.connection.run)
                    task_status.started()
                    await self._stopping.wait()
                    await self._last_words()
                    await self.connection.aclose()
                    self.actors.stop_all()
                    with anyio.move_on_after(self.options.close_timeout):
                        await self.actors.wait_stopped()
                    tg.cancel_scope.cancel()
            finally:
                self.state = "closed"
                _RUNNING.discard(self)
                self.accepting = False
                try:
                    with cleanup_scope():
                        await self.hooks.after_run()
                finally:
                    self._ended.set()

    async def connect(self) -> None:
        """See `Lifecycle.connect()`."""
        self.check_running("connect")
        await self.connection.wait_connected()

    async def close(self) -> None:
        """See `Lifecycle.close()`."""
        if self.state == "running":
            assert self._stopping is not None
            self.accepting = False
            self._stopping.set()
            await self._last_words()
            await self.connection.aclose()
        elif self.state == "new":
            self.state = "closed"
            await self.connection.aclose()
        else:
            await checkpoint()

    async def _last_words(self) -> None:
        """Say the handler's last words, once per run: `close()` says them before it
        returns, and ``run`` on its way out, whichever comes first; the other waits
        for them (both shielded and bounded)."""
        # As long as close_timeout allows (a second at least): consumer groups' members
        # finish the event in hand and acknowledge it before the connection goes.
        bound = max(self.options.close_timeout, CLEANUP_TIMEOUT)
        with anyio.move_on_after(bound, shield=True):
            if self._said is not None:
                await self._said.wait()
                return
            said = self._said = anyio.Event()
            try:
                await self.hooks.before_close()
            finally:
                said.set()

    async def settle(self) -> None:
        """Return once every message published so far has been dispatched (see
        ``tidings.testing.settle()``)."""
        self.check_running("settle")
        while True:
            received = self.stats.received
            # A round trip on the subscriber connection: everything the broker sent
            # before this point is in the mailboxes now.
            await self.connection.subscribe()
            await self.all_idle()
            await self.hooks.settle()
            await self.all_idle()
            if self.stats.received == received:
                return  # and nobody published more while it waited

    async def all_idle(self) -> None:
        """Return once every actor has handled everything it was given (callbacks
        returned, async ones too; iterators fed), without waiting for more.

        There is no event for "all idle" (an actor between tasks has no task to set
        one): it looks after each scheduling turn, and sleeps a millisecond between
        looks once a callback is slow, so that it never spins.
        """
        turns = 0
        while not all(actor.idle for _, actor in self.router):
            turns += 1
            if turns < 100:
                await checkpoint()
            else:
                await anyio.sleep(0.001)

    async def enter(self, name: str, run: Callable[..., Coroutine[Any, Any, None]]) -> None:
        """Start running in a task group of its own (``async with``)."""
        if self._context is not None or self.state == "running":
            # Checked before anything changes: the block already running this
            # handler must stay intact.
            raise RuntimeError(f"{name} is running already: it runs once at a time")
        context = self._running(run)
        await context.__aenter__()
        self._context = context

    async def exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop, and wait for the task group of `enter()` to end."""
        assert self._context is not None
        context, self._context = self._context, None
        return await context.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _running(self, run: Callable[..., Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
        with collapse_exception_group():
            async with anyio.create_task_group() as tg:
                await tg.start(run)
                try:
                    yield
                finally:
                    self.accepting = False
                    if self._stopping is not None:
                        self._stopping.set()

    def check_running(self, what: str) -> None:
        """Raise unless running and not asked to stop.

        Raises:
            RuntimeError: saying how to start it, or that it is closed.
        """
        if self.accepting:
            return
        if self.state == "new":
            raise RuntimeError(
                f"cannot {what}: {self.kind} is not running; use "
                f"'async with' on it, or start it with 'await nursery.start(handler.run)'"
            )
        if self.state == "running" and self._stopping is not None and not self._stopping.is_set():
            raise RuntimeError(
                f"cannot {what}: {self.kind} is still starting; start it with "
                f"'await nursery.start(handler.run)', which returns once it has started"
            )
        raise RuntimeError(
            f"cannot {what}: {self.kind} is closed; start it again ('async with' or run())"
        )


def runtime_of(handler: Lifecycle) -> Runtime:
    """The runtime of a handler (for ``tidings.testing``, which offers its primitives)."""
    return handler._runtime


class Lifecycle:
    """The life cycle both handlers show: thin methods over ``self._runtime``."""

    _runtime: Runtime

    #: The status enumeration (the seed API's name for it).
    statusType = StatusType

    @property
    def status(self) -> StatusType:
        """The connection status."""
        return self._runtime.connection.status

    @property
    def last_error(self) -> str | None:
        """What ended the latest connection attempt or connection, while it matters.

        ``None`` once connected again (the same text is in the ``disconnected``
        status event).
        """
        return self._runtime.connection.last_error

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return self._runtime.stats.snapshot()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until `close()` is called or the task is cancelled.

        Start it in your own nursery or task group. It reports started after its
        first connection attempt: connected if the broker is up, else disconnected
        and retrying in the background (use `connect()` to wait for it):

        ```python
        async with trio.open_nursery() as nursery:
            await nursery.start(handler.run)
            ...
            await handler.close()
        ```

        Raises:
            RuntimeError: it is running already. (A closed handler may be started
                again: it keeps its registrations and subscribes them anew.)
            Exception: an actor crash that exceeded the restart intensity.
        """
        await self._runtime.run(str(self), task_status)

    async def connect(self) -> None:
        """Return once connected (bound the wait with ``anyio.fail_after``).

        Raises:
            RuntimeError: not running (start it with ``async with`` or ``run``).
            anyio.ClosedResourceError: closed before a connection was made.
        """
        await self._runtime.connect()

    async def close(self) -> None:
        """Close the connections and end ``run``; idempotent.

        Returns once the status is ``closed``; actors then finish what is queued
        (up to ``close_timeout``) while ``run`` winds down.
        """
        await self._runtime.close()

    async def aclose(self) -> None:
        """The same as `close()` (anyio's name for it)."""
        await self.close()

    async def __aenter__(self) -> Self:
        await self._runtime.enter(str(self), self.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._runtime.exit(exc_type, exc, tb)
