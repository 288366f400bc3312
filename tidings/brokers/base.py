"""The transport seam: what a broker offers the connection supervisor.

A broker moves bytes between named channels. It knows nothing of events, namespaces
or callbacks. Each `Broker` opens two kinds of connection:

- a `Subscriber`, which carries every channel and pattern subscription and
  hands received messages, in batches, to a ``deliver`` coroutine;
- a `Publisher`, which carries PUBLISH and the PUBSUB queries.

Error contract. A connection that fails raises one of `CONNECTION_ERRORS`: a
transport error (`OSError`, anyio's broken, closed or ended streams) or
`ConnectionLost`, the `BrokerError` broker code raises when a connection failed
or must be made again (a reply of the wrong shape included: the stream cannot be
trusted after it). The supervisor turns that into a status event and a reconnect.
A command the server refuses raises `ReplyError` and fails that command alone; it
is a `BrokerError` too, but *not* one of `CONNECTION_ERRORS`: a caller that
means to handle both the same way says so, with ``except COMMAND_ERRORS``.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import anyio

from ..errors import BrokerError, ReplyError
from ..policies.streams import LogMark, Retention

__all__ = [
    "COMMAND_ERRORS",
    "CONNECTION_ERRORS",
    "TRANSIENT_REPLIES",
    "Broker",
    "Claimed",
    "ConnectionLost",
    "ConsumerInfo",
    "DeadEntry",
    "Dedupe",
    "Deliver",
    "Entry",
    "GroupInfo",
    "Job",
    "Message",
    "Outgoing",
    "Publisher",
    "ReadAhead",
    "Sent",
    "StreamInfo",
    "Subscriber",
    "dead_key",
    "dedupe_key",
    "legacy_position_key",
    "position_key",
    "retry_key",
    "side_key",
]

#: ``(channel, payload)`` as received on a subscriber connection.
Message = tuple[str, bytes]

#: ``(id, payload)``: one entry of a durable channel's log.
Entry = tuple[str, bytes]


#: ``(id, payload, deliveries)``: an entry a consumer group handed to a member, and
#: how many times it has been handed out so far (this time included).
Job = tuple[str, bytes, int]

#: ``(id, fields)``: one entry of a dead-letter stream (`dead_key()`); its fields
#: (``envelope``, ``id``, ``group``, ``consumer``, ``deliveries``, ``error``) by name.
DeadEntry = tuple[str, dict[str, bytes]]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a stream (a durable channel's log, a dead-letter stream) holds."""

    length: int
    #: The ids of its first and last entries (None: it is empty).
    first_id: str | None
    last_id: str | None


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of a consumer group."""

    name: str
    #: Entries handed to it and not acknowledged yet.
    pending: int
    #: Seconds since it last read or claimed (None: the broker does not say).
    idle: float | None


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group of a durable channel's log."""

    name: str
    consumers: tuple[ConsumerInfo, ...]
    #: Entries handed out and not acknowledged yet.
    pending: int
    #: Entries not handed out yet (None: the broker cannot tell, as after a trim).
    lag: int | None
    #: The id of the last entry handed out.
    last_delivered: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim of a consumer group's stalled entries found."""

    #: The entries claimed (pending longer than asked), with their delivery counts.
    jobs: list[Job]
    #: Pending ids whose entries are gone from the log (trimmed or deleted): no
    #: longer pending, and lost.
    lost: list[str]
    #: Where the next claim scans from; ``"0-0"`` once the scan went round.
    next: str


def dead_key(channel: str) -> str:
    """The dead-letter stream of a durable channel's consumer groups."""
    return f"{channel}:dead"


