"""The Redis broker against real redis-server processes, and other clients."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from tests.helpers import FAST, Recorder, eventually
from tests.policies.test_glob import CASES
from tests.redis_server import RedisServer, free_port
from tidings import Channel, Channels, PublishError, StatusType, create_store

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A server of this test's own, to configure or to kill."""
    server = RedisServer()
    yield server
    server.close()


# -- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost", "redis://localhost:6379/0"),
        ("redis://h:7000/3?namespace=x", "redis://h:7000/3"),
        ("redis://:pw@h", "redis://:****@h:6379/0"),
        ("redis://alice:s%40cret@h/1", "redis://alice:****@h:6379/1"),
        ("redis://alice@h", "redis://alice@h:6379/0"),
        ("redis://[::1]:6380", "redis://[::1]:6380/0"),
        ("rediss://h", "rediss://h:6379/0"),
        ("unix:///tmp/r.sock?db=2", "unix:///tmp/r.sock?db=2"),
        ("redis://h?db=4", "redis://h:6379/4"),
    ],
)
def test_urls_give_a_redacted_dsn(url: str, shown: str) -> None:
    store = create_store(url)
    assert store.url == shown
    assert "cret" not in repr(store)
    assert "pw" not in str(Channels(store))


def test_credentials_are_percent_decoded() -> None:
    address = create_store("redis://alice:s%40cret@h/1").broker.address  # type: ignore[attr-defined]
    assert (address.username, address.password, address.db) == ("alice", "s@cret", 1)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://h:port", "bad port"),
        ("redis://h:99999", "bad port"),
        ("redis://h/x", "bad database number 'x'"),
        ("redis://h/-1", "bad database number"),
        ("redis://:hunter2@h?timeout=3", "unknown parameter 'timeout'"),
        ("unix://", "socket path"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("rediss://h?ssl_ca_certs=/nonexistent/ca.pem", "TLS files"),
        ("rediss://h?ssl_keyfile=k.pem", "ssl_keyfile needs ssl_certfile"),
        ("rediss://h?ssl_check_hostname=perhaps", "not a boolean"),
        ("redis://h?client_name=has%20space", "client_name"),
    ],
)
def test_bad_redis_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        create_store(url)
    assert "hunter2" not in str(info.value)


# -- the handshake ----------------------------------------------------------------------


async def test_connections_are_named_for_operators(redis_server: RedisServer) -> None:
    async with Channels(f"{redis_server.url}?client_name=shop-api") as channels:
        await channels.connect()
        names = {c["name"] for c in redis_server.client(decode_responses=True).client_list()}
    assert {"shop-api-sub", "shop-api-pub"} <= names


async def test_select_db(redis_server: RedisServer) -> None:
    async with Channels(f"{redis_server.url}/5?client_name=dbtest") as channels:
        await channels.connect()
        clients = redis_server.client(decode_responses=True).client_list()
    assert {c["db"] for c in clients if c["name"].startswith("dbtest")} == {"5"}


async def test_password_auth(recorder: Recorder) -> None:
    server = RedisServer("--requirepass", "s3cret")
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}"
        async with Channels(url) as channels:
            await channels.connect()
            await channels.register("c", "*", recorder)
            assert await channels.publish("c", "e", 1) == 1
            await eventually(lambda: recorder.calls)
    finally:
        server.close()


async def test_acl_user_and_a_refused_publish(server: RedisServer) -> None:
    server.client().acl_setuser(
        "shop", enabled=True, passwords=["+pw"], channels=["shop:*"], commands=["+@all"]
    )
    url = f"redis://shop:pw@127.0.0.1:{server.port}?namespace=shop"
    async with Channels(url) as channels, channels.store.pubsub() as pubsub:
        await channels.connect()
        assert await channels.publish("orders", "e") == 0  # shop:orders is allowed
        # The ACL forbids this channel: a clear error, and the connection stays up.
        with pytest.raises(PublishError, match="NOPERM"):
            await pubsub.publish("other:orders", b"e")
        assert pubsub.status is StatusType.connected
        assert await pubsub.publish("shop:orders", b"e") == 0


