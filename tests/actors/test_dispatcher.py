"""The callback failure policy, in isolation."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import recording_dispatcher
from tidings import CallbackError
from tidings.actors.callbacks import Dispatcher, Registration
from tidings.stats import Counters

pytestmark = pytest.mark.anyio


def make(limit: int = 2) -> tuple[Dispatcher, Counters, list[Registration]]:
    return recording_dispatcher(limit=limit)


async def run(dispatcher: Dispatcher, regs: tuple[Registration, ...], *args: Any) -> None:
    unfinished = dispatcher.dispatch(regs, args, "test", 1)
    if unfinished is not None:
        await unfinished.complete()


async def test_sync_and_async_callbacks_run_in_order() -> None:
    dispatcher, stats, _ = make()
    order: list[str] = []

    async def second(x: int) -> None:
        order.append(f"async {x}")

    regs = (
        dispatcher.registration("k", lambda x: order.append(f"sync {x}")),
        dispatcher.registration("k", second),
        dispatcher.registration("k", lambda x: order.append(f"last {x}")),
    )
    await run(dispatcher, regs, 1)
    assert order == ["sync 1", "async 1", "last 1"]
    assert stats.delivered == 3


async def test_an_all_sync_dispatch_returns_no_awaitable() -> None:
    dispatcher, _, _ = make()
    assert dispatcher.dispatch((dispatcher.registration("k", print),), ("x",), "t", 1) is None


async def test_failures_are_logged_counted_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    dispatcher, stats, removed = make(limit=2)
    got: list[int] = []

    def bad(x: int) -> None:
        raise RuntimeError(f"bad {x}")

    regs = (dispatcher.registration("k", bad), dispatcher.registration("k", got.append))
    with caplog.at_level(logging.ERROR, "tidings.test"):
        await run(dispatcher, regs, 1)
    assert got == [1]
    assert stats.callback_errors == 1
    assert removed == []
    assert "bad 1" in caplog.text  # the traceback is logged
    assert caplog.records[0].exc_info is not None


async def test_a_callback_failing_too_often_is_removed() -> None:
    dispatcher, stats, removed = make(limit=2)

    async def bad(x: int) -> None:
        raise RuntimeError

    regs = (dispatcher.registration("k", bad),)
    for n in range(3):
        await run(dispatcher, regs, n)
    assert stats.callback_errors == 3
    assert removed == [regs[0]]
    assert stats.callbacks_removed == 1
    await run(dispatcher, regs, 4)  # inactive now: not called again
    assert stats.callback_errors == 3


@pytest.mark.parametrize("is_async", [False, True])
async def test_callback_error_removes_at_once_without_counting_an_error(is_async: bool) -> None:
    dispatcher, stats, removed = make()

    def done(x: int) -> None:
        raise CallbackError

    async def adone(x: int) -> None:
        raise CallbackError

    regs = (dispatcher.registration("k", adone if is_async else done),)
    await run(dispatcher, regs, 1)
    assert removed == [regs[0]]
    assert stats.callback_errors == 0
    assert stats.callbacks_removed == 1