def side_key(channel: str, kind: str, name: str) -> str:
    """A key of tidings' own beside a durable channel's log (a checkpoint, an
    idempotency key): ``<channel>::<kind>::[{<channel>}::]<name>``.

    - It starts with the channel's name, so that the namespace's ACL key patterns
      (``~shop:*``) cover it.
    - It is never a channel's name: it has an empty segment (``::``), which no
      channel name may have.
    - On a cluster it lives in the channel's slot, so that one script may touch both:
      its first hash tag is the channel's own, or, for a channel without one (whose
      whole name is hashed), the channel's name in braces.
    """
    start = channel.find("{")
    if start != -1 and channel.find("}", start + 1) > start + 1:
        return f"{channel}::{kind}::{name}"
    return f"{channel}::{kind}::{{{channel}}}::{name}"


def position_key(channel: str, consumer: str) -> str:
    """The key holding a named consumer's checkpoint (see `side_key()`)."""
    return side_key(channel, "checkpoint", consumer)


def legacy_position_key(channel: str, consumer: str) -> str:
    """Where releases before 0.2 kept a checkpoint (it could collide with a channel
    named ``<channel>:checkpoint:<consumer>``): read when the new key is missing."""
    return f"{channel}:checkpoint:{consumer}"


def retry_key(channel: str, group: str) -> str:
    """The schedule of a consumer group's delayed retries (see `side_key()`)."""
    return side_key(channel, "retry", group)


def dedupe_key(channel: str, key: str) -> str:
    """The key remembering an idempotency key of a durable channel (see `side_key()`)."""
    return side_key(channel, "dedupe", key)


class Dedupe(NamedTuple):
    """An idempotent publish: its key, and for how long a repeat is dropped."""

    key: str
    #: Seconds the key is remembered (the window of the first publish applies).
    window: float


#: ``(channel, payload, retention, dedupe)``: one event of `Publisher.send_many()`;
#: ``retention`` is None for a plain publish, and set for a durable channel's append.
Outgoing = tuple[str, bytes, Retention | None, Dedupe | None]

#: ``(entry id, receivers)``: how one event went (`Publisher.append()`'s reply; the id
#: is None for a plain publish, and for an append whose key was a repeat).
Sent = tuple[str | None, int]


class ReadAhead:
    """The answers to a `Publisher.read_ahead()`, once they are in."""

    __slots__ = ("_acked", "_entries")

    def __init__(self, acked: int | ReplyError, entries: list[Entry] | ReplyError) -> None:
        self._acked, self._entries = acked, entries

    async def result(self) -> tuple[int | ReplyError, list[Entry]]:
        """How many were acknowledged (or why the broker refused), and the entries.

        Raises:
            ReplyError: the broker refused the read (``NOGROUP``: the group is gone).
            one of CONNECTION_ERRORS: the connection was lost meanwhile.
        """
        if isinstance(self._entries, ReplyError):
            raise self._entries
        return self._acked, self._entries

    def ready(self) -> list[Entry]:
        """The entries read, if the answer is in already (else none)."""
        return [] if isinstance(self._entries, ReplyError) else self._entries


#: Receives each batch the subscriber reads; may wait (that is back-pressure).
Deliver = Callable[[list[Message]], Awaitable[None]]

#: Error codes that mean "not here, not now" rather than "never": the cluster moved
#: the slot, the server is loading, failing over or read-only. A subscription
#: refused with one of these is retried on a new connection, not given up.
TRANSIENT_REPLIES = frozenset(
    {"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "BUSY", "MASTERDOWN", "READONLY"}
)


class ConnectionLost(BrokerError):
    """The connection failed, or must be made again; it is a `BrokerError`.

    Raised by broker code (and the connection supervisor) for a failure of the
    connection rather than of one command: a reply that breaks the protocol, a
    handshake that failed, no node or master to connect to, a subscription the
    server deferred, a query whose connection was lost. Unlike `ReplyError`, it is
    one of `CONNECTION_ERRORS`. Users see it as a `BrokerError`.
    """


#: The exceptions that mean "this connection is gone (or refused us), connect again".
#: `ReplyError` (a command the server refused; the connection is fine) is not one
#: of them: catch it on its own where it can come.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError is an OSError too
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    ConnectionLost,
)

