"""Consumer groups (`Groups`): joining, leaving, forgetting, acknowledging and
dead-lettering, on memory:// with a registry."""

from __future__ import annotations

from typing import Any

import pytest

from tests.runtime.world import NS, Log, World, eventually
from tidings._runtime.work_queues import Groups, consumer_name
from tidings.actors.durable import DurableActor
from tidings.policies.streams import Retention

pytestmark = pytest.mark.anyio

ORDERS = f"{NS}:orders"


def durable_world(**options: Any) -> World:
    return World(durable={ORDERS: Retention()}, **options)


def groups_of(world: World) -> Groups:
    return world.registry.groups


def members_on_the_actor(world: World) -> list[Any]:
    actor = world.runtime.router.get(ORDERS)
    assert isinstance(actor, DurableActor)
    return actor.groups


def test_the_consumer_name_is_unique_to_the_handler() -> None:
    assert consumer_name() != consumer_name()
    assert durable_world().registry.groups.consumer != durable_world().registry.groups.consumer


async def test_join_leave_and_forget_bookkeeping() -> None:
    world = durable_world()
    groups = groups_of(world)
    a, b, c = Log(), Log(), Log()
    async with world.running():
        await world.register("orders", "*", a, group="workers")
        assert (ORDERS, "workers") in groups
        assert groups.of(ORDERS) == ["workers"]
        assert len(members_on_the_actor(world)) == 1
        assert world.hub.pending(ORDERS, "workers") == {}  # the group exists on the broker
        await world.register("orders", "*", b, group="workers")  # the same member
        await world.register("orders", "*", c, group="auditors")
        assert groups.of(ORDERS) == ["workers", "auditors"]
        assert len(members_on_the_actor(world)) == 2
        state = world.state("orders")
        assert state is not None
        groups.join(state, "workers")  # a member already: nothing new
        assert len(members_on_the_actor(world)) == 2
        # The group is left with its last callback here, not before.
        first = state.find("*", a, "workers")
        assert first is not None
        assert not world.registry.remove(first)
        assert groups.of(ORDERS) == ["workers", "auditors"]
        second = state.find("*", b, "workers")
        assert second is not None
        world.registry.remove(second)
        assert groups.of(ORDERS) == ["auditors"]
        assert len(members_on_the_actor(world)) == 1
        assert world.state("orders") is state  # the auditors keep the channel
        groups.forget()
        assert groups.of(ORDERS) == []
        assert (ORDERS, "auditors") not in groups


async def test_join_before_running_does_nothing() -> None:
    world = durable_world()
    state = world.registry.state("orders")
    assert state is not None
    groups_of(world).join(state, "workers")
    assert groups_of(world).of(ORDERS) == []


async def test_an_event_goes_to_the_group_and_is_acknowledged() -> None:
    world = durable_world()
    log = Log()
    async with world.running():
        await world.register("orders", "*", log, group="workers")
        await world.publish("orders", "created", 1)
        await eventually(lambda: world.runtime.stats.acked == 1)
        assert world.hub.pending(ORDERS, "workers") == {}
        consumers = world.hub.consumers(ORDERS, "workers")
        assert [name.startswith(groups_of(world).consumer) for name in consumers] == [True]
    assert log.calls == [("orders", "created", 1)]
    assert world.hub.consumers(ORDERS, "workers") == set()  # it left on close


async def test_a_group_created_from_since_all_takes_the_whole_log() -> None:
    world = durable_world()
    log = Log()
    for n in range(3):
        world.store("orders", "e", n)
    async with world.running():
        await world.register("orders", "*", log, group="workers", start=(0, False))
        await eventually(lambda: world.runtime.stats.acked == 3)
    assert log.data == [0, 1, 2]


async def test_a_failing_event_is_dead_lettered_and_reported() -> None:
    world = durable_world(max_deliver=1)
    status = Log()
    await world.registry.register([world.wanted("server", "*", status)], "register")

    def poison(channel: Any, event: str, data: Any) -> None:
        raise ValueError(f"cannot handle {data}")

    async with world.running():
        await world.register("orders", "*", poison, group="workers")
        await world.publish("orders", "created", 7)
        await eventually(lambda: "dead_letter" in status.events)
        entry_id = world.hub.tail(ORDERS)
        report = status.last("dead_letter")
        assert report == {
            "channel": "orders",
            "group": "workers",
            "id": entry_id,
            "deliveries": 1,
            "error": "ValueError: cannot handle 7",
            "dead_id": report["dead_id"],
        }
        [(dead_id, fields)] = world.hub.dead_letters(ORDERS)
        assert dead_id == report["dead_id"]
        assert (fields["id"], fields["group"]) == (entry_id.encode(), b"workers")
        assert world.hub.pending(ORDERS, "workers") == {}  # acknowledged once buried
        stats = world.registry.stats()
        assert (stats.dead_lettered, stats.callback_errors, stats.callbacks_removed) == (1, 1, 0)
    assert status.events.count("dead_letter") == 1
