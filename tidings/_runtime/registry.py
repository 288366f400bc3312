"""The registry of a `Channels` handler: every channel and registration, changed
in one transaction, removed by one cascade.

Registering is a transaction in three steps, as httpcore's connection pool assigns
requests: **decide** synchronously what changes (`_Plan`: the registrations added,
deaf until subscribed; the channels new here, given their actor before any message
can come; the logs to place and the groups to create), then do the **I/O** (place
durable registrations, create groups, subscribe), then **commit** (consumers
watched, groups joined, newcomers caught up) or, on any exception, cancellation
included, **roll back** everything the plan added in one place, through the same
removal cascade `unregister()` uses. Nothing is awaited between deciding and adding,
so concurrent transactions see each other's registrations.

Removal has one cascade (`remove()`): the registration goes; a group left with no
callbacks here is left; a channel left with none is dropped (its actor stopped, its
backlog counted as dropped) and unsubscribed. A callback's own removal (failing, or
raising `CallbackError`), ``unregister``, a rollback and a refused subscription all
go through it.

Data flows one way, from the reader to the callbacks::

    reader ─► Router ─► mailbox ─► actor (DispatchActor | DurableActor) ─► callbacks
                                      └─ wakes GroupMember ─► callbacks of a group

The registry sets that path up and takes it down; nothing on it calls back up here
except the dispatcher's removal of a callback, a plain function call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ..actors.callbacks import DEAF, Registration
from ..actors.dispatch import DispatchActor, envelope_decoder
from ..actors.mailbox import Mailbox
from ..actors.router import Router
from ..actors.typed import Typed
from ..errors import ReplyError
from ..policies.names import Namespace
from ..policies.status import StatusType
from ..policies.streams import Retention, position_id
from ..protocols import Codec
from ..stats import Stats
from ..types import Channel
from .channel import ChannelState
from .lifecycle import Hooks, Runtime
from .logs import Logs, Placement
from .status import StatusChannel
from .telemetry import Telemetry
from .work_queues import Groups

__all__ = ["Registry", "Wanted"]


@dataclass(frozen=True, slots=True)
class Wanted:
    """A registration asked for, checked (names valid, options consistent)."""

    broker_name: str
    name: str
    #: The event pattern.
    event: str
    callback: Callable[..., Any]
    #: On a durable channel, the position ``since=`` starts after and whether that
    #: names an entry (None: "new").
    start: tuple[int, bool] | None = None
    consumer: str | None = None
    group: str | None = None
    #: An iterator's feed: called with the delivery's metadata too.
    takes_meta: bool = False
    #: The type the data is converted to before the call (``schema=``), if any.
    schema: Any = None


@dataclass(slots=True)
class _Plan:
    """What one registration transaction adds (decided before any I/O)."""

    #: The channel of each item asked for, in order.
    targets: list[ChannelState] = field(default_factory=list)
    #: Every registration added, with its channel.
    added: list[Registration] = field(default_factory=list)
    #: Registrations to subscribe, by channel: channels new here (subscribed apart
    #: from the known ones: only for those a round trip tells where new messages start).
    new: dict[str, list[Registration]] = field(default_factory=dict)
    known: dict[str, list[Registration]] = field(default_factory=dict)
    #: Durable registrations to place in their logs.
    placed: list[Placement] = field(default_factory=list)
    #: Consumer groups to create: (channel, group) -> where a new one starts.
    groups: dict[tuple[str, str], str] = field(default_factory=dict)


class _Mark:
    """Where the messages new to a round of registrations start: each one's channel's
    mailbox position when the subscription says so (called once, by the connection
    supervisor, possibly in the reader)."""

    __slots__ = ("_registrations", "_router")

    def __init__(self, router: Router, registrations: dict[str, list[Registration]]) -> None:
        self._router = router
        self._registrations = registrations

    def __call__(self) -> None:
        for broker_name, registrations in self._registrations.items():
            actor = self._router.get(broker_name)
            if actor is not None:
                for registration in registrations:
                    if registration.cursor is None and not registration.owner.durable:
                        registration.since = actor.mailbox.routed


class Registry:
    """Every channel of one handler, its registrations, and the actors they need."""

    def __init__(
        self,
        runtime: Runtime,
        namespace: Namespace,
        status_channel: str,
        protocol: Codec,
        durable: dict[str, Retention],
    ) -> None:
        self._runtime = runtime
        self._router = runtime.router
        self._connection = runtime.connection
        self._options = runtime.options
        self._stats = runtime.stats
        self._logger = runtime.logger
        self.namespace = namespace
        #: Keyed by broker name. Subscribed channels also have an actor.
        self.channels: dict[str, ChannelState] = {}
        self.dispatcher = runtime.new_dispatcher(runtime.stats, self.removed)
        #: The handler's OpenTelemetry instrumentation (None: off, or not installed).
        self.telemetry = Telemetry.load(
            runtime.options.telemetry,
            system=runtime.connection.broker.system,
            stats=runtime.stats,
            router=runtime.router,
        )
        self.decode = envelope_decoder(protocol)
        broker_name = namespace.broker_name(status_channel)
        self.status = StatusChannel(
            namespace.user_name(broker_name),
            broker_name,
            router=runtime.router,
            actors=runtime.actors,
            options=runtime.options,
            logger=runtime.logger,
            removed=self.removed,
        )
        self.logs = (
            Logs(
                durable,
                connection=runtime.connection,
                router=runtime.router,
                actors=runtime.actors,
                spawn=runtime.spawn,
                emit=self.status.emit,
                recheck_interval=runtime.options.recheck_interval,
                logger=runtime.logger,
            )
            if durable
            else None
        )
        self.groups = Groups(
            query=runtime.connection.query,
            actors=runtime.actors,
            router=runtime.router,
            options=runtime.options,
            stats=runtime.stats,
            logger=runtime.logger,
            decode=self.decode,
            encode=protocol.encode,
            dispatcher=self.dispatcher,
            emit=self.status.emit,
            retention=self.logs.retention_of if self.logs is not None else _no_retention,
        )
        #: The mailboxes of the iterators open now (closed when the handler stops).
        self.iterators: set[Mailbox[Any]] = set()

    def hooks(self) -> Hooks:
        """What the runtime is to tell this registry, at each turn of the handler's
        life (the handler wires them: ``runtime.hooks = registry.hooks()``)."""
        return Hooks(
            removed=self.removed,
            start_actors=self._start_actors,
            after_run=self._after_run,
            on_status=self._on_status,
            on_refused=self._on_refused,
            on_subscribed=self._on_subscribed,
            before_close=self._before_close,
            on_slow_consumer=self._slow_consumer,
            describe=self._describe,
            settle=self.groups.settle,
        )

    # -- lookups -----------------------------------------------------------------------

    def is_durable(self, broker_name: str) -> bool:
        return self.logs is not None and broker_name in self.logs

    def state(self, name: str, create: bool = True) -> ChannelState | None:
        """The state of channel ``name`` (namespace prefix optional)."""
        broker_name = self.namespace.broker_name(name)
        if broker_name == self.status.broker_name:
            return self.status.state
        state = self.channels.get(broker_name)
        if state is None and create:
            state = self._new_state(broker_name)
        return state

    def __len__(self) -> int:
        return len(self.channels) + 1  # the status channel

    def __contains__(self, broker_name: str) -> bool:
        return broker_name in self.channels or broker_name == self.status.broker_name

    def __iter__(self) -> Iterator[Channel]:
        return iter([self.status.channel, *(state.channel for state in self.channels.values())])

    def _new_state(self, broker_name: str) -> ChannelState:
        state = ChannelState(
            self.namespace.user_name(broker_name),
            broker_name,
            durable=self.is_durable(broker_name),
        )
        self.channels[broker_name] = state
        return state

    # -- registering -------------------------------------------------------------------

    async def register(self, items: list[Wanted], what: str) -> list[Channel]:
        """Register checked items; return once the broker has confirmed them.

        A channel dropped while its registration was being made (its last other
        callback removed meanwhile) took the registration along: it is made again,
        in a transaction of its own, until it holds.
        """
        self._check_running(items, what)
        targets: list[ChannelState | None] = [None] * len(items)
        todo = list(range(len(items)))
        while todo:
            made = await self._transaction([items[i] for i in todo])
            for index, state in zip(todo, made, strict=True):
                targets[index] = state
            todo = [i for i in todo if not self._current(targets[i])]
        return [state.channel for state in targets if state is not None]

    def _check_running(self, items: list[Wanted], what: str) -> None:
        # The status channel alone may be given callbacks before run(): it is local,
        # and that is the only way to see the first "connecting".
        status = self.status.broker_name
        if self._runtime.state == "closed" or any(i.broker_name != status for i in items):
            self._runtime.check_running(what)

    def _current(self, state: ChannelState | None) -> bool:
        return state is not None and (
            state is self.status.state or self.channels.get(state.broker_name) is state
        )

    async def _transaction(self, items: list[Wanted]) -> list[ChannelState]:
        plan = self._decide(items)
        if not plan.added:
            await checkpoint()
            return plan.targets
        try:
            if self.logs is not None and plan.placed:
                await self.logs.place(plan.placed)
            await self.groups.create(plan.groups)
            for subscribing in (plan.new, plan.known):
                if subscribing:
                    await self._connection.subscribe(
                        channels=tuple(subscribing), mark=_Mark(self._router, subscribing)
                    )
        except BaseException:
            for registration in plan.added:
                if self.logs is not None:
                    self.logs.unplace(registration)
                self.remove(registration)
            raise
        self._commit(plan)
        return plan.targets

    def _decide(self, items: list[Wanted]) -> _Plan:
        """Add the registrations at once (no await here), deaf until subscribed, so
        that no message the broker sends once subscribed is dispatched before they
        exist; give each channel new here its actor before it is subscribed."""
        plan = _Plan()
        for item in items:
            if item.broker_name == self.status.broker_name:
                self.status.register(item.event, item.callback)
                plan.targets.append(self.status.state)
                continue
            target = self.channels.get(item.broker_name)
            if target is None:
                target = self._new_state(item.broker_name)
            plan.targets.append(target)
            if target.has(item.event, item.callback, item.group):
                continue
            callback, takes_meta = item.callback, item.takes_meta
            if item.schema is not None:
                callback = Typed(callback, item.schema, self._logger, item.name)
            if self.telemetry is not None and not takes_meta:  # (not an iterator's feed)
                callback = self.telemetry.traced(callback, item.broker_name, item.group)
                takes_meta = True
            registration = Registration(item.event, callback, target, takes_meta=takes_meta)
            registration.since = DEAF
            if item.group is not None:
                registration.group = item.group
                plan.groups.setdefault(
                    (item.broker_name, item.group),
                    "$" if item.start is None else position_id(item.start[0]),
                )
            elif target.durable:
                plan.placed.append((registration, item.start, item.consumer))
            target.add(registration)
            plan.added.append(registration)
            name = item.broker_name
            if name in plan.known:
                plan.known[name].append(registration)
            elif name in plan.new:
                plan.new[name].append(registration)
            elif name in self._router:
                plan.known[name] = [registration]
            else:
                self._new_actor(target)  # before the subscription: no message is missed
                plan.new[name] = [registration]
        return plan

    def _commit(self, plan: _Plan) -> None:
        for registration in plan.added:
            if registration.group is not None and registration.active:
                registration.since = 0  # registered: its group may call it now
                self.groups.join(registration.owner, registration.group)
        if self.logs is not None:
            durable = {r.owner.broker_name: r.owner for r in plan.added if r.owner.durable}
            self.logs.commit(plan.placed, durable.values())

    # -- removing ----------------------------------------------------------------------

    def find(
        self, broker_name: str, event: str, callback: Callable[..., Any], group: str | None
    ) -> Registration | None:
        state = self.status.state if broker_name == self.status.broker_name else None
        if state is None:
            state = self.channels.get(broker_name)
        return state.find(event, callback, group) if state is not None else None

    def remove(self, registration: Registration) -> bool:
        """The one removal cascade. Returns True when the registration's channel was
        dropped, so that its unsubscription is to be confirmed."""
        state: ChannelState = registration.owner
        if not state.remove(registration):
            return False
        group = registration.group
        if group is not None and group not in state.group_names():
            self.groups.leave(state, [group])
        if state is self.status.state or len(state.patterns):
            return False
        self._drop(state)
        return True

    def removed(self, registration: Registration) -> None:
        """The dispatcher removed a failing (or finished) callback."""
        self.remove(registration)

    def _drop(self, state: ChannelState) -> None:
        """Forget a channel and unsubscribe it; what is queued for it counts as dropped.

        An older state of a name re-created since is gone already: nothing to do.
        """
        name = state.broker_name
        if self.channels.get(name) is not state:
            return
        del self.channels[name]
        self.groups.leave(state)
        actor = self._router.remove(name)
        if actor is not None:
            self._stats.dropped += self._runtime.actors.stop(actor)
        self._connection.unsubscribe_nowait(channels=(name,))

    async def unregister(
        self, broker_name: str, event: str, callback: Callable[..., Any], group: str | None
    ) -> Channel | None:
        """See `Channels.unregister()` (arguments checked)."""
        state = self.status.state if broker_name == self.status.broker_name else None
        if state is None or self._runtime.state == "closed":
            self._runtime.check_running("unregister")
        if state is None:
            state = self.channels.get(broker_name)
        if state is None:
            await checkpoint()
            return None
        # Applied at once, before any wait: cancelled afterwards, while the broker
        # confirms, the callback is still gone and the unsubscription still made.
        await checkpoint_if_cancelled()
        registration = state.find(event, callback, group)
        if registration is not None and self.remove(registration):
            await self._connection.unsubscribe()
        else:
            await cancel_shielded_checkpoint()
        return state.channel

    # -- actors ------------------------------------------------------------------------

    def _new_actor(self, state: ChannelState) -> DispatchActor:
        """The actor of a channel, routed to from now on. It is lazy: it runs in the
        reader, in place, until a callback awaits."""
        mailbox: Mailbox[Any] = Mailbox(self._options.max_pending, self._options.overflow)
        dispatch: dict[str, Any] = {
            "owner": state.channel,
            "where": _channel_where,
            "registrations_for": state.registrations_for,
            "found": state.found,
            "logger": self._logger,
            "stats": self._stats,
            "decode": self.decode,
            "dispatcher": self.dispatcher,
        }
        actor: DispatchActor
        if state.durable and self.logs is not None:
            actor = self.logs.new_actor(state, mailbox, **dispatch)
        else:
            actor = DispatchActor(state.broker_name, mailbox, lazy=True, **dispatch)
        self._router.add(state.broker_name, actor)
        return actor

    def _start_actors(self) -> None:
        self.status.start()
        if self.telemetry is not None:
            self.telemetry.start()
        if self.logs is not None:
            self.logs.start()
        # Started again after a close: the channels it kept get their actors back,
        # and their registrations count from the new mailboxes (a durable
        # registration keeps its place in the log: it catches up once subscribed).
        for state in self.channels.values():
            for registration in state.all_registrations():
                if not (state.durable and registration.group is None):
                    registration.since = 0
            self._new_actor(state)
            for group in state.group_names():
                self.groups.join(state, group)

    async def _after_run(self) -> None:
        if self.telemetry is not None:
            self.telemetry.stop()
        self.groups.forget()
        for mailbox in tuple(self.iterators):
            mailbox.close()  # the consumer takes what is left, then the iteration ends
        for actor in self._runtime.actors.leftovers():
            if not self.status.owns(actor):  # past close_timeout: undelivered
                self._stats.dropped += actor.discard()
        # Cancelled before the status actor could deliver the last events ("closed"
        # among them): deliver them here, bounded by the caller.
        await self.status.drain()
        for name, actor in self._router:
            self._router.remove(name)
            discarded = actor.mailbox.discard()  # what close_timeout left undelivered
            if name != self.status.broker_name:
                self._stats.dropped += discarded

    # -- what the connection supervisor tells ------------------------------------------

    def _on_status(self, status: StatusType, data: dict[str, Any]) -> None:
        self.status.emit(status.name, data)
        down_for = data.get("down_for")
        if self.telemetry is not None and down_for is not None:
            self.telemetry.reconnected(down_for)
        if status is StatusType.disconnected and self.logs is not None:
            self.logs.on_disconnected(self.channels.values())

    def _on_subscribed(self, names: tuple[str, ...]) -> None:
        if self.logs is not None:
            self.logs.on_subscribed(
                state for name in names if (state := self.channels.get(name)) is not None
            )
            self.groups.wake(names)

    def _on_refused(
        self, channels: tuple[str, ...], patterns: tuple[str, ...], error: ReplyError
    ) -> None:
        # The registrations of a refused channel are rolled back whole: whoever
        # waits for them gets the error, and a resubscription refused after a
        # reconnect is logged (by the connection supervisor) and not retried.
        for name in channels:
            state = self.channels.get(name)
            if state is not None:
                for registration in state.registrations():
                    state.remove(registration)
                self._drop(state)

    async def _before_close(self) -> None:
        await self.groups.leave_all()
        if self.logs is not None:
            await self.logs.flush()

    def _slow_consumer(self, broker_name: str, dropped: int) -> None:
        self.status.emit(
            "slow_consumer",
            {
                "channel": self._describe_name(broker_name),
                "dropped": dropped,
                "max_pending": self._options.max_pending,
            },
        )

    def _describe_name(self, broker_name: str) -> str:
        state = self.channels.get(broker_name)
        return state.name if state is not None else self.namespace.user_name(broker_name)

    def _describe(self, broker_name: str) -> str:
        return f"channel {self._describe_name(broker_name)!r}"

    def stats(self) -> Stats:
        """A snapshot of the counters (status events counted apart)."""
        status = self.status.counters
        snapshot = self._stats.snapshot()
        return dataclasses.replace(
            snapshot,
            status_events=status.delivered,
            callback_errors=snapshot.callback_errors + status.callback_errors,
            callbacks_removed=snapshot.callbacks_removed + status.callbacks_removed,
        )


def _channel_where(channel: Channel, message: Any) -> str:
    """How logs name a channel actor's messages."""
    return f"channel {channel.broker_name!r}"


def _no_retention(name: str) -> Retention:
    raise AssertionError(f"{name!r} is not durable")
