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
from typing import Any

from .._util import cleanup_scope
from ..actors.callbacks import Meta, Undelivered
from ..actors.mailbox import Mailbox
from ..actors.router import starts_episode
from ..errors import CallbackError
from ..types import Channel, Event, Events, GroupEvents, Job
from .lifecycle import Runtime
from .registry import Registry, Wanted

__all__ = ["Event", "Events", "GroupEvents", "iterate", "watch", "work"]


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
