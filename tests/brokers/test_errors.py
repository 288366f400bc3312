"""The broker error contract (tidings/brokers/base.py).

A refused command (`ReplyError`: the connection is fine) is not one of
`CONNECTION_ERRORS`, so ``except CONNECTION_ERRORS`` never swallows it; a failed
connection raises one of them, and broker code's own such error (`ConnectionLost`)
is a `tidings.BrokerError` for users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest

import tidings
from tidings.brokers.base import CONNECTION_ERRORS, ConnectionLost
from tidings.brokers.connection import open_connection
from tidings.brokers.sentinel import MasterMoved
from tidings.brokers.urls import RedisAddress
from tidings.supervisors.connection import describe

pytestmark = pytest.mark.anyio


def test_reply_error_is_not_a_connection_error() -> None:
    refused = tidings.ReplyError("NOPERM no permissions", "NOPERM")
    assert isinstance(refused, tidings.BrokerError)  # the public contract stands
    assert not isinstance(refused, CONNECTION_ERRORS)
    assert not any(issubclass(tidings.ReplyError, kind) for kind in CONNECTION_ERRORS)

    def refuse() -> None:
        try:
            raise refused
        except CONNECTION_ERRORS:  # pragma: no cover - the regression under test
            pytest.fail("CONNECTION_ERRORS caught a refused command")

    with pytest.raises(tidings.ReplyError):
        refuse()


def test_connection_lost_is_a_broker_error_and_a_connection_error() -> None:
    for kind in (ConnectionLost, MasterMoved):
        assert issubclass(kind, tidings.BrokerError)
        assert not issubclass(kind, tidings.ReplyError)
        assert isinstance(kind("gone"), CONNECTION_ERRORS)


def test_status_text_names_the_public_class() -> None:
    assert describe(ConnectionLost("gone")) == "BrokerError: gone"
    assert describe(MasterMoved("moved")) == "MasterMoved: moved"


@asynccontextmanager
async def server(answer: bytes) -> AsyncIterator[RedisAddress]:
    """A TCP server that answers a connection's handshake (AUTH, CLIENT SETNAME) with
    ``answer``."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(answer)
            await anyio.sleep(1)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield RedisAddress(url=f"redis://127.0.0.1:{port}", host="127.0.0.1", port=port)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"-WRONGPASS wrong password\r\n+OK\r\n", id="refused-handshake"),
        pytest.param(b"?not resp\r\n", id="not-resp"),
        pytest.param(b":1\r\n+OK\r\n", id="wrong-shape"),
    ],
)
async def test_a_lost_connection_is_a_connection_error(answer: bytes) -> None:
    async with server(answer) as address:
        with anyio.fail_after(5), pytest.raises(tidings.BrokerError) as raised:
            await open_connection(
                RedisAddress(
                    url=address.url, host=address.host, port=address.port, password="secret"
                ),
                "test",
                reply_timeout=2.0,
            )
    assert isinstance(raised.value, CONNECTION_ERRORS)
    assert not isinstance(raised.value, tidings.ReplyError)


async def test_a_closed_connection_is_a_connection_error() -> None:
    async with server(b"+OK\r\n") as address:
        with anyio.fail_after(5):
            connection = await open_connection(address, "test", reply_timeout=2.0)
            await connection.aclose()
            with pytest.raises(CONNECTION_ERRORS) as raised:
                await connection.send(b"PING\r\n")
    assert not isinstance(raised.value, tidings.ReplyError)
