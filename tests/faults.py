"""A TCP proxy that injects faults between tidings and a real redis-server.

Killing the server covers crashes; this covers what the network does:

- ``cut()``: every open connection is closed at once (both ends);
- ``stall()`` / ``flow()``: bytes stop moving but the connections stay open, as with
  half-open TCP or a cable pulled out: only a health check can notice;
- ``blackhole = True``: new connections are accepted and never answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import anyio.abc

Mode = Literal["flow", "stall"]


class LocalServer:
    """A TCP server on a free loopback port, for ``tg.start(server.run)``."""

    port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started()
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        raise NotImplementedError


class FaultyProxy(LocalServer):
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blackhole = False
        self.accepted = 0
        self._flowing = anyio.Event()
        self._flowing.set()
        self._scopes: set[anyio.CancelScope] = set()

    def cut(self) -> int:
        """Close every connection now; return how many there were."""
        scopes = tuple(self._scopes)
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    def stall(self) -> None:
        self._flowing = anyio.Event()

    def flow(self) -> None:
        self._flowing.set()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client:
                    if self.blackhole:
                        await anyio.sleep_forever()
                    upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
                    async with upstream, anyio.create_task_group() as tg:
                        tg.start_soon(self._pipe, client, upstream, tg.cancel_scope)
                        tg.start_soon(self._pipe, upstream, client, tg.cancel_scope)
            finally:
                self._scopes.discard(scope)

    async def _pipe(
        self,
        source: anyio.abc.SocketStream,
        sink: anyio.abc.SocketStream,
        scope: anyio.CancelScope,
    ) -> None:
        try:
            while True:
                data = await source.receive()
                await self._flowing.wait()
                await sink.send(data)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            scope.cancel()


@asynccontextmanager
async def running_proxy(target_port: int) -> AsyncIterator[FaultyProxy]:
    """A proxy in front of ``target_port``, serving until the block ends."""
    proxy = FaultyProxy(target_port)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.run)
        yield proxy
        tg.cancel_scope.cancel()
