"""What the tests share: waiting for conditions, recording callbacks, status logs,
the two broker harnesses. (Fixtures live in conftest.py; these are plain helpers,
tested in tests/test_helpers.py.)"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio

import tidings
from tests.redis_server import RedisServer
from tidings.actors.callbacks import Dispatcher, Registration
from tidings.brokers.memory import Hub, MemoryBroker
from tidings.stats import Counters

#: A back-off fast enough that reconnections do not slow the tests down.
FAST = tidings.Backoff(initial=0.02, cap=0.1)


async def eventually(condition: Callable[[], object], limit: float = 5.0) -> None:
    """Wait until ``condition()`` is true, polling; fail after ``limit`` seconds."""
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.001)


async def settle() -> None:
    """Let every task run until all are blocked (cooperative, deterministic enough)."""
    await anyio.wait_all_tasks_blocked()


class MemoryHarness:
    """memory:// for the tests that run on every broker."""

    kind = "memory"

    def __init__(self) -> None:
        self.hub = Hub(f"harness-{id(self)}")
        self.url = f"memory://{self.hub.name}"

    def store(self) -> tidings.Store:
        return tidings.Store(MemoryBroker(self.hub))

    def numsub(self, *channels: str) -> dict[str, int]:
        return self.hub.numsub(channels)

    def connections(self) -> int:
        return len(self.hub._connections)

    def kill_connections(self) -> None:
        self.hub.kill_connections()


class RedisHarness:
    """A real redis-server, watched through redis-py (an independent client)."""

    kind = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.url = server.url
        self.client = server.client(decode_responses=True)

    def store(self) -> tidings.Store:
        return tidings.create_store(self.url)

    def numsub(self, *channels: str) -> dict[str, int]:
        return dict(self.client.pubsub_numsub(*channels))

    def _ours(self) -> list[dict[str, Any]]:
        return [c for c in self.client.client_list() if c.get("name", "").startswith("tidings")]

    def connections(self) -> int:
        return len(self._ours())

    def kill_connections(self) -> None:
        for client in self._ours():
            self.client.client_kill_filter(_id=client["id"])


Harness = MemoryHarness | RedisHarness


class Recorder:
    """A callback recording ``(channel name, event, data)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, channel: tidings.Channel, event: str, data: Any) -> None:
        self.calls.append((channel.name, event, data))

    @property
    def events(self) -> list[str]:
        return [event for _, event, _ in self.calls]

    @property
    def data(self) -> list[Any]:
        return [data for _, _, data in self.calls]


class StatusLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], float]] = []

    def __call__(self, channel: tidings.Channel, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data, anyio.current_time()))

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.events]

    def last(self, name: str) -> dict[str, Any]:
        return next(data for event, data, _ in reversed(self.events) if event == name)

    def first(self, name: str) -> dict[str, Any]:
        return next(data for event, data, _ in self.events if event == name)


async def watched(channels: tidings.Channels) -> StatusLog:
    log = StatusLog()
    await channels.register(channels.status_channel.name, "*", log)
    return log


def assert_follows_the_state_machine(names: list[str]) -> None:
    allowed = {
        "initialised": {"connecting", "closed"},
        "connecting": {"connected", "disconnected", "closed"},
        "connected": {"disconnected", "closed"},
        "disconnected": {"connecting", "closed"},
    }
    previous = "initialised"
    # Reports (slow_consumer, gap, dead_letter) come between, and are not states.
    for name in [n for n in names if n in allowed or n == "closed"]:
        assert name in allowed[previous], f"{previous} -> {name} in {names}"
        previous = name
    assert names[-1] == "closed"


def recording_dispatcher(limit: int = 5) -> tuple[Dispatcher, Counters, list[Registration]]:
    """A dispatcher counting into fresh counters, with the registrations it removes
    recorded; a callback is removed after ``limit`` failures in a minute."""
    removed: list[Registration] = []
    stats = Counters()
    dispatcher = Dispatcher(
        stats=stats,
        logger=logging.getLogger("tidings.test"),
        remove=removed.append,
        failure_limit=limit,
        failure_window=60.0,
    )
    return dispatcher, stats, removed
