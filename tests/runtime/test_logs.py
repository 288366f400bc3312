"""Durable channels' coordination (`Logs`): where registrations start, catch-up reads,
named consumers' positions, gaps; against memory:// with a registry."""

from __future__ import annotations

import pytest

from tests.runtime.world import NS, Log, World, eventually
from tidings._runtime.logs import Logs
from tidings.actors.callbacks import Registration
from tidings.actors.durable import DurableActor
from tidings.brokers.base import position_key
from tidings.policies.streams import DEFAULT_RETENTION, Retention, position

pytestmark = pytest.mark.anyio

ORDERS = f"{NS}:orders"


def durable_world(**options: object) -> World:
    return World(durable={ORDERS: Retention()}, **options)


async def watch_status(world: World) -> Log:
    status = Log()
    await world.registry.register([world.wanted("server", "*", status)], "register")
    return status


def logs_of(world: World) -> Logs:
    logs = world.registry.logs
    assert logs is not None
    return logs


def actor_of(world: World) -> DurableActor:
    actor = world.runtime.router.get(ORDERS)
    assert isinstance(actor, DurableActor)
    return actor


async def test_only_a_world_with_durable_channels_has_logs() -> None:
    assert World().registry.logs is None
    world = durable_world()
    logs = logs_of(world)
    assert ORDERS in logs
    assert f"{NS}:other" not in logs
    assert world.registry.is_durable(ORDERS)
    assert logs.retention_of(ORDERS) == Retention()
    assert logs.retention_of(f"{NS}:other") == DEFAULT_RETENTION
    async with world.running():
        channel = await world.register("orders", "*", Log())
        plain = await world.register("plain", "*", Log())
        assert (channel.durable, plain.durable) == (True, False)
        assert isinstance(world.runtime.router.get(ORDERS), DurableActor)
        assert not isinstance(world.runtime.router.get(f"{NS}:plain"), DurableActor)


async def test_new_starts_at_the_logs_end() -> None:
    world = durable_world()
    log = Log()
    world.store("orders", "old", 1)
    world.store("orders", "old", 2)
    async with world.running():
        await world.register("orders", "*", log)
        await world.publish("orders", "new", 3)
        await world.settle()
    assert log.calls == [("orders", "new", 3)]


async def test_place_of_new_takes_the_tail_and_of_a_missing_log_the_origin() -> None:
    world = durable_world()
    async with world.running():
        await world.register("orders", "*", Log())
        state = world.state("orders")
        assert state is not None
        logs = logs_of(world)
        empty = Registration("*", print, state)
        await logs.place([(empty, None, None)])
        assert empty.cursor == 0  # no log yet: from its very start
        last = world.store("orders", "e")
        registration = Registration("*", print, state)
        await logs.place([(registration, None, None)])
        assert registration.cursor == position(last)
        assert actor_of(world).verify == {}  # "new" names no entry to check


async def test_since_all_replays_the_log_then_goes_on_live() -> None:
    world = durable_world()
    log = Log()
    ids = [world.store("orders", "old", n) for n in range(3)]
    async with world.running():
        await world.register("orders", "*", log, start=(0, False))
        await world.settle()
        assert log.data == [0, 1, 2]
        assert world.runtime.stats.replayed == 3
        await world.publish("orders", "new", 3)
        await world.settle()
    assert log.data == [0, 1, 2, 3]  # each once, in order
    assert len(ids) == len(set(ids))


async def test_since_an_id_starts_after_it() -> None:
    world = durable_world()
    log = Log()
    ids = [world.store("orders", "e", n) for n in range(4)]
    async with world.running():
        await world.register("orders", "*", log, start=(position(ids[1]), True))
        await world.settle()
    assert log.data == [2, 3]


