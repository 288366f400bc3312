"""Channels: named channels carrying named events, with callbacks or iterators.

```python
async with tidings.open_channels("memory://", namespace="shop") as channels:
    await channels.register("orders", "created", on_created)
    await channels.publish("orders", "created", {"id": 1})
```

This module is the public face only: it checks arguments, documents the API and
delegates to the runtime (``tidings._runtime``), which composes the handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, Unpack, overload

from ._runtime.arguments import check_protocol, check_registration, durable_channels
from ._runtime.dead_letters import DeadLetters
from ._runtime.events import iterate, work
from ._runtime.lifecycle import Lifecycle, Runtime
from ._runtime.producer import Producer
from ._runtime.registry import Registry, Wanted
from ._runtime.web import Source
from .brokers.urls import display
from .options import OptionArgs, Options
from .policies.headers import check_headers
from .policies.names import Namespace, check_name, check_namespace
from .policies.status import StatusType
from .policies.streams import (
    Retention,
    format_id,
    parse_id,
)
from .protocols import Codec, Json
from .stats import Stats
from .store import Store, create_store
from .types import Channel, Event, Events

__all__ = ["Channel", "Channels", "Event", "Events", "StatusType", "open_channels"]


#: Signature of a channel callback: ``callback(channel, event, data)``, sync or async.
Callback = Callable[[Channel, str, Any], Any]
T = TypeVar("T")


class Channels(Lifecycle):
    """Named channels carrying named events over a store.

    Args:
        store: a `Store`, or a URL for `create_store()`.
        namespace: prefix of every channel on the broker (``"shop"`` makes channel
            ``orders`` into ``shop:orders``); defaults to the URL's ``?namespace=``.
        status_channel: name of the local channel that receives status events
            (default ``"server"``). It is never subscribed on the broker.
        logger: where to log (default: the ``tidings`` logger).
        protocol: the codec of event envelopes (default `Json`).
        durable: the channels whose events are kept in a log, so that a subscriber
            loses none of them across reconnects and restarts: an iterable of exact
            channel names (kept with ``tidings.DEFAULT_RETENTION``), or a
            mapping of name -> `Retention`. Publishers and
            subscribers of a durable channel must both declare it (see the
            "Durable channels" page).
        **options: see `Options` (``publish_timeout``, ``backoff``,
            ``max_pending``, ``overflow`` and more).

    Raises:
        ValueError: a bad namespace, status channel name, durable channel or option
            value.
        TypeError: an unknown option, or ``durable`` of the wrong type.

    Run it with ``async with`` (or `open_channels()`), or in your own nursery
    with ``await nursery.start(channels.run)``. Exceptions from ``run`` and
    ``async with`` are raised bare, not wrapped in an exception group, when there is
    only one.
    """

    def __init__(
        self,
        store: Store | str = "memory://",
        namespace: str | None = None,
        status_channel: str | None = None,
        logger: logging.Logger | None = None,
        *,
        protocol: Codec | None = None,
        durable: Iterable[str] | Mapping[str, Retention] | None = None,
        **options: Unpack[OptionArgs],
    ) -> None:
        self._store = store if isinstance(store, Store) else create_store(store)
        self._namespace = Namespace(
            check_namespace(namespace if namespace is not None else self._store.namespace)
        )
        self._protocol: Codec = protocol if protocol is not None else Json()
        check_protocol(self._protocol)
        self._runtime = Runtime(
            self._store.broker, Options.from_kwargs(options), logger, kind=type(self).__name__
        )
        #: Durable channels by broker name, with their retention.
        self._durable = durable_channels(durable, self._namespace)
        self._registry = Registry(
            self._runtime,
            self._namespace,
            status_channel if status_channel is not None else "server",
            self._protocol,
            self._durable,
        )
        self._runtime.hooks = self._registry.hooks()
        self._producer = Producer(
            self._runtime, self._protocol, self._durable, self._registry.telemetry
        )
        self._dead = DeadLetters(self._runtime, self._protocol, self._namespace, self._durable)

    # -- mapping-like access ------------------------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace ('' when there is none)."""
        return self._namespace.name

    @property
    def store(self) -> Store:
        """The store these channels run on."""
        return self._store

    @property
    def protocol(self) -> Codec:
        """The codec of event envelopes."""
        return self._protocol

    @property
    def status_channel(self) -> Channel:
        """The local channel that receives a status event on every transition."""
        return self._registry.status.channel

    def channel(self, name: str, create: bool = True) -> Channel | None:
        """The channel called ``name`` (namespace prefix optional).

        With ``create=True`` a missing channel is created, with no callbacks (and so
        not subscribed); with ``create=False`` a missing channel gives ``None``.
        """
        state = self._registry.state(name, create)
        return state.channel if state is not None else None

    def __len__(self) -> int:
        return len(self._registry)

    def __contains__(self, name: object) -> bool:
        try:
            return self._namespace.broker_name(name) in self._registry
        except ValueError:
            return False

    def __iter__(self) -> Iterator[Channel]:
        return iter(self._registry)

    def __str__(self) -> str:
        return display(self._store.url, self.namespace)

    __repr__ = __str__

    # -- registration -------------------------------------------------------------------

    @overload
    async def register(
        self,
        channel: str,
        event: str,
        callback: Callback,
        *,
        since: Any = ...,
        consumer: str | None = ...,
        group: str | None = ...,
        schema: None = ...,
    ) -> Channel: ...

    @overload
    async def register(
        self,
        channel: str,
        event: str,
        callback: Callable[[Channel, str, T], Any],
        *,
        since: Any = ...,
        consumer: str | None = ...,
        group: str | None = ...,
        schema: type[T],
    ) -> Channel: ...

    async def register(
        self,
        channel: str,
        event: str,
        callback: Callable[[Channel, str, Any], Any],
        *,
        since: Any = "new",
        consumer: str | None = None,
        group: str | None = None,
        schema: Any = None,
    ) -> Channel:
        """Call ``callback(channel, event, data)`` for events matching ``event``.

        ``event`` is a glob (``*``, ``?``, ``[a-z]``, ``\\`` escapes; a full,
        case-sensitive match). The callback may be a plain function or a coroutine
        function; registering the same callback for the same pattern twice does
        nothing. The channel is subscribed on the broker when it gets its first
        callback; when connected, this returns once the broker has confirmed it, so
        an event published afterwards is delivered. While disconnected it returns at
        once and the subscription is made on (re)connection.

        On a durable channel the callback gets every event in order, once, across
        reconnects; ``since`` says where it starts: ``"new"`` (events published
        from now on), ``"all"`` (everything the log still holds), an event id
        (the events after it) or a timezone-aware ``datetime``. (A durable
        registration asks the log where it ends, so while disconnected it waits
        for the connection, up to ``publish_timeout``.)

        ``consumer="name"`` (durable channels) keeps the registration's position in
        the broker, saved about once a second: a registration with the same name
        after a restart resumes after it (``since`` applies only the first time).
        Events after the last save are delivered again; ``Event.id`` tells them.

        ``group="name"`` (durable channels) makes the callback a worker of a work
        queue: each event goes to one member of the group, across processes, and is
        acknowledged once the callback returns. One that raises, or is not
        acknowledged within ``ack_wait`` seconds, is delivered again (to any
        member), up to ``max_deliver`` times; then it moves to the dead-letter
        stream ``<channel>:dead`` and a ``dead_letter`` status event names it. At
        least once, in no order across members: make the callback idempotent.
        ``since`` says where a group that does not exist yet starts.

        ``schema=T`` (a msgspec ``Struct``, a dataclass, a ``TypedDict``, or any type
        msgspec converts to; or a pydantic model, validated by pydantic) gives the
        callback ``data`` converted to ``T``; an event whose data does not fit is not
        passed to it, and is counted in ``decode_errors`` (and logged, once per minute
        at most).

        Raises:
            ValueError: an empty or non-str channel name or event pattern, or a
                ``since`` other than ``"new"``, a ``consumer`` or a ``group`` on a
                channel that is not durable (or ``consumer`` with ``group``).
            TypeError: ``callback`` is not callable, or ``schema`` is a type neither
                msgspec can convert to nor pydantic validate.
            RuntimeError: not running, or closed.
            ReplyError: the broker refused the subscription (nothing was registered).
            BrokerError: a durable channel's log could not be reached.
        """
        wanted = self._check(channel, event, callback, since, consumer, group, schema)
        [target] = await self._registry.register([wanted], "register")
        return target

    async def register_many(
        self, registrations: Iterable[tuple[str, str, Callback]]
    ) -> list[Channel]:
        """Register many callbacks at once: `register()` for each
        ``(channel, event, callback)``, validated before anything changes.

        The new subscriptions go to the broker in as few commands as it allows and
        are confirmed together; registering 10,000 channels takes a few round trips,
        not 10,000. It is all or nothing: if the broker refuses one subscription, or
        the call is cancelled, none of these registrations is left.

        Returns:
            The `Channel` of each registration, in order.

        Raises:
            ValueError: a bad channel name or event pattern (naming it).
            TypeError: an item that is not a ``(channel, event, callback)`` triple,
                or a callback that is not callable.
            RuntimeError: not running, or closed.
            ReplyError: the broker refused a subscription.
        """
        items: list[Wanted] = []
        for item in registrations:
            if not isinstance(item, tuple) or len(item) != 3:
                raise TypeError(
                    f"register_many takes (channel, event, callback) tuples, not {item!r:.80}"
                )
            items.append(self._check(*item))
        return await self._registry.register(items, "register_many")

    async def unregister(
        self, channel: str, event: str, callback: Callback, *, group: str | None = None
    ) -> Channel | None:
        """Remove a callback registered with `register()` (with the same
        ``group``, if it was given one).

        A channel left without callbacks is unsubscribed and dropped. A group left
        without callbacks here is left: the event in hand is finished, those taken
        and not started are handed back to the group at once.

        Returns:
            The channel, or ``None`` when no such channel exists.

        Raises:
            ValueError: an empty or non-str channel name or event pattern.
            RuntimeError: not running, or closed.
        """
        broker_name = self._namespace.broker_name(channel)
        check_name(event, "event pattern")
        if group is not None:
            check_name(group, "group name")
        return await self._registry.unregister(broker_name, event, callback, group)

    @overload
    def subscribe(
        self,
        channel: str,
        event: str = ...,
        *,
        since: Any = ...,
        group: str | None = ...,
        schema: None = ...,
    ) -> AbstractAsyncContextManager[Events[Any]]: ...

    @overload
    def subscribe(
        self,
        channel: str,
        event: str = ...,
        *,
        since: Any = ...,
        group: str | None = ...,
        schema: type[T],
    ) -> AbstractAsyncContextManager[Events[T]]: ...

    def subscribe(
        self,
        channel: str,
        event: str = "*",
        *,
        since: Any = "new",
        group: str | None = None,
        schema: Any = None,
    ) -> AbstractAsyncContextManager[Events[Any]]:
        """Iterate over the events of a channel.

        ```python
        async with channels.subscribe("orders", "created") as events:
            async for ev in events:
                print(ev.channel, ev.event, ev.data)
        ```

        The iterator has a mailbox of its own, bounded like a channel's by
        ``max_pending`` under the ``overflow`` policy (dropped events are counted and
        reported as a ``slow_consumer`` episode). It ends when the channels close.

        On a durable channel, ``since`` is where the events start (as for
        `register()`), and each `Event` carries its ``id``.

        With ``group="name"`` the iterator is a worker of a work queue (see
        `register()`): it holds one event at a time, acknowledged when the next
        one is taken or the block is left normally; if the block raises, the event
        in hand is delivered again (to any member). Events carry ``deliveries``.

        ``schema=T`` converts each event's data to ``T`` (see `register()`): the
        iterator yields ``Event[T]``, and events whose data does not fit are skipped
        (counted in ``decode_errors``).

        Raises:
            ValueError: an empty or non-str channel name or event pattern, or a
                ``since`` other than ``"new"`` or a ``group`` on a channel that is
                not durable.
        """
        # The same checks as register, before any I/O (the callback is the iterator's
        # own feed, made by the runtime: print stands in for it here).
        wanted = self._check(channel, event, print, since, None, group, schema)
        if group is not None:
            return work(self._runtime, self._registry, wanted)
        return iterate(self._runtime, self._registry, wanted)

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        event: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> int:
        """Publish ``event`` with ``data`` on ``channel``.

        The message is ``{"channel": channel, "event": event, "data": data}``, encoded
        by the protocol (with ``"headers"`` too when there are any; the default JSON
        protocol sends a pydantic model as its JSON-mode dump). While
        disconnected it waits for the connection, up to ``publish_timeout`` seconds.

        ``headers`` is a mapping of str to str carried beside the data: subscribers
        see it as ``Event.headers`` (durable channels keep it in the log). Trace
        context travels there: with ``opentelemetry-api`` installed, the publish is a
        span whose context is added to the headers (see the "Observability" page).

        ``key`` (durable channels) makes the publish idempotent: the first publish
        of a key within ``dedupe_window`` seconds (option, default 120) is stored and
        published; a repeat within the window, from any handler or process, stores
        and delivers nothing and returns 0 (counted in ``Stats.deduplicated``). The
        check and the append are one atomic step on the broker, so a producer may
        retry a `PublishError` with the same key safely.

        Returns:
            How many subscriptions the broker delivered it to (0 for a repeated ``key``).

        Raises:
            ValueError: an empty or non-str channel or event name, an empty header
                name or one starting with ``tidings-`` (tidings' own), or ``key`` on
                a channel that is not durable, or an empty one.
            TypeError: ``data`` cannot be encoded by the protocol, or ``headers`` is
                not a mapping of str to str.
            RuntimeError: not running, or closed.
            PublishError: no connection within ``publish_timeout``, closed while
                waiting, or the connection broke while publishing.
        """
        return await self._producer.publish(*self._checked(channel, event, data, headers, key))

    async def publish_many(self, items: Iterable[tuple[Any, ...]]) -> list[int]:
        """Publish many events in as few writes as the broker allows.

        Each item is ``(channel, event, data)``, or ``(channel, event, data,
        headers)``, or ``(channel, event, data, headers, key)`` (``headers`` and
        ``key`` as for `publish()`; either may be None). Every item is checked, and
        its data encoded, before anything is sent. They go out pipelined: one write
        to Redis (one per node of a cluster) instead of one round trip each, in
        order on each channel.

        Returns:
            Each item's receiver count, in order (0 for a repeated ``key``).

        Raises:
            ValueError, TypeError: an item that is not such a tuple, or one
                `publish()` would refuse (naming the item's index); nothing is sent.
            RuntimeError: not running, or closed.
            PublishError: no connection within ``publish_timeout``, or the connection
                broke while publishing (some may have been published), or the broker
                refused an item (which one is said; the others were published).
        """
        checked = []
        for index, item in enumerate(items):
            if not isinstance(item, tuple) or not 3 <= len(item) <= 5:
                raise TypeError(
                    f"publish_many item {index} must be a (channel, event, data[, headers"
                    f"[, key]]) tuple, not {item!r:.80}"
                )
            try:
                checked.append(self._checked(*item))
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"publish_many item {index}: {exc}") from None
        return await self._producer.publish_many(checked)

    def _checked(
        self,
        channel: str,
        event: str,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> tuple[str, str, str, Any, dict[str, str] | None, str | None]:
        """A publish's arguments, checked: the names on the broker and for users."""
        broker_name, name = self._namespace.names(channel)
        if type(event) is not str or not event:
            check_name(event, "event name")  # raises, naming the bad value
        checked = check_headers(headers) if headers is not None else None
        if key is not None:
            check_name(key, "idempotency key")
            if broker_name not in self._durable:
                raise ValueError(
                    f"key={key!r} needs a durable channel, and {name!r} is not one "
                    "(name it in Channels(durable=...))"
                )
        return broker_name, name, event, data, checked, key

    # -- dead letters ---------------------------------------------------------------------

    async def dead_letters(self, channel: str, count: int = 100) -> list[Event[Any]]:
        """The newest ``count`` dead letters of a durable channel, newest last.

        A consumer group moves an event that failed its ``max_deliver``-th delivery
        (or could not be decoded) to the channel's dead letters. Each comes back as
        an `Event`: ``id`` is the dead letter's own id (give it to `requeue_dead()`
        or `purge_dead()`), ``event`` and ``data`` are the original ones, and
        ``headers`` are the event's own plus ``tidings-original-id`` (the id of the
        event's entry in the log), ``tidings-group``, ``tidings-deliveries`` and
        ``tidings-error`` (why it was buried). A dead letter that cannot be decoded
        has ``event`` ``""`` and its stored bytes as ``data``.

        Raises:
            ValueError: a channel that is not durable, or ``count`` not an int >= 1.
            RuntimeError: not running, or closed.
            BrokerError: the broker could not be reached, or refused.
        """
        broker_name = self._dead_channel(channel)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        return await self._dead.show(broker_name, count)

    async def requeue_dead(self, channel: str, ids: Iterable[str] | None = None) -> int:
        """Give dead letters of a durable channel another chance: each is appended
        to the channel's log as a new event, for the group it died in, and removed
        from the dead letters (``ids=None``: all of them).

        The new event carries the original's event, data and headers, plus
        ``tidings-requeued-for: <group>``: members of that group run it (its
        delivery count starts over), members of other groups acknowledge it
        without running it, and durable subscribers outside groups skip it. It is
        appended before the dead letter is removed, so a failure in between leaves
        it in both places (run twice, never lost). A dead letter that cannot be
        decoded stays where it is.

        Returns:
            How many were requeued (unknown ids are ignored).

        Raises:
            ValueError: a channel that is not durable, or an id that is not a stream
                id.
            TypeError: ``ids`` is not an iterable of ids.
            RuntimeError: not running, or closed.
            PublishError: the log could not be appended to.
            BrokerError: the dead letters could not be read or removed.
        """
        broker_name = self._dead_channel(channel)
        return await self._dead.requeue(broker_name, _stream_ids(ids))

    async def purge_dead(self, channel: str, ids: Iterable[str] | None = None) -> int:
        """Delete dead letters of a durable channel (``ids=None``: all of them).

        Returns:
            How many were deleted (unknown ids are ignored).

        Raises:
            ValueError: a channel that is not durable, or an id that is not a stream
                id.
            TypeError: ``ids`` is not an iterable of ids.
            RuntimeError: not running, or closed.
            BrokerError: the broker could not be reached, or refused.
        """
        broker_name = self._dead_channel(channel)
        return await self._dead.purge(broker_name, _stream_ids(ids))

    def _dead_channel(self, channel: str) -> str:
        broker_name, name = self._namespace.names(channel)
        if broker_name not in self._durable:
            raise ValueError(
                f"dead letters are kept for durable channels, and {name!r} is not one "
                "(name it in Channels(durable=...))"
            )
        return broker_name

    def _web_source(self) -> Source:
        """What `tidings.asgi.EventStream` follows channels through."""
        return Source(
            self._runtime,
            self._registry,
            self._namespace,
            lambda channel, event, since: self._check(channel, event, print, since),
        )

    def _check(self, channel: str, event: str, callback: Callable[..., Any], *args: Any) -> Wanted:
        return check_registration(self._namespace, self._durable, channel, event, callback, *args)

    def stats(self) -> Stats:
        """A snapshot of the counters (status events counted apart, in ``status_events``)."""
        return self._registry.stats()


def _stream_ids(ids: Iterable[str] | None) -> list[str] | None:
    """Dead-letter ids, checked (before any I/O) and written in full (``"1-0"``)."""
    if ids is None:
        return None
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be an iterable of dead-letter ids, not {ids!r:.80}")
    return list(dict.fromkeys(format_id(parse_id(i, "dead-letter id")) for i in ids))


def open_channels(
    store: Store | str = "memory://",
    namespace: str | None = None,
    status_channel: str | None = None,
    logger: logging.Logger | None = None,
    *,
    protocol: Codec | None = None,
    durable: Iterable[str] | Mapping[str, Retention] | None = None,
    **options: Unpack[OptionArgs],
) -> Channels:
    """Channels to use with ``async with`` (the same arguments as `Channels`).

    ```python
    async with tidings.open_channels("redis://localhost", namespace="shop") as channels:
        ...
    ```
    """
    return Channels(
        store, namespace, status_channel, logger, protocol=protocol, durable=durable, **options
    )
