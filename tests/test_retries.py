"""Retry schedules of consumer groups: ``retry_backoff`` and ``tidings.Retry``.

A failed delivery is acknowledged and a copy of the event scheduled for the group, on
the broker, due no earlier than its delay; any member appends it to the log when it
is due (a member that dies meanwhile loses nothing). The copy carries the event's
first id and its delivery count. On memory:// and on a real Redis.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import Any

import anyio
import pytest

from tests.helpers import FAST, Harness, MemoryHarness, RedisHarness, StatusLog, eventually
from tidings import Backoff, Channel, Channels, Event, Retention, Retry
from tidings.brokers.base import retry_key

pytestmark = pytest.mark.anyio

NS = "r"
#: Small delays: the tests run in real time on both backends.
DELAY = 0.15
#: Clocks (Redis's, the test's) are read at millisecond grain.
GRAIN = 0.005


@pytest.fixture(autouse=True)
def _fresh_namespace() -> None:
    """Streams and schedules outlive a test on the shared redis-server."""
    global NS
    NS = f"r{uuid.uuid4().hex[:8]}"


def handler(broker: Harness, **options: Any) -> Channels:
    options.setdefault("durable", {"jobs": Retention(max_len=100_000)})
    options.setdefault("backoff", FAST)
    options.setdefault("retry_backoff", Backoff(initial=DELAY, factor=2, cap=1, jitter=False))
    options.setdefault("ack_wait", 5.0)
    return Channels(broker.store(), namespace=NS, **options)


def scheduled(broker: Harness, group: str = "workers") -> int:
    key = retry_key(f"{NS}:jobs", group)
    if isinstance(broker, MemoryHarness):
        return len(broker.hub._retries.get(key, []))
    assert isinstance(broker, RedisHarness)
    return int(broker.server.client().zcard(key))


async def test_redeliveries_follow_the_backoff_with_the_first_id_and_the_count(
    broker: Harness,
) -> None:
    attempts: list[float] = []

    def fail_twice(channel: Channel, event: str, data: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise RuntimeError(f"down: attempt {len(attempts)}")

    async with handler(broker, max_deliver=4) as member, handler(broker) as producer:
        await member.register("jobs", "*", fail_twice, group="workers")
        await producer.publish("jobs", "job", 1)
        await eventually(lambda: len(attempts) == 3, limit=10)
        stats = member.stats()
        assert stats.callback_errors == 2
        assert stats.redeliveries == 2
        assert stats.dead_lettered == 0
        # No delay shortened: DELAY after the first failure, 2 * DELAY after the second.
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert gaps[0] >= DELAY - GRAIN
        assert gaps[1] >= 2 * DELAY - GRAIN
        await eventually(lambda: scheduled(broker) == 0)


async def test_a_retry_keeps_its_id_and_counts_its_deliveries(broker: Harness) -> None:
    async with handler(broker, max_deliver=3) as member, handler(broker) as producer:
        got: list[Event[Any]] = []
        done = anyio.Event()

        async def consume(publish: bool = False) -> None:
            async with member.subscribe("jobs", group="workers") as events:
                if publish:
                    await producer.publish("jobs", "job", {"n": 1})
                async for ev in events:
                    got.append(ev)
                    if len(got) == 1:
                        raise RuntimeError("first delivery fails")
                    done.set()
                    return

        with pytest.raises(RuntimeError, match="first delivery"):
            await consume(publish=True)
        first_id = got[0].id
        await consume()
        assert done.is_set()
        second = got[1]
        assert (second.id, second.data, second.deliveries) == (first_id, got[0].data, 2)
        assert second.headers["tidings-original-id"] == first_id
        assert second.headers["tidings-requeued-for"] == "workers"


async def test_retry_asks_for_its_own_delay_and_is_counted_apart(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    times: list[float] = []

    def later_once(channel: Channel, event: str, data: Any) -> None:
        times.append(time.monotonic())
        if len(times) == 1:
            raise Retry(delay=0.3, reason="the payment service is busy")

    with caplog.at_level(logging.INFO, "tidings"):
        async with (
            handler(broker, retry_backoff=None) as member,  # only Retry delays here
            handler(broker) as producer,
        ):
            await member.register("jobs", "*", later_once, group="workers")
            await producer.publish("jobs", "job", 1)
            await eventually(lambda: len(times) == 2, limit=10)
            stats = member.stats()
    assert times[1] - times[0] >= 0.3 - GRAIN
    assert stats.retries == 1
    assert stats.callback_errors == 0
    [line] = [r for r in caplog.records if "asked to retry" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert "the payment service is busy" in line.getMessage()
    assert line.exc_info is None  # one line, no traceback


async def test_an_unexpected_error_warns_with_its_traceback_once(
    broker: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    def always(channel: Channel, event: str, data: Any) -> None:
        raise ValueError("broken")

    with caplog.at_level(logging.INFO, "tidings"):
        async with (
            handler(broker, max_deliver=3, retry_backoff=None) as member,
            handler(broker) as producer,
        ):
            log = StatusLog()
            await member.register(member.status_channel.name, "*", log)
            await member.register("jobs", "*", always, group="workers")
            await producer.publish("jobs", "job", 1)
            await eventually(lambda: "dead_letter" in log.names, limit=10)
    failures = [r for r in caplog.records if "failed on event" in r.getMessage()]
    assert len(failures) == 3
    assert all(r.levelno == logging.WARNING for r in failures)
    assert [r.exc_info is not None for r in failures] == [True, False, False]


async def test_retry_on_the_last_delivery_dead_letters_and_says_so(broker: Harness) -> None:
    def never_ready(channel: Channel, event: str, data: Any) -> None:
        raise Retry(delay=0.01)

    async with handler(broker, max_deliver=2) as member, handler(broker) as producer:
        log = StatusLog()
        await member.register(member.status_channel.name, "*", log)
        await member.register("jobs", "*", never_ready, group="workers")
        await producer.publish("jobs", "job", 1)
        await eventually(lambda: "dead_letter" in log.names, limit=10)
        dead = log.last("dead_letter")
        assert dead["deliveries"] == 2
        assert "asked to retry" in dead["error"]
        assert member.stats().retries == 2


async def test_a_scheduled_retry_outlives_the_member_that_scheduled_it(
    broker: Harness,
) -> None:
    failed = anyio.Event()

    def fails(channel: Channel, event: str, data: Any) -> None:
        failed.set()
        raise RuntimeError("this member is going away")

    done: list[tuple[float, Any]] = []
    async with handler(broker) as producer:
        async with handler(broker) as doomed:
            await doomed.register("jobs", "*", fails, group="workers")
            await producer.publish("jobs", "job", "x")
            with anyio.fail_after(10):
                await failed.wait()
            left_at = time.monotonic()
        assert scheduled(broker) == 1  # on the broker, not in the member
        async with handler(broker) as heir:
            await heir.register(
                "jobs",
                "*",
                lambda c, e, d: done.append((time.monotonic(), d)),
                group="workers",
            )
            await eventually(lambda: len(done) == 1, limit=10)
    assert done[0][1] == "x"
    assert done[0][0] - left_at >= 0  # (after the doomed member left; due later)


async def test_a_retry_copy_is_for_its_group_alone(broker: Harness) -> None:
    plain: list[Any] = []
    others: list[Any] = []
    attempts: list[Any] = []

    def fails_once(channel: Channel, event: str, data: Any) -> None:
        attempts.append(data)
        if len(attempts) == 1:
            raise RuntimeError("once")

    async with (
        handler(broker) as member,
        handler(broker) as bystander,
        handler(broker) as producer,
    ):
        await member.register("jobs", "*", fails_once, group="workers")
        await bystander.register("jobs", "*", lambda c, e, d: plain.append(d))
        await bystander.register("jobs", "*", lambda c, e, d: others.append(d), group="audit")
        await producer.publish("jobs", "job", 1)
        await eventually(lambda: attempts == [1, 1], limit=10)
        await producer.publish("jobs", "job", "marker")
        await eventually(lambda: plain == [1, "marker"] and others == [1, "marker"])
        # The copy reached the other group's member, which acknowledged it unrun.
        assert bystander.stats().unrouted >= 1
