"""Supervision under real faults: killed, frozen and unreachable Redis servers.

Each test starts its own redis-server (or a fault-injecting proxy in front of one)
and asserts exact outcomes: what the status events say, that every registration is
back on the server, that events flow again, and that nothing hangs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tests.faults import running_proxy
from tests.helpers import (
    FAST,
    Recorder,
    assert_follows_the_state_machine,
    eventually,
    watched,
)
from tests.redis_server import RedisServer
from tidings import Backoff, Channels, PublishError, StatusType

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OPTIONS: dict[str, Any] = {
    "backoff": FAST,
    "health_check_interval": 0.3,
    "connect_timeout": 0.5,
    "publish_timeout": 2,
}


@pytest.fixture
def server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


def numsub(server: RedisServer, *names: str) -> dict[str, int]:
    return {k.decode(): v for k, v in server.client().pubsub_numsub(*names)}


async def test_kill_9_five_times_while_events_flow(server: RedisServer, recorder: Recorder) -> None:
    channels = Channels(server.url, namespace="k9", **OPTIONS)
    log = await watched(channels)
    names = ("a", "b", "c")
    failed_publishes = 0
    async with channels, anyio.create_task_group() as tg:
        for name in names:
            await channels.register(name, "*", recorder)

        async def publish_forever() -> None:
            nonlocal failed_publishes
            n = 0
            while True:
                try:
                    await channels.publish("b", "tick", n)
                except PublishError:
                    failed_publishes += 1
                n += 1
                await anyio.sleep(0.01)

        tg.start_soon(publish_forever)
        for round_ in range(1, 6):
            server.kill()
            await eventually(lambda: channels.status is not StatusType.connected)
            server.start()
            await eventually(lambda r=round_: log.names.count("connected") == r + 1, limit=10)
            assert numsub(server, "k9:a", "k9:b", "k9:c") == {"k9:a": 1, "k9:b": 1, "k9:c": 1}
            await channels.publish("a", "marker", round_)
            await eventually(lambda r=round_: ("a", "marker", r) in recorder.calls)
        tg.cancel_scope.cancel()
        stats = channels.stats()
    assert stats.reconnects == 5
    assert stats.resubscribes == 15
    assert [d for c, e, d in recorder.calls if e == "marker"] == [1, 2, 3, 4, 5]
    ticks = [d for c, e, d in recorder.calls if e == "tick"]
    assert ticks == sorted(ticks)  # in order, whatever the outages cost
    assert_follows_the_state_machine(log.names)
    reconnections = [d for name, d, _ in log.events if name == "connected"][1:]
    assert len(reconnections) == 5
    assert all(d["down_for"] > 0 for d in reconnections)


async def test_client_kill_type_pubsub(server: RedisServer, recorder: Recorder) -> None:
    channels = Channels(server.url, namespace="ck", **OPTIONS)
    log = await watched(channels)
    async with channels:
        await channels.register("orders", "*", recorder)
        killed = server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed == 1
        await eventually(lambda: log.names.count("connected") == 2, limit=10)
        assert numsub(server, "ck:orders") == {"ck:orders": 1}
        await channels.publish("orders", "after", 1)
        await eventually(lambda: recorder.calls)
    assert "disconnected" in log.names
    assert recorder.calls == [("orders", "after", 1)]


async def test_publish_while_down_longer_than_publish_timeout(server: RedisServer) -> None:
    """Down and known to be down: publish waits publish_timeout, then says why."""
    async with Channels(server.url, **{**OPTIONS, "publish_timeout": 0.5}) as channels:
        await channels.connect()
        server.kill()
        await eventually(lambda: channels.status is not StatusType.connected)
        started = anyio.current_time()
        with pytest.raises(PublishError, match=r"publish_timeout=0.5s.*ConnectionRefusedError"):
            await channels.publish("c", "e")
        assert anyio.current_time() - started >= 0.5 - 0.01


async def test_concurrent_publishes_across_a_short_outage(
    server: RedisServer, recorder: Recorder
) -> None:
    async with Channels(server.url, namespace="o", **OPTIONS) as channels:
        await channels.register("c", "*", recorder)
        server.kill()
        await eventually(lambda: channels.status is not StatusType.connected)
        outcomes: dict[int, str] = {}

        async def publish(n: int) -> None:
            try:
                await channels.publish("c", "e", n)
            except PublishError:
                outcomes[n] = "failed"
            else:
                outcomes[n] = "ok"

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(publish, n)
                await anyio.sleep(0.3)
                server.start()
        assert len(outcomes) == 20
        succeeded = sorted(n for n, outcome in outcomes.items() if outcome == "ok")
        # A publish that returned was accepted by the server; the subscription was
        # back before publishing resumed, so every one of them is delivered.
        await eventually(lambda: len(recorder.calls) == len(succeeded))
        assert sorted(recorder.data) == succeeded


async def test_a_listener_that_never_answers(server: RedisServer) -> None:
    async with running_proxy(server.port) as proxy:
        proxy.blackhole = True
        channels = Channels(proxy.url, **{**OPTIONS, "connect_timeout": 0.2})
        log = await watched(channels)
        async with channels:
            await eventually(lambda: log.names.count("disconnected") >= 3)
            failures = [d for name, d, _ in log.events if name == "disconnected"]
            assert [d["attempt"] for d in failures[:3]] == [1, 2, 3]
            assert all("TimeoutError" in d["error"] for d in failures)
            proxy.blackhole = False
            with anyio.fail_after(5):
                await channels.connect()
            # and now a prompt exit while the broker cannot be reached
            proxy.blackhole = True
            proxy.cut()
            await eventually(lambda: channels.status is not StatusType.connected)
            leaving = anyio.current_time()
        assert anyio.current_time() - leaving < 1
        assert log.names[-1] == "closed"


async def test_exit_while_the_server_is_down_is_prompt(server: RedisServer) -> None:
    async with Channels(server.url, backoff=Backoff(initial=5, cap=16)) as channels:
        await channels.connect()
        server.kill()
        await eventually(lambda: channels.status is StatusType.disconnected)
        leaving = anyio.current_time()
    assert anyio.current_time() - leaving < 1


async def test_wrong_password_is_reported_and_retried_with_backoff() -> None:
    server = RedisServer("--requirepass", "right")
    try:
        channels = Channels(f"redis://:wrong@127.0.0.1:{server.port}", **OPTIONS)
        log = await watched(channels)
        async with channels:
            await eventually(lambda: log.names.count("disconnected") >= 3)
        failures = [(d, t) for name, d, t in log.events if name == "disconnected"]
        attempts = [t for name, _, t in log.events if name == "connecting"]
        for (data, failed_at), next_attempt in zip(failures, attempts[1:], strict=False):
            assert "WRONGPASS" in data["error"]
            assert next_attempt - failed_at >= data["retry_in"] - 0.01  # spaced, not a hot loop
    finally:
        server.close()


async def test_a_frozen_server_is_detected_and_recovered(
    server: RedisServer, recorder: Recorder
) -> None:
    channels = Channels(server.url, namespace="fz", **OPTIONS)
    log = await watched(channels)
    async with channels:
        await channels.register("c", "*", recorder)
        server.pause()  # SIGSTOP: TCP stays up, nothing answers
        await eventually(lambda: "disconnected" in log.names, limit=10)
        assert "did not answer PING" in log.last("disconnected")["error"]
        server.resume()
        await eventually(lambda: log.names.count("connected") == 2, limit=10)
        await channels.publish("c", "e", "thawed")
        await eventually(lambda: recorder.calls)
    assert recorder.data == ["thawed"]


async def test_a_stalled_network_is_detected(server: RedisServer, recorder: Recorder) -> None:
    async with running_proxy(server.port) as proxy:
        channels = Channels(proxy.url, namespace="st", **OPTIONS)
        log = await watched(channels)
        async with channels:
            await channels.register("c", "*", recorder)
            proxy.stall()  # half-open: connections look alive, nothing moves
            await eventually(lambda: "disconnected" in log.names, limit=10)
            proxy.flow()
            proxy.cut()
            await eventually(lambda: log.names.count("connected") == 2, limit=10)
            await channels.publish("c", "e", 1)
            await eventually(lambda: recorder.calls)
    # The stall is what the health check reported (cutting the connections
    # afterwards may fail a reconnection attempt too: a later disconnect).
    assert "PING" in log.first("disconnected")["error"]


async def test_a_publish_in_flight_when_the_server_dies(server: RedisServer) -> None:
    async with Channels(server.url, **OPTIONS) as channels:
        await channels.connect()
        server.kill()  # before tidings can notice: the publish goes into a dead socket
        with pytest.raises(PublishError, match="may or may not have received it"):
            await channels.publish("c", "e")


async def test_close_fails_pending_publishes(server: RedisServer) -> None:
    errors: list[PublishError] = []
    async with Channels(server.url, **{**OPTIONS, "publish_timeout": 60}) as channels:
        await channels.connect()
        server.kill()
        await eventually(lambda: channels.status is not StatusType.connected)

        async def publish() -> None:
            try:
                await channels.publish("c", "e")
            except PublishError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(publish)
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(2):
                await channels.close()
    assert len(errors) == 3
    assert all("closed" in str(e) for e in errors)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_idle_channels_do_not_spin(server: RedisServer) -> None:
    import trio

    class Steps(trio.abc.Instrument):
        count = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.count += 1

    async with Channels(server.url, namespace="idle", health_check_interval=30) as channels:
        for n in range(100):
            await channels.register(f"c{n}", "*", print)
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        await trio.sleep(1)
        trio.lowlevel.remove_instrument(steps)
        connected_steps = steps.count
        server.kill()
        await eventually(lambda: channels.status is StatusType.disconnected)
        steps = Steps()
        trio.lowlevel.add_instrument(steps)
        await trio.sleep(1)
        trio.lowlevel.remove_instrument(steps)
    # Connected and idle: only this test's own sleep runs. Disconnected: one wake-up
    # per connection attempt (at most ~5 a second with the default back-off).
    assert connected_steps <= 3
    assert steps.count <= 60


async def test_reconnects_while_registrations_churn(server: RedisServer) -> None:
    """Register and unregister without pause while connections are cut: no deadlock,
    and afterwards the server holds exactly what is registered."""
    async with running_proxy(server.port) as proxy:
        channels = Channels(proxy.url, namespace="churn", **OPTIONS)
        log = await watched(channels)
        async with channels:
            stop = anyio.Event()

            async def churn(worker: int) -> None:
                n = 0
                while not stop.is_set():
                    name = f"w{worker}-{n % 7}"
                    await channels.register(name, "*", print)
                    if n % 3:
                        await channels.unregister(name, "*", print)
                    n += 1
                    await anyio.lowlevel.checkpoint()

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for worker in range(4):
                        tg.start_soon(churn, worker)
                    for round_ in range(1, 6):
                        await anyio.sleep(0.05)
                        proxy.cut()
                        await eventually(
                            lambda r=round_: log.names.count("connected") > r, limit=10
                        )
                    stop.set()
            await channels.connect()
            await eventually(lambda: channels._runtime.connection.in_sync)
            wanted = sorted(f"churn:{c.name}" for c in channels if not c.local)
            on_server = sorted(n.decode() for n in server.client().pubsub_channels("churn:*"))
            assert on_server == wanted
    assert_follows_the_state_machine(log.names)
