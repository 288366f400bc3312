"""The channel supervisor restarts crashed actors, and escalates a crash loop."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest

from tests.helpers import Recorder, eventually
from tidings import Channels, Json, Store

pytestmark = pytest.mark.anyio


class Fragile(Json):
    """A protocol with a bug: a payload saying "crash" raises a non-protocol error."""

    def decode(self, payload: bytes, /) -> Any:
        message = super().decode(payload)
        if message.get("data") == "crash":
            raise RuntimeError("bug in the protocol")
        return message


async def test_a_crashed_actor_restarts_with_its_registrations_and_backlog(
    store: Store, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async with Channels(store, protocol=Fragile()) as channels:
        await channels.register("c", "*", recorder)
        with caplog.at_level(logging.ERROR, "tidings"):
            # One batch: the crash happens mid-batch, the rest must still arrive.
            for data in (1, "crash", 2, 3):
                await channels.publish("c", "e", data)
            await eventually(lambda: len(recorder.calls) == 3)
        assert recorder.data == [1, 2, 3]
        assert channels.stats().actor_restarts == 1
        assert "crashed, restarting" in caplog.text
        await channels.publish("c", "e", 4)
        await eventually(lambda: len(recorder.calls) == 4)


async def test_a_crash_loop_escalates_out_of_async_with(store: Store) -> None:
    async def crash_three_times() -> None:
        async with Channels(store, protocol=Fragile(), max_restarts=2) as channels:
            await channels.register("c", "*", print)
            for _ in range(3):
                await channels.publish("c", "e", "crash")
            await anyio.sleep_forever()

    with pytest.raises(RuntimeError, match="bug in the protocol"):
        await crash_three_times()


async def test_escalation_ends_run_in_the_callers_nursery(store: Store) -> None:
    channels = Channels(store, protocol=Fragile(), max_restarts=0)
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="bug in the protocol")):
        async with anyio.create_task_group() as tg:
            await tg.start(channels.run)
            await channels.register("c", "*", print)
            await channels.publish("c", "e", "crash")
            await anyio.sleep_forever()
    assert channels.status.name == "closed"


async def test_undecodable_payloads_are_counted_not_fatal(
    store: Store, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    async with Channels(store) as channels, store.pubsub() as raw:
        await channels.register("c", "*", recorder)
        with caplog.at_level(logging.WARNING, "tidings"):
            for payload in (
                b"not json",
                b"[1, 2]",
                b'{"event": 3}',
                b"\xff\xfe",
                json.dumps({"event": "ok", "data": 1}).encode(),
            ):
                await raw.publish("c", payload)
            await eventually(lambda: recorder.calls)
        assert recorder.calls == [("c", "ok", 1)]
        assert channels.stats().decode_errors == 4
        assert channels.stats().actor_restarts == 0
        assert "undecodable" in caplog.text
