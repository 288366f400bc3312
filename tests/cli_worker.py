"""Sample applications for ``tidings run`` (tests/test_cli_run.py runs them).

``main`` is a work-queue member: ``$CLI_WORKER_URL``, ``$CLI_WORKER_NAMESPACE``;
it joins group "workers" of durable channel "jobs", says ``ready`` on stdout, and
each job prints ``started N``, takes ``$CLI_WORKER_JOB_SECONDS`` and prints ``done N``
(its handler's ``close_timeout`` is ``$CLI_WORKER_CLOSE_TIMEOUT``). It never returns
on its own: a signal ends it. The others are the small cases.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

import tidings


async def main() -> None:
    """A work-queue member whose jobs are slow."""
    seconds = float(os.environ.get("CLI_WORKER_JOB_SECONDS", "1"))

    async def work(channel: tidings.Channel, event: str, data: Any) -> None:
        print(f"started {data}", flush=True)
        await anyio.sleep(seconds)
        print(f"done {data}", flush=True)

    async with tidings.open_channels(
        os.environ["CLI_WORKER_URL"],
        namespace=os.environ["CLI_WORKER_NAMESPACE"],
        durable=["jobs"],
        close_timeout=float(os.environ.get("CLI_WORKER_CLOSE_TIMEOUT", "5")),
    ) as channels:
        await channels.register("jobs", "*", work, group="workers", since="all")
        print("ready", flush=True)
        await anyio.sleep_forever()


async def returns() -> None:
    """Returns at once."""
    print("returned", flush=True)


async def crash() -> None:
    """Raises from a function of its own."""
    await anyio.lowlevel.checkpoint()
    _fail("boom")


def _fail(message: str) -> None:
    raise ValueError(message)


def not_async() -> None:
    """Not an async function."""


async def takes_args(count: int) -> None:
    """Wants an argument."""
