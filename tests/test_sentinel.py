"""Redis under Sentinel: a master, two replicas and three sentinels, real processes.

The deployment is shared by the tests of this module; a test that fails the master
over leaves it healthy again (the old master back, as a replica).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from tests.helpers import Recorder, StatusLog, eventually, watched
from tests.redis_sentinel import SERVICE, RedisSentinel
from tests.redis_server import RedisServer, free_port
from tidings import Backoff, Channels, PublishError, Retention, create_store

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OPTIONS: dict[str, Any] = {
    "backoff": Backoff(initial=0.05, cap=0.3),
    "connect_timeout": 1.0,
    "publish_timeout": 15.0,
    # Long: a failover must be followed without waiting for a health check.
    "health_check_interval": 60.0,
}


@pytest.fixture(scope="module")
def deployment() -> Iterator[RedisSentinel]:
    deployment = RedisSentinel()
    yield deployment
    deployment.close()


def namespace() -> str:
    return f"s{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def listening(url: str, recorder: Recorder) -> AsyncIterator[tuple[Channels, StatusLog]]:
    """Channels on ``url`` with ``recorder`` on "orders", proven to receive."""
    async with Channels(url, namespace=namespace(), **OPTIONS) as channels:
        log = await watched(channels)
        await channels.register("orders", "*", recorder)
        await publish_until_received(channels, recorder, "before")
        yield channels, log


def _on_the_master(deployment: RedisSentinel, log: StatusLog) -> bool:
    """The handler's last connection is to the master the sentinels name now."""
    connected = [data for name, data, _ in log.events if name == "connected"]
    master = f"127.0.0.1:{deployment.master().port}"
    return bool(connected) and connected[-1]["server"] == master


async def publish_until_received(channels: Channels, recorder: Recorder, data: Any) -> None:
    with anyio.fail_after(30):
        while data not in recorder.data:
            await channels.publish("orders", "e", data)
            await anyio.sleep(0.05)


async def test_events_flow_through_the_master_the_sentinels_name(
    deployment: RedisSentinel, recorder: Recorder
) -> None:
    async with listening(deployment.url(), recorder) as (channels, log):
        assert await channels.publish("orders", "created", 1) == 1
        await eventually(lambda: recorder.data == ["before", 1])
        master = deployment.master()
        # The status names the server in use; the queries go to it.
        assert channels.status.name == "connected"
        assert channels._runtime.connection.broker.server == f"127.0.0.1:{master.port}"
        clients = master.client(decode_responses=True).client_list()
        assert any(c["name"] == "tidings-sub" for c in clients)
        assert "disconnected" not in log.names


async def test_the_pubsub_queries_work_unchanged(deployment: RedisSentinel) -> None:
    store = create_store(deployment.url())
    async with store.pubsub() as pubsub:
        await pubsub.subscribe("a", "b")
        assert await pubsub.count("a", "b", "c") == {"a": 1, "b": 1, "c": 0}
        assert set(await pubsub.channels()) >= {"a", "b"}


async def test_a_failover_is_followed_at_once(
    deployment: RedisSentinel, recorder: Recorder
) -> None:
    """SENTINEL FAILOVER demotes a master that stays up and answers PING: only the
    sentinels' +switch-master tells the handler to move (its health check is a
    minute away)."""
    async with listening(deployment.url(), recorder) as (channels, log):
        old = deployment.master()
        deployment.sentinel().execute_command("SENTINEL", "FAILOVER", SERVICE)
        await eventually(lambda: "connected" in log.names, limit=30)
        await eventually(lambda: _on_the_master(deployment, log), limit=30)
        new = deployment.master()
        assert new is not old
        assert log.first("disconnected")["server"] == f"127.0.0.1:{old.port}"
        assert "moved the master" in log.first("disconnected")["error"]
        await publish_until_received(channels, recorder, "after")
        # Published on the new master, and heard there.
        assert new.client().pubsub_numsub(f"{channels.namespace}:orders")[0][1] == 1
    deployment.wait_healthy()


async def test_a_killed_master_is_replaced_and_publishes_wait_for_it(
    deployment: RedisSentinel, recorder: Recorder
) -> None:
    victim = deployment.master()
    try:
        async with listening(deployment.url(), recorder) as (channels, log):
            victim.kill()
            await eventually(lambda: "disconnected" in log.names)
            # Disconnected: this publish waits for the promoted replica (publish_timeout).
            assert await channels.publish("orders", "e", "during") == 1
            await eventually(lambda: "during" in recorder.data)
            # On the master the sentinels settle on (a failover may be retried with
            # the other replica: the handler follows it too).
            await eventually(lambda: _on_the_master(deployment, log), limit=30)
            assert deployment.master() is not victim
    finally:
        victim.start()  # back, as a replica of the new master
        deployment.wait_healthy()


