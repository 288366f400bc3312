"""The demonstration behind ``make demo`` / ``tidings demo``.

A short tour on the embedded broker: status events, wildcard registrations, sync and
async callbacks, async iteration, and a failing callback isolated from the rest.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel

from .channels import Channel, Channels
from .errors import CallbackError


def _say(text: str) -> None:
    print(text, flush=True)


async def demo(url: str = "memory://demo") -> int:
    """Run the tour against ``url``; return a process exit code."""
    # The failing callback's traceback is part of the point, but keep it to one line.
    logging.basicConfig(level=logging.CRITICAL)

    channels = Channels(url, namespace="demo", callback_failure_limit=2)
    _say(f"tidings demo on {channels}\n")

    def on_status(channel: Channel, event: str, data: dict[str, Any]) -> None:
        _say(f"  status  {data.get('previous', '?'):>12} -> {event}")

    # The status channel is local: it can be given callbacks before run() starts.
    await channels.register(channels.status_channel.name, "*", on_status)

    async with channels:
        await channels.connect()
        await _callbacks(channels)
        await _iteration(channels)
        await _failures(channels)
        stats = channels.stats()
        _say(
            f"\nstats: published={stats.published} delivered={stats.delivered} "
            f"callback_errors={stats.callback_errors} removed={stats.callbacks_removed}\n"
        )
    _say("\ndone.")
    return 0


async def _callbacks(channels: Channels) -> None:
    _say("\n1. callbacks on event patterns (globs), sync and async")
    orders = _Countdown(3)

    def on_any_order(channel: Channel, event: str, data: Any) -> None:
        orders.tick()
        _say(f"  orders/*          got {event!r} {data}")

    async def on_created(channel: Channel, event: str, data: Any) -> None:
        await anyio.lowlevel.checkpoint()  # an async callback may await
        _say(f"  orders/created    got {event!r} {data}")

    await channels.register("orders", "*", on_any_order)
    await channels.register("orders", "created", on_created)
    await channels.register(
        "orders", "[a-c]*", lambda c, e, d: _say(f"  orders/[a-c]*     got {e!r}")
    )
    for event, data in (
        ("created", {"id": 1}),
        ("shipped", {"id": 1}),
        ("cancelled", {"id": 2}),
    ):
        receivers = await channels.publish("orders", event, data)
        _say(f"published orders/{event} to {receivers} subscriber(s)")
    await orders.wait()


async def _iteration(channels: Channels) -> None:
    _say("\n2. async iteration")
    async with channels.subscribe("payments", "settled") as events:
        await channels.publish("payments", "refused", {"id": 7})  # no match: skipped
        await channels.publish("payments", "settled", {"id": 8, "amount": 12.5})
        async for ev in events:
            _say(f"  iterator got {ev}")
            break


async def _failures(channels: Channels) -> None:
    _say("\n3. a failing callback is isolated, then removed")
    delivered: list[int] = []
    alerts_done = _Countdown(4)

    def broken(channel: Channel, event: str, data: Any) -> None:
        raise RuntimeError("this callback is broken")

    def healthy(channel: Channel, event: str, data: Any) -> None:
        delivered.append(data)
        alerts_done.tick()

    def one_shot(channel: Channel, event: str, data: Any) -> None:
        _say(f"  one-shot callback got {data} and unregisters itself")
        raise CallbackError

    await channels.register("alerts", "*", broken)
    await channels.register("alerts", "*", healthy)
    await channels.register("alerts", "*", one_shot)
    for n in range(4):
        await channels.publish("alerts", "fired", n)
    await alerts_done.wait()
    alerts = channels.channel("alerts", create=False)
    assert alerts is not None
    _say(f"  the healthy callback got all of {delivered}")
    _say(f"  'alerts' still has callbacks for {list(alerts.events)} (the healthy one)")


class _Countdown:
    """Set once ``tick`` has been called ``count`` times."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.done = anyio.Event()

    def tick(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.done.set()

    async def wait(self) -> None:
        with anyio.fail_after(5):
            await self.done.wait()
