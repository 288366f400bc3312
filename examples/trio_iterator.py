"""The iterator API on trio: consume events with `async for`, in a nursery.

python examples/trio_iterator.py
"""

from __future__ import annotations

import trio

import tidings


async def main() -> None:
    async with (
        tidings.open_channels("memory://", namespace="shop") as channels,
        channels.subscribe("orders", "created") as events,
        trio.open_nursery() as nursery,
    ):

        async def produce() -> None:
            for order_id in range(3):
                await channels.publish("orders", "created", {"id": order_id})
                await channels.publish("orders", "audited", {"id": order_id})  # not matched

        nursery.start_soon(produce)
        seen = 0
        async for event in events:
            print(f"order {event.data['id']} {event.event}")
            seen += 1
            if seen == 3:
                break


if __name__ == "__main__":
    trio.run(main)
