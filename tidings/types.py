"""The types a handler hands you: channels, events, their iterators, and the data
of status events.

They live here, in a module of their own, so that type checkers and tracebacks name
them by a public path (``tidings.types.Event[Order]``); import them from ``tidings``.
The machinery behind them (registrations, feeds, mailboxes) is the runtime's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NotRequired, Protocol, TypedDict, TypeVar

import anyio
from anyio.lowlevel import checkpoint

from .actors.callbacks import Interrupted, Registration, Undelivered
from .actors.mailbox import Mailbox
from .policies.headers import NO_HEADERS, Headers

__all__ = [
    "Channel",
    "ConnectedData",
    "DeadLetterData",
    "DisconnectedData",
    "Event",
    "Events",
    "GapData",
    "GroupEvents",
    "Job",
    "SlowConsumerData",
    "StatusData",
]

#: The type of an event's data (``Any`` unless a ``schema=`` says).
D = TypeVar("D")


class _ChannelState(Protocol):
    """What a `Channel` reads of the runtime's record of a channel."""

    name: str
    broker_name: str
    local: bool
    durable: bool
    patterns: dict[str, dict[object, Registration]]

    def registrations_for(self, event: str) -> tuple[Registration, ...]: ...


class Channel:
    """A named channel and the callbacks registered on it, by event pattern.

    Get one from `Channels.register()` or `Channels.channel()`. ``len()``
    counts the event patterns registered; ``pattern in channel`` tests one.
    """

    __slots__ = ("_state",)

    def __init__(self, state: _ChannelState) -> None:
        self._state = state

    @property
    def name(self) -> str:
        """The name, without the namespace prefix."""
        return self._state.name

    @property
    def broker_name(self) -> str:
        """The name on the broker, with the namespace prefix."""
        return self._state.broker_name

    @property
    def local(self) -> bool:
        """True for the status channel, whose events never touch the broker."""
        return self._state.local

    @property
    def durable(self) -> bool:
        """True for a channel named in ``durable=``: its events are kept in a log."""
        return self._state.durable

    @property
    def events(self) -> tuple[str, ...]:
        """The event patterns registered, in registration order."""
        return tuple(self._state.patterns)

    def registrations_for(self, event: str) -> tuple[Registration, ...]:
        """The registrations (outside consumer groups) whose pattern matches
        ``event``, in registration order: each has ``.callback`` and ``.key`` (its
        pattern)."""
        return self._state.registrations_for(event)

    def __len__(self) -> int:
        return len(self._state.patterns)

    def __contains__(self, pattern: object) -> bool:
        return pattern in self._state.patterns

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} events={list(self._state.patterns)!r}>"


@dataclass(frozen=True, slots=True)
class Event(Generic[D]):
    """One event, as yielded by `Channels.subscribe()`.

    Attributes:
        channel: the channel name, without the namespace prefix.
        event: the event name.
        data: the payload, as decoded by the protocol (converted to the ``schema``
            given to `Channels.subscribe()`, if any: ``Event[Order]``).
        id: on a durable channel, the id of the event's entry in the channel's log
            (``"1700000000000-0"``; pass it as ``since=`` to resume after it);
            None on other channels.
        deliveries: in a consumer group, how many times the event has been
            delivered, this time included (more than 1: an earlier delivery failed
            or was not acknowledged in time); None outside groups.
        headers: the headers it was published with (``publish(..., headers=)``),
            read-only; empty when it has none. Trace context travels here: see the
            "Observability" page for continuing the producer's trace.
    """

    channel: str
    event: str
    data: D
    id: str | None = None
    deliveries: int | None = None
    headers: Headers = field(default_factory=lambda: NO_HEADERS)

    def __repr__(self) -> str:
        # The fields a plain channel leaves empty are left out: the common case reads
        # as Event(channel='orders', event='created', data={'id': 1}).
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (
                ("id", self.id),
                ("deliveries", self.deliveries),
                ("headers", dict(self.headers) if self.headers else None),
            )
            if value is not None
        )
        return f"Event(channel={self.channel!r}, event={self.event!r}, data={self.data!r}{extra})"


class Events(Generic[D]):
    """The events of one `Channels.subscribe()`, in order, as an async iterator.

    ``async for event in events`` ends when the channels close; ``await
    events.receive()`` takes one event (raising `anyio.EndOfStream` then).
    """

    __slots__ = ("_batch", "_mailbox", "_next")

    def __init__(self, mailbox: Mailbox[Any]) -> None:
        self._mailbox = mailbox
        # A batch taken from the mailbox, and the index of its next event.
        self._batch: list[Any] = []
        self._next = 0

    async def receive(self) -> Event[D]:
        """The next event, waiting for it.

        Raises:
            anyio.EndOfStream: the channels closed and every event was taken.
        """
        event: Event[D] = await self._take()
        return event

    def receive_nowait(self) -> Event[D]:
        """The next event if one is waiting.

        Raises:
            anyio.WouldBlock: none is.
            anyio.EndOfStream: the channels closed and every event was taken.
        """
        if self._next >= len(self._batch):
            try:
                self._batch, self._next = self._mailbox.get_nowait(), 0
            except anyio.ClosedResourceError:
                raise anyio.EndOfStream from None
        event: Event[D] = self._batch[self._next]
        self._next += 1
        return event

    async def _take(self) -> Any:
        if self._next < len(self._batch):
            await checkpoint()  # a checkpoint either way, as a receive should be
        else:
            try:
                self._batch, self._next = await self._mailbox.get(), 0
            except anyio.ClosedResourceError:  # the subscription is over
                raise anyio.EndOfStream from None
        item = self._batch[self._next]
        self._next += 1
        return item

    def __aiter__(self) -> Events[D]:
        return self

    async def __anext__(self) -> Event[D]:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        return f"<Events {self._mailbox!r}>"


