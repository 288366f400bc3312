"""The actor supervisor: one-for-one supervision of actors.

Each actor runs in its own cancel scope inside the supervisor's task group. An actor
that raises is restarted at once, with the same mailbox, backlog and registrations;
if more than ``max_restarts`` crashes happen within ``restart_window`` seconds (all
actors counted together, as in Erlang/OTP), the supervisor stops restarting and
re-raises the crash, which ends the handler's ``run`` (escalation).

An actor may also be started *because* it crashed somewhere else (handled in place
by the router, outside any task): `ActorSupervisor.start()` takes that crash and
treats it as the actor's first, so the restart policy is the same either way. A
lazy actor's task ends when it has nothing to do; it is started again when it has.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio
import anyio.abc

from ..policies.intensity import Intensity
from ..stats import Counters

__all__ = ["ActorSupervisor", "Supervised"]


class Supervised(Protocol):
    """What the supervisor needs of an actor (``tidings.actors.base.Actor`` is one)."""

    name: str
    #: True while a task of this supervisor runs it (set and cleared here).
    running: bool

    async def run(self) -> None:
        """Work until the mailbox is closed and drained; may raise (a crash)."""

    def close(self) -> None:
        """Take no more work: drain what is queued, then let ``run`` return."""

    def discard(self) -> int:
        """Drop what is queued; return how many messages that was."""


class ActorSupervisor:
    """Starts, restarts and stops actors."""

    def __init__(
        self, *, max_restarts: int, restart_window: float, stats: Counters, logger: logging.Logger
    ) -> None:
        self._intensity = Intensity(max_restarts, restart_window)
        self._stats = stats
        self._logger = logger
        # Only this supervisor's tasks and the owning handler touch this dict.
        self._children: dict[str, tuple[Supervised, anyio.CancelScope]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._open = True
        self._stopping: anyio.Event | None = None
        self._stopped: anyio.Event | None = None

    @property
    def running(self) -> bool:
        """True while actors can be started."""
        return self._tg is not None and self._open

    def __contains__(self, name: str) -> bool:
        return name in self._children

    def __len__(self) -> int:
        return len(self._children)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Supervise until `stop_all()`; then let every actor drain and return."""
        self._stopping, self._stopped = anyio.Event(), anyio.Event()
        self._open = True
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                try:
                    await self._stopping.wait()
                    for actor, _ in self._children.values():
                        actor.close()
                finally:
                    # Past this point the task group takes no new task (cancelled
                    # while starting up, it never took one).
                    self._open = False
        finally:
            self._tg = None
            self._stopped.set()

    def start(self, actor: Supervised, crashed: Exception | None = None) -> None:
        """Start supervising ``actor`` (its name must be unique among the children).

        ``crashed``: what it raised while handled outside a task; supervised like a
        crash of ``run`` (restarted, or escalated past the restart intensity).
        """
        if self._tg is None or not self._open:
            raise RuntimeError("the actor supervisor is not running")
        if actor.name in self._children:
            raise RuntimeError(f"an actor named {actor.name!r} is already running")
        scope = anyio.CancelScope()
        self._children[actor.name] = (actor, scope)
        actor.running = True
        if self._stopping is not None and self._stopping.is_set():
            actor.close()  # started while stopping: it drains what it has, and ends
        self._tg.start_soon(
            self._supervise, actor, scope, crashed, name=f"tidings actor {actor.name!r}"
        )

    def stop(self, actor: Supervised) -> int:
        """Stop an actor now, discarding what is queued for it; return how much that was.

        The actor may be running in a task of this supervisor or not (a lazy actor
        between tasks).
        """
        entry = self._children.get(actor.name)
        if entry is not None and entry[0] is actor:
            del self._children[actor.name]
            entry[1].cancel()
        return actor.discard()

    def stop_all(self) -> None:
        """Close every mailbox; actors drain what is queued, then ``run`` returns."""
        if self._stopping is not None:
            self._stopping.set()

    async def wait_stopped(self) -> None:
        """Wait until ``run`` has returned."""
        if self._stopped is not None:
            await self._stopped.wait()

    def leftovers(self) -> list[Supervised]:
        """The actors that ``run`` cancelled before they drained, forgotten here.

        Their backlog is their owner's to account for (or to drain).
        """
        actors = [actor for actor, _ in self._children.values()]
        self._children.clear()
        return actors

    async def _supervise(
        self, actor: Supervised, scope: anyio.CancelScope, crashed: Exception | None
    ) -> None:
        try:
            with scope:
                if crashed is not None:
                    self._crashed(actor, crashed)
                while True:
                    try:
                        await actor.run()
                        break
                    except Exception as exc:
                        if scope.cancel_called:
                            break  # being stopped: whatever it raised on the way out
                        self._crashed(actor, exc)
        finally:
            actor.running = False
        # Done, or stopped: no longer a child. (Cancelled with the whole group, it
        # stays one, for ``leftovers``.)
        entry = self._children.get(actor.name)
        if entry is not None and entry[0] is actor:
            del self._children[actor.name]

    def _crashed(self, actor: Supervised, exc: Exception) -> None:
        """Count a crash; log it, or escalate it past the restart intensity."""
        if self._intensity.record(anyio.current_time()):
            self._logger.critical(
                "actor %r crashed; more than %d restarts in %gs, escalating",
                actor.name,
                self._intensity.limit,
                self._intensity.window,
                exc_info=exc,
            )
            raise exc
        self._stats.actor_restarts += 1
        self._logger.error("actor %r crashed, restarting it", actor.name, exc_info=exc)
