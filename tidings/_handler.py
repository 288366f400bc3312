"""The life cycle shared by Channels and PubSub: run, async with, connect, close.

A handler is the root of a small task tree::

    run() ── task group ─┬─ ActorSupervisor ── one task per actor
                         └─ ConnectionSupervisor ── session ── reader, sync loop

It runs either in the caller's nursery (``await nursery.start(handler.run)``) or in
its own (``async with handler:``). Nothing outlives it: leaving ``async with``, or
``run`` returning or being cancelled, ends every task and closes every connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint

from ._options import Options
from ._stats import Counters, Stats
from ._util import collapse_exception_group
from .actors.callbacks import Dispatcher, Registration
from .brokers.base import Broker, Message
from .errors import ReplyError
from .policies.status import StatusType
from .supervisors.actors import ActorSupervisor
from .supervisors.connection import ConnectionSupervisor

__all__ = ["Handler"]

_State = Literal["new", "running", "closed"]


class Handler:
    """Base of :class:`~tidings.Channels` and :class:`~tidings.PubSub`."""

    #: The status enumeration (the seed API's name for it).
    statusType = StatusType

    def __init__(self, broker: Broker, options: Options, logger: logging.Logger | None) -> None:
        self._options = options
        self._logger = logger if logger is not None else logging.getLogger("tidings")
        self._stats = Counters()
        self._actors = ActorSupervisor(
            max_restarts=options.max_restarts,
            restart_window=options.restart_window,
            stats=self._stats,
            logger=self._logger,
        )
        self._connection = ConnectionSupervisor(
            broker,
            deliver=self._deliver,
            on_status=self._on_status,
            on_refused=self._on_refused,
            backoff=options.backoff,
            connect_timeout=options.connect_timeout,
            publish_timeout=options.publish_timeout,
            health_check_interval=options.health_check_interval,
            stats=self._stats,
            logger=self._logger,
        )
        self._state: _State = "new"
        #: True while running and not asked to stop: one flag for the hot paths.
        self._accepting = False
        self._stopping: anyio.Event | None = None
        self._context: AbstractAsyncContextManager[Any] | None = None

    # -- hooks for subclasses -----------------------------------------------------------

    async def _deliver(self, batch: list[Message]) -> None:
        raise NotImplementedError

    def _on_status(self, status: StatusType, data: dict[str, Any]) -> None:
        """Called on every status transition (from the connection supervisor)."""

    def _removed(self, registration: Registration) -> None:
        """A dispatcher removed a failing (or finished) callback."""

    def _new_dispatcher(self, stats: Counters) -> Dispatcher:
        """A dispatcher counting into ``stats``, with the options' failure policy."""
        return Dispatcher(
            stats=stats,
            logger=self._logger,
            remove=self._removed,
            failure_limit=self._options.callback_failure_limit,
            failure_window=self._options.callback_failure_window,
        )

    def _on_refused(
        self, channels: tuple[str, ...], patterns: tuple[str, ...], error: ReplyError
    ) -> None:
        """The broker refused these subscriptions; they are no longer wanted."""

    def _start_actors(self) -> None:
        """Start the actors that exist before any subscription."""

    async def _after_run(self) -> None:
        """Last clean-up, shielded and bounded, on every way out of ``run``."""

    # -- public life cycle --------------------------------------------------------------

    @property
    def status(self) -> StatusType:
        """The connection status."""
        return self._connection.status

    @property
    def last_error(self) -> str | None:
        """What ended the latest connection attempt or connection, while it matters.

        ``None`` once connected again (the same text is in the ``disconnected``
        status event).
        """
        return self._connection.last_error

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return self._stats.snapshot()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until :meth:`close` is called or the task is cancelled.

        Start it in your own nursery or task group. It reports started after its
        first connection attempt: connected if the broker is up, else disconnected
        and retrying in the background (use :meth:`connect` to wait for it)::

            async with trio.open_nursery() as nursery:
                await nursery.start(handler.run)
                ...
                await handler.close()

        Raises:
            RuntimeError: it is already running, or was closed (handlers are one-shot).
            Exception: an actor crash that exceeded the restart intensity.
        """
        if self._state != "new":
            raise RuntimeError(f"{self!s} is {self._state}: a handler runs once; create a new one")
        self._stopping = anyio.Event()
        self._state = "running"
        self._accepting = True
        with collapse_exception_group():
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(self._actors.run)
                    self._start_actors()
                    await tg.start(self._connection.run)
                    task_status.started()
                    await self._stopping.wait()
                    await self._connection.aclose()
                    self._actors.stop_all()
                    with anyio.move_on_after(self._options.close_timeout):
                        await self._actors.wait_stopped()
                    tg.cancel_scope.cancel()
            finally:
                self._state = "closed"
                self._accepting = False
                with anyio.move_on_after(1.0, shield=True):
                    await self._after_run()

    async def connect(self) -> None:
        """Return once connected (bound the wait with ``anyio.fail_after``).

        Raises:
            RuntimeError: not running (start it with ``async with`` or ``run``).
            anyio.ClosedResourceError: closed before a connection was made.
        """
        self._check_running("connect")
        await self._connection.wait_connected()

    async def close(self) -> None:
        """Close the connections and end ``run``; idempotent.

        Returns once the status is ``closed``; actors then finish what is queued
        (up to ``close_timeout``) while ``run`` winds down.
        """
        if self._state == "running":
            assert self._stopping is not None
            self._accepting = False
            self._stopping.set()
            await self._connection.aclose()
        elif self._state == "new":
            self._state = "closed"
            await self._connection.aclose()
        else:
            await checkpoint()

    async def aclose(self) -> None:
        """The same as :meth:`close` (anyio's name for it)."""
        await self.close()

    async def __aenter__(self) -> Self:
        if self._context is not None or self._state != "new":
            # Checked before anything changes: the block already running this
            # handler must stay intact.
            raise RuntimeError(
                f"{self!s} is {'running' if self._state != 'closed' else 'closed'}: "
                "a handler runs once; create a new one"
            )
        context = self._running()
        await context.__aenter__()
        self._context = context
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._context is not None
        context, self._context = self._context, None
        return await context.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Any]:
        with collapse_exception_group():
            async with anyio.create_task_group() as tg:
                await tg.start(self.run)
                try:
                    yield self
                finally:
                    self._accepting = False
                    if self._stopping is not None:
                        self._stopping.set()

    def _check_running(self, what: str) -> None:
        if self._accepting:
            return
        if self._state == "new":
            raise RuntimeError(
                f"cannot {what}: {type(self).__name__} is not running; use "
                f"'async with' on it, or start it with 'await nursery.start(handler.run)'"
            )
        raise RuntimeError(f"cannot {what}: {type(self).__name__} is closed; create a new one")