async def test_a_named_consumers_position_is_saved_by_flush_and_loaded_by_place() -> None:
    world = durable_world()
    first = Log()
    key = position_key(ORDERS, "billing")
    async with world.running():
        await world.register("orders", "*", first, consumer="billing")
        await world.settle()
        await logs_of(world).flush()
        assert world.hub.positions[key] == "0-0"  # the first save is where it starts
        await world.publish("orders", "e", 1)
        await world.publish("orders", "e", 2)
        await world.settle()
        await logs_of(world).flush()
        assert world.hub.positions[key] == world.hub.tail(ORDERS)
    assert first.data == [1, 2]
    # Away: events stored meanwhile are delivered on its return, from its position.
    world.store("orders", "e", 3)
    world.store("orders", "e", 4)
    again = World(world.broker, durable={ORDERS: Retention()})
    second = Log()
    async with again.running():
        await again.register("orders", "*", second, consumer="billing")
        await again.settle()
    assert second.data == [3, 4]
    assert world.hub.positions[key] == world.hub.tail(ORDERS)  # saved on close


async def test_place_loads_a_saved_position_and_has_it_verified() -> None:
    world = durable_world()
    async with world.running():
        await world.register("orders", "*", Log())
        state = world.state("orders")
        assert state is not None
        saved = world.store("orders", "e")
        world.hub.positions[position_key(ORDERS, "billing")] = saved
        registration = Registration("*", print, state)
        logs = logs_of(world)
        await logs.place([(registration, (0, False), "billing")])  # the position wins
        assert registration.cursor == position(saved)
        assert actor_of(world).verify == {position(saved): "trimmed"}
        logs.unplace(registration)  # rolled back: nobody starts there
        assert actor_of(world).verify == {}


async def test_a_saved_position_trimmed_from_the_log_is_a_gap() -> None:
    world = durable_world()
    status = await watch_status(world)
    log = Log()
    world.hub.positions[position_key(ORDERS, "billing")] = "1-0"  # long gone
    ids = [world.store("orders", "e", n) for n in range(4)][1:]
    world.hub.trim_log(ORDERS, keep=3)  # (a log that never lost one is another log)
    async with world.running():
        await world.register("orders", "*", log, consumer="billing")
        await world.settle()
        await eventually(lambda: "gap" in status.events)
    assert status.last("gap") == {
        "channel": "orders",
        "reason": "trimmed",
        "last_id": "1-0",
        "next_id": ids[0],
    }
    assert status.events.count("gap") == 1
    assert log.data == [1, 2, 3]  # what is left, once


async def test_starting_after_an_id_no_longer_in_the_log_is_a_missing_gap() -> None:
    world = durable_world()
    status = await watch_status(world)
    log = Log()
    ids = [world.store("orders", "e", n) for n in range(4)]
    world.hub.trim_log(ORDERS, keep=2)
    async with world.running():
        await world.register("orders", "*", log, start=(position(ids[0]), True))
        await world.settle()
        await eventually(lambda: "gap" in status.events)
    gap = status.last("gap")
    assert (gap["reason"], gap["last_id"], gap["next_id"]) == ("missing", ids[0], ids[2])
    assert log.data == [2, 3]


async def test_a_start_that_is_in_the_log_is_no_gap() -> None:
    world = durable_world()
    status = await watch_status(world)
    log = Log()
    ids = [world.store("orders", "e", n) for n in range(3)]
    async with world.running():
        await world.register("orders", "*", log, start=(position(ids[0]), True))
        await world.settle()
    assert log.data == [1, 2]
    assert "gap" not in status.events


async def test_events_stored_while_disconnected_are_read_back() -> None:
    world = durable_world()
    status = await watch_status(world)
    log = Log()
    async with world.running():
        await world.register("orders", "*", log)
        await world.publish("orders", "e", 1)
        await world.settle()
        world.hub.refusing = True
        world.hub.kill_connections()
        await eventually(lambda: "disconnected" in status.events)
        world.store("orders", "e", 2)  # no live copy reaches it
        world.store("orders", "e", 3)
        world.hub.refusing = False
        await eventually(lambda: status.events.count("connected") == 2)
        await world.settle()
        assert log.data == [1, 2, 3]
        assert "gap" not in status.events
        assert world.runtime.stats.replayed >= 2
