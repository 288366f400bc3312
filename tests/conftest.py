"""Shared fixtures: every async test runs on trio and on asyncio."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio.testing

import tidings
from tests.helpers import Harness, MemoryHarness, Recorder, RedisHarness
from tests.redis_server import RedisServer
from tidings.brokers.memory import Hub


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every coroutine test must run on both backends: fail loudly if a module
    # forgot ``pytestmark = pytest.mark.anyio`` (it must be there before
    # parametrisation, so it cannot be added here).
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.obj)
            and item.get_closest_marker("anyio") is None
        ):
            raise pytest.UsageError(f"{item.nodeid}: async test without pytest.mark.anyio")


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["trio", "asyncio"])
def autojump_backend(request: pytest.FixtureRequest) -> Any:
    """Like anyio_backend, but trio runs on a MockClock that skips idle time.

    On asyncio the same test runs in real time, so tests using it keep delays small.
    """
    if request.param == "trio":
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return "asyncio"


@pytest.fixture
def hub() -> Hub:
    """A private in-process hub, with its fault switches (memory-only tests)."""
    return Hub("test")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server shared by the tests that need no faults."""
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def broker(request: pytest.FixtureRequest) -> Harness:
    """The same test on the embedded broker and on a real Redis."""
    if request.param == "memory":
        return MemoryHarness()
    return RedisHarness(request.getfixturevalue("redis_server"))


@pytest.fixture
def store(broker: Harness) -> tidings.Store:
    return broker.store()


@pytest.fixture
async def channels(store: tidings.Store) -> AsyncIterator[tidings.Channels]:
    async with tidings.Channels(store, namespace="test", publish_timeout=1.0) as ch:
        yield ch


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
