"""The runtime's life cycle: run, close, restart, the hooks, settle and all_idle, and
the Lifecycle face."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.lowlevel import checkpoint

from tests.runtime.world import Gated, Log, World, eventually
from tidings._runtime.lifecycle import Hooks, Lifecycle, Runtime, runtime_of
from tidings.brokers.memory import Hub, MemoryBroker
from tidings.options import Options
from tidings.policies.status import StatusType
from tidings.stats import Stats

pytestmark = pytest.mark.anyio


class Handler(Lifecycle):
    """The smallest handler: a runtime and nothing else."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def __str__(self) -> str:
        return "<handler>"


def bare(kind: str = "Channels") -> Runtime:
    return Runtime(MemoryBroker(Hub("bare")), Options.from_kwargs({}), None, kind=kind)


async def test_settle_returns_once_async_callbacks_are_done() -> None:
    world = World()
    slow = Gated()
    release, done = slow.release, slow.done

    async with world.running():
        await world.register("orders", "*", slow)
        await world.publish("orders", "e", 1)
        actor = world.runtime.router.get("ns:orders")
        assert actor is not None
        # (all_idle looks at the actors only: the message must have reached one)
        await eventually(lambda: actor.mailbox.routed == 1)
        returned: list[str] = []

        async def wait(what: str, coro: Any) -> None:
            await coro()
            returned.append(what)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "settle", world.runtime.settle)
            tg.start_soon(wait, "all_idle", world.runtime.all_idle)
            await anyio.sleep(0.05)  # past its first hundred looks: it sleeps between
            assert (returned, done) == ([], [])
            release.set()
        assert sorted(returned) == ["all_idle", "settle"]
        assert done == [1]


async def test_settle_waits_for_what_callbacks_publish_meanwhile() -> None:
    world = World()
    relayed = Log()

    async def relay(channel: Any, event: str, data: Any) -> None:
        await anyio.sleep(0.01)
        await world.publish("second", "relayed", data)

    async with world.running():
        await world.register("first", "*", relay)
        await world.register("second", "*", relayed)
        await world.publish("first", "e", 7)
        await world.settle()
        assert relayed.calls == [("second", "relayed", 7)]


async def test_all_idle_returns_at_once_when_nothing_is_in_hand() -> None:
    world = World()
    async with world.running():
        await world.register("orders", "*", Log())
        with anyio.fail_after(1):
            await world.runtime.all_idle()


async def test_check_running_says_how_to_start_a_new_one() -> None:
    runtime = bare("PubSub")
    with pytest.raises(RuntimeError) as raised:
        runtime.check_running("publish")
    message = str(raised.value)
    assert message.startswith("cannot publish: PubSub is not running;")
    assert "'async with'" in message
    assert "nursery.start(handler.run)" in message
    with pytest.raises(RuntimeError, match="cannot connect: PubSub is not running"):
        await runtime.connect()
    with pytest.raises(RuntimeError, match="cannot settle"):
        await runtime.settle()


async def test_check_running_while_starting_and_once_closed() -> None:
    runtime = bare()
    said: list[str] = []

    def start_actors() -> None:  # called while run() starts, before it accepts work
        with pytest.raises(RuntimeError) as raised:
            runtime.check_running("register")
        said.append(str(raised.value))

    runtime.hooks = Hooks(start_actors=start_actors)
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.run, "test")
        runtime.check_running("register")  # running: no error
        await runtime.close()
    [starting] = said
    assert starting.startswith("cannot register: Channels is still starting;")
    assert "await nursery.start(handler.run)" in starting
    with pytest.raises(RuntimeError) as raised:
        runtime.check_running("publish")
    assert str(raised.value) == (
        "cannot publish: Channels is closed; start it again ('async with' or run())"
    )


