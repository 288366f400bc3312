"""Events and the iterators that yield them (``Channels.subscribe()``).

An iterator is a registration like a callback's, whose callback is a *feed*: it
takes each delivery, with its metadata (`Meta`: the entry id on a durable channel,
the delivery count in a group), and puts an `Event` in the iterator's own bounded
mailbox, from which ``async for`` takes it. Data flows one way::

    actor ──feed(channel, event, data, meta)──► Mailbox[Event] ──receive()──► consumer

A plain iterator's mailbox is bounded by ``max_pending`` under the handler's
``overflow`` policy (a durable channel's always blocks: what it cannot take is read
back from the log). A group's iterator holds one event at a time: the feed waits
until the consumer is done with it (takes the next one, or leaves the block), and
the outcome of that wait is the delivery's (acknowledged, or handed back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
from anyio.lowlevel import checkpoint

from .._util import cleanup_scope
from ..actors.callbacks import Interrupted, Meta, Undelivered
from ..actors.mailbox import Mailbox
from ..actors.router import starts_episode
from ..errors import CallbackError
from ..policies.headers import NO_HEADERS, Headers
from .channel import Channel
from .lifecycle import Runtime
from .registry import Registry, Wanted

__all__ = ["Event", "Events", "GroupEvents", "iterate", "watch", "work"]

#: The type of an event's data (``Any`` unless a ``schema=`` says).
D = TypeVar("D")


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


class _Feed:
    """A plain iterator's callback: never waits; what its full mailbox refuses is
    dropped (counted by the dispatcher) and starts a slow-consumer episode."""

    __slots__ = ("_mailbox", "_report")

    def __init__(self, mailbox: Mailbox[Event[Any]], report: Callable[[str, int], None]) -> None:
        self._mailbox = mailbox
        self._report = report

    def __call__(self, channel: Channel, event: str, data: Any, meta: Meta) -> None:
        mailbox = self._mailbox
        was_overflowing = mailbox.overflowing
        if mailbox.put_nowait([Event(channel.name, event, data, meta.id, None, meta.headers)]):
            if mailbox.closed:
                raise CallbackError("the iterator is closed")
            if starts_episode(mailbox, was_overflowing):
                self._report(channel.broker_name, 1)
            raise Undelivered


class _BlockingFeed:
    """A blocking iterator's callback (``overflow="block"``, or a durable channel):
    it waits for room, and so its channel waits."""

    __slots__ = ("_mailbox",)

    def __init__(self, mailbox: Mailbox[Event[Any]]) -> None:
        self._mailbox = mailbox

    async def __call__(self, channel: Channel, event: str, data: Any, meta: Meta) -> None:
        if await self._mailbox.put([Event(channel.name, event, data, meta.id, None, meta.headers)]):
            raise CallbackError("the iterator is closed")


class _JobFeed:
    """A group iterator's callback: hands one event to the consumer, and ends as the
    consumer's handling of it ends."""

    __slots__ = ("_mailbox",)

    def __init__(self, mailbox: Mailbox[Job]) -> None:
        self._mailbox = mailbox

    async def __call__(self, channel: Channel, event: str, data: Any, meta: Meta) -> None:
        job = Job(Event(channel.name, event, data, meta.id, meta.deliveries, meta.headers))
        if await self._mailbox.put([job]):
            raise Undelivered  # the consumer is gone: another member takes it
        await job.done.wait()
        if job.error is not None:
            raise job.error


@asynccontextmanager
async def iterate(
    runtime: Runtime, registry: Registry, wanted: Wanted
) -> AsyncIterator[Events[Any]]:
    """The events of a plain or durable registration, as an iterator (see
    `Channels.subscribe()`)."""
    # A durable channel's iterator never drops: a full iterator makes the channel
    # wait, and what its own mailbox then refuses is read back later.
    durable = registry.is_durable(wanted.broker_name)
    overflow = "block" if durable else runtime.options.overflow
    mailbox: Mailbox[Event[Any]] = Mailbox(runtime.options.max_pending, overflow)
    feed = _BlockingFeed(mailbox) if overflow == "block" else _Feed(mailbox, runtime.slow_consumer)
    async with _fed(runtime, registry, wanted, mailbox, feed) as events:
        yield events


