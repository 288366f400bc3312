"""A log's mark tells it apart from a log made again in its place, on both brokers.

Random histories of appends, trims, single deletions and whole-log deletions, with a
mark taken between steps: the same log is never taken for a new one, and a log
deleted and made again is told apart (except in the one case `recreated()`
documents as missed, which the history then checks it is in).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from tests.helpers import Harness, MemoryHarness
from tidings.brokers.base import Broker, Publisher
from tidings.brokers.factory import open_url
from tidings.brokers.memory import MemoryBroker
from tidings.policies.streams import LogMark, Retention, recreated

pytestmark = pytest.mark.anyio


class Log:
    """One log, written through the broker's own API where it has one and changed
    behind its back (as an operator would) where it has not."""

    def __init__(self, harness: Harness, publisher: Publisher) -> None:
        self.key = f"marks:{uuid.uuid4().hex}"  # the Redis server is shared
        self._harness = harness
        self._publisher = publisher

    async def append(self, max_len: int | None) -> None:
        await self._publisher.append(self.key, b"x", Retention(max_len=max_len))

    def trim(self, keep: int) -> None:
        if isinstance(self._harness, MemoryHarness):
            self._harness.hub.trim_log(self.key, keep)
        else:
            self._harness.client.xtrim(self.key, maxlen=keep, approximate=False)

    def delete(self) -> None:
        if isinstance(self._harness, MemoryHarness):
            self._harness.hub.delete_log(self.key)
        else:
            self._harness.client.delete(self.key)

    async def mark(self) -> LogMark | None:
        marks: list[LogMark | None] = await self._publisher.marks([self.key])
        return marks[0]


@asynccontextmanager
async def publisher_of(harness: Harness) -> AsyncIterator[Publisher]:
    broker: Broker = (
        MemoryBroker(harness.hub)
        if isinstance(harness, MemoryHarness)
        else open_url(harness.url)[0]
    )
    publisher = await broker.open_publisher(health_check_interval=30, reply_timeout=5)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publisher.run)
        try:
            yield publisher
        finally:
            tasks.cancel_scope.cancel()
            await publisher.aclose()


@pytest.mark.parametrize("seed", range(6))
async def test_a_log_made_again_is_told_from_the_same_log(broker: Harness, seed: int) -> None:
    rng = random.Random(seed)
    async with publisher_of(broker) as publisher:
        log = Log(broker, publisher)
        before: LogMark | None = None
        for step in range(120):
            roll = rng.random()
            deleted = roll < 0.1
            if deleted:
                log.delete()
            elif roll < 0.25:
                log.trim(rng.randrange(0, 8))
            for _ in range(rng.randrange(0, 6)):
                await log.append(rng.choice([None, 3, 10]))
            now = await log.mark()
            where = f"seed {seed}, step {step}: {before} -> {now}"
            if now is None or before is None:
                before = now
                continue
            if not deleted:
                assert not recreated(before, now), where
            elif (
                before.length
                and not (now.added >= before.added and now.removed > before.removed)
                and now.first_id != before.first_id
            ):
                assert recreated(before, now), where  # the old log lost entries
            before = now


async def test_marks_of_missing_and_present_logs(broker: Harness) -> None:
    async with publisher_of(broker) as publisher:
        log = Log(broker, publisher)
        assert await publisher.marks([log.key, "marks:none"]) == [None, None]
        for _ in range(3):
            await log.append(None)
        log.trim(2)
        mark, missing = await publisher.marks([log.key, "marks:none"])
        assert missing is None
        assert mark is not None
        assert (mark.added, mark.length, mark.removed) == (3, 2, 1)
        entries = await publisher.read(log.key, "-", 10)
        assert [mark.first_id, mark.last_id] == [entries[0][0], entries[-1][0]]
