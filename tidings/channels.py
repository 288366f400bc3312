"""Channels: named channels carrying named events, with callbacks or iterators.

::

    async with tidings.open_channels("memory://", namespace="shop") as channels:
        await channels.register("orders", "created", on_created)
        await channels.publish("orders", "created", {"id": 1})
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Unpack, overload

import anyio
import msgspec
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._groups import Groups
from ._options import OptionArgs, Options
from ._runtime import Hooks, Lifecycle
from ._stats import Counters, Stats
from .actors.callbacks import DEAF, Dispatcher, Interrupted, Registration, Undelivered, Unfit
from .actors.dispatch import DispatchActor, envelope_decoder
from .actors.durable import DurableActor, Upkeep, position, position_id
from .actors.mailbox import Mailbox
from .actors.router import Router
from .brokers.base import Message, Publisher
from .brokers.urls import display
from .errors import BrokerError, CallbackError, ReplyError
from .policies.glob import compile_glob
from .policies.names import Namespace, check_event, check_namespace
from .policies.status import StatusType
from .policies.streams import DEFAULT_RETENTION, Retention, start_after
from .protocols import Codec, Json
from .store import Store, create_store

__all__ = ["Channel", "Channels", "Event", "Events", "StatusType", "open_channels"]


#: Signature of a channel callback: ``callback(channel, event, data)``, sync or async.
Callback = Callable[["Channel", str, Any], Any]
T = TypeVar("T")
#: The type of an event's data (``Any`` unless a ``schema=`` says).
D = TypeVar("D")

#: A checked registration: (broker name, name, event pattern, callback, and on a
#: durable channel the log position it starts after with whether that names an
#: entry (None for "new"), the name of its consumer and its group, if it has them).
_Item = tuple[str, str, str, Callback, tuple[int, bool] | None, str | None, str | None]


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
    """

    channel: str
    event: str
    data: D
    id: str | None = None
    deliveries: int | None = None

    def __repr__(self) -> str:
        # The fields a plain channel leaves None are left out: the common case reads
        # as Event(channel='orders', event='created', data={'id': 1}).
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("id", self.id), ("deliveries", self.deliveries))
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


class _Job:
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


