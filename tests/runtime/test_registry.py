"""The registry: the registration transaction (decide, I/O, commit or roll back) and
the one removal cascade, on a runtime over a memory hub."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.runtime.world import NS, Gated, GatedBroker, Log, World, eventually
from tidings import CallbackError
from tidings.actors.callbacks import DEAF
from tidings.actors.dispatch import DispatchActor
from tidings.brokers.memory import Hub
from tidings.errors import ReplyError

pytestmark = pytest.mark.anyio


def numsub(world: World, name: str) -> int:
    return world.hub.numsub([f"{NS}:{name}"])[f"{NS}:{name}"]


async def test_register_creates_a_channel_and_an_actor_and_subscribes() -> None:
    world = World()
    log = Log()
    async with world.running():
        channel = await world.register("orders", "*", log)
        state = world.state("orders")
        assert state is not None
        assert channel is state.channel
        assert (channel.name, channel.broker_name, channel.events) == (
            "orders",
            "ns:orders",
            ("*",),
        )
        assert isinstance(world.runtime.router.get("ns:orders"), DispatchActor)
        assert numsub(world, "orders") == 1  # confirmed by the broker when it returns
        registration = state.find("*", log)
        assert registration is not None
        assert registration.since != DEAF  # no longer deaf
        await world.publish("orders", "created", {"id": 1})
        await world.settle()
    assert log.calls == [("orders", "created", {"id": 1})]


async def test_a_duplicate_registration_is_a_no_op() -> None:
    world = World()
    log = Log()
    async with world.running():
        first = await world.register("orders", "*", log)
        state = world.state("orders")
        assert state is not None
        registration = state.find("*", log)
        second = await world.register("orders", "*", log)
        assert second is first
        assert state.find("*", log) is registration
        assert len(state.all_registrations()) == 1
        await world.publish("orders", "e", 1)
        await world.settle()
    assert log.data == [1]  # called once, not twice


async def test_register_many_makes_one_channel_per_name() -> None:
    world = World()
    a, b = Log(), Log()
    async with world.running():
        channels = await world.registry.register(
            [
                world.wanted("one", "*", a),
                world.wanted("two", "*", a),
                world.wanted("one", "x", b),
            ],
            "register_many",
        )
        assert [c.name for c in channels] == ["one", "two", "one"]
        assert channels[0] is channels[2]
        assert (numsub(world, "one"), numsub(world, "two")) == (1, 1)
        assert len(world.registry) == 3  # two channels and the status channel


async def test_the_removal_cascade_drops_an_empty_channel() -> None:
    world = World()
    a, b = Log(), Log()
    async with world.running():
        await world.register("orders", "*", a)
        await world.register("orders", "created", b)
        state = world.state("orders")
        assert state is not None
        actor = world.runtime.router.get("ns:orders")
        assert actor is not None
        first, second = state.find("*", a), state.find("created", b)
        assert first is not None
        assert second is not None
        assert world.registry.remove(first) is False  # another callback is left
        assert world.state("orders") is state
        assert world.registry.remove(first) is False  # gone already
        assert world.registry.remove(second) is True  # the channel goes with it
        assert world.state("orders") is None
        assert "ns:orders" not in world.registry
        assert world.runtime.router.get("ns:orders") is None
        assert actor.mailbox.closed  # stopped
        assert not world.runtime.connection.wants(("ns:orders",))
        await eventually(lambda: numsub(world, "orders") == 0)
        assert await world.publish("orders", "e") == 0


async def test_a_channel_dropped_with_a_backlog_counts_it_as_dropped() -> None:
    world = World()
    slow = Gated()
    release, done = slow.release, slow.done

    async with world.running():
        await world.register("orders", "*", slow)
        for n in range(3):
            await world.publish("orders", "e", n)
        actor = world.runtime.router.get("ns:orders")
        assert actor is not None
        await eventually(lambda: actor.mailbox.routed == 3)
        state = world.state("orders")
        assert state is not None
        registration = state.find("*", slow)
        assert registration is not None
        assert world.registry.remove(registration)
        await eventually(lambda: world.runtime.stats.dropped == 3)
        release.set()
        await anyio.wait_all_tasks_blocked()
    assert done == []
    assert world.runtime.stats.delivered == 0


async def test_a_callback_raising_callback_error_takes_its_channel_along() -> None:
    world = World()
    seen: list[Any] = []

    def once(channel: Any, event: str, data: Any) -> None:
        seen.append(data)
        raise CallbackError

    async with world.running():
        await world.register("orders", "*", once)
        await world.publish("orders", "e", 1)
        await world.settle()
        assert world.state("orders") is None
        await eventually(lambda: numsub(world, "orders") == 0)
        assert world.runtime.stats.callbacks_removed == 1
    assert seen == [1]


async def test_a_register_cancelled_while_subscribing_leaves_nothing_behind() -> None:
    broker = GatedBroker(Hub("gated"))
    world = World(broker)
    log = Log()
    async with world.running():
        broker.gate = gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(world.register, "orders", "*", log)
            await eventually(lambda: broker.waiting == 1)
            # Decided and added, with its actor, before the broker confirmed it.
            state = world.state("orders")
            assert state is not None
            registration = state.find("*", log)
            assert registration is not None
            assert registration.active
            assert "ns:orders" in world.runtime.router
            assert world.runtime.connection.wants(("ns:orders",))
            tg.cancel_scope.cancel()
        assert world.state("orders") is None
        assert world.runtime.router.get("ns:orders") is None
        assert not registration.active
        assert not world.runtime.connection.wants(("ns:orders",))
        broker.gate = None
        gate.set()  # the broker answers: the loop subscribes, then undoes it
        await eventually(lambda: broker.waiting == 0)
        await world.settle()  # (a round trip after the round under way)
        assert numsub(world, "orders") == 0
        assert await world.publish("orders", "e", 1) == 0
        # And it can be made again, whole.
        await world.register("orders", "*", log)
        await world.publish("orders", "e", 2)
        await world.settle()
    assert log.data == [2]


async def test_reading_in_sync_mid_subscribe_does_not_leak_the_rolled_back_subscription() -> None:
    broker = GatedBroker(Hub("gated"))
    world = World(broker)
    async with world.running():
        broker.gate = gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(world.register, "orders", "*", Log())
            await eventually(lambda: broker.waiting == 1)
            tg.cancel_scope.cancel()
        world.runtime.connection.in_sync  # noqa: B018 (a read: it must change nothing)
        broker.gate = None
        gate.set()
        await eventually(lambda: broker.waiting == 0)
        await world.settle()
        assert numsub(world, "orders") == 0


async def test_a_register_cancelled_before_it_starts_adds_nothing() -> None:
    world = World()
    async with world.running():
        with anyio.CancelScope() as scope:
            scope.cancel()
            await world.register("orders", "*", Log())
        assert scope.cancelled_caught
        assert world.state("orders") is None
        assert "ns:orders" not in world.runtime.router
        await world.settle()
        assert numsub(world, "orders") == 0


async def test_a_refused_subscription_is_rolled_back() -> None:
    world = World()
    kept, refused = Log(), Log()
    async with world.running():
        world.hub.allowed_channels = "ns:ok*"
        await world.register("ok1", "*", kept)
        with pytest.raises(ReplyError) as raised:
            await world.register("orders", "*", refused)
        assert raised.value.code == "NOPERM"
        assert world.state("orders") is None
        assert world.runtime.router.get("ns:orders") is None
        assert not world.runtime.connection.wants(("ns:orders",))
        # The other channel carries on.
        assert world.state("ok1") is not None
        await world.publish("ok1", "e", 1)
        await world.settle()
        # Allowed now, it can be made again.
        world.hub.allowed_channels = None
        await world.register("orders", "*", refused)
        await world.publish("orders", "e", 2)
        await world.settle()
    assert (kept.data, refused.data) == ([1], [2])


async def test_only_the_status_channel_takes_callbacks_before_run() -> None:
    world = World()
    status = Log()
    [channel] = await world.registry.register([world.wanted("server", "*", status)], "register")
    assert channel is world.registry.status.channel
    assert channel.local
    assert "*" in channel
    with pytest.raises(RuntimeError, match="not running"):
        await world.register("orders", "*", Log())
    assert world.state("orders") is None
    async with world.running():
        await eventually(lambda: "connected" in status.events)
    await eventually(lambda: "closed" in status.events)
    assert status.events == ["connecting", "connected", "closed"]
    with pytest.raises(RuntimeError, match="closed"):
        await world.registry.register([world.wanted("server", "x", Log())], "register")


async def test_stats_merges_the_status_counters() -> None:
    world = World()
    status = Log()

    def broken(channel: Any, event: str, data: Any) -> None:
        raise RuntimeError("a status callback bug")

    await world.registry.register(
        [world.wanted("server", "*", status), world.wanted("server", "connected", broken)],
        "register",
    )
    async with world.running():
        await world.register("orders", "*", Log())
        await world.publish("orders", "e")
        await world.settle()
        await eventually(lambda: "connected" in status.events)
    stats = world.registry.stats()
    own = world.runtime.stats.snapshot()
    assert status.events == ["connecting", "connected", "closed"]
    assert stats.status_events == 3  # the status callback's three, apart
    assert stats.delivered == own.delivered == 1  # the user event only
    assert own.callback_errors == 0
    assert stats.callback_errors == 1  # the status callback's failure, merged in
    assert stats.callbacks_removed == own.callbacks_removed == 0


async def test_unregister() -> None:
    world = World()
    log = Log()
    with pytest.raises(RuntimeError, match="not running"):
        await world.registry.unregister("ns:orders", "*", log, None)
    async with world.running():
        channel = await world.register("orders", "*", log)
        assert await world.registry.unregister("ns:nope", "*", log, None) is None
        # An unknown callback leaves the channel as it is.
        assert await world.registry.unregister("ns:orders", "*", print, None) is channel
        assert world.state("orders") is not None
        assert await world.registry.unregister("ns:orders", "*", log, None) is channel
        assert world.state("orders") is None
        assert numsub(world, "orders") == 0  # confirmed when it returns


async def test_lookups() -> None:
    world = World()
    registry = world.registry
    assert len(registry) == 1
    assert [c.name for c in registry] == ["server"]
    assert "ns:server" in registry
    assert registry.state("server") is registry.status.state
    assert registry.state("ns:server") is registry.status.state  # prefix optional
    assert registry.state("orders", create=False) is None
    made = registry.state("orders")
    assert made is not None
    assert made is registry.state("ns:orders")
    assert (made.name, made.broker_name, made.durable) == ("orders", "ns:orders", False)
    assert "ns:orders" in registry
    assert [c.name for c in registry] == ["server", "orders"]
    assert "ns:orders" not in world.runtime.router  # made, not subscribed: no actor
