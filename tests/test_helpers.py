"""The shared test helpers do what the tests rely on (h11's habit: helpers are tested)."""

from __future__ import annotations

import anyio
import pytest

import tidings
from tests.helpers import (
    FAST,
    MemoryHarness,
    Recorder,
    StatusLog,
    assert_follows_the_state_machine,
    eventually,
    watched,
)

pytestmark = pytest.mark.anyio


async def test_eventually_waits_for_a_condition_and_gives_up_in_time() -> None:
    flag: list[int] = []

    async def later() -> None:
        await anyio.sleep(0.01)
        flag.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        await eventually(lambda: flag)
    with pytest.raises(TimeoutError):
        await eventually(lambda: False, limit=0.02)


async def test_recorder_and_status_log_record_what_a_handler_does() -> None:
    harness = MemoryHarness()
    recorder = Recorder()
    channels = tidings.Channels(harness.store(), backoff=FAST)
    log = await watched(channels)
    async with channels:
        await channels.register("c", "*", recorder)
        await channels.publish("c", "e", 1)
        await eventually(lambda: recorder.calls)
        assert harness.numsub("c") == {"c": 1}
        assert harness.connections() == 2
    assert (recorder.calls, recorder.events, recorder.data) == ([("c", "e", 1)], ["e"], [1])
    assert log.names == ["connecting", "connected", "closed"]
    assert log.last("connected")["attempt"] == 1
    assert_follows_the_state_machine(log.names)
    assert isinstance(log, StatusLog)


@pytest.mark.parametrize(
    "names",
    [["connected", "closed"], ["connecting", "connecting"], ["connecting", "connected"]],
)
def test_the_state_machine_check_rejects_what_the_graph_forbids(names: list[str]) -> None:
    with pytest.raises((AssertionError, KeyError)):
        assert_follows_the_state_machine(names)