#: A command failed either way: refused (`ReplyError`), or its connection failed.
#: For callers whose answer to both is the same (log it, try again later).
COMMAND_ERRORS: tuple[type[BaseException], ...] = (ReplyError, *CONNECTION_ERRORS)


class Subscriber(abc.ABC):
    """One subscriber connection. Only the connection supervisor calls it."""

    @abc.abstractmethod
    async def run(self, deliver: Deliver) -> None:
        """Read messages and pass them on in batches until the connection is lost.

        Raises:
            one of CONNECTION_ERRORS: when the connection is lost.
        """

    @abc.abstractmethod
    async def subscribe(self, channels: Sequence[str]) -> None:
        """Subscribe; return once the broker confirmed every channel.

        Every message the broker sent before the confirmation has been handed to
        ``deliver`` by the time this returns.

        Raises:
            ReplyError: the broker refused the command (for some of ``channels``; the
                connection is fine).
        """

    @abc.abstractmethod
    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Unsubscribe; return once the broker confirmed every channel."""

    @abc.abstractmethod
    async def psubscribe(self, patterns: Sequence[str]) -> None:
        """Subscribe to glob patterns; return once confirmed."""

    @abc.abstractmethod
    async def punsubscribe(self, patterns: Sequence[str]) -> None:
        """Unsubscribe from glob patterns; return once confirmed."""

    @abc.abstractmethod
    async def barrier(self, on_answer: Callable[[], None]) -> None:
        """Return once every message the broker sent before this call was delivered.

        (A PING round trip on Redis.) ``on_answer`` is called in the reader's task at
        the exact point of the stream where the broker answered: after every earlier
        message was handed to ``deliver``, before any later one. That point is where
        a new registration on a channel already subscribed starts to see messages.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection (the broker then forgets its subscriptions)."""


class Publisher(abc.ABC):
    """One command connection for PUBLISH and PUBSUB queries."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Read replies until the connection is lost (the supervisor runs this).

        Raises:
            one of CONNECTION_ERRORS: when the connection is lost.
        """

    @abc.abstractmethod
    async def publish(self, channel: str, payload: bytes) -> int:
        """Publish; return how many subscriptions received the message."""

    @abc.abstractmethod
    async def append(
        self, channel: str, payload: bytes, retention: Retention, dedupe: Dedupe | None = None
    ) -> tuple[str | None, int]:
        """Store ``payload`` in the log of a durable channel (trimmed to ``retention``)
        and publish ``b"<id> " + payload`` on the channel, as one atomic step.

        With ``dedupe``, it does nothing if its key was published within its window
        (by anyone: the key is kept by the broker), as part of the same step.

        Returns:
            The entry's id and how many subscriptions received the message; ``(None,
            0)`` when ``dedupe`` found its key.
        """

    async def send_many(self, items: Sequence[Outgoing]) -> list[Sent | ReplyError]:
        """Publish or append each item, in order, in as few writes as the broker
        allows; each item's outcome, in order: how it went, or the `ReplyError` of
        the command the server refused for it (that item alone failed).

        This one sends them one at a time; brokers that pipeline do better.

        Raises:
            one of CONNECTION_ERRORS: the connection was lost (some items may have
                been sent).
        """
        outcomes: list[Sent | ReplyError] = []
        for channel, payload, retention, dedupe in items:
            try:
                if retention is None:
                    outcomes.append((None, await self.publish(channel, payload)))
                else:
                    outcomes.append(await self.append(channel, payload, retention, dedupe))
            except ReplyError as exc:
                outcomes.append(exc)
        return outcomes

    @abc.abstractmethod
    async def read(self, channel: str, start: str, count: int) -> list[Entry]:
        """Up to ``count`` entries of a channel's log, oldest first, from the entry
        ``start`` on (``start`` included when it is still there)."""

    @abc.abstractmethod
    async def tail(self, channel: str) -> str | None:
        """The id of the last entry of a channel's log; None when there is no log."""

    async def tails(self, channels: Sequence[str]) -> list[str | None]:
        """`tail()` of each channel, in order (a broker that can sends them in one
        round trip)."""
        return [await self.tail(channel) for channel in channels]

    async def marks(self, channels: Sequence[str]) -> list[LogMark | None]:
        """The `LogMark` of each channel's log, in order (None: no log, or a broker
        that cannot say, as Redis before 7.0)."""
        return [None for _ in channels]

    @abc.abstractmethod
    async def load_position(self, channel: str, consumer: str) -> str | None:
        """The id a named consumer of a durable channel last checkpointed (None: never)."""

    @abc.abstractmethod
    async def save_position(self, channel: str, consumer: str, entry_id: str) -> None:
        """Checkpoint the id a named consumer of a durable channel has reached."""

    # -- consumer groups (work queues) on a durable channel's log -----------------------

    @abc.abstractmethod
    async def group_create(self, channel: str, group: str, start: str) -> bool:
        """Create consumer group ``group`` of a channel's log (the log too, if there is
        none), delivering the entries after id ``start`` (``"$"``: after the last).

        Returns:
            False when the group existed already (it is left as it is).
        """

    @abc.abstractmethod
    async def group_read(self, channel: str, group: str, consumer: str, count: int) -> list[Entry]:
        """Up to ``count`` entries the group has not handed out yet, now pending for
        ``consumer``; never waits for more.

        Raises:
            ReplyError: ``NOGROUP`` when the group (or the log) no longer exists.
        """

    @abc.abstractmethod
    async def group_claim(
        self, channel: str, group: str, consumer: str, min_idle: float, start: str, count: int
    ) -> Claimed:
        """Take over up to ``count`` entries pending for longer than ``min_idle``
        seconds (for any member), scanning from id ``start``; each claim counts as
        a delivery."""

    @abc.abstractmethod
    async def group_ack(self, channel: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries: they are done, and no longer pending."""

    async def read_ahead(
        self, channel: str, group: str, consumer: str, count: int, acks: Sequence[str]
    ) -> ReadAhead:
        """Acknowledge ``acks`` and read up to ``count`` new entries (`group_read()`),
        returning once asked: the replies come with `ReadAhead.result()`, so that
        the caller works meanwhile while the broker answers.

        This one asks and waits for the answers at once; a broker that pipelines
        returns as soon as the commands are written.
        """
        acked: int | ReplyError = 0
        if acks:
            try:
                acked = await self.group_ack(channel, group, acks)
            except ReplyError as exc:
                acked = exc
        try:
            entries = await self.group_read(channel, group, consumer, count)
        except ReplyError as exc:
            return ReadAhead(acked, exc)
        return ReadAhead(acked, entries)

    @abc.abstractmethod
    async def group_release(
        self, channel: str, group: str, consumer: str, jobs: Sequence[tuple[str, int]], idle: float
    ) -> None:
        """Hand entries back: they stay pending, as if idle for ``idle`` seconds, so
        that the next claim by any member takes them. ``jobs``: ``(id, deliveries)``,
        the delivery count each is to have (less than its own when a delivery did
        not take place: an entry taken and never started)."""

    @abc.abstractmethod
    async def group_leave(self, channel: str, group: str, consumer: str) -> bool:
        """Remove ``consumer`` from the group if nothing is pending for it.

        Returns:
            True if it was removed (or was not there).
        """

    @abc.abstractmethod
    async def group_prune(self, channel: str, group: str, idle: float, keep: str) -> int:
        """Remove the group's consumers (but ``keep``) idle for longer than ``idle``
        seconds that hold nothing (left by killed processes); return how many."""

    @abc.abstractmethod
    async def group_retry(
        self,
        channel: str,
        group: str,
        consumer: str,
        entry_id: str,
        payload: bytes,
        delay: float,
    ) -> bool:
        """Acknowledge an entry ``consumer`` holds and schedule ``payload`` (its
        envelope, marked for this group: see `tidings.policies.headers.REQUEUED_FOR`)
        to be appended to the log again no earlier than ``delay`` seconds from now,
        by the broker's clock, as one atomic step (the schedule is the broker's:
        `retry_key()`). False, and nothing done, when the entry is no longer pending
        for ``consumer`` (another member claimed it, or it was acknowledged)."""

    @abc.abstractmethod
    async def group_due(
        self, channel: str, group: str, count: int, retention: Retention
    ) -> tuple[int, float | None]:
        """Append up to ``count`` of a group's scheduled retries that are due to the
        log (and publish them, as `append()` does), atomically each.

        Returns:
            How many it appended, and the seconds until the next one is due (None:
            nothing is scheduled).
        """

    @abc.abstractmethod
    async def add_dead(
        self, channel: str, fields: Sequence[tuple[str, bytes]], retention: Retention
    ) -> str:
        """Append an entry to the channel's dead-letter stream (`dead_key()`),
        trimmed to ``retention``; return its id."""

    @abc.abstractmethod
    async def read_dead(self, channel: str, count: int, start: str = "+") -> list[DeadEntry]:
        """Up to ``count`` entries of the channel's dead-letter stream, newest first,
        from id ``start`` down (``start`` included; ``"+"``: from the newest)."""

    @abc.abstractmethod
    async def delete_dead(self, channel: str, ids: Sequence[str] | None) -> int:
        """Delete entries of the channel's dead-letter stream (``None``: the whole
        stream, at once); return how many there were (unknown ids do not count)."""

    # -- looking at streams (``tidings inspect``) ----------------------------------------

    @abc.abstractmethod
    async def stream_info(self, key: str) -> StreamInfo | None:
        """The length and first and last ids of the stream at ``key`` (a durable
        channel's log, or `dead_key()` of one); None when there is no such key.

        Raises:
            ReplyError: ``WRONGTYPE`` when the key is not a stream.
        """

    @abc.abstractmethod
    async def group_info(self, channel: str) -> list[GroupInfo]:
        """The consumer groups of a durable channel's log, with their consumers
        (none when there is no log)."""

    @abc.abstractmethod
    async def scan_streams(self, match: str) -> list[str]:
        """The keys of the streams whose names match the glob ``match`` (every
        node of a cluster), sorted."""

    @abc.abstractmethod
    async def numsub(self, channels: Sequence[str]) -> dict[str, int]:
        """Subscribers of each channel (pattern subscriptions not counted)."""

    @abc.abstractmethod
    async def numpat(self) -> int:
        """Number of distinct patterns subscribed to on the broker."""

    @abc.abstractmethod
    async def channels(self, pattern: str | None = None) -> list[str]:
        """Channels with at least one subscriber, optionally filtered by a glob."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection."""


class Broker(abc.ABC):
    """Opens connections to one broker."""

    #: The broker's URL with any password redacted.
    url: str

    #: False where pattern subscriptions do not exist (sharded Redis Cluster).
    supports_patterns: bool = True

    #: The messaging system, as telemetry names it (``messaging.system``).
    system: str = "redis"

    #: The server in use when the URL does not say it (Sentinel: the master found),
    #: for status events; None otherwise.
    server: str | None = None

    @abc.abstractmethod
    async def open_subscriber(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Subscriber:
        """Connect a subscriber connection (handshake included).

        Args:
            health_check_interval: seconds of silence before the connection is
                checked (brokers that can be silent while dead).
            reply_timeout: seconds a reply (to a command, to the check) may take.
        """

    @abc.abstractmethod
    async def open_publisher(
        self, *, health_check_interval: float, reply_timeout: float
    ) -> Publisher:
        """Connect a command connection (handshake included).

        Args:
            health_check_interval: seconds of idleness after which the connection
                is checked.
            reply_timeout: seconds a due reply may take before the connection is
                declared dead.
        """
