"""The status channel: a local channel that receives the handler's status events.

It is a channel like the others to its users (``register`` on its name, or
``subscribe``), but nothing about it touches the broker: events are emitted here
(``connecting``, ``connected``, ``disconnected``, ``closed``, and the reports
``slow_consumer``, ``gap``, ``dead_letter``), queued in its own mailbox and delivered
by its own actor, which always has a task (status events are emitted from inside the
connection supervisor, which must never run callbacks). Its deliveries and failures
are counted apart from the broker's messages. It may be given callbacks before the
handler runs: that is the only way to see the first ``connecting``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..actors.callbacks import Dispatcher, Registration
from ..actors.dispatch import DispatchActor
from ..actors.mailbox import Mailbox
from ..actors.router import Router
from ..options import Options
from ..stats import Counters
from ..supervisors.actors import ActorSupervisor
from ..types import Channel
from .channel import ChannelState

__all__ = ["StatusChannel"]


class StatusChannel:
    """The status channel of one handler: its state, counters, dispatcher and actor."""

    def __init__(
        self,
        name: str,
        broker_name: str,
        *,
        router: Router,
        actors: ActorSupervisor,
        options: Options,
        logger: logging.Logger,
        removed: Callable[[Registration], None],
    ) -> None:
        self.state = ChannelState(name, broker_name, local=True)
        self._router = router
        self._actors = actors
        self._options = options
        self._logger = logger
        #: Status events delivered, and callback failures, counted apart.
        self.counters = Counters()
        self.dispatcher = Dispatcher(
            stats=self.counters,
            logger=logger,
            remove=removed,
            failure_limit=options.callback_failure_limit,
            failure_window=options.callback_failure_window,
        )
        self._actor: DispatchActor | None = None

    @property
    def channel(self) -> Channel:
        return self.state.channel

    @property
    def broker_name(self) -> str:
        return self.state.broker_name

    def register(self, event: str, callback: Callable[..., Any]) -> None:
        """Add a callback for status events matching ``event`` (from the next one
        emitted: those already queued came before it)."""
        if self.state.has(event, callback):
            return
        registration = Registration(event, callback, self.state)
        actor = self._router.get(self.broker_name)
        registration.since = actor.mailbox.routed if actor is not None else 0
        self.state.add(registration)

    def start(self) -> None:
        """Give the channel its actor (the handler starts running): routed to from
        now on, with a task of its own."""
        # Started again after a close: the registrations count from the new mailbox.
        for registration in self.state.all_registrations():
            registration.since = 0
        actor = self._actor = DispatchActor(
            self.broker_name,
            Mailbox(self._options.max_pending, self._options.overflow),
            decode=_status_decode,
            registrations_for=self.state.registrations_for,
            found=self.state.found,
            owner=self.state.channel,
            where=lambda owner, message: f"status channel {self.state.name!r}",
            dispatcher=self.dispatcher,
            stats=self.counters,
            logger=self._logger,
            lazy=False,
        )
        self._router.add(self.broker_name, actor)
        if self._actors.running:  # (not when cancelled while starting)
            self._actors.start(actor)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue a status event for the callbacks (without waiting)."""
        dropped = self._router.put_nowait(self.broker_name, [(event, data)])
        if dropped:  # None: not running, nobody can be listening
            self._logger.warning(
                "status event %r dropped: status callbacks are not keeping up", event
            )

    async def drain(self) -> None:
        """Deliver the events still queued (the handler stopped: "closed" among
        them); the caller bounds the wait."""
        if self._actor is not None:
            await self._actor.drain()

    def owns(self, actor: object) -> bool:
        """True for this channel's actor."""
        return actor is self._actor


def _status_decode(channel: Channel, message: tuple[str, Any]) -> tuple[str, tuple[Any, ...], None]:
    """Status events are queued as ``(event, data)``: nothing to decode."""
    return message[0], (channel, message[0], message[1]), None
