"""The router: grouping, handling in place, tasks on demand, counting, slow-consumer
episodes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tidings.actors.base import Actor, Pending
from tidings.actors.mailbox import Mailbox
from tidings.actors.router import Router
from tidings.stats import Counters

pytestmark = pytest.mark.anyio


class Wait:
    """A message whose handling awaits (what an async callback makes)."""

    def __init__(self, log: list[Any], item: Any) -> None:
        self.log, self.item = log, item

    async def complete(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append(("awaited", self.item))

    def abandon(self) -> None:
        self.log.append(("abandoned", self.item))


class Logging(Actor[Any]):
    """Logs what it handles; an item "await" needs an await, an item "bug" crashes."""

    def __init__(self, name: str, max_pending: int = 10, overflow: Any = "drop") -> None:
        super().__init__(name, Mailbox(max_pending, overflow), Counters(), lazy=True)
        self.log: list[Any] = []

    def consume(self) -> Pending | None:
        while (index := self._next) < len(self._batch):
            self._next = index + 1
            item = self._batch[index]
            if item == "bug":
                raise RuntimeError("bug")
            if item == "await":
                return Wait(self.log, item)
            self.log.append(item)
        return None


class World:
    def __init__(self) -> None:
        self.stats = Counters()
        self.reports: list[tuple[str, int]] = []
        self.spawned: list[tuple[Actor[Any], Exception | None]] = []
        self.router = Router(self.stats, self._report, self._spawn)

    def _report(self, name: str, dropped: int) -> None:
        self.reports.append((name, dropped))

    def _spawn(self, actor: Actor[Any], crashed: Exception | None) -> None:
        actor.running = True  # as the supervisor does when it starts the task
        self.spawned.append((actor, crashed))


async def test_a_batch_is_grouped_by_channel_and_handled_in_place_in_order() -> None:
    world = World()
    a, b = Logging("a"), Logging("b")
    world.router.add("a", a)
    world.router.add("b", b)
    await world.router.deliver([("a", 1), ("b", 2), ("a", 3), ("gone", 4)])
    assert (a.log, b.log) == ([1, 3], [2])
    assert (a.mailbox.pending, b.mailbox.pending, world.spawned) == (0, 0, [])  # no task
    assert (world.stats.received, world.stats.unrouted, world.stats.dropped) == (4, 1, 0)
    await world.router.deliver([("b", 5)])  # a single message takes the short way
    assert b.log == [2, 5]


async def test_an_await_starts_a_task_and_the_rest_goes_through_the_bounded_mailbox() -> None:
    world = World()
    actor = Logging("a", max_pending=2)
    world.router.add("a", actor)
    await world.router.deliver([("a", 1), ("a", "await"), ("a", 2), ("a", 3), ("a", 4)])
    assert world.spawned == [(actor, None)]
    assert actor.log == [1]
    assert actor.mailbox.get_nowait() == [2, 3]  # the rest, under the bound...
    assert (world.stats.dropped, world.reports) == (1, [("a", 1)])  # ...and the excess
    await world.router.deliver([("a", 5)])  # it has a task now: queued behind the rest
    assert actor.mailbox.get_nowait() == [5]
    assert (actor.mailbox.routed, actor.mailbox.taken) == (5, 5)


async def test_a_crash_in_place_is_handed_to_the_supervisor_with_the_rest_queued() -> None:
    world = World()
    actor = Logging("a")
    world.router.add("a", actor)
    await world.router.deliver([("a", 1), ("a", "bug"), ("a", 2)])
    [(spawned, crashed)] = world.spawned
    assert spawned is actor
    assert isinstance(crashed, RuntimeError)
    assert (actor.log, actor.mailbox.get_nowait()) == ([1], [2])


async def test_a_removed_channel_is_unrouted_and_a_closed_mailbox_not_reported() -> None:
    world = World()
    actor = Logging("a", max_pending=2)
    world.router.add("a", actor)
    assert world.router.remove("a") is actor
    assert "a" not in world.router
    await world.router.deliver([("a", 1)])
    assert world.stats.unrouted == 1
    world.router.add("b", actor)
    actor.running = True
    actor.mailbox.close()
    await world.router.deliver([("b", 2)])
    assert (world.stats.dropped, world.reports) == (1, [])  # going away: no episode


async def test_drops_are_counted_and_each_episode_reported_once() -> None:
    world = World()
    actor = Logging("a", max_pending=2)
    actor.running = True  # busy in its task: everything goes to the mailbox
    world.router.add("a", actor)
    await world.router.deliver([("a", 1), ("a", 2), ("a", 3)])
    await world.router.deliver([("a", 4)])  # the same episode: counted, not reported
    assert (world.stats.dropped, world.reports) == (2, [("a", 1)])
    actor.mailbox.get_nowait()  # the actor empties the mailbox: the episode ends
    await world.router.deliver([("a", 5), ("a", 6), ("a", 7)])
    assert (world.stats.dropped, world.reports) == (3, [("a", 1), ("a", 1)])


async def test_block_mode_waits_for_room_for_the_rest_of_a_batch() -> None:
    world = World()
    actor = Logging("a", max_pending=1, overflow="block")
    world.router.add("a", actor)
    async with anyio.create_task_group() as tg:
        tg.start_soon(world.router.deliver, [("a", "await"), ("a", 1), ("a", 2)])
        await anyio.wait_all_tasks_blocked()
        assert actor.mailbox.pending == 1  # the router waits for room
        assert actor.mailbox.get_nowait() == [1]
        await anyio.wait_all_tasks_blocked()
        assert actor.mailbox.get_nowait() == [2]
    assert world.stats.dropped == 0


async def test_local_messages_go_to_an_actor_that_is_not_lazy_without_waiting() -> None:
    world = World()
    assert world.router.put_nowait("status", ["connected"]) is None  # no actor
    actor = Logging("status", max_pending=1, overflow="block")
    world.router.add("status", actor)
    assert world.router.put_nowait("status", ["x"]) is None  # lazy: handled in place only
    actor.lazy = False
    assert world.router.put_nowait("status", ["connected"]) == 0
    assert world.router.put_nowait("status", ["closed"]) == 1  # never waits, even to block
    assert [name for name, _ in world.router] == ["status"]