@asynccontextmanager
async def _fed(
    runtime: Runtime,
    registry: Registry,
    wanted: Wanted,
    mailbox: Mailbox[Event[Any]],
    feed: Callable[..., Any],
) -> AsyncIterator[Events[Any]]:
    """``wanted`` registered with ``feed`` (which fills ``mailbox``) as its callback,
    for as long as the block lasts; the events, as an iterator."""
    wanted = dataclasses.replace(wanted, callback=feed, takes_meta=True)
    registry.iterators.add(mailbox)
    try:
        await registry.register([wanted], "subscribe")
        yield Events(mailbox)
    finally:
        registry.iterators.discard(mailbox)
        # Counted as delivered when it reached the iterator; what the consumer
        # leaves unread when it leaves the block is its own choice.
        mailbox.discard()
        await _unregister(runtime, registry, wanted)


class _WatchFeed:
    """A watcher's callback: never waits, on any channel (a slow watcher must not
    hold up its channel, durable or not); the first event its full mailbox refuses
    calls ``on_overflow``, and it and the later ones are dropped, counted."""

    __slots__ = ("_mailbox", "_on_overflow", "overflowed")

    def __init__(self, mailbox: Mailbox[Event[Any]], on_overflow: Callable[[], None]) -> None:
        self._mailbox = mailbox
        self._on_overflow = on_overflow
        self.overflowed = False

    def __call__(self, channel: Channel, event: str, data: Any, meta: Meta) -> None:
        if self.overflowed:
            raise Undelivered
        if self._mailbox.put_nowait(
            [Event(channel.name, event, data, meta.id, None, meta.headers)]
        ):
            if self._mailbox.closed:
                raise CallbackError("the watcher is closed")
            self.overflowed = True
            self._on_overflow()
            raise Undelivered


@asynccontextmanager
async def watch(
    runtime: Runtime,
    registry: Registry,
    wanted: Wanted,
    max_pending: int,
    on_overflow: Callable[[], None],
) -> AsyncIterator[Events[Any]]:
    """The events of a plain or durable registration for a consumer that may fall
    behind (a browser): up to ``max_pending`` wait for it; past that nothing more
    is queued, and ``on_overflow()`` is called at once (the consumer should take
    what is queued and end, to come back later from the last id it took)."""
    mailbox: Mailbox[Event[Any]] = Mailbox(max_pending, "drop")
    async with _fed(runtime, registry, wanted, mailbox, _WatchFeed(mailbox, on_overflow)) as events:
        yield events


@asynccontextmanager
async def work(runtime: Runtime, registry: Registry, wanted: Wanted) -> AsyncIterator[Events[Any]]:
    """The events of a consumer group, one at a time, as an iterator (see
    `Channels.subscribe()`)."""
    # One event at a time: the member waits for the consumer to be done with it.
    mailbox: Mailbox[Job] = Mailbox(1, "block")
    events: GroupEvents[Any] = GroupEvents(mailbox)
    wanted = dataclasses.replace(wanted, callback=_JobFeed(mailbox), takes_meta=True)
    await registry.register([wanted], "subscribe")
    registry.iterators.add(mailbox)
    failed: BaseException | None = None
    try:
        yield events
    except BaseException as exc:
        failed = exc
        raise
    finally:
        registry.iterators.discard(mailbox)
        unread = events.unread()
        mailbox.discard()
        # Unregistered before the events in hand are finished: one handed back must
        # not come straight back to this iterator.
        await _unregister(runtime, registry, wanted, lambda: events.leave(failed, unread))


async def _unregister(
    runtime: Runtime,
    registry: Registry,
    wanted: Wanted,
    then: Callable[[], None] | None = None,
) -> None:
    """Remove an iterator's registration at once (closed too: a restart must not
    subscribe it again), run ``then``, and, while running, wait (shielded, bounded)
    for the broker to confirm the unsubscription it may have caused."""
    registration = registry.find(wanted.broker_name, wanted.event, wanted.callback, wanted.group)
    dropped = registration is not None and registry.remove(registration)
    if then is not None:
        then()
    if dropped and runtime.state == "running":
        with cleanup_scope():
            await runtime.connection.unsubscribe()