class Job:
    """An event of a consumer group in an iterator's hands, until it is done."""

    __slots__ = ("done", "error", "event")

    def __init__(self, event: Event[Any]) -> None:
        self.event = event
        self.done = anyio.Event()
        self.error: Exception | None = None

    def finish(self, error: Exception | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class GroupEvents(Events[D]):
    """The events of a ``subscribe(..., group=...)``: each is acknowledged when the
    consumer takes the next one, or leaves the ``async with`` block normally; one
    in hand when the block raises is handed back, to be delivered again."""

    __slots__ = ("_current",)

    def __init__(self, mailbox: Mailbox[Any]) -> None:
        super().__init__(mailbox)
        self._current: Job | None = None

    async def receive(self) -> Event[D]:
        current, self._current = self._current, None
        if current is not None:
            current.finish()  # done with it: acknowledged
        job: Job = await self._take()
        self._current = job
        event: Event[D] = job.event
        return event

    def unread(self) -> list[Job]:
        """Take the events queued and never received."""
        unread: list[Any] = self._batch[self._next :]
        self._batch, self._next = [], 0
        while True:
            try:
                unread.extend(self._mailbox.get_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return unread

    def leave(self, exc: BaseException | None, unread: list[Job]) -> None:
        """The block was left (raising ``exc``): the event in hand is done, or failed;
        those never received are handed back."""
        current, self._current = self._current, None
        if current is not None:
            # A failure of the consumer's is a failed delivery; a cancellation is a
            # delivery given up, to be made again.
            current.finish(exc if isinstance(exc, Exception) or exc is None else Interrupted())
        for job in unread:
            job.finish(Undelivered())


# -- the data of status events -------------------------------------------------------


class StatusData(TypedDict):
    """The data of a ``connecting`` or ``closed`` event on the status channel (and the
    keys every connection status event has).
    """

    #: The new status's name: ``"connecting"``, ``"connected"``, ...
    status: str
    #: The status before it.
    previous: str
    #: Attempts since the last successful connection (``connecting``: the one about
    #: to be made; ``disconnected``: the one that failed, 0 for a lost connection).
    attempt: int
    #: Seconds until the next attempt (``disconnected``), else None.
    retry_in: float | None
    #: What went wrong (``disconnected``), else None.
    error: str | None


class ConnectedData(StatusData):
    """The data of a ``connected`` event."""

    #: On a reconnection: the seconds the subscription was deaf (plain channels
    #: lost what was published meanwhile; durable ones read it back).
    down_for: NotRequired[float]
    #: The server in use, where the URL names several (Sentinel).
    server: NotRequired[str]


class DisconnectedData(StatusData):
    """The data of a ``disconnected`` event: ``error`` says why, ``retry_in`` when."""

    #: The server that was lost, where the URL names several (Sentinel).
    server: NotRequired[str]


class GapData(TypedDict):
    """The data of a ``gap`` event: a durable channel lost events it cannot read back."""

    #: The channel, without the namespace prefix.
    channel: str
    #: ``"trimmed"`` (past the retention), ``"deleted"`` (the log or group was deleted
    #: or made again), ``"rewound"`` (ids went backwards: a failover), ``"missing"``.
    reason: Literal["trimmed", "deleted", "rewound", "missing"]
    #: The last id delivered before the gap (None for a consumer group's loss).
    last_id: str | None
    #: The first id after it, if known.
    next_id: str | None
    #: For a consumer group's loss: the group.
    group: NotRequired[str]
    #: For a consumer group's loss: the ids of the events lost, where known.
    ids: NotRequired[list[str]]
    #: For a consumer group's loss: how many were lost (None: unknown).
    lost: NotRequired[int | None]


class DeadLetterData(TypedDict):
    """The data of a ``dead_letter`` event: an event of a work queue gave up on."""

    #: The channel, without the namespace prefix.
    channel: str
    #: The consumer group.
    group: str
    #: The event's id in the channel's log.
    id: str
    #: How many times it was delivered.
    deliveries: int
    #: The last failure.
    error: str
    #: Its id among the channel's dead letters (``channels.dead_letters()``).
    dead_id: str


class SlowConsumerData(TypedDict):
    """The data of a ``slow_consumer`` event: a channel's mailbox overflowed."""

    #: The channel, without the namespace prefix.
    channel: str
    #: How many events were dropped in this episode so far.
    dropped: int
    #: The mailbox's bound (the ``max_pending`` option).
    max_pending: int