class _GroupEvents(Events[D]):
    """The events of a ``subscribe(..., group=...)``: each is acknowledged when the
    consumer takes the next one, or leaves the ``async with`` block normally; one
    in hand when the block raises is handed back, to be delivered again."""

    __slots__ = ("_current",)

    def __init__(self, mailbox: Mailbox[Any]) -> None:
        super().__init__(mailbox)
        self._current: _Job | None = None

    async def receive(self) -> Event[D]:
        current, self._current = self._current, None
        if current is not None:
            current.finish()  # done with it: acknowledged
        job: _Job = await self._take()
        self._current = job
        event: Event[D] = job.event
        return event

    def _unread(self) -> list[_Job]:
        """Take the events queued and never received."""
        unread: list[Any] = self._batch[self._next :]
        self._batch, self._next = [], 0
        while True:
            try:
                unread.extend(self._mailbox.get_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                return unread

    def _settle(self, exc: BaseException | None, unread: list[_Job]) -> None:
        """The block was left (raising ``exc``): the event in hand is done, or failed;
        those never received are handed back."""
        current, self._current = self._current, None
        if current is not None:
            # A failure of the consumer's is a failed delivery; a cancellation is a
            # delivery given up, to be made again.
            current.finish(exc if isinstance(exc, Exception) or exc is None else Interrupted())
        for job in unread:
            job.finish(Undelivered())


class Channel:
    """A named channel and the callbacks registered on it, by event pattern.

    Get one from `Channels.register()` or `Channels.channel()`. ``len()``
    counts the event patterns registered; ``pattern in channel`` tests one.
    """

    __slots__ = (
        "_all",
        "_cache",
        "_deliveries",
        "_event_id",
        "_patterns",
        "broker_name",
        "durable",
        "local",
        "name",
    )

    def __init__(
        self, name: str, broker_name: str, *, local: bool = False, durable: bool = False
    ) -> None:
        #: The name, without the namespace prefix.
        self.name = name
        #: The name on the broker, with the namespace prefix.
        self.broker_name = broker_name
        #: True for the status channel, whose events never touch the broker.
        self.local = local
        #: True for a channel named in ``durable=``: its events are kept in a log.
        self.durable = durable
        # The log id of the event being dispatched (durable channels), and its
        # delivery count (consumer groups), for iterators.
        self._event_id: str | None = None
        self._deliveries: int | None = None
        # Every registration, made when asked (a durable channel asks per event).
        self._all: tuple[Registration, ...] | None = None
        # Mutated only by the Channels facade, synchronously; the actor only reads
        # the tuples of the cache, so a change never disturbs a dispatch under way.
        # Pattern -> callback (see _key) -> registration: finding a duplicate is one
        # lookup, however many callbacks a pattern has.
        self._patterns: dict[str, dict[object, Registration]] = {}
        # Event -> registrations (outside groups); (group, event) -> a group's.
        self._cache: dict[Any, tuple[Registration, ...]] = {}

    @property
    def events(self) -> tuple[str, ...]:
        """The event patterns registered, in registration order."""
        return tuple(self._patterns)

    def __len__(self) -> int:
        return len(self._patterns)

    def __contains__(self, pattern: object) -> bool:
        return pattern in self._patterns

    def __repr__(self) -> str:
        return f"<Channel {self.name!r} events={list(self._patterns)!r}>"

    def registrations_for(self, event: str) -> tuple[Registration, ...]:
        """The registrations whose pattern matches ``event``, in registration order
        (those of consumer groups aside: see `group_registrations_for()`)."""
        found = self._cache.get(event)
        if found is None:
            found = self._matching(event, None)
            # Event names are open-ended: the cache is bounded, and once full it
            # keeps what it has (clearing it would make a busy channel thrash).
            if len(self._cache) < 1024:
                self._cache[event] = found
        return found

    def group_registrations_for(self, group: str, event: str) -> tuple[Registration, ...]:
        """The registrations of consumer group ``group`` whose pattern matches ``event``."""
        found = self._cache.get((group, event))
        if found is None:
            found = self._matching(event, group)
            if len(self._cache) < 1024:
                self._cache[group, event] = found
        return found

    def _matching(self, event: str, group: str | None) -> tuple[Registration, ...]:
        return tuple(
            registration
            for pattern, registrations in self._patterns.items()
            if compile_glob(pattern)(event)
            for registration in registrations.values()
            if registration.group == group
        )

    def _group_names(self) -> set[str]:
        """The consumer groups with registrations here."""
        return {
            registration.group
            for registrations in self._patterns.values()
            for registration in registrations.values()
            if registration.group is not None
        }

    def _has(self, pattern: str, callback: Callable[..., Any], group: str | None = None) -> bool:
        registrations = self._patterns.get(pattern)
        return registrations is not None and _key(callback, group) in registrations

    def _add(self, registration: Registration) -> bool:
        registrations = self._patterns.setdefault(registration.key, {})
        key = _key(registration.callback, registration.group)
        if key in registrations:
            return False
        registrations[key] = registration
        self._cache.clear()
        self._all = None
        return True

    def _remove(
        self,
        pattern: str,
        callback: Callable[..., Any] | None = None,
        registration: Registration | None = None,
        group: str | None = None,
    ) -> bool:
        registrations = self._patterns.get(pattern)
        if registrations is None:
            return False
        if registration is not None:
            key = _key(registration.callback, registration.group)
        else:
            key = _key(callback, group)
        candidate = registrations.get(key)
        if candidate is None or (registration is not None and candidate is not registration):
            return False
        candidate.active = False
        del registrations[key]
        if not registrations:
            del self._patterns[pattern]
        self._cache.clear()
        self._all = None
        return True

    def _all_registrations(self) -> list[Registration]:
        """Every registration, those of consumer groups included."""
        return [r for registrations in self._patterns.values() for r in registrations.values()]

    def _registrations(self) -> tuple[Registration, ...]:
        """Every registration, those of consumer groups aside."""
        if self._all is None:
            self._all = tuple(
                r
                for registrations in self._patterns.values()
                for r in registrations.values()
                if r.group is None
            )
        return self._all


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
        self._check_protocol()
        opts = Options.from_kwargs(options)
        #: Durable channels by broker name, with their retention.
        self._durable = self._durable_channels(durable)
        self._compose(
            self._store.broker,
            opts,
            logger,
            Hooks(
                deliver=self._deliver,
                on_status=self._on_status,
                on_refused=self._on_refused,
                on_subscribed=self._on_subscribed,
                before_close=self._before_close,
                removed=self._removed,
                start_actors=self._start_actors,
                after_run=self._after_run,
            ),
        )
        self._dispatcher = self._runtime.new_dispatcher(self._stats)
        self._upkeep = (
            Upkeep(self._save_position, self._recheck, opts.recheck_interval, self._logger)
            if self._durable
            else None
        )
        # Status events are counted apart from the broker's messages.
        self._status_counters = Counters()
        self._status_dispatcher = self._runtime.new_dispatcher(self._status_counters)
        # Keyed by broker name. Subscribed channels also have a mailbox and an actor.
        self._channels: dict[str, Channel] = {}
        self._router = Router(self._stats, self._slow_consumer, self._runtime.spawn)
        self._decode_event = envelope_decoder(self._protocol)
        self._groups = Groups(
            query=self._connection.query,
            actors=self._actors,
            router=self._router,
            options=opts,
            stats=self._stats,
            logger=self._logger,
            decode=self._decode_event,
            emit=self._emit,
            removed=self._removed,
            retention=lambda name: self._durable.get(name, DEFAULT_RETENTION),
        )
        self._iterators: set[Mailbox[Any]] = set()
        self._status_actor: DispatchActor | None = None
        self._status_channel = self._new_channel(
            status_channel if status_channel is not None else "server", local=True
        )

    def _check_protocol(self) -> None:
        """Refuse, up front, a codec that cannot encode an event envelope: every
        publish would fail (``tidings.Bytes`` is for `PubSub`)."""
        protocol = self._protocol
        if not callable(getattr(protocol, "encode", None)) or not callable(
            getattr(protocol, "decode", None)
        ):
            raise TypeError(f"protocol must have encode() and decode(), got {protocol!r}")
        try:
            protocol.encode({"channel": "c", "event": "e", "data": None})
        except Exception as exc:
            raise TypeError(
                f"Channels needs a protocol that encodes event envelopes (dicts); "
                f"{protocol!r} cannot ({type(exc).__name__}: {exc}). tidings.Bytes passes "
                "bytes through: use it with a PubSub"
            ) from exc

    def _durable_channels(
        self, durable: Iterable[str] | Mapping[str, Retention] | None
    ) -> dict[str, Retention]:
        if durable is None:
            return {}
        if isinstance(durable, str | bytes):
            raise TypeError(
                f"durable= takes an iterable of channel names or a mapping of name -> "
                f"Retention, not a single {type(durable).__name__}: {durable!r}"
            )
        if isinstance(durable, Mapping):
            items = list(durable.items())
        else:
            items = [(name, DEFAULT_RETENTION) for name in durable]
        channels: dict[str, Retention] = {}
        for name, retention in items:
            if not isinstance(retention, Retention):
                raise TypeError(
                    f"durable={{{name!r}: ...}} takes a tidings.Retention, not {retention!r}"
                )
            channels[self._namespace.broker_name(name)] = retention
        return channels

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
        return self._status_channel

    def channel(self, name: str, create: bool = True) -> Channel | None:
        """The channel called ``name`` (namespace prefix optional).

        With ``create=True`` a missing channel is created, with no callbacks (and so
        not subscribed); with ``create=False`` a missing channel gives ``None``.
        """
        broker_name = self._namespace.broker_name(name)
        channel = self._channels.get(broker_name)
        if channel is None and create:
            channel = self._new_channel(name)
        return channel

    def __len__(self) -> int:
        return len(self._channels)

    def __contains__(self, name: object) -> bool:
        try:
            return self._namespace.broker_name(name) in self._channels
        except ValueError:
            return False

    def __iter__(self) -> Iterator[Channel]:
        return iter(tuple(self._channels.values()))

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
        msgspec converts to) gives the callback ``data`` converted to ``T``; an event
        whose data does not fit is not passed to it, and is counted in
        ``decode_errors`` (and logged, once per minute at most).

        Raises:
            ValueError: an empty or non-str channel name or event pattern, or a
                ``since`` other than ``"new"``, a ``consumer`` or a ``group`` on a
                channel that is not durable (or ``consumer`` with ``group``).
            TypeError: ``callback`` is not callable, or ``schema`` is no type msgspec
                can convert to.
            RuntimeError: not running, or closed.
            ReplyError: the broker refused the subscription (nothing was registered).
            BrokerError: a durable channel's log could not be reached.
        """
        checked = self._checked(channel, event, callback, since, consumer, group, schema)
        [target] = await self._register([checked], "register")
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
        items = []
        for item in registrations:
            if not isinstance(item, tuple) or len(item) != 3:
                raise TypeError(
                    f"register_many takes (channel, event, callback) tuples, not {item!r:.80}"
                )
            items.append(self._checked(*item))
        return await self._register(items, "register_many")

    def _checked(
        self,
        channel: str,
        event: str,
        callback: Callback,
        since: Any = "new",
        consumer: str | None = None,
        group: str | None = None,
        schema: Any = None,
    ) -> _Item:
        broker_name, name = self._namespace.names(channel)
        check_event(event, "event pattern")
        if not callable(callback):
            raise TypeError(
                f"callback must be callable, not {type(callback).__name__}: {callback!r}"
            )
        if schema is not None:
            callback = _Typed(callback, schema, self._logger, name)
        start: tuple[int, bool] | None = None
        if broker_name in self._durable:
            if not (isinstance(since, str) and since == "new"):
                after, exact = start_after(since)
                start = position(after), exact
        elif (
            not (isinstance(since, str) and since == "new")
            or consumer is not None
            or group is not None
        ):
            what = (
                f"group={group!r}"
                if group is not None
                else f"consumer={consumer!r}"
                if consumer is not None
                else f"since={since!r}"
            )
            raise ValueError(
                f"{what} needs a durable channel, and {name!r} is not one "
                "(name it in Channels(durable=...))"
            )
        if consumer is not None:
            check_event(consumer, "consumer name")
        if group is not None:
            check_event(group, "group name")
            if consumer is not None:
                raise ValueError(
                    f"consumer={consumer!r} and group={group!r} do not go together: a "
                    "group keeps its members' place itself"
                )
        return broker_name, name, event, callback, start, consumer, group

    async def _register(self, items: list[_Item], what: str) -> list[Channel]:
        """Register checked items; return once the broker has confirmed them."""
        channels, router = self._channels, self._router
        for broker_name, *_ in items:
            target = channels.get(broker_name)
            if target is None or not target.local or self._runtime.state == "closed":
                # The status channel alone may be given callbacks before run(): it
                # is local, and that is the only way to see the first "connecting".
                self._runtime.check_running(what)
                break
        targets: list[Channel] = []
        # The new registrations in place at once, so that no message the broker sends
        # once subscribed is dispatched before they exist; but deaf (``since``) until
        # the subscription says where the messages new to them start. Channels new
        # here are subscribed apart from those subscribed already: only for these, a
        # round trip tells where that is.
        added: list[tuple[Channel, Registration]] = []
        new: dict[str, list[Registration]] = {}
        known: dict[str, list[Registration]] = {}
        # Durable registrations: where each starts is settled below, before the
        # subscription (the log's end for "new", a named consumer's checkpoint).
        durable: list[tuple[Registration, tuple[int, bool] | None, str | None]] = []
        # Consumer groups to join, with where each starts if it is created.
        groups: dict[tuple[str, str], str] = {}
        for broker_name, name, event, callback, start, consumer, group in items:
            target = channels.get(broker_name)
            if target is None:
                target = self._new_channel(name)
            targets.append(target)
            if target._has(event, callback, group):
                continue
            registration = self._dispatcher_of(target).registration(event, callback, target)
            if target.local:
                actor = router.get(broker_name)
                # Status events already queued came before this registration.
                registration.since = actor.mailbox.routed if actor is not None else 0
                target._add(registration)
                continue
            registration.since = DEAF
            if group is not None:
                registration.group = group
                groups.setdefault(
                    (broker_name, group), "$" if start is None else position_id(start[0])
                )
            elif target.durable:
                durable.append((registration, start, consumer))
            target._add(registration)
            added.append((target, registration))
            if broker_name in known:
                known[broker_name].append(registration)
            elif broker_name in new:
                new[broker_name].append(registration)
            elif broker_name in router:
                known[broker_name] = [registration]
            else:
                self._new_actor(target)  # before the subscription: no message is missed
                new[broker_name] = [registration]
        if not added:
            await checkpoint()
            return targets
        try:
            await self._place(durable)
            await self._groups.create(groups)
            for subscribing in (new, known):
                if subscribing:
                    await self._connection.subscribe(
                        channels=tuple(subscribing), mark=self._mark(subscribing)
                    )
        except BaseException:
            for target, registration in added:
                actor = router.get(target.broker_name)
                if isinstance(actor, DurableActor) and registration.cursor is not None:
                    actor.verify.pop(registration.cursor, None)  # nobody starts there now
                if target._remove(registration.key, registration=registration) and not len(target):
                    self._drop(target)
            raise
        for registration, _, consumer in durable:
            if consumer is not None:
                assert self._upkeep is not None
                self._upkeep.watch(registration, registration.owner.broker_name, consumer)
        for target, registration in added:
            if registration.group is not None and registration.active:
                registration.since = 0  # registered: its group may call it now
                self._groups.join(target, registration.group)
        for target in {
            target.broker_name: target for target, _ in added if target.durable
        }.values():
            self._catch_up(target, broken=False)  # for the newcomers
        # A channel dropped meanwhile took its registrations along: make them again.
        again = [
            item
            for item, target in zip(items, targets, strict=True)
            if channels.get(target.broker_name) is not target
        ]
        if again:
            redone = iter(await self._register(again, what))
            targets = [
                target if channels.get(target.broker_name) is target else next(redone)
                for target in targets
            ]
        return targets

    def _mark(self, group: dict[str, list[Registration]]) -> Callable[[], None]:
        """Where the messages new to these registrations start: the position of
        their channel's mailbox when the subscription says so."""

        def mark() -> None:
            for broker_name, registrations in group.items():
                actor = self._router.get(broker_name)
                if actor is not None:
                    for registration in registrations:
                        if registration.cursor is None and not registration.owner.durable:
                            registration.since = actor.mailbox.routed

        return mark

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
        check_event(event, "event pattern")
        if group is not None:
            check_event(group, "group name")
        target = self._channels.get(broker_name)
        if target is None or not target.local or self._runtime.state == "closed":
            self._runtime.check_running("unregister")
        if target is None:
            await checkpoint()
            return None
        # Applied at once, before any wait: cancelled afterwards, while the broker
        # confirms, the callback is still gone and the unsubscription still made.
        await checkpoint_if_cancelled()
        if self._unregister_now(target, event, callback, group):
            await self._connection.unsubscribe()
        else:
            await cancel_shielded_checkpoint()
        return target

    def _forget(self, channel: str, event: str, callback: Callback, group: str | None) -> None:
        target = self._channels.get(self._namespace.broker_name(channel))
        if target is not None:
            self._unregister_now(target, event, callback, group)

    def _unregister_now(
        self, target: Channel, event: str, callback: Callback, group: str | None
    ) -> bool:
        """Remove a registration, at once; True if its channel is to be unsubscribed."""
        removed = target._remove(event, callback, group=group)
        if removed and group is not None and group not in target._group_names():
            self._groups.leave(target, [group])
        if removed and not len(target) and not target.local:
            self._drop(target)
            return True
        return False

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

        ::

            async with channels.subscribe("orders", "created") as events:
                async for ev in events:
                    print(ev.channel, ev.event, ev.data)

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
        # The same checks as register, before any I/O.
        self._checked(channel, event, print, since, None, group, schema)
        if group is not None:
            return self._work(channel, event, since, group, schema)
        return self._iterate(channel, event, since, schema)

    @asynccontextmanager
    async def _iterate(
        self, channel: str, event: str, since: Any, schema: Any
    ) -> AsyncIterator[Events[Any]]:
        # A durable channel's iterator never drops: a full iterator makes the
        # channel wait, and what its own mailbox then refuses is read back later.
        durable = self._namespace.broker_name(channel) in self._durable
        overflow = "block" if durable else self._options.overflow
        mailbox: Mailbox[Event[Any]] = Mailbox(self._options.max_pending, overflow)

        async def put(ch: Channel, name: str, data: Any) -> None:
            if await mailbox.put([Event(ch.name, name, data, ch._event_id)]):
                raise CallbackError("the iterator is closed")  # block mode, closed

        def put_nowait(ch: Channel, name: str, data: Any) -> None:
            was_overflowing = mailbox.overflowing
            if mailbox.put_nowait([Event(ch.name, name, data, ch._event_id)]):
                if mailbox.closed:
                    raise CallbackError("the iterator is closed")
                if not was_overflowing:
                    self._slow_consumer(ch.broker_name, 1)
                raise Undelivered

        callback: Callable[[Channel, str, Any], Any] = put if overflow == "block" else put_nowait
        self._iterators.add(mailbox)
        try:
            await self.register(channel, event, callback, since=since, schema=schema)
            yield Events(mailbox)
        finally:
            self._iterators.discard(mailbox)
            # Counted as delivered when it reached the iterator; what the consumer
            # leaves unread when it leaves the block is its own choice.
            mailbox.discard()
            if self._runtime.state == "running":
                with anyio.move_on_after(1.0, shield=True):
                    await self.unregister(channel, event, callback)
            else:  # closed: forget it here (a restart must not subscribe it again)
                self._forget(channel, event, callback, None)

    @asynccontextmanager
    async def _work(
        self, channel: str, event: str, since: Any, group: str, schema: Any
    ) -> AsyncIterator[Events[Any]]:
        # One event at a time: the member waits for the consumer to be done with it.
        mailbox: Mailbox[_Job] = Mailbox(1, "block")
        events: _GroupEvents[Any] = _GroupEvents(mailbox)

        async def take(ch: Channel, name: str, data: Any) -> None:
            job = _Job(Event(ch.name, name, data, ch._event_id, ch._deliveries))
            if await mailbox.put([job]):
                raise Undelivered  # the consumer is gone: another member takes it
            await job.done.wait()
            if job.error is not None:
                raise job.error

        target = await self.register(channel, event, take, since=since, group=group, schema=schema)
        self._iterators.add(mailbox)
        failed: BaseException | None = None
        try:
            yield events
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self._iterators.discard(mailbox)
            unread = events._unread()
            mailbox.discard()
            # Unregistered before the events in hand are settled: one handed back
            # must not come straight back to this iterator.
            unsubscribe = self._unregister_now(target, event, take, group)
            unsubscribe = unsubscribe and self._runtime.state == "running"
            events._settle(failed, unread)
            if unsubscribe:
                with anyio.move_on_after(1.0, shield=True):
                    await self._connection.unsubscribe()

    # -- publishing ---------------------------------------------------------------------

    async def publish(self, channel: str, event: str, data: Any = None) -> int:
        """Publish ``event`` with ``data`` on ``channel``.

        The message is ``{"channel": channel, "event": event, "data": data}``, encoded
        by the protocol. While disconnected it waits for the connection, up to
        ``publish_timeout`` seconds.

        Returns:
            How many subscriptions the broker delivered it to.

        Raises:
            ValueError: an empty or non-str channel or event name.
            TypeError: ``data`` cannot be encoded by the protocol.
            RuntimeError: not running, or closed.
            PublishError: no connection within ``publish_timeout``, closed while
                waiting, or the connection broke while publishing.
        """
        broker_name, name = self._namespace.names(channel)
        if type(event) is not str or not event:
            check_event(event)  # raises, naming the bad value
        payload = self._protocol.encode({"channel": name, "event": event, "data": data})
        if not self._runtime.accepting:
            self._runtime.check_running("publish")
        if self._durable:
            retention = self._durable.get(broker_name)
            if retention is not None:
                return await self._connection.publish(broker_name, payload, retention)
        return await self._connection.publish(broker_name, payload)

    # -- internals ----------------------------------------------------------------------

    def _new_channel(self, name: str, *, local: bool = False) -> Channel:
        broker_name = self._namespace.broker_name(name)
        channel = Channel(
            self._namespace.user_name(broker_name),
            broker_name,
            local=local,
            durable=not local and broker_name in self._durable,
        )
        self._channels[broker_name] = channel
        return channel

    def _dispatcher_of(self, channel: Channel) -> Dispatcher:
        return self._status_dispatcher if channel.local else self._dispatcher

    def _new_actor(self, channel: Channel) -> DispatchActor:
        """The actor of ``channel``, routed to from now on.

        A channel's actor is lazy: it runs in the reader, in place, until a callback
        awaits. The status channel's always has a task: status events are emitted
        from inside the connection supervisor, which must not run callbacks.
        """
        local, name = channel.local, channel.broker_name
        mailbox: Mailbox[Any] = Mailbox(self._options.max_pending, self._options.overflow)
        dispatch: dict[str, Any] = {
            "owner": channel,
            "where": _channel_where,
            "registrations_for": Channel.registrations_for,
            "found": channel._cache,
            "logger": self._logger,
        }
        actor: DispatchActor
        if channel.durable:
            actor = DurableActor(
                name,
                mailbox,
                registrations=channel._registrations,
                read=lambda start, count: self._read_query(
                    f"read the log of {name!r}", lambda p: p.read(name, start, count)
                ),
                tail=lambda: self._tail(name),
                on_gap=lambda reason, last, next_: self._gap(channel, reason, last, next_),
                decode=self._decode_event,
                dispatcher=self._dispatcher,
                stats=self._stats,
                **dispatch,
            )
        else:
            actor = DispatchActor(
                name,
                mailbox,
                decode=_status_decode if local else self._decode_event,
                dispatcher=self._dispatcher_of(channel),
                stats=self._status_counters if local else self._stats,
                lazy=not local,
                **dispatch,
            )
        self._router.add(channel.broker_name, actor)
        if local and self._actors.running:  # (not when cancelled while starting)
            self._actors.start(actor)
        return actor

    async def _place(
        self, durable: list[tuple[Registration, tuple[int, bool] | None, str | None]]
    ) -> None:
        """Give durable registrations the log position each starts after: a named
        consumer's checkpoint, else ``since=``, else (``"new"``) the log's end now.

        They stay deaf with no cursor until all are known, so that no catch-up read
        meanwhile starts one at the wrong place; then each channel's next catch-up
        takes them there (checking that an entry they start after is in the log).
        """
        cursors: list[tuple[Registration, int, str | None]] = []
        tails: dict[str, int] = {}
        for registration, start, consumer in durable:
            name = registration.owner.broker_name
            saved = await self._load_position(name, consumer) if consumer is not None else None
            if saved is not None:  # it has been here before: on from there
                cursors.append((registration, position(saved), "trimmed"))
            elif start is not None:
                cursors.append((registration, start[0], "missing" if start[1] else None))
            else:
                if name not in tails:
                    tail = await self._tail(name)
                    tails[name] = position(tail) if tail is not None else 0
                cursors.append((registration, tails[name], None))
        for registration, cursor, reason in cursors:
            registration.cursor = cursor
            if reason is not None:
                self._verify(registration, reason)

    def _verify(self, registration: Registration, reason: str) -> None:
        """The entry ``registration`` starts after must be in the log: its actor's
        next catch-up checks it, and reports a gap with ``reason`` if it is not."""
        actor = self._router.get(registration.owner.broker_name)
        if isinstance(actor, DurableActor) and registration.cursor is not None:
            actor.verify[registration.cursor] = reason

    async def _read_query(self, what: str, command: Callable[[Publisher], Awaitable[T]]) -> T:
        """A query that only reads: on a connection lost under it (cut a moment
        ago, not yet noticed), asked once more on the next connection."""
        try:
            return await self._connection.query(what, command)
        except ReplyError:
            raise
        except BrokerError:
            return await self._connection.query(what, command)

    async def _load_position(self, name: str, consumer: str) -> str | None:
        async def load(publisher: Publisher) -> str | None:
            return await publisher.load_position(name, consumer)

        return await self._read_query(f"read the position of {consumer!r}", load)

    async def _save_position(self, name: str, consumer: str, entry_id: str) -> None:
        async def save(publisher: Publisher) -> None:
            await publisher.save_position(name, consumer, entry_id)

        await self._connection.query(f"save the position of {consumer!r}", save)

    async def _tail(self, name: str) -> str | None:
        """The id of the last entry in a durable channel's log (None: no log)."""

        async def tail(publisher: Publisher) -> str | None:
            return await publisher.tail(name)

        return await self._read_query(f"read the end of {name!r}", tail)

    def _catch_up(self, channel: Channel, broken: bool = True) -> None:
        """Have a durable channel's actor read its log before more live messages
        (see ``DurableActor.catch_up``)."""
        actor = self._router.get(channel.broker_name)
        if isinstance(actor, DurableActor):
            actor.catch_up(broken)
            if not actor.running:
                self._runtime.spawn(actor, None)

    def _recheck(self) -> None:
        """Have the idle durable channels read their logs (events stored without a
        live copy); the busy ones will, at their next catch-up."""
        for _, actor in self._router:
            if isinstance(actor, DurableActor) and not actor.mailbox.pending and not actor.backlog:
                self._catch_up(actor.owner)

    def _on_subscribed(self, names: tuple[str, ...]) -> None:
        # (Re)subscribed: whatever was published while the live stream was off is
        # in the logs of the durable channels.
        if self._durable:
            for name in names:
                channel = self._channels.get(name)
                if channel is not None and channel.durable:
                    self._catch_up(channel)
            self._groups.wake(names)

    def _gap(self, channel: Channel, reason: str, last: str, next_: str | None) -> None:
        self._logger.warning(
            "durable channel %r lost events: %s after %s (next: %s)",
            channel.name,
            reason,
            last,
            next_,
        )
        self._emit(
            "gap", {"channel": channel.name, "reason": reason, "last_id": last, "next_id": next_}
        )

    def _drop(self, channel: Channel) -> None:
        """Forget a channel and unsubscribe it; what is queued for it counts as dropped.

        An older object of a name re-created since is gone already: nothing to do.
        """
        name = channel.broker_name
        if self._channels.get(name) is not channel:
            return
        del self._channels[name]
        self._groups.leave(channel)
        actor = self._router.remove(name)
        if actor is not None:
            self._stats.dropped += self._actors.stop(actor)
        self._connection.unsubscribe_nowait(channels=(name,))

    def _removed(self, registration: Registration) -> None:
        """The dispatcher removed a failing (or finished) callback."""
        channel: Channel = registration.owner
        removed = channel._remove(registration.key, registration=registration)
        group = registration.group
        if removed and group is not None and group not in channel._group_names():
            self._groups.leave(channel, [group])
        if removed and not len(channel) and not channel.local:
            self._drop(channel)

    def _on_refused(
        self, channels: tuple[str, ...], patterns: tuple[str, ...], error: ReplyError
    ) -> None:
        # The registrations of a refused channel are rolled back whole: whoever
        # waits for them gets the error, and a resubscription refused after a
        # reconnect is logged (by the connection supervisor) and not retried.
        for name in channels:
            channel = self._channels.get(name)
            if channel is not None and not channel.local:
                for registration in channel._registrations():
                    channel._remove(registration.key, registration=registration)
                self._drop(channel)

    def _start_actors(self) -> None:
        self._status_actor = self._new_actor(self._status_channel)
        if self._upkeep is not None and self._actors.running:
            self._actors.start(self._upkeep)
        # Started again after a close: the channels it kept get their actors back,
        # and their registrations count from the new mailboxes (a durable
        # registration keeps its place in the log: it catches up once subscribed).
        for channel in self._channels.values():
            for registration in channel._all_registrations():
                if not (channel.durable and registration.group is None):
                    registration.since = 0
            if not channel.local:
                self._new_actor(channel)
                for group in channel._group_names():
                    self._groups.join(channel, group)

    async def _deliver(self, batch: list[Message]) -> None:
        await self._router.deliver(batch)

    def _slow_consumer(self, broker_name: str, dropped: int) -> None:
        channel = self._channels.get(broker_name)
        name = channel.name if channel is not None else broker_name
        self._logger.warning(
            "channel %r is not keeping up: mailbox full (max_pending=%d), dropping messages",
            name,
            self._options.max_pending,
        )
        self._emit(
            "slow_consumer",
            {"channel": name, "dropped": dropped, "max_pending": self._options.max_pending},
        )

    def _on_status(self, status: StatusType, data: dict[str, Any]) -> None:
        self._emit(status.name, data)
        if status is StatusType.disconnected and self._durable:
            # The live stream is cut: whatever comes next may follow a gap. Each
            # durable channel reads its log before any live message received from
            # now on (its read waits for the new connection to be subscribed).
            for channel in list(self._channels.values()):
                if channel.durable:
                    self._catch_up(channel)

    async def _before_close(self) -> None:
        await self._groups.leave_all()
        if self._upkeep is not None:
            await self._upkeep.flush()

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        dropped = self._router.put_nowait(self._status_channel.broker_name, [(event, data)])
        if dropped:  # None: not running, nobody can be listening
            self._logger.warning(
                "status event %r dropped: status callbacks are not keeping up", event
            )

    async def _after_run(self) -> None:
        self._groups.forget()
        for mailbox in tuple(self._iterators):
            mailbox.close()  # the consumer takes what is left, then the iteration ends
        for actor in self._actors.leftovers():
            if actor is not self._status_actor:  # past close_timeout: undelivered
                self._stats.dropped += actor.discard()
        if self._status_actor is not None:
            # Cancelled before the status actor could deliver the last events
            # ("closed" among them): deliver them here, bounded by the caller.
            await self._status_actor.drain()
        status = self._status_channel.broker_name
        for name, actor in self._router:
            self._router.remove(name)
            discarded = actor.mailbox.discard()  # what close_timeout left undelivered
            if name != status:
                self._stats.dropped += discarded

    def stats(self) -> Stats:
        """A snapshot of the counters (status events counted apart, in ``status_events``)."""
        status = self._status_counters
        return dataclasses.replace(
            self._stats.snapshot(),
            status_events=status.delivered,
            callback_errors=self._stats.callback_errors + status.callback_errors,
            callbacks_removed=self._stats.callbacks_removed + status.callbacks_removed,
        )


