"""A work-queue member in a process of its own, for the multi-process tests.

``python -m tests.group_worker URL NAMESPACE RECORD BACKEND``: joins group "workers"
of durable channel "jobs", appends each job's data to the file RECORD (one
unbuffered write per job, before the callback returns, so a ``kill -9`` loses no
record of a job it finished), says ``ready`` on stdout, and runs until stdin closes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

import tidings


async def main(url: str, namespace: str, record: str, backend: str) -> None:
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def work(channel: tidings.Channel, event: str, data: Any) -> None:
        await anyio.sleep(0.0005)  # a job that takes a moment: a kill lands mid-job
        os.write(fd, b"%d\n" % data)

    channels = tidings.Channels(
        url,
        namespace=namespace,
        durable={"jobs": tidings.Retention(max_len=100_000)},
        ack_wait=1.0,
        backoff=tidings.Backoff(initial=0.05, cap=0.2),
    )
    async with channels:
        await channels.register("jobs", "*", work, group="workers", since="all")
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin
    os.close(fd)


if __name__ == "__main__":
    url, namespace, record, backend = sys.argv[1:5]
    anyio.run(main, url, namespace, record, backend, backend=backend)
