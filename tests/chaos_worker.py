"""A work-queue member for the randomized fault tests (tests/test_group_chaos.py).

``python -m tests.chaos_worker URL NAMESPACE FOLDER BACKEND MAX_DELIVER``: joins group
"workers" of durable channel "jobs", says ``ready`` on stdout, and runs until stdin
closes. Each job's data is ``{"n": int, "kind": "ok" | "retry" | "poison",
"retries": int, "delay": float, "takes": float}`` (``takes``: the seconds each
attempt works, so that faults land mid-job):

- ``ok``: done at once;
- ``retry``: raises ``tidings.Retry(delay=delay)`` on its first ``retries``
  attempts (counted across every member, see `Work.attempt`), then is done;
- ``poison``: always raises (it must end in the dead letters).

Every attempt and every job done is one line, ``LABEL KIND JOB ATTEMPT TIME``
(``KIND`` ``attempt`` or ``done``, or ``gap-<reason>`` for a ``gap`` status event;
``TIME`` the wall clock, ``time.time()``), written
unbuffered to ``FOLDER/LABEL.log`` before the callback returns or raises, so a
``kill -9`` loses no record of what the process did. ``LABEL`` is the process id.
The test's in-process member uses the same `Work`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import tidings

CHANNEL = "jobs"
GROUP = "workers"
#: Seconds a member may hold a job unacknowledged: a killed member's jobs come back
#: after about this long (plus a claim interval, half of it).
ACK_WAIT = 1.0
#: The back-off before a job that raised (not `tidings.Retry`) runs again.
RETRY_BACKOFF = tidings.Backoff(initial=0.05, factor=2.0, cap=0.2, jitter=False)


def options(max_deliver: int) -> dict[str, Any]:
    """The options every member (and the producer) of the chaos tests uses."""
    return {
        "durable": {CHANNEL: tidings.Retention(max_len=100_000)},
        "ack_wait": ACK_WAIT,
        "max_deliver": max_deliver,
        "retry_backoff": RETRY_BACKOFF,
        "backoff": tidings.Backoff(initial=0.05, cap=0.2),
        "connect_timeout": 0.5,
    }


class Work:
    """A member's callback: records each attempt and each job done (see the module)."""

    def __init__(self, folder: Path, label: str) -> None:
        self.label = label
        self.attempts = folder / "attempts"
        self.attempts.mkdir(exist_ok=True)
        self._fd = os.open(folder / f"{label}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def close(self) -> None:
        os.close(self._fd)

    def attempt(self, job: int) -> int:
        """This attempt's number among every member's attempts at ``job`` (1, 2...):
        one marker file each, created exclusively, so two members never get the same
        number."""
        n = 1
        while True:
            try:
                fd = os.open(self.attempts / f"{job}.{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                n += 1
                continue
            os.close(fd)
            return n

    def status(self, channel: tidings.Channel, event: str, data: Any) -> None:
        """A status callback: each gap is a line too, ``gap-<reason>`` (job -1)."""
        if event == "gap":
            self.record(f"gap-{data['reason']}", -1, 0)

    def record(self, kind: str, job: int, attempt: int) -> None:
        os.write(self._fd, f"{self.label} {kind} {job} {attempt} {time.time():.6f}\n".encode())

    async def __call__(self, channel: tidings.Channel, event: str, data: Any) -> None:
        await anyio.sleep(data["takes"])
        job = int(data["n"])
        attempt = self.attempt(job)
        self.record("attempt", job, attempt)
        if data["kind"] == "poison":
            raise RuntimeError(f"job {job} is poison")
        if data["kind"] == "retry" and attempt <= data["retries"]:
            raise tidings.Retry(delay=data["delay"])
        self.record("done", job, attempt)


async def main(url: str, namespace: str, folder: str, max_deliver: int) -> None:
    work = Work(Path(folder), str(os.getpid()))
    channels = tidings.Channels(url, namespace=namespace, **options(max_deliver))
    async with channels:
        await channels.register(channels.status_channel.name, "gap", work.status)
        await channels.register(CHANNEL, "*", work, group=GROUP, since="all")
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)  # until the test closes stdin
    work.close()


if __name__ == "__main__":
    url, namespace, folder, backend, max_deliver = sys.argv[1:6]
    anyio.run(main, url, namespace, folder, int(max_deliver), backend=backend)
