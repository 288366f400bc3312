"""The connection supervisor, driven through the public API on a faulty hub."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.helpers import (
    Recorder,
    assert_follows_the_state_machine,
    eventually,
    watched,
)
from tidings import Backoff, Channels, PublishError, StatusType, Store
from tidings.brokers.memory import Hub, MemoryBroker

pytestmark = pytest.mark.anyio

# Small enough for asyncio's real clock; trio's MockClock skips the waits.
FAST = Backoff(initial=0.02, factor=2.0, cap=0.08)


@pytest.fixture
def anyio_backend(autojump_backend: Any) -> Any:
    return autojump_backend


@pytest.fixture
def store(hub: Hub) -> Store:
    """These tests switch the hub off and on: memory only (Redis faults: test_faults)."""
    return Store(MemoryBroker(hub))


async def test_a_clean_life_is_connecting_connected_closed(store: Store) -> None:
    channels = Channels(store)
    log = await watched(channels)
    async with channels:
        await channels.connect()
        assert channels.status is StatusType.connected
    assert log.names == ["connecting", "connected", "closed"]
    assert log.events[1][1] == {
        "status": "connected",
        "previous": "connecting",
        "attempt": 1,
        "retry_in": None,
        "error": None,
    }
    assert channels.status is StatusType.closed


async def test_refused_connections_back_off_then_connect(hub: Hub, store: Store) -> None:
    hub.refusing = True
    channels = Channels(store, backoff=FAST)
    log = await watched(channels)
    async with channels:
        await eventually(lambda: log.names.count("disconnected") >= 4)
        hub.refusing = False
        with anyio.fail_after(5):
            await channels.connect()
    assert_follows_the_state_machine(log.names)
    failures = [(d, t) for name, d, t in log.events if name == "disconnected"]
    for n, (data, _) in enumerate(failures, start=1):
        assert data["attempt"] == n
        assert "ConnectionRefusedError" in data["error"]
        assert 0 <= data["retry_in"] <= FAST.ceiling(n)
    # the next attempt waits for the announced delay
    connecting_times = [t for name, _, t in log.events if name == "connecting"]
    for (data, failed_at), next_at in zip(failures, connecting_times[1:], strict=False):
        assert next_at - failed_at >= data["retry_in"] - 0.002
    assert log.last("connected")["attempt"] == len(failures) + 1


async def test_a_lost_connection_reconnects_and_resubscribes(
    hub: Hub, store: Store, recorder: Recorder
) -> None:
    channels = Channels(store, backoff=FAST)
    log = await watched(channels)
    async with channels:
        for name in ("a", "b", "c"):
            await channels.register(name, "*", recorder)
        assert hub.numsub(["a", "b", "c"]) == {"a": 1, "b": 1, "c": 1}
        for round_ in range(1, 4):
            hub.kill_connections()
            await eventually(lambda r=round_: log.names.count("connected") == r + 1)
            assert hub.numsub(["a", "b", "c"]) == {"a": 1, "b": 1, "c": 1}
            assert await channels.publish("b", "after", round_) == 1
            await eventually(lambda r=round_: len(recorder.calls) == r)
        stats = channels.stats()
    assert recorder.data == [1, 2, 3]
    assert stats.reconnects == 3
    assert stats.resubscribes == 9
    lost = log.last("disconnected")
    assert lost["attempt"] == 0
    assert "killed" in lost["error"]
    assert log.last("connected")["down_for"] >= 0
    assert "down_for" not in log.events[1][1]  # the first connection was never down
    assert_follows_the_state_machine(log.names)


async def test_registrations_made_while_disconnected_apply_on_reconnect(
    hub: Hub, store: Store, recorder: Recorder
) -> None:
    async with Channels(store, backoff=FAST) as channels:
        await channels.connect()
        hub.refusing = True
        hub.kill_connections()
        await eventually(lambda: channels.status is StatusType.disconnected)
        await channels.register("late", "*", recorder)  # returns at once
        assert hub.numsub(["late"]) == {"late": 0}
        hub.refusing = False
        await channels.connect()
        assert hub.numsub(["late"]) == {"late": 1}


async def test_publish_waits_for_the_connection_then_raises(hub: Hub, store: Store) -> None:
    hub.refusing = True
    async with Channels(store, backoff=FAST, publish_timeout=0.2) as channels:
        started = anyio.current_time()
        with pytest.raises(PublishError, match=r"publish_timeout=0.2s.*ConnectionRefused"):
            await channels.publish("c", "e", 1)
        assert anyio.current_time() - started >= 0.2 - 0.002
        assert channels.stats().publish_errors == 1


async def test_a_publish_during_a_short_outage_succeeds(hub: Hub, store: Store) -> None:
    hub.refusing = True
    async with Channels(store, backoff=FAST, publish_timeout=5) as channels:
        async with anyio.create_task_group() as tg:
            results: list[int] = []

            async def publish(n: int) -> None:
                results.append(await channels.publish("c", "e", n))

            for n in range(20):
                tg.start_soon(publish, n)
            await anyio.sleep(0.05)
            hub.refusing = False
        assert results == [0] * 20
        assert channels.stats().published == 20


async def test_close_fails_waiting_publishes_promptly(hub: Hub, store: Store) -> None:
    hub.refusing = True
    errors: list[BaseException] = []
    async with Channels(store, backoff=FAST, publish_timeout=3600) as channels:
        waiting = False

        async def publish() -> None:
            nonlocal waiting
            waiting = True  # no await until publish() blocks waiting for a connection
            try:
                await channels.publish("c", "e", 1)
            except PublishError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish)
            await eventually(lambda: waiting)
            assert channels.status is not StatusType.connected
            await channels.close()
    assert len(errors) == 1
    assert "closed" in str(errors[0])


async def test_connect_raises_if_closed_before_connecting(hub: Hub, store: Store) -> None:
    hub.refusing = True
    async with Channels(store, backoff=FAST) as channels, anyio.create_task_group() as tg:

        async def close_soon() -> None:
            await eventually(lambda: channels.status is StatusType.disconnected)
            await channels.close()

        tg.start_soon(close_soon)
        with pytest.raises(anyio.ClosedResourceError):
            await channels.connect()


async def test_exiting_while_disconnected_is_prompt_and_leaves_nothing(
    hub: Hub, store: Store
) -> None:
    hub.refusing = True
    before = len(anyio.get_running_tasks())
    async with Channels(store, backoff=Backoff(initial=30, cap=30)) as channels:
        await eventually(lambda: channels.status is StatusType.disconnected)
        started = anyio.current_time()
    # The 30 s back-off sleep is cancelled, not waited out.
    assert anyio.current_time() - started < 1
    assert len(anyio.get_running_tasks()) == before
    assert "connections=0" in repr(hub)