async def test_a_closed_runtime_runs_again_with_its_registrations() -> None:
    world = World()
    log, status = Log(), Log()
    await world.registry.register([world.wanted("server", "*", status)], "register")
    async with world.running():
        await world.register("orders", "*", log)
        await world.publish("orders", "e", 1)
        await world.settle()
    assert world.runtime.state == "closed"
    assert world.runtime.connection.status is StatusType.closed
    assert world.hub.numsub(["ns:orders"]) == {"ns:orders": 0}
    async with world.running():
        assert world.runtime.state == "running"
        assert world.runtime.connection.status is StatusType.connected
        assert world.hub.numsub(["ns:orders"]) == {"ns:orders": 1}  # subscribed anew
        await world.publish("orders", "e", 2)
        await world.settle()
    assert log.data == [1, 2]
    await eventually(lambda: status.events.count("closed") == 2)
    assert status.events == ["connecting", "connected", "closed"] * 2


async def test_a_runtime_closed_before_it_ran_may_run() -> None:
    world = World()
    await world.runtime.close()
    assert world.runtime.state == "closed"
    await world.runtime.close()  # idempotent
    async with world.running():
        await world.runtime.connect()
        assert world.runtime.connection.status is StatusType.connected


async def test_a_running_runtime_refuses_to_run_twice_and_keeps_running() -> None:
    world = World()
    log = Log()
    async with world.running():
        await world.register("orders", "*", log)
        with pytest.raises(RuntimeError, match="test is running already"):
            await world.runtime.run("test", anyio.TASK_STATUS_IGNORED)
        assert world.runtime.accepting
        await world.publish("orders", "e", 1)
        await world.settle()
    assert log.data == [1]


async def test_hooks_are_told_in_order() -> None:
    runtime = bare()
    calls: list[str] = []

    async def after_run() -> None:
        calls.append("after_run")
        await checkpoint()

    async def before_close() -> None:
        calls.append("before_close")
        await checkpoint()

    runtime.hooks = Hooks(
        start_actors=lambda: calls.append("start_actors"),
        on_status=lambda status, data: calls.append(status.name),
        before_close=before_close,
        after_run=after_run,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.run, "test")
        assert calls == ["start_actors", "connecting", "connected"]
        runtime._stopping.set()  # type: ignore[union-attr]  # as leaving 'async with' does
    assert calls == [
        "start_actors",
        "connecting",
        "connected",
        "before_close",
        "closed",
        "after_run",
    ]
    calls.clear()
    async with anyio.create_task_group() as tg:  # cancelled: no last words, but after_run
        await tg.start(runtime.run, "test")
        tg.cancel_scope.cancel()
    assert calls == ["start_actors", "connecting", "connected", "closed", "after_run"]


async def test_close_says_its_last_words_once() -> None:
    runtime = bare()
    calls: list[str] = []

    async def before_close() -> None:
        calls.append("start")
        await anyio.sleep(0.01)
        calls.append("end")

    runtime.hooks = Hooks(before_close=before_close)
    async with anyio.create_task_group() as tg:
        await tg.start(runtime.run, "test")
        await runtime.close()
    assert calls == ["start", "end"]


async def test_the_lifecycle_face_delegates_to_its_runtime() -> None:
    runtime = bare()
    handler = Handler(runtime)
    assert runtime_of(handler) is runtime
    assert handler.status is StatusType.initialised
    assert handler.statusType is StatusType
    with pytest.raises(RuntimeError, match="not running"):
        await handler.connect()
    async with handler as entered:
        assert entered is handler
        await handler.connect()
        assert handler.status is StatusType.connected
        assert handler.last_error is None
        with pytest.raises(RuntimeError, match="<handler> is running already"):
            await handler.__aenter__()
        assert runtime.accepting  # the running block is left intact
        stats = handler.stats()
        assert isinstance(stats, Stats)
        runtime.stats.published += 1
        assert stats.published == 0  # a snapshot
        assert handler.stats().published == 1
    assert handler.status is StatusType.closed
    await handler.aclose()  # idempotent
    async with anyio.create_task_group() as tg:  # and again, in a nursery
        await tg.start(handler.run)
        assert handler.status is StatusType.connected
        await handler.close()
    assert handler.status is StatusType.closed
