"""Redis Cluster: classic and sharded pub/sub.

**Classic** (the default). A PUBLISH on any node reaches subscribers on every node,
so one subscriber connection to any reachable node carries everything, and a publish
goes to any node too. When that node fails, the connection supervisor reconnects and
this broker picks the next node it knows.

**Sharded** (``?sharded=1``, Redis 7). SSUBSCRIBE and SPUBLISH go to the master that
owns the channel's hash slot: one subscriber connection per node in use, one command
connection per node published to. A ``MOVED`` reply to SPUBLISH refreshes the slot map
and retries once (a MOVED command was not executed, so the retry cannot duplicate).
When a slot moves or a master fails, Redis tells sharded subscribers with an
``sunsubscribe`` push (or the connection dies): the session ends, and the supervisor
resubscribes every channel where the refreshed slot map says it now lives.

``count`` and ``channels`` ask every node and add up (classic: NUMSUB, CHANNELS on all
nodes; sharded: SHARDNUMSUB, SHARDCHANNELS on the masters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import anyio
import hiredis

from .._util import cleanup_scope
from ..errors import BrokerError, ReplyError
from ..policies.streams import LogMark, Retention
from .base import (
    COMMAND_ERRORS,
    CONNECTION_ERRORS,
    Broker,
    Claimed,
    ConnectionLost,
    DeadEntry,
    Dedupe,
    Deliver,
    Entry,
    GroupInfo,
    Outgoing,
    Publisher,
    Sent,
    StreamInfo,
    Subscriber,
    dead_key,
    legacy_position_key,
    position_key,
)
from .connection import (
    Linked,
    is_int,
    is_names,
    is_numsub,
    open_connection,
    reply_error,
    violation,
)
from .redis import RedisPublisher, RedisSubscriber
from .resp import encode_command, encode_name
from .slots import Node, Topology, key_slot
from .urls import ClusterAddress, RedisAddress

T = TypeVar("T")

__all__ = ["ClusterBroker"]


class ClusterBroker(Broker):
    """Connections to a Redis Cluster, found from its seed nodes."""

    def __init__(self, address: ClusterAddress) -> None:
        self.address = address
        self.url = address.url
        self.supports_patterns = not address.sharded
        self._known: tuple[Node, ...] = address.seeds
        self._turn = 0  # rotates the first node tried, so a dead one is not retried first
        self.topology: Topology | None = None

    def node_address(self, node: Node) -> RedisAddress:
        scheme = "rediss" if self.address.template.tls is not None else "redis"
        return dataclasses.replace(
            self.address.template, host=node.host, port=node.port, url=f"{scheme}://{node}"
        )

    async def ask(self, node: Node, *command: bytes | str | int, reply_timeout: float) -> Any:
        """One command on a short-lived connection to ``node``.

        Raises:
            ReplyError: the node refused the command.
            one of CONNECTION_ERRORS: the node could not be reached.
        """
        connection = await open_connection(self.node_address(node), "query", reply_timeout)
        try:
            await connection.send(encode_command(*command))
            replies: list[Any] = []
            while not replies:
                replies = await connection.read()
        finally:
            await connection.aclose()
        if isinstance(replies[0], hiredis.ReplyError):
            raise reply_error(str(node), replies[0])
        return replies[0]

    def _rotation(self) -> list[Node]:
        nodes = list(dict.fromkeys((*self._known, *self.address.seeds)))
        self._turn = (self._turn + 1) % len(nodes)
        return nodes[self._turn :] + nodes[: self._turn]

    async def refresh(self, reply_timeout: float) -> Topology:
        """Ask the nodes, in turn, for the slot map (CLUSTER SLOTS)."""
        error: BaseException = ConnectionLost(f"{self.url}: no node to ask")
        for node in self._rotation():
            try:
                reply = await self.ask(node, "CLUSTER", "SLOTS", reply_timeout=reply_timeout)
            except COMMAND_ERRORS as exc:  # refused or down: the next
                error = exc
                continue
            topology = Topology.from_cluster_slots(reply, default_host=node.host)
            if not topology.masters:
                error = ConnectionLost(f"{node} knows no slots yet (is the cluster created?)")
                continue
            self.topology = topology
            self._known = topology.nodes
            return topology
        raise error

    async def _first_reachable(self, role: str, reply_timeout: float) -> Any:
        error: BaseException = ConnectionLost(f"{self.url}: no node to connect to")
        for node in self._rotation():
            try:
                return await open_connection(self.node_address(node), role, reply_timeout)
            except CONNECTION_ERRORS as exc:
                error = exc
        raise error

    async def open_subscriber(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Subscriber:
        if self.address.sharded:
            topology = await self.refresh(reply_timeout)
            return ShardedSubscriber(self, topology, health_check_interval, reply_timeout)
        with suppress(*COMMAND_ERRORS):  # a seed may still take the connection
            await self.refresh(reply_timeout)  # learn every node, to fail over to
        connection = await self._first_reachable("sub", reply_timeout)
        return RedisSubscriber(connection, health_check_interval)

    async def open_publisher(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Publisher:
        primary = None
        if not self.address.sharded:
            connection = await self._first_reachable("pub", reply_timeout)
            primary = RedisPublisher(connection, health_check_interval)
        return ClusterPublisher(self, primary, health_check_interval, reply_timeout)


async def _join(linked: Linked, address: RedisAddress, role: str, reply_timeout: float) -> Any:
    """Connect to a node for linked tasks that can still take it (no pointless connection)."""
    linked.check()
    return await open_connection(address, role, reply_timeout)


async def _enlist(
    linked: Linked, loop: Callable[[], Awaitable[None]], connection: Subscriber | Publisher
) -> None:
    """Run ``loop`` in ``linked``; if those tasks ended meanwhile, close the connection."""
    try:
        linked.start(loop)
    except BaseException:
        with cleanup_scope():
            await connection.aclose()
        raise


class ShardedSubscriber(Subscriber):
    """One sharded subscriber connection per node in use, their readers linked."""

    def __init__(
        self,
        broker: ClusterBroker,
        topology: Topology,
        health_check_interval: float,
        reply_timeout: float,
    ) -> None:
        self._broker = broker
        self._topology = topology
        self._health_check_interval = health_check_interval
        self._reply_timeout = reply_timeout
        self._nodes: dict[Node, RedisSubscriber] = {}
        self._linked = Linked()
        self._deliver: Deliver | None = None
        self._running = anyio.Event()

    async def run(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._running.set()
        await self._linked.run(anyio.sleep_forever)

    async def _node(self, node: Node) -> RedisSubscriber:
        subscriber = self._nodes.get(node)
        if subscriber is None:
            await self._running.wait()  # readers need the deliver function
            deliver = self._deliver
            assert deliver is not None
            connection = await _join(
                self._linked, self._broker.node_address(node), "sub", self._reply_timeout
            )
            subscriber = RedisSubscriber(connection, self._health_check_interval, sharded=True)
            await _enlist(self._linked, lambda: subscriber.run(deliver), subscriber)
            self._nodes[node] = subscriber
        return subscriber

    def _by_owner(self, channels: Sequence[str]) -> dict[Node, list[str]]:
        owners: dict[Node, list[str]] = {}
        for channel in channels:
            owner = self._topology.owner(key_slot(encode_name(channel)))
            if owner is None:
                raise ConnectionLost(f"{self._broker.url}: no node serves the slot of {channel!r}")
            owners.setdefault(owner, []).append(channel)
        return owners

    async def subscribe(self, channels: Sequence[str]) -> None:
        for node, names in self._by_owner(channels).items():
            await (await self._node(node)).subscribe(names)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        for node, names in self._by_owner(channels).items():
            await (await self._node(node)).unsubscribe(names)

    async def barrier(self, on_answer: Callable[[], None]) -> None:
        # One connection per node: the mark is taken once the last node answered
        # (a message from another node may have come in meanwhile: it is delivered).
        subscribers = tuple(self._nodes.values())
        for subscriber in subscribers[:-1]:
            await subscriber.barrier(lambda: None)
        if subscribers:
            await subscribers[-1].barrier(on_answer)
        else:
            on_answer()

    async def psubscribe(self, patterns: Sequence[str]) -> None:
        raise BrokerError("sharded pub/sub has no pattern subscriptions")

    punsubscribe = psubscribe

    async def aclose(self) -> None:
        for subscriber in self._nodes.values():
            await subscriber.aclose()


class ClusterPublisher(Publisher):
    """PUBLISH through one node (classic), SPUBLISH to each slot's owner (sharded).

    Long-lived connections (the classic one, and one per master published to in
    sharded mode) run in one linked: losing any ends the session, which reconnects
    everything. Queries ask every node on short-lived connections, so a node that
    is down makes a query fail, not the session.
    """

    def __init__(
        self,
        broker: ClusterBroker,
        primary: RedisPublisher | None,
        health_check_interval: float,
        reply_timeout: float,
    ) -> None:
        self._broker = broker
        self._primary = primary
        self._health_check_interval = health_check_interval
        self._reply_timeout = reply_timeout
        self._nodes: dict[Node, RedisPublisher] = {}
        self._connecting: dict[Node, anyio.Event] = {}
        self._linked = Linked()
        if primary is not None:
            self._linked.start(primary.run)

    async def run(self) -> None:
        await self._linked.run(anyio.sleep_forever)

    async def _node(self, node: Node) -> RedisPublisher:
        """The connection to ``node``, made once however many callers need it at
        the same time (two made at once would leave one open and unused)."""
        while (publisher := self._nodes.get(node)) is None:
            connecting = self._connecting.get(node)
            if connecting is not None:
                await connecting.wait()  # then use it, or try in turn if it failed
                continue
            connecting = self._connecting[node] = anyio.Event()
            try:
                connection = await _join(
                    self._linked, self._broker.node_address(node), "pub", self._reply_timeout
                )
                publisher = RedisPublisher(connection, self._health_check_interval)
                if self._broker.address.sharded:
                    publisher.publish_verb = "SPUBLISH"
                await _enlist(self._linked, publisher.run, publisher)
                self._nodes[node] = publisher
            finally:
                del self._connecting[node]
                connecting.set()
        return publisher

    async def publish(self, channel: str, payload: bytes) -> int:
        if self._primary is not None:
            return await self._primary.publish(channel, payload)

        async def spublish(publisher: RedisPublisher) -> int:
            received: int = await publisher.execute("SPUBLISH", channel, payload, check=is_int)
            return received

        return await self._on_owner(channel, spublish)

    # A durable channel's stream lives on the node that owns its slot (its key is
    # the channel's name, so the live message hashes to the same slot), in both
    # modes; classic mode's PUBLISH from there reaches every node.

    async def append(
        self, channel: str, payload: bytes, retention: Retention, dedupe: Dedupe | None = None
    ) -> tuple[str | None, int]:
        return await self._on_owner(
            channel, lambda p: p.append(channel, payload, retention, dedupe)
        )

    async def send_many(self, items: Sequence[Outgoing]) -> list[Sent | ReplyError]:
        """Each node's items in one write to it, every node at once; an item that
        met a moved slot is sent again alone, to its new owner."""
        outcomes: list[Sent | ReplyError | None] = [None] * len(items)
        by_node: dict[Node | None, list[int]] = {}
        topology = None  # asked only if an item needs its slot's owner (as publish does)
        for index, (channel, _, retention, _) in enumerate(items):
            owner: Node | None = None  # classic mode's plain publishes: the one connection
            if self._primary is None or retention is not None:
                if topology is None:
                    topology = self._broker.topology or await self._broker.refresh(
                        self._reply_timeout
                    )
                owner = topology.owner(key_slot(encode_name(channel)))
                if owner is None:
                    raise ConnectionLost(
                        f"{self._broker.url}: no node serves the slot of {channel!r}"
                    )
            by_node.setdefault(owner, []).append(index)
        failures: list[Exception] = []

        async def send(node: Node | None, indexes: list[int]) -> None:
            try:
                publisher = self._primary if node is None else await self._node(node)
                assert publisher is not None
                replies = await publisher.send_many([items[i] for i in indexes])
            except Exception as exc:  # one exception for the caller, not a group
                failures.append(exc)
                return
            for index, reply in zip(indexes, replies, strict=True):
                outcomes[index] = reply

        async with anyio.create_task_group() as group:
            for node, indexes in by_node.items():
                group.start_soon(send, node, indexes)
        if failures:
            raise failures[0]
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, ReplyError) and outcome.code == "MOVED":
                outcomes[index] = (await super().send_many([items[index]]))[0]
        assert None not in outcomes  # every node answered for each of its items
        return outcomes  # type: ignore[return-value]

    async def read(self, channel: str, start: str, count: int) -> list[Entry]:
        return await self._on_owner(channel, lambda p: p.read(channel, start, count))

    async def tail(self, channel: str) -> str | None:
        return await self._on_owner(channel, lambda p: p.tail(channel))

    async def load_position(self, channel: str, consumer: str) -> str | None:
        # The two keys (see RedisPublisher.load_position) may live on two nodes.
        for key in (position_key(channel, consumer), legacy_position_key(channel, consumer)):

            async def get(publisher: RedisPublisher, key: str = key) -> str | None:
                return await publisher.get_id(key)

            found = await self._on_owner(key, get)
            if found is not None:
                return found
        return None

    async def save_position(self, channel: str, consumer: str, entry_id: str) -> None:
        key = position_key(channel, consumer)
        await self._on_owner(key, lambda p: p.save_position(channel, consumer, entry_id))

    # A consumer group lives with its stream; the dead-letter stream is a key of
    # its own, on its own slot's owner (the same node when the name has a hash tag).

    async def group_create(self, channel: str, group: str, start: str) -> bool:
        return await self._on_owner(channel, lambda p: p.group_create(channel, group, start))

    async def group_read(self, channel: str, group: str, consumer: str, count: int) -> list[Entry]:
        return await self._on_owner(
            channel, lambda p: p.group_read(channel, group, consumer, count)
        )

    async def group_claim(
        self, channel: str, group: str, consumer: str, min_idle: float, start: str, count: int
    ) -> Claimed:
        return await self._on_owner(
            channel, lambda p: p.group_claim(channel, group, consumer, min_idle, start, count)
        )

    async def group_ack(self, channel: str, group: str, ids: Sequence[str]) -> int:
        return await self._on_owner(channel, lambda p: p.group_ack(channel, group, ids))

    async def group_release(
        self, channel: str, group: str, consumer: str, jobs: Sequence[tuple[str, int]], idle: float
    ) -> None:
        await self._on_owner(
            channel, lambda p: p.group_release(channel, group, consumer, jobs, idle)
        )

    async def group_leave(self, channel: str, group: str, consumer: str) -> bool:
        return await self._on_owner(channel, lambda p: p.group_leave(channel, group, consumer))

    async def group_prune(self, channel: str, group: str, idle: float, keep: str) -> int:
        return await self._on_owner(channel, lambda p: p.group_prune(channel, group, idle, keep))

    async def group_retry(
        self,
        channel: str,
        group: str,
        consumer: str,
        entry_id: str,
        payload: bytes,
        delay: float,
    ) -> bool:
        return await self._on_owner(
            channel, lambda p: p.group_retry(channel, group, consumer, entry_id, payload, delay)
        )

    async def group_due(
        self, channel: str, group: str, count: int, retention: Retention
    ) -> tuple[int, float | None]:
        return await self._on_owner(
            channel, lambda p: p.group_due(channel, group, count, retention)
        )

    async def add_dead(
        self, channel: str, fields: Sequence[tuple[str, bytes]], retention: Retention
    ) -> str:
        return await self._on_owner(
            dead_key(channel), lambda p: p.add_dead(channel, fields, retention)
        )

    async def read_dead(self, channel: str, count: int, start: str = "+") -> list[DeadEntry]:
        return await self._on_owner(dead_key(channel), lambda p: p.read_dead(channel, count, start))

    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        return await self._on_owner(dead_key(channel), lambda p: p.delete_dead(channel, ids))

    async def stream_info(self, key: str) -> StreamInfo | None:
        return await self._on_owner(key, lambda p: p.stream_info(key))

    async def marks(self, channels: Sequence[str]) -> list[LogMark | None]:
        return [(await self._on_owner(channel, _marks_of(channel)))[0] for channel in channels]

    async def group_info(self, channel: str) -> list[GroupInfo]:
        return await self._on_owner(channel, lambda p: p.group_info(channel))

    async def scan_streams(self, match: str) -> list[str]:
        # Every master holds the keys of its own slots (a replica's are copies).
        topology = await self._broker.refresh(self._reply_timeout)
        found: set[str] = set()
        for master in topology.masters:
            found.update(await (await self._node(master)).scan_streams(match))
        return sorted(found)

    async def _on_owner(self, channel: str, command: Callable[[RedisPublisher], Awaitable[T]]) -> T:
        """Run ``command`` on the connection to the owner of the slot of ``channel``
        (a key), once more after a MOVED (the slot migrated: ask the cluster again)."""
        slot = key_slot(encode_name(channel))
        for attempt in (1, 2):
            topology = self._broker.topology or await self._broker.refresh(self._reply_timeout)
            owner = topology.owner(slot)
            if owner is None:
                raise ConnectionLost(f"{self._broker.url}: no node serves the slot of {channel!r}")
            try:
                return await command(await self._node(owner))
            except ReplyError as exc:
                if attempt == 2 or exc.code != "MOVED":
                    raise
                await self._broker.refresh(self._reply_timeout)  # then try the new owner
        raise AssertionError("unreachable")  # pragma: no cover

    async def _every(
        self, nodes: Sequence[Node], check: Callable[[Any], bool], *command: str
    ) -> list[Any]:
        replies = []
        for node in nodes:
            try:
                reply = await self._broker.ask(node, *command, reply_timeout=self._reply_timeout)
            except CONNECTION_ERRORS as exc:
                raise ConnectionLost(
                    f"cannot reach cluster node {node} for {command[1]}: {exc}"
                ) from exc
            if not check(reply):
                raise violation(str(node), f"{' '.join(command[:2])} answered", reply)
            replies.append(reply)
        return replies

    async def _nodes_to_ask(self) -> tuple[Node, ...]:
        topology = await self._broker.refresh(self._reply_timeout)
        return topology.masters if self._broker.address.sharded else topology.nodes

    async def numsub(self, channels: Sequence[str]) -> dict[str, int]:
        verb = "SHARDNUMSUB" if self._broker.address.sharded else "NUMSUB"
        counts = dict.fromkeys(channels, 0)
        for reply in await self._every(
            await self._nodes_to_ask(), is_numsub, "PUBSUB", verb, *channels
        ):
            for i in range(0, len(reply), 2):
                counts[reply[i].decode("utf-8", "surrogateescape")] += int(reply[i + 1])
        return counts

    async def numpat(self) -> int:
        topology = await self._broker.refresh(self._reply_timeout)
        return sum(await self._every(topology.nodes, is_int, "PUBSUB", "NUMPAT"))

    async def channels(self, pattern: str | None = None) -> list[str]:
        verb = "SHARDCHANNELS" if self._broker.address.sharded else "CHANNELS"
        command = ("PUBSUB", verb) if pattern is None else ("PUBSUB", verb, pattern)
        found: dict[str, None] = {}
        for reply in await self._every(await self._nodes_to_ask(), is_names, *command):
            found.update(dict.fromkeys(n.decode("utf-8", "surrogateescape") for n in reply))
        return list(found)

    async def aclose(self) -> None:
        for publisher in (*self._nodes.values(), *([self._primary] if self._primary else [])):
            await publisher.aclose()


def _marks_of(channel: str) -> Callable[[RedisPublisher], Awaitable[list[LogMark | None]]]:
    return lambda publisher: publisher.marks([channel])
