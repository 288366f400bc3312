"""The actor supervisor against stub actors: restart, escalate, stop, drain, leftovers."""

from __future__ import annotations

import logging

import anyio
import pytest

from tidings.stats import Counters
from tidings.supervisors.actors import ActorSupervisor

pytestmark = pytest.mark.anyio


class Stub:
    """A Supervised actor whose behaviour the test scripts."""

    def __init__(self, name: str, crashes: int = 0) -> None:
        self.name = name
        self.running = False
        self.crashes = crashes
        self.runs = 0
        self.closed = anyio.Event()
        self.discarded = 0
        self.queued = 3

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"crash {self.runs}")
        await self.closed.wait()  # drains at once when closed

    def close(self) -> None:
        self.closed.set()

    def discard(self) -> int:
        self.discarded, self.queued = self.queued, 0
        return self.discarded


def make(max_restarts: int = 2) -> tuple[ActorSupervisor, Counters]:
    stats = Counters()
    supervisor = ActorSupervisor(
        max_restarts=max_restarts,
        restart_window=60,
        stats=stats,
        logger=logging.getLogger("tidings.test"),
    )
    return supervisor, stats


async def test_a_crashing_actor_is_restarted_within_the_intensity() -> None:
    supervisor, stats = make(max_restarts=2)
    actor = Stub("a", crashes=2)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        supervisor.start(actor)
        await anyio.wait_all_tasks_blocked()
        assert (actor.runs, stats.actor_restarts) == (3, 2)
        assert "a" in supervisor
        supervisor.stop_all()  # closes every actor: each drains and ends
    assert actor.closed.is_set()
    assert len(supervisor) == 0


async def test_a_crash_loop_escalates() -> None:
    supervisor, _ = make(max_restarts=1)

    async def supervise() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.start(Stub("a", crashes=5))

    with pytest.raises(ExceptionGroup) as info:
        await supervise()
    assert info.group_contains(RuntimeError, match="crash 2")


async def test_stop_discards_and_leftovers_are_handed_back() -> None:
    supervisor, _ = make()
    stopped, left = Stub("stopped"), Stub("left")
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        supervisor.start(stopped)
        supervisor.start(left)
        await anyio.wait_all_tasks_blocked()
        assert stopped.running
        assert supervisor.stop(stopped) == 3  # what it had queued
        assert supervisor.stop(stopped) == 0  # stopping twice is nothing
        await anyio.wait_all_tasks_blocked()
        assert not stopped.running
        with pytest.raises(RuntimeError, match="already running"):
            supervisor.start(Stub("left"))
        tg.cancel_scope.cancel()  # the whole group: "left" never drained
    assert supervisor.leftovers() == [left]
    assert supervisor.leftovers() == []


async def test_starting_before_running_is_refused() -> None:
    supervisor, _ = make()
    with pytest.raises(RuntimeError, match="not running"):
        supervisor.start(Stub("a"))


async def test_a_crash_outside_a_task_is_supervised_like_one_inside() -> None:
    """A lazy actor that crashed in place (in the router) is started with its crash:
    it counts toward the intensity, and the actor runs on (or it escalates)."""
    supervisor, stats = make(max_restarts=1)
    actor = Stub("a")

    async def supervise() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            supervisor.start(actor, RuntimeError("in place 1"))
            await anyio.wait_all_tasks_blocked()
            assert (actor.runs, stats.actor_restarts, actor.running) == (1, 1, True)
            actor.close()
            await anyio.wait_all_tasks_blocked()
            assert (len(supervisor), actor.running) == (0, False)  # done: no task left
            supervisor.start(actor, RuntimeError("in place 2"))  # the second in the window

    with pytest.raises(ExceptionGroup) as info:
        await supervise()
    assert info.group_contains(RuntimeError, match="in place 2")


async def test_an_actor_started_while_stopping_drains_and_ends() -> None:
    supervisor, _ = make()
    actor = Stub("late")
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        supervisor.stop_all()
        supervisor.start(actor)
    assert actor.closed.is_set()
    assert actor.runs == 1


async def test_cancelled_while_starting_it_takes_no_actor() -> None:
    """Cancelled right after it started, while an actor still winds down: its task
    group is closing, and a start then is refused as "not running" (what its callers
    check), not with a closed nursery's error."""

    class Lingering(Stub):
        async def run(self) -> None:
            with anyio.CancelScope(shield=True):  # takes its time to wind down
                await self.closed.wait()

    supervisor, _ = make()
    lingering = Lingering("lingering")
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        supervisor.start(lingering)
        tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await anyio.wait_all_tasks_blocked()  # it ran into the cancellation
            try:
                assert not supervisor.running
                with pytest.raises(RuntimeError, match="not running"):
                    supervisor.start(Stub("late"))
            finally:
                lingering.close()
