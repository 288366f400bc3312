"""Durable channels: their logs, positions, catch-up reads and gaps, coordinated.

One `Logs` per handler with durable channels. It makes each durable channel's actor
(`DurableActor`), settles where a new registration starts in its channel's log
(`place()`: a named consumer's checkpoint, ``since=``, or the log's end), has
actors read their logs whenever the live stream may have missed something (a
(re)subscription, a lost connection, the periodic recheck), keeps named consumers'
positions (the `Upkeep`), and reports what cannot be read back as a ``gap``.
It talks to the broker only through the connection supervisor's ``query``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from ..actors.callbacks import Dispatcher, Registration
from ..actors.dispatch import Decode
from ..actors.durable import DurableActor, Upkeep
from ..actors.mailbox import Mailbox
from ..actors.router import Router
from ..brokers.base import Publisher
from ..errors import BrokerError, ReplyError
from ..policies.streams import DEFAULT_RETENTION, LogMark, Retention, position, recreated
from ..supervisors.actors import ActorSupervisor
from ..supervisors.connection import ConnectionSupervisor
from .channel import ChannelState

__all__ = ["Logs", "Placement"]

T = TypeVar("T")

#: A durable registration to place: the registration, where ``since=`` starts it
#: (a position, and whether that names an entry) or None for "new", and the name of
#: its consumer (``consumer=``) or None.
Placement = tuple[Registration, "tuple[int, bool] | None", "str | None"]


class Logs:
    """The durable channels of one handler."""

    def __init__(
        self,
        retention: dict[str, Retention],
        *,
        connection: ConnectionSupervisor,
        router: Router,
        actors: ActorSupervisor,
        spawn: Callable[[Any, Exception | None], None],
        emit: Callable[[str, dict[str, Any]], None],
        recheck_interval: float,
        logger: logging.Logger,
    ) -> None:
        #: Retention by broker name, for every durable channel.
        self.retention = retention
        self._connection = connection
        self._router = router
        self._actors = actors
        self._spawn = spawn
        self._emit = emit
        self._logger = logger
        self.upkeep = Upkeep(self._save_position, self.recheck, recheck_interval, logger)
        # Each log's mark at the last recheck: the next one tells whether it was
        # made again meanwhile.
        self._marks: dict[str, LogMark] = {}

    def __contains__(self, broker_name: str) -> bool:
        return broker_name in self.retention

    def retention_of(self, broker_name: str) -> Retention:
        return self.retention.get(broker_name, DEFAULT_RETENTION)

    def new_actor(
        self,
        state: ChannelState,
        mailbox: Mailbox[Any],
        *,
        decode: Decode,
        dispatcher: Dispatcher,
        **dispatch: Any,
    ) -> DurableActor:
        """The actor of a durable channel (``dispatch``: as for a `DispatchActor`)."""
        name = state.broker_name
        return DurableActor(
            name,
            mailbox,
            registrations=state.registrations,
            takes_meta=lambda: state.takes_meta,
            read=lambda start, count: self._read_query(
                f"read the log of {name!r}", lambda p: p.read(name, start, count)
            ),
            tail=lambda: self._tail(name),
            mark=lambda: self._mark(name),
            on_gap=lambda reason, last, next_: self._gap(state, reason, last, next_),
            decode=decode,
            dispatcher=dispatcher,
            **dispatch,
        )

    # -- where registrations start -----------------------------------------------------

    async def place(self, durable: list[Placement]) -> None:
        """Give durable registrations the log position each starts after: a named
        consumer's checkpoint, else ``since=``, else (``"new"``) the log's end now.

        They stay deaf with no cursor until all are known, so that no catch-up read
        meanwhile starts one at the wrong place; then each channel's next catch-up
        takes them there (checking that an entry they start after is in the log).
        """
        cursors: list[tuple[Registration, int, str | None]] = []
        # The ends of the logs "new" registrations start at: asked together.
        tails = await self._tails(
            {r.owner.broker_name for r, start, consumer in durable if start is None}
        )
        for registration, start, consumer in durable:
            name = registration.owner.broker_name
            saved = await self._load_position(name, consumer) if consumer is not None else None
            if saved is not None:  # it has been here before: on from there
                cursors.append((registration, position(saved), "trimmed"))
            elif start is not None:
                cursors.append((registration, start[0], "missing" if start[1] else None))
            else:
                cursors.append((registration, tails[name], None))
        # A channel's first registration marks its log, for the upkeep's rechecks
        # to tell whether it is still the same one.
        await self._check_marks(
            {
                name: actor
                for r, _, _ in durable
                if (name := r.owner.broker_name) not in self._marks
                and (actor := self._actor(name)) is not None
            },
            forget=False,
        )
        for registration, cursor, reason in cursors:
            registration.cursor = cursor
            if reason is not None:
                actor = self._actor(registration.owner.broker_name)
                if actor is not None:
                    # Its next catch-up checks that the entry is in the log, and
                    # reports a gap with this reason if it is not.
                    actor.verify[cursor] = reason

    def unplace(self, registration: Registration) -> None:
        """A registration rolled back: nobody starts where it would have."""
        actor = self._actor(registration.owner.broker_name)
        if actor is not None and registration.cursor is not None:
            actor.verify.pop(registration.cursor, None)

    def commit(self, placed: Iterable[Placement], states: Iterable[ChannelState]) -> None:
        """Registrations placed and subscribed: named consumers' positions are kept
        from now on, and the channels' newcomers read the log up to the live stream."""
        for registration, _, consumer in placed:
            if consumer is not None:
                self.upkeep.watch(registration, registration.owner.broker_name, consumer)
        for state in states:
            self.catch_up(state, broken=False)

    # -- reading back what the live stream missed --------------------------------------

    def catch_up(self, state: ChannelState, broken: bool = True) -> None:
        """Have a durable channel's actor read its log before more live messages
        (see `DurableActor.catch_up()`)."""
        actor = self._actor(state.broker_name)
        if actor is not None:
            actor.catch_up(broken)
            if not actor.running:
                self._spawn(actor, None)

    async def recheck(self) -> None:
        """Have every durable channel check that its log is still the one it was
        (one deleted under a steady publisher is made again by the next append,
        and the live stream never shows it), then have the idle ones read their
        logs (events stored without a live copy); the busy ones will, at their next
        catch-up."""
        actors = {name: a for name, a in self._router if isinstance(a, DurableActor)}
        await self._check_marks(actors)
        for actor in actors.values():
            if not actor.mailbox.pending and not actor.backlog:
                actor.catch_up()
                if not actor.running:
                    self._spawn(actor, None)

    async def _check_marks(self, actors: dict[str, DurableActor], forget: bool = True) -> None:
        """Mark these channels' logs, and report each that is not the one marked
        before (``forget``: these are all the durable channels, and the marks of
        channels gone are dropped)."""
        names = sorted(actors)
        if not names:
            return
        try:
            found = await self._connection.query(
                f"check {len(names)} logs", lambda p: p.marks(names)
            )
        except BrokerError as exc:  # the catch-ups deal with a lost connection
            self._logger.debug("logs not checked: %s", exc)
            return
        marks = self._marks
        if forget:
            for name in set(marks).difference(names):
                del marks[name]
        for name, mark in zip(names, found, strict=True):
            before = marks.pop(name, None)
            if mark is None:
                continue
            marks[name] = mark
            if before is not None and recreated(before, mark):
                actors[name].replaced(before, mark)

    def on_subscribed(self, states: Iterable[ChannelState]) -> None:
        """(Re)subscribed: whatever was published while the live stream was off is
        in the logs."""
        for state in states:
            if state.durable:
                self.catch_up(state)

    def on_disconnected(self, states: Iterable[ChannelState]) -> None:
        """The live stream is cut: whatever comes next may follow a gap. Each durable
        channel reads its log before any live message received from now on (its read
        waits for the new connection to be subscribed)."""
        for state in list(states):
            if state.durable:
                self.catch_up(state)

    def _gap(self, state: ChannelState, reason: str, last: str, next_: str | None) -> None:
        self._logger.warning(
            "durable channel %r lost events: %s after %s (next: %s)",
            state.name,
            reason,
            last,
            next_,
        )
        self._emit(
            "gap", {"channel": state.name, "reason": reason, "last_id": last, "next_id": next_}
        )

    def _actor(self, broker_name: str) -> DurableActor | None:
        actor = self._router.get(broker_name)
        return actor if isinstance(actor, DurableActor) else None

    # -- the life cycle ----------------------------------------------------------------

    def start(self) -> None:
        """The handler runs: the upkeep starts saving positions."""
        if self._actors.running:
            self._actors.start(self.upkeep)

    async def flush(self) -> None:
        """Save the named consumers' positions now (the handler is closing)."""
        await self.upkeep.flush()

    # -- queries -----------------------------------------------------------------------

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

    async def _tails(self, names: set[str]) -> dict[str, int]:
        """The end of each log, as a position (0: no log), in one round trip."""
        if not names:
            return {}
        ordered = sorted(names)

        async def tails(publisher: Publisher) -> list[str | None]:
            return await publisher.tails(ordered)

        found = await self._read_query(f"read the end of {len(ordered)} logs", tails)
        return {
            name: position(tail) if tail is not None else 0
            for name, tail in zip(ordered, found, strict=True)
        }

    async def _mark(self, name: str) -> LogMark | None:
        async def mark(publisher: Publisher) -> LogMark | None:
            return (await publisher.marks([name]))[0]

        return await self._read_query(f"check the log of {name!r}", mark)

    async def _tail(self, name: str) -> str | None:
        """The id of the last entry in a durable channel's log (None: no log)."""

        async def tail(publisher: Publisher) -> str | None:
            return await publisher.tail(name)

        return await self._read_query(f"read the end of {name!r}", tail)