async def test_one_sentinel_down_at_start_is_skipped(
    deployment: RedisSentinel, recorder: Recorder
) -> None:
    dead = RedisServer()
    dead.kill()  # a port with nothing behind it, listed first
    url = deployment.url(sentinels=[dead, *deployment.sentinels])
    async with listening(url, recorder):
        pass  # it received
    dead.close()


async def test_all_sentinels_down_is_a_clear_error_naming_them() -> None:
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{SERVICE}"
    channels = Channels(
        url, connect_timeout=1.0, publish_timeout=0.5, backoff=Backoff(initial=0.05, cap=0.1)
    )
    log: StatusLog = await watched(channels)
    async with channels:
        await eventually(lambda: "disconnected" in log.names)
        error = log.first("disconnected")["error"]
        assert "no sentinel could name the master" in error
        for port in ports:
            assert f"127.0.0.1:{port}" in error
        with pytest.raises(PublishError, match="no sentinel could name the master"):
            await channels.publish("orders", "e", 1)


async def test_a_sentinel_that_does_not_know_the_service_says_so(
    deployment: RedisSentinel,
) -> None:
    url = deployment.url().replace(f"/{SERVICE}", "/no-such-service")
    channels = Channels(url, connect_timeout=1.0, backoff=Backoff(initial=0.05, cap=0.1))
    log: StatusLog = await watched(channels)
    async with channels:
        await eventually(lambda: "disconnected" in log.names)
        assert "does not know the service 'no-such-service'" in log.first("disconnected")["error"]


async def test_durable_channels_and_work_queues_over_sentinel(
    deployment: RedisSentinel,
) -> None:
    ns = namespace()
    options = {**OPTIONS, "durable": {"jobs": Retention(max_len=1000)}}
    done: list[Any] = []
    async with Channels(deployment.url(), namespace=ns, **options) as producer:
        for n in range(5):
            await producer.publish("jobs", "e", n)
        async with Channels(deployment.url(), namespace=ns, **options) as worker:
            await worker.register(
                "jobs", "*", lambda c, e, d: done.append(d), group="w", since="all"
            )
            await eventually(lambda: done == [0, 1, 2, 3, 4])
            await eventually(lambda: worker.stats().acked == 5)


def test_the_cli_publishes_and_counts_through_sentinel(deployment: RedisSentinel) -> None:
    """`tidings publish` over a sentinel URL reaches a subscriber of the master."""
    master = deployment.master().client()
    subscriber = master.pubsub()
    subscriber.subscribe("cli-orders")
    try:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "tidings", "publish", "--url", deployment.url()),
                *("cli-orders", "created", '{"id": 1}'),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "1\n"
        message = subscriber.get_message(timeout=5)
        while message is not None and message["type"] != "message":
            message = subscriber.get_message(timeout=5)
        assert message is not None
        assert json.loads(message["data"]) == {
            "channel": "cli-orders",
            "event": "created",
            "data": {"id": 1},
        }
    finally:
        subscriber.close()


async def test_a_blackholed_sentinel_costs_a_slice_of_the_connect_time(
    deployment: RedisSentinel, recorder: Recorder
) -> None:
    """A sentinel that accepts and never answers (SIGSTOP), listed first: each
    lookup gives it its share of connect_timeout, then asks the others."""
    stopped = deployment.sentinels[0]
    stopped.pause()
    try:
        # Two sentinels: each of a session's two lookups started on another one.
        url = deployment.url(sentinels=[stopped, deployment.sentinels[1]])
        async with listening(url, recorder) as (channels, _):
            assert channels.status.name == "connected"
    finally:
        stopped.resume()
        deployment.wait_healthy()  # (resumed, it looks again before it agrees)


async def test_an_acl_user_without_role_trusts_the_sentinels(
    deployment: RedisSentinel, recorder: Recorder
) -> None:
    """ROLE is an admin command: a user without it still gets the master the
    sentinels name (and is told nothing is wrong)."""
    servers = [s for s in deployment.servers if s.process is not None]
    for server in servers:  # ACL users are not replicated: one each
        server.client().execute_command(
            "ACL", "SETUSER", "app", "on", ">app-secret", "~*", "&*", "+@all", "-role"
        )
    try:
        url = deployment.url().replace("redis+sentinel://", "redis+sentinel://app:app-secret@")
        async with listening(url, recorder) as (channels, log):
            assert "disconnected" not in log.names  # no ROLE: no refusal either
            broker = channels._runtime.connection.broker
            assert broker.server == f"127.0.0.1:{deployment.master().port}"
    finally:
        for server in servers:
            server.client().execute_command("ACL", "DELUSER", "app")
