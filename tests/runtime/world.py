"""A handler's runtime without its facade: a `Runtime` and its `Registry` on a
memory hub, for the unit tests of ``tidings._runtime``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.lowlevel import checkpoint

from tests.helpers import FAST, Recorder
from tidings._runtime.channel import ChannelState
from tidings._runtime.lifecycle import Runtime
from tidings._runtime.registry import Registry, Wanted
from tidings._util import collapse_exception_group
from tidings.brokers.base import Subscriber
from tidings.brokers.memory import Hub, MemoryBroker, _MemorySubscriber
from tidings.options import Options
from tidings.policies.names import Namespace
from tidings.policies.streams import Retention
from tidings.protocols import Json

NS = "ns"
LOGGER = logging.getLogger("tidings.test.runtime")


class World:
    """One runtime, one registry, one hub (namespace ``ns``, status channel ``server``)."""

    def __init__(
        self,
        broker: MemoryBroker | None = None,
        durable: dict[str, Retention] | None = None,
        **options: Any,
    ) -> None:
        self.broker = broker if broker is not None else MemoryBroker(Hub("runtime-test"))
        self.hub = self.broker.hub
        options.setdefault("backoff", FAST)
        options.setdefault("publish_timeout", 2.0)
        self.runtime = Runtime(self.broker, Options.from_kwargs(options), LOGGER, kind="Channels")
        self.durable = durable if durable is not None else {}
        self.registry = Registry(self.runtime, Namespace(NS), "server", Json(), self.durable)
        self.runtime.hooks = self.registry.hooks()

    @staticmethod
    def wanted(name: str, event: str, callback: Callable[..., Any], **fields: Any) -> Wanted:
        return Wanted(f"{NS}:{name}", name, event, callback, **fields)

    async def register(
        self, name: str, event: str, callback: Callable[..., Any], **fields: Any
    ) -> Any:
        [channel] = await self.registry.register(
            [self.wanted(name, event, callback, **fields)], "register"
        )
        return channel

    def state(self, name: str) -> ChannelState | None:
        return self.registry.channels.get(f"{NS}:{name}")

    async def publish(self, name: str, event: str, data: Any = None) -> int:
        broker_name = f"{NS}:{name}"
        payload = Json().encode({"channel": name, "event": event, "data": data})
        retention = self.durable.get(broker_name)
        return await self.runtime.connection.publish(broker_name, payload, retention)

    def store(self, name: str, event: str, data: Any = None) -> str:
        """Append to a durable channel's log with no live copy; return the entry id."""
        payload = Json().encode({"channel": name, "event": event, "data": data})
        entry, _ = self.hub.append(f"{NS}:{name}", payload, Retention(), live=False)
        return entry

    @asynccontextmanager
    async def running(self) -> AsyncIterator[World]:
        """Run the runtime around the block (a failure in it is raised bare)."""
        with collapse_exception_group():
            async with anyio.create_task_group() as tg:
                await tg.start(self.runtime.run, "test")
                try:
                    yield self
                finally:
                    await self.runtime.close()

    async def settle(self) -> None:
        with anyio.fail_after(5):
            await self.runtime.settle()


class Log(Recorder):
    """A callback recording ``(channel name, event, data)`` (sync)."""

    def last(self, event: str) -> Any:
        return next(data for _, name, data in reversed(self.calls) if name == event)


async def eventually(condition: Callable[[], object], limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        while not condition():
            await anyio.sleep(0.001)


class GatedBroker(MemoryBroker):
    """A memory broker whose SUBSCRIBE waits while ``gate`` is set to an unset
    event: a subscription the broker has not confirmed yet."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.gate: anyio.Event | None = None
        #: SUBSCRIBE commands waiting at the gate now.
        self.waiting = 0

    async def open_subscriber(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Subscriber:
        await checkpoint()
        return _GatedSubscriber(self.hub, self)


class _GatedSubscriber(_MemorySubscriber):
    def __init__(self, hub: Hub, broker: GatedBroker) -> None:
        self._broker = broker
        super().__init__(hub)

    async def subscribe(self, channels: Sequence[str]) -> None:
        gate = self._broker.gate
        if gate is not None:
            self._broker.waiting += 1
            try:
                await gate.wait()
            finally:
                self._broker.waiting -= 1
        await super().subscribe(channels)


class Gated:
    """An async callback that waits until ``release`` is set, then records the data."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.done: list[Any] = []

    async def __call__(self, channel: Any, event: str, data: Any) -> None:
        await self.release.wait()
        self.done.append(data)