@pytest.mark.parametrize(("userinfo", "server_error"), [(":wrong@", "WRONGPASS"), ("", "NOAUTH")])
async def test_auth_failures_show_in_status_and_retry_with_backoff(
    userinfo: str, server_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer("--requirepass", "right")
    events: list[dict[str, Any]] = []
    try:
        channels = Channels(
            f"redis://{userinfo}127.0.0.1:{server.port}", backoff=FAST, publish_timeout=0.1
        )
        await channels.register(
            channels.status_channel.name, "disconnected", lambda ch, ev, data: events.append(data)
        )
        with caplog.at_level(logging.INFO, "tidings"):
            async with channels:
                await eventually(lambda: len(events) >= 3)
                with pytest.raises(PublishError, match=server_error) as info:
                    await channels.publish("c", "e")
        assert [e["attempt"] for e in events[:3]] == [1, 2, 3]
        assert all(server_error in e["error"] for e in events)
        assert all(0 <= e["retry_in"] <= FAST.ceiling(e["attempt"]) for e in events)
        for text in (caplog.text, str(info.value), *(e["error"] for e in events)):
            assert "wrong" not in text
            assert "right" not in text
    finally:
        server.close()


async def test_unix_socket(recorder: Recorder) -> None:
    server = RedisServer(unix_socket=True)
    try:
        async with Channels(f"unix://{server.socket}?db=1") as channels:
            await channels.register("c", "*", recorder)
            assert await channels.publish("c", "e", "via unix") == 1
            await eventually(lambda: recorder.calls)
        assert str(channels) == f"unix://{server.socket}?db=1"
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    files = {name: folder / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    client = ca.issue_cert("client.tidings.test")
    files["client"] = folder / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


@contextmanager
def tls_server(files: dict[str, Path], *, client_certificates: bool) -> Iterator[int]:
    """A TLS-only redis-server; yields its TLS port."""
    port = free_port()
    server = RedisServer(
        "--tls-port", str(port), "--tls-cert-file", str(files["cert"]),
        "--tls-key-file", str(files["key"]), "--tls-ca-cert-file", str(files["ca"]),
        "--tls-auth-clients", "yes" if client_certificates else "no",
    )  # fmt: skip
    try:
        yield port
    finally:
        server.close()


async def round_trip(url: str, recorder: Recorder) -> None:
    async with Channels(url) as channels:
        await channels.register("c", "*", recorder)
        assert await channels.publish("c", "e", "secret") == 1
        await eventually(lambda: recorder.calls)


async def first_failure(url: str) -> dict[str, Any]:
    """The data of the first `disconnected` status event when connecting to ``url``."""
    events: list[dict[str, Any]] = []
    channels = Channels(url, backoff=FAST)
    await channels.register(
        channels.status_channel.name, "disconnected", lambda ch, ev, data: events.append(data)
    )
    async with channels:
        await eventually(lambda: events)
    return events[0]


async def test_tls_is_verified(tls_files: dict[str, Path], recorder: Recorder) -> None:
    with tls_server(tls_files, client_certificates=False) as port:
        await round_trip(f"rediss://localhost:{port}?ssl_ca_certs={tls_files['ca']}", recorder)
        # Without the CA the certificate cannot be verified: refused, not trusted.
        failure = await first_failure(f"rediss://localhost:{port}")
    assert "CERTIFICATE_VERIFY_FAILED" in failure["error"]


async def test_tls_client_certificate(tls_files: dict[str, Path], recorder: Recorder) -> None:
    with tls_server(tls_files, client_certificates=True) as port:
        base = f"rediss://localhost:{port}?ssl_ca_certs={tls_files['ca']}"
        await round_trip(f"{base}&ssl_certfile={tls_files['client']}", recorder)
        # Without a client certificate the server refuses the connection.
        failure = await first_failure(base)
    assert failure["attempt"] == 1


# -- subscriptions ----------------------------------------------------------------------


async def test_register_returns_once_the_server_confirmed(redis_server: RedisServer) -> None:
    peer = redis_server.client()
    async with Channels(redis_server.url, namespace="ack") as channels:
        for n in range(20):
            await channels.register(f"c{n}", "*", print)
            # another client sees the subscription at once: no sleep, no retry
            assert peer.pubsub_numsub(f"ack:c{n}") == [(f"ack:c{n}".encode(), 1)]


async def test_thousands_of_registrations_subscribe_in_a_few_round_trips(
    server: RedisServer,
) -> None:
    server.kill()
    peer_calls = 0
    async with Channels(server.url, namespace="many", backoff=FAST) as channels:
        assert channels.status is StatusType.disconnected
        for n in range(2000):
            await channels.register(f"c{n}", "*", print)  # recorded, no I/O
        server.start()
        with anyio.fail_after(10):
            await channels.connect()
        stats = server.client(decode_responses=True).info("commandstats")
        peer_calls = stats["cmdstat_subscribe"]["calls"]
        assert server.client().pubsub_numsub("many:c0", "many:c1999") == [
            (b"many:c0", 1),
            (b"many:c1999", 1),
        ]
    assert peer_calls <= 4  # 2,000 names in chunks of 512, all in one write


async def test_concurrent_registrations_are_batched(server: RedisServer) -> None:
    async with Channels(server.url, namespace="batch") as channels:
        await channels.connect()
        async with anyio.create_task_group() as tg:
            for n in range(500):
                tg.start_soon(channels.register, f"c{n}", "*", print)
        stats = server.client(decode_responses=True).info("commandstats")
        assert stats["cmdstat_subscribe"]["calls"] < 10
        assert len(server.client().pubsub_channels("batch:*")) == 500


@pytest.mark.parametrize(
    ("pattern", "name", "matches"), [c for c in CASES if c[1] and c[1].isprintable()]
)
async def test_glob_semantics_agree_with_redis(
    redis_server: RedisServer, pattern: str, name: str, matches: bool
) -> None:
    async with Channels(redis_server.url) as channels, channels.store.pubsub() as pubsub:
        await pubsub.subscribe(name)
        assert (name in await pubsub.channels(pattern)) is matches


# -- interoperability -------------------------------------------------------------------


async def test_redis_py_reads_the_documented_wire_format(redis_server: RedisServer) -> None:
    peer = redis_server.client().pubsub()
    peer.subscribe("shop:orders")
    assert peer.get_message(timeout=5)["type"] == "subscribe"
    async with Channels(redis_server.url, namespace="shop") as channels:
        assert await channels.publish("orders", "created", {"id": 7, "tags": ["a"]}) == 1
    message = peer.get_message(timeout=5)
    peer.close()
    assert message["channel"] == b"shop:orders"
    assert json.loads(message["data"]) == {
        "channel": "orders",
        "event": "created",
        "data": {"id": 7, "tags": ["a"]},
    }


async def test_messages_from_redis_py_reach_callbacks(
    redis_server: RedisServer, recorder: Recorder
) -> None:
    peer = redis_server.client()
    async with Channels(redis_server.url, namespace="shop") as channels:
        await channels.register("orders", "created", recorder)
        payload = json.dumps({"channel": "orders", "event": "created", "data": "from redis-py"})
        assert peer.publish("shop:orders", payload) == 1
        assert peer.publish("shop:orders", b"\x00garbage") == 1  # logged, counted, survived
        peer.publish("shop:orders", payload)
        await eventually(lambda: len(recorder.calls) == 2)
        assert channels.stats().decode_errors == 1
    assert recorder.data == ["from redis-py"] * 2


async def test_redis_cli_sees_tidings_events(redis_server: RedisServer) -> None:
    command = ["redis-cli", "-p", str(redis_server.port), "--no-raw", "SUBSCRIBE", "cli:news"]
    peer = redis_server.client()
    async with await anyio.open_process(command) as cli:
        assert cli.stdout is not None
        await eventually(lambda: peer.pubsub_numsub("cli:news")[0][1] == 1)
        async with Channels(redis_server.url, namespace="cli") as channels:
            await channels.publish("news", "flash", "hello")
        out = b""
        with anyio.fail_after(5):
            while b"flash" not in out:
                out += await cli.stdout.receive()
        cli.terminate()
    expected = '"{\\"channel\\":\\"news\\",\\"event\\":\\"flash\\",\\"data\\":\\"hello\\"}"'
    assert expected in out.decode()


async def test_two_processes_exchange_events(redis_server: RedisServer, recorder: Recorder) -> None:
    script = textwrap.dedent(f"""
        import anyio, tidings

        async def main():
            async with tidings.open_channels("{redis_server.url}", namespace="two") as ch:
                done = anyio.Event()
                async def ping(channel, event, data):
                    await ch.publish("replies", "pong", data * 2)
                    done.set()
                await ch.register("requests", "ping", ping)
                await ch.publish("replies", "ready")
                with anyio.fail_after(10):
                    await done.wait()

        anyio.run(main, backend="asyncio")
    """)
    async with Channels(redis_server.url, namespace="two") as channels:
        await channels.register("replies", "*", recorder)
        child = await anyio.open_process([sys.executable, "-c", script])
        try:
            await eventually(lambda: recorder.events == ["ready"], limit=15)
            await channels.publish("requests", "ping", 21)
            await eventually(lambda: recorder.events == ["ready", "pong"])
            with anyio.fail_after(10):
                assert await child.wait() == 0
        finally:
            if child.returncode is None:
                child.kill()
            await child.aclose()
    assert recorder.data == [None, 42]


# -- a cancelled command never shifts the replies of the next ----------------------------


async def test_a_cancelled_publish_does_not_shift_replies(server: RedisServer) -> None:
    async with Channels(server.url, namespace="cve") as channels, channels.store.pubsub() as pubsub:
        await channels.connect()
        await pubsub.connect()
        await pubsub.subscribe("cve:watched")
        server.pause()  # the server will not answer for now
        with anyio.move_on_after(0.2) as scope:
            await pubsub.publish("cve:watched", b"in flight")
        assert scope.cancelled_caught
        async with anyio.create_task_group() as tg:
            results: dict[str, Any] = {}

            async def count() -> None:
                results["count"] = await pubsub.count("cve:watched")

            tg.start_soon(count)
            await anyio.sleep(0.05)
            server.resume()
        # The PUBLISH reply (1) arrives first and goes to nobody; NUMSUB gets its own.
        assert results["count"] == {"cve:watched": 1}
        assert await pubsub.publish("cve:watched", b"after") == 1


async def test_a_callback_that_publishes_does_not_deadlock(
    redis_server: RedisServer, recorder: Recorder
) -> None:
    async with Channels(redis_server.url, namespace="echo") as channels:

        async def relay(channel: Channel, event: str, data: int) -> None:
            if data < 50:
                await channels.publish("ping", "e", data + 1)

        await channels.register("ping", "*", relay)
        await channels.register("ping", "*", recorder)
        await channels.publish("ping", "e", 0)
        await eventually(lambda: len(recorder.calls) == 51)
    assert recorder.data == list(range(51))


async def test_failed_linked_tasks_refuse_new_tasks_with_a_connection_error() -> None:
    from tidings.brokers.connection import Linked

    tasks = Linked()

    async def fail() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):
        await tasks.run(fail)
    with pytest.raises(anyio.BrokenResourceError, match="connection lost"):
        tasks.start(anyio.sleep_forever)


async def test_cancelled_linked_tasks_refuse_new_tasks_too() -> None:
    from tidings.brokers.connection import Linked

    tasks = Linked()
    with anyio.move_on_after(0.01):
        await tasks.run(anyio.sleep_forever)
    with pytest.raises(anyio.BrokenResourceError):
        tasks.start(anyio.sleep_forever)
