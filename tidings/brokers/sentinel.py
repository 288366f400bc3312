"""Redis under Sentinel: the master is asked of the sentinels, checked, and followed.

Every connection (a subscriber, a publisher) starts by asking the sentinels, in
turn, where the master of the service is (``SENTINEL GET-MASTER-ADDR-BY-NAME``), then
connects there and asks the server itself (``ROLE``): a sentinel may answer from
before a failover, and a demoted master must never be used (it would take publishes
that reach nobody, or refuse them as a replica). So any lost connection re-resolves.

A failover is followed at once: the subscriber also listens on one sentinel for
``+switch-master``, and a switch of its service ends the session (as a lost
connection would), so the handler reconnects to the new master without waiting for
the old one's connection to time out. A sentinel that dies is replaced by another;
with none left, the session carries on and loses only that early warning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import hiredis

from .._util import cleanup_scope
from ..errors import ReplyError
from .base import (
    COMMAND_ERRORS,
    CONNECTION_ERRORS,
    Broker,
    ConnectionLost,
    Deliver,
    Message,
    Publisher,
    Subscriber,
)
from .connection import Connection, Linked, open_connection, reply_error, violation
from .redis import RedisPublisher, RedisSubscriber
from .resp import encode_command
from .slots import Node
from .urls import RedisAddress, SentinelAddress

__all__ = ["SentinelBroker"]

_logger = logging.getLogger("tidings")

#: The sentinels' channel announcing a new master.
SWITCH_MASTER = "+switch-master"
#: Seconds between attempts to watch a sentinel when none can be reached.
WATCH_RETRY = 1.0
#: The least and the most time one sentinel is given to answer a lookup.
MIN_SENTINEL_TIMEOUT = 0.25
MAX_SENTINEL_TIMEOUT = 2.0


class SentinelBroker(Broker):
    """Connections to the master of a service that sentinels watch."""

    def __init__(self, address: SentinelAddress) -> None:
        self.address = address
        self.url = address.url
        self._turn = 0  # rotates the first sentinel asked: a dead one is not always first
        # The master the subscriber of a session found, for its publisher: one lookup
        # per session, and both connections on the same server.
        self._found: Node | None = None

    def sentinel_address(self, node: Node) -> RedisAddress:
        scheme = "rediss" if self.address.sentinel.tls is not None else "redis"
        return dataclasses.replace(
            self.address.sentinel, host=node.host, port=node.port, url=f"{scheme}://{node}"
        )

    def master_address(self, node: Node) -> RedisAddress:
        template = self.address.template
        scheme = "rediss" if template.tls is not None else "redis"
        shown = template.url.partition("://")[2].rpartition("@")[0]
        userinfo = f"{shown}@" if shown else ""
        return dataclasses.replace(
            template,
            host=node.host,
            port=node.port,
            url=f"{scheme}://{userinfo}{node}/{template.db}",
        )

    def _rotation(self) -> list[Node]:
        nodes = list(self.address.sentinels)
        self._turn = (self._turn + 1) % len(nodes)
        return nodes[self._turn :] + nodes[: self._turn]

    async def _ask(self, node: Node, reply_timeout: float, *command: str) -> Any:
        """One command to a sentinel, on a short-lived connection."""
        connection = await open_connection(self.sentinel_address(node), "sentinel", reply_timeout)
        try:
            return await _command(connection, str(node), *command)
        finally:
            await connection.aclose()

    async def master(self, reply_timeout: float) -> Node:
        """Where the sentinels say the master is (the first that knows, in turn).

        Raises:
            ConnectionLost: no sentinel could say, naming each and why.
        """
        service = self.address.service
        failures = []
        # A sentinel that does not answer must not use up the whole connect
        # timeout: the others get their turn within it.
        each = min(reply_timeout / len(self.address.sentinels), MAX_SENTINEL_TIMEOUT)
        each = max(MIN_SENTINEL_TIMEOUT, each)
        for node in self._rotation():
            try:
                with anyio.fail_after(each):
                    reply = await self._ask(
                        node, each, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", service
                    )
            except ReplyError as exc:
                failures.append(f"{node} refused: {exc}")
                continue
            except TimeoutError:
                failures.append(f"{node} did not answer within {each:g}s")
                continue
            except CONNECTION_ERRORS as exc:
                failures.append(f"{node}: {type(exc).__name__}: {exc}")
                continue
            if reply is None:
                failures.append(f"{node} does not know the service {service!r}")
                continue
            if not (
                type(reply) is list
                and len(reply) == 2
                and all(type(part) is bytes for part in reply)
                and reply[1].isdigit()
            ):
                raise violation(str(node), "SENTINEL GET-MASTER-ADDR-BY-NAME answered", reply)
            return Node(reply[0].decode("utf-8", "replace"), int(reply[1]))
        raise ConnectionLost(
            f"{self.url}: no sentinel could name the master of {service!r}: " + "; ".join(failures)
        )

    async def is_master(self, node: Node, reply_timeout: float) -> bool:
        """Whether ``node`` says it is a master (False if it cannot be asked)."""
        try:
            with anyio.fail_after(reply_timeout):
                connection = await open_connection(
                    self.master_address(node), "query", reply_timeout
                )
                try:
                    reply = await _command(connection, str(node), "ROLE")
                finally:
                    await connection.aclose()
        except COMMAND_ERRORS:  # ROLE refused, or the node is down
            return False
        return type(reply) is list and bool(reply) and reply[0] == b"master"

    async def connect_master(
        self, role: str, reply_timeout: float, node: Node | None = None
    ) -> tuple[Connection, Node]:
        """A connection to the master (``node``, or the one the sentinels name),
        checked with ``ROLE``.

        Raises:
            ConnectionLost: no sentinel named a master that says it is one (a
                failover under way: the caller tries again later).
        """
        if node is None:
            node = await self.master(reply_timeout)
        address = self.master_address(node)
        connection = await open_connection(address, role, reply_timeout)
        try:
            reply = await _command(connection, address.url, "ROLE")
        except ReplyError as exc:
            if exc.code != "NOPERM":
                await connection.aclose()
                raise
            # An ACL user without ROLE: the sentinels' word must do.
            _logger.debug("%s: ROLE refused (%s); trusting the sentinels", address.url, exc)
            return connection, node
        except BaseException:
            await connection.aclose()
            raise
        if type(reply) is list and reply and reply[0] == b"master":
            return connection, node
        await connection.aclose()
        said = reply[0].decode("utf-8", "replace") if type(reply) is list and reply else reply
        raise ConnectionLost(
            f"{address.url} is not the master of {self.address.service!r} (it says "
            f"{said!r}): a failover is under way, the sentinels have not caught up"
        )

    async def open_subscriber(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Subscriber:
        self._found = None
        connection, node = await self.connect_master("sub", reply_timeout)
        self._found = node
        return SentinelSubscriber(
            self,
            RedisSubscriber(connection, health_check_interval),
            node,
            health_check_interval,
            reply_timeout,
        )

    async def open_publisher(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Publisher:
        found, self._found = self._found, None  # the session's subscriber found it
        connection, node = await self.connect_master("pub", reply_timeout, found)
        self.server = str(node)
        return RedisPublisher(connection, health_check_interval)


class MasterMoved(ConnectionLost):
    """The sentinels announced a new master: this connection is on the old one."""


class SentinelSubscriber(Subscriber):
    """The master's subscriber connection, and a watch on a sentinel for failovers."""

    def __init__(
        self,
        broker: SentinelBroker,
        master: RedisSubscriber,
        node: Node,
        health_check_interval: float,
        reply_timeout: float,
    ) -> None:
        self._broker = broker
        self._master = master
        self._node = node
        self._health_check_interval = health_check_interval
        self._reply_timeout = reply_timeout
        self._watch: RedisSubscriber | None = None
        broker.server = str(node)

    async def run(self, deliver: Deliver) -> None:
        async def read() -> None:
            await self._master.run(deliver)

        await Linked().run(read, self._watch_sentinels)

    async def _watch_sentinels(self) -> None:
        """Listen for ``+switch-master`` on one sentinel, then another if it dies."""
        while True:
            for node in self._broker._rotation():
                try:
                    await self._watch_one(node)
                except MasterMoved:
                    raise
                except COMMAND_ERRORS as exc:
                    _logger.debug("sentinel %s: not watched: %s", node, exc)
                finally:
                    if self._watch is not None:
                        watch, self._watch = self._watch, None
                        with cleanup_scope():
                            await watch.aclose()
            await anyio.sleep(WATCH_RETRY)

    async def _watch_one(self, node: Node) -> None:
        address = self._broker.sentinel_address(node)
        with anyio.fail_after(self._reply_timeout):  # a blackholed sentinel: the next
            connection = await open_connection(address, "watch", self._reply_timeout)
        self._watch = watch = RedisSubscriber(connection, self._health_check_interval)
        service = self._broker.address.service
        current = self._node

        async def switched(batch: list[Message]) -> None:
            for _, payload in batch:
                # "<service> <old ip> <old port> <new ip> <new port>"
                fields = payload.decode("utf-8", "replace").split()
                if len(fields) == 5 and fields[0] == service:
                    new = Node(fields[3], int(fields[4])) if fields[4].isdigit() else None
                    if new != current:
                        raise MasterMoved(
                            f"{self._broker.url}: the sentinels moved the master of "
                            f"{service!r} from {current} to {new}"
                        )

        async def listen() -> None:
            await watch.run(switched)

        async def subscribe() -> None:
            await watch.subscribe([SWITCH_MASTER])
            # Subscribed: a switch that happened before this watch began is caught
            # by asking again (the master may have moved while we connected). A
            # sentinel that lags behind names a master that is one no longer: not
            # a move, or the session would flap until it catches up.
            named = await self._broker.master(self._reply_timeout)
            if named != current and await self._broker.is_master(named, self._reply_timeout):
                raise MasterMoved(f"{self._broker.url}: the master of {service!r} moved to {named}")

        await Linked().run(listen, subscribe)

    async def subscribe(self, channels: Sequence[str]) -> None:
        await self._master.subscribe(channels)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        await self._master.unsubscribe(channels)

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        await self._master.psubscribe(patterns)

    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        await self._master.punsubscribe(patterns)

    async def barrier(self, on_answer: Callable[[], None]) -> None:
        await self._master.barrier(on_answer)

    async def aclose(self) -> None:
        await self._master.aclose()


async def _command(connection: Connection, where: str, *command: str) -> Any:
    """Send one command on a fresh connection and read its reply."""
    await connection.send(encode_command(*command))
    replies: list[Any] = []
    while not replies:
        replies = await connection.read()
    if len(replies) > 1:
        raise violation(where, "more replies than commands", replies[1])
    if isinstance(replies[0], hiredis.ReplyError):
        raise reply_error(where, replies[0])
    return replies[0]
