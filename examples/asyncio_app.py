"""tidings in an asyncio program, through anyio: a producer and a consumer task.

python examples/asyncio_app.py
"""

from __future__ import annotations

import asyncio

import anyio

import tidings


async def main() -> None:
    async with tidings.open_channels("memory://", namespace="jobs") as channels:
        finished = asyncio.Event()
        results: list[int] = []

        async def on_done(channel: tidings.Channel, event: str, data: dict[str, int]) -> None:
            results.append(data["result"])
            if len(results) == 3:
                finished.set()

        async def worker(channel: tidings.Channel, event: str, data: dict[str, int]) -> None:
            await asyncio.sleep(0.01)  # plain asyncio code works inside callbacks
            await channels.publish("jobs", "done", {"result": data["n"] ** 2})

        await channels.register("jobs", "submitted", worker)
        await channels.register("jobs", "done", on_done)
        async with anyio.create_task_group() as tg:
            for n in (2, 3, 4):
                tg.start_soon(channels.publish, "jobs", "submitted", {"n": n})
        await asyncio.wait_for(finished.wait(), 5)
        print("results:", sorted(results))


if __name__ == "__main__":
    asyncio.run(main())
