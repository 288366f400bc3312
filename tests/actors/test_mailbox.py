from __future__ import annotations

import anyio
import pytest

from tests.helpers import settle
from tidings.actors.mailbox import Mailbox

pytestmark = pytest.mark.anyio


async def test_batches_come_out_in_order() -> None:
    mailbox: Mailbox[int] = Mailbox(10)
    assert mailbox.put_nowait([1, 2]) == 0
    assert mailbox.put_nowait([3]) == 0
    assert mailbox.pending == 3
    assert await mailbox.get() == [1, 2]
    assert await mailbox.get() == [3]
    assert mailbox.pending == 0
    mailbox.discard()


async def test_drop_mode_keeps_what_fits_and_reports_the_rest() -> None:
    mailbox: Mailbox[int] = Mailbox(3, "drop")
    assert await mailbox.put([1, 2]) == 0
    assert not mailbox.overflowing
    assert await mailbox.put([3, 4, 5]) == 2
    assert mailbox.overflowing
    assert await mailbox.put([6]) == 1
    assert [*await mailbox.get(), *await mailbox.get()] == [1, 2, 3]
    assert not mailbox.overflowing  # emptied: the overflow episode is over
    mailbox.discard()


async def test_block_mode_waits_for_room_and_loses_nothing() -> None:
    mailbox: Mailbox[int] = Mailbox(2, "block")
    received: list[int] = []
    async with anyio.create_task_group() as tg:

        async def produce() -> None:
            assert await mailbox.put([1, 2, 3, 4, 5]) == 0
            mailbox.close()

        tg.start_soon(produce)
        await settle()
        assert mailbox.pending == 2  # the producer waits for room
        while True:
            try:
                received.extend(await mailbox.get())
            except anyio.EndOfStream:
                break
    mailbox.discard()
    assert received == [1, 2, 3, 4, 5]


async def test_close_lets_the_actor_drain_then_ends() -> None:
    mailbox: Mailbox[str] = Mailbox(5)
    mailbox.put_nowait(["a"])
    mailbox.close()
    assert mailbox.get_nowait() == ["a"]
    with pytest.raises(anyio.EndOfStream):
        await mailbox.get()
    # A closed mailbox takes nothing: what is put is dropped, and counted by the caller.
    assert mailbox.put_nowait(["b", "c"]) == 2
    assert await mailbox.put(["d"]) == 1
    assert "0/5" in repr(mailbox)
    assert mailbox.discard() == 0


async def test_a_blocked_put_ends_when_the_mailbox_is_discarded() -> None:
    """Block mode: unregistering a full channel must not stall (or break) the router."""
    mailbox: Mailbox[int] = Mailbox(2, "block")
    assert await mailbox.put([1, 2]) == 0
    dropped: list[int] = []
    async with anyio.create_task_group() as tg:

        async def put() -> None:
            dropped.append(await mailbox.put([3, 4, 5]))

        tg.start_soon(put)
        await anyio.wait_all_tasks_blocked()
        assert not dropped  # waiting for room
        assert mailbox.discard() == 2  # the two queued
    assert dropped == [3]  # everything that had not fit
    assert (mailbox.routed, mailbox.taken) == (2, 0)


async def test_get_nowait_on_empty_would_block() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    with pytest.raises(anyio.WouldBlock):
        mailbox.get_nowait()
    mailbox.discard()
    with pytest.raises(anyio.ClosedResourceError):
        await mailbox.get()
