"""tidings.testing: settle(), and the pytest plugin's fixtures (in a pytest of its own)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

import tidings
from tests.helpers import Harness
from tidings.testing import settle

pytestmark = pytest.mark.anyio


async def test_settle_waits_for_every_callback_iterator_and_chain(broker: Harness) -> None:
    seen: list[Any] = []
    async with tidings.Channels(broker.store(), namespace="settle") as channels:

        def sync(channel: tidings.Channel, event: str, data: Any) -> None:
            seen.append(("sync", data))

        async def slow(channel: tidings.Channel, event: str, data: Any) -> None:
            for _ in range(5):  # several scheduler turns
                await anyio.lowlevel.checkpoint()
            seen.append(("async", data))
            if data < 3:  # a chain: handling one event publishes the next
                await channels.publish("b", "e", data + 1)

        await channels.register("a", "*", sync)
        await channels.register("b", "*", slow)
        async with channels.subscribe("a") as events:
            for n in range(20):
                await channels.publish("a", "e", n)
            await channels.publish("b", "e", 0)
            await settle(channels)
            assert [d for kind, d in seen if kind == "sync"] == list(range(20))
            assert [d for kind, d in seen if kind == "async"] == [0, 1, 2, 3]
            # The iterator was fed too: 20 events wait in it.
            assert [(await events.receive()).data for _ in range(20)] == list(range(20))


async def test_settle_works_on_pubsub(broker: Harness) -> None:
    got: list[Any] = []
    async with broker.store().pubsub() as pubsub:
        pubsub.add_client(lambda channel, message: got.append(message))
        await pubsub.subscribe("c")
        for n in range(10):
            await pubsub.publish("c", b"%d" % n)
        await settle(pubsub)
        assert got == [b"%d" % n for n in range(10)]


async def test_settle_needs_a_running_handler() -> None:
    with pytest.raises(RuntimeError, match="settle"):
        await settle(tidings.Channels())


def test_the_pytest_plugin_offers_a_store_and_redis_servers(tmp_path: Path) -> None:
    """In another project's tests: the fixtures come with tidings installed."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest
            import tidings
            from tidings.testing import settle

            pytestmark = pytest.mark.anyio

            @pytest.fixture
            def anyio_backend():
                return "trio"

            async def test_store(tidings_store):
                seen = []
                async with tidings.Channels(tidings_store) as channels:
                    await channels.register("c", "*", lambda ch, ev, d: seen.append(d))
                    await channels.publish("c", "e", 1)
                    await settle(channels)
                assert seen == [1]

            async def test_redis(redis_server):
                server = redis_server()
                seen = []
                fast = tidings.Backoff(initial=0.02, cap=0.1)
                async with tidings.Channels(server.url, backoff=fast) as ch:
                    await ch.register("c", "*", lambda c, e, d: seen.append(d))
                    server.restart()
                    await ch.connect()
                    while ch.status.name != "connected" or not ch.stats().reconnects:
                        await ch.connect()
                    await ch.publish("c", "e", 2)
                    await settle(ch)
                assert seen == [2]
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
