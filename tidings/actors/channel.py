"""The channel actor: one task per subscribed channel.

It owns the channel's mailbox of raw payloads. For each payload, in arrival order,
it decodes the event envelope, finds the callbacks whose event pattern matches, and
calls them in registration order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .._stats import Counters
from ..errors import ProtocolError
from ..protocols import Codec
from .base import Actor
from .callbacks import Dispatcher, Registration
from .mailbox import Mailbox

__all__ = ["DECODE_ERRORS", "ChannelActor", "envelope_decoder"]

#: What a protocol may raise for a payload it cannot decode. Anything else is a bug
#: in the protocol: it crashes the actor, and the supervisor restarts it.
DECODE_ERRORS = (ProtocolError, ValueError, TypeError)

Decode = Callable[[Any], tuple[str, Any]]


def envelope_decoder(protocol: Codec) -> Decode:
    """Decode ``{"channel": ..., "event": ..., "data": ...}`` into ``(event, data)``."""
    decode = protocol.decode

    def decode_event(payload: bytes) -> tuple[str, Any]:
        message = decode(payload)
        if isinstance(message, dict):
            event = message.get("event")
            if isinstance(event, str) and event:
                return event, message.get("data")
        raise ProtocolError(
            f"not a tidings event (an object with a non-empty string 'event'): {payload[:80]!r}"
        )

    return decode_event


class ChannelActor(Actor[Any]):
    """Decodes and dispatches the messages of one channel."""

    def __init__(
        self,
        name: str,
        mailbox: Mailbox[Any],
        *,
        channel: object,
        registrations_for: Callable[[str], tuple[Registration, ...]],
        decode: Decode,
        dispatcher: Dispatcher,
        stats: Counters,
        logger: logging.Logger,
    ) -> None:
        super().__init__(name, mailbox)
        self._channel = channel
        self._registrations_for = registrations_for
        self._decode = decode
        self._dispatcher = dispatcher
        self._stats = stats
        self._logger = logger

    def handle(self, message: Any) -> Awaitable[None] | None:
        try:
            event, data = self._decode(message)
        except DECODE_ERRORS as exc:
            self._stats.decode_errors += 1
            self._logger.warning("channel %r: undecodable message skipped: %s", self.name, exc)
            return None
        registrations = self._registrations_for(event)
        if not registrations:
            return None
        return self._dispatcher.dispatch(registrations, (self._channel, event, data), self.name)
