"""The status channel: local, fed without waiting, delivered by its own actor."""

from __future__ import annotations

import logging

import pytest

from tests.runtime.world import Log, World, eventually

pytestmark = pytest.mark.anyio


async def test_emit_before_it_runs_reaches_nobody_and_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    status = world.registry.status
    log = Log()
    status.register("*", log)
    with caplog.at_level(logging.WARNING):
        status.emit("connecting", {})
    assert caplog.records == []
    assert log.calls == []
    assert status.channel.local
    assert status.broker_name == "ns:server"
    assert status.channel.name == "server"


async def test_a_callback_sees_only_events_emitted_after_it_registered() -> None:
    world = World()
    status = world.registry.status
    early, late = Log(), Log()
    status.register("*", early)
    status.register("*", early)  # the same callback again: no-op
    async with world.running():
        status.emit("first", {"n": 1})
        status.register("*", late)  # the first is queued already: not for it
        status.emit("second", {"n": 2})
        await eventually(lambda: "second" in late.events)
        assert late.calls == [("server", "second", {"n": 2})]
        assert early.events == ["connecting", "connected", "first", "second"]
        assert world.registry.status.counters.delivered == 5
        assert world.runtime.stats.delivered == 0  # counted apart


async def test_status_events_a_full_mailbox_refuses_are_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World(max_pending=1)
    status = world.registry.status
    log = Log()
    status.register("*", log)
    async with world.running():
        await eventually(lambda: "connected" in log.events)
        with caplog.at_level(logging.WARNING, "tidings.test.runtime"):
            for n in range(3):
                status.emit(f"report{n}", {})  # no wait between: the actor has no turn
        await eventually(lambda: "report0" in log.events)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [
        "status event 'report1' dropped: status callbacks are not keeping up",
        "status event 'report2' dropped: status callbacks are not keeping up",
    ]
    assert "report1" not in log.events


async def test_owns_its_actor_only() -> None:
    world = World()
    status = world.registry.status
    assert not status.owns(object())
    async with world.running():
        await world.register("orders", "*", Log())
        assert status.owns(world.runtime.router.get("ns:server"))
        assert not status.owns(world.runtime.router.get("ns:orders"))