#: Seconds between two warnings of a registration's data not fitting its schema.
UNFIT_LOG_INTERVAL = 60.0


class _Typed:
    """A callback given its data converted to ``schema`` (``register(..., schema=)``).

    It stands for the callback itself (equal to it, hashed like it), so that the
    same callback is found, deduplicated and unregistered whatever its schema.
    Data that does not fit raises `Unfit`: counted as a decode error by the
    dispatcher, and logged here, once per interval, with how many were not.
    """

    __slots__ = ("_logger", "_quiet_until", "_unlogged", "_where", "callback", "schema")

    def __init__(self, callback: Callable[..., Any], schema: Any, logger: Any, where: str) -> None:
        try:
            msgspec.json.Decoder(schema)  # refuses types msgspec cannot convert to
        except TypeError as exc:
            raise TypeError(f"schema={schema!r} is not a type msgspec converts to: {exc}") from None
        self.callback = callback
        self.schema = schema
        self._logger = logger
        self._where = where
        self._quiet_until = -float("inf")
        self._unlogged = 0

    def __call__(self, channel: Channel, event: str, data: Any) -> Any:
        try:
            data = msgspec.convert(data, self.schema)
        except msgspec.ValidationError as exc:
            self._unfit(event, exc)
            raise Unfit(str(exc)) from None
        return self.callback(channel, event, data)

    def _unfit(self, event: str, exc: msgspec.ValidationError) -> None:
        now = anyio.current_time()
        if now < self._quiet_until:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last warning)" if self._unlogged else ""
        self._logger.warning(
            "channel %r: event %r does not fit schema %s of %r: %s%s",
            self._where,
            event,
            getattr(self.schema, "__name__", self.schema),
            self.callback,
            exc,
            more,
        )
        self._quiet_until, self._unlogged = now + UNFIT_LOG_INTERVAL, 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Typed):
            return bool(self.callback == other.callback)
        return bool(self.callback == other)

    def __hash__(self) -> int:
        return hash(self.callback)

    def __repr__(self) -> str:
        return f"{self.callback!r} (schema {getattr(self.schema, '__name__', self.schema)})"


class _Unhashable:
    """A callback that cannot be a dict key, compared with ``==`` as ever (all of
    them share one hash bucket: rare, and correct)."""

    __slots__ = ("callback",)

    def __init__(self, callback: object) -> None:
        self.callback = callback

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable) and bool(self.callback == other.callback)

    def __hash__(self) -> int:
        return 0


def _key(callback: object, group: str | None = None) -> object:
    """How a channel finds a callback among those of a pattern (a callback of a
    consumer group is another registration than the same one outside it)."""
    try:
        hash(callback)
    except TypeError:
        callback = _Unhashable(callback)
    return callback if group is None else (group, callback)


def _channel_where(channel: Channel, message: Any) -> str:
    """How logs name a channel actor's messages."""
    return f"channel {channel.broker_name!r}"


def _status_decode(channel: Channel, message: tuple[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """Status events are queued as ``(event, data)``: nothing to decode."""
    return message[0], (channel, message[0], message[1])


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

    ::

        async with tidings.open_channels("redis://localhost", namespace="shop") as channels:
            ...
    """
    return Channels(
        store, namespace, status_channel, logger, protocol=protocol, durable=durable, **options
    )
