"""The channel actor: one task per subscribed channel.

It owns the channel's mailbox of raw payloads. For each payload, in arrival order,
it decodes the event envelope, finds the callbacks whose event pattern matches, and
calls them in registration order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._stats import Counters
from ..errors import ProtocolError
from ..protocols import Codec, Json
from .base import Actor
from .callbacks import Dispatcher, Registration
from .mailbox import Mailbox

__all__ = ["DECODE_ERRORS", "ChannelActor", "decode_failed", "envelope_decoder"]

#: What decoding bytes from the broker may raise for bad input: anyone who can
#: publish chooses those bytes, so none of these may end an actor (RecursionError
#: comes from deep nesting, LookupError and ArithmeticError from codecs that
#: parse structure). Anything else (AttributeError, a plain RuntimeError ...) is a
#: bug in the codec: it crashes the actor, which its supervisor restarts.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    ProtocolError,
    ValueError,
    TypeError,
    LookupError,
    ArithmeticError,
    RecursionError,
)
#: The ones a codec's contract names: logged without a traceback.
_EXPECTED = (ProtocolError, ValueError, TypeError)


def decode_failed(stats: Counters, logger: logging.Logger, where: str, exc: Exception) -> None:
    """Count and log a payload that could not be decoded; the actor carries on."""
    stats.decode_errors += 1
    if isinstance(exc, _EXPECTED):
        logger.warning("%s: undecodable message skipped: %s", where, exc)
    else:
        logger.warning("%s: undecodable message skipped", where, exc_info=exc)


Decode = Callable[[Any], tuple[str, Any]]


def envelope_decoder(protocol: Codec) -> Decode:
    """Decode ``{"channel": ..., "event": ..., "data": ...}`` into ``(event, data)``."""
    decode = protocol.decode
    # The default codec's fast decoder is called directly: one frame less per message.
    fast = protocol.fast_decode if type(protocol) is Json else decode

    def decode_event(payload: bytes) -> tuple[str, Any]:
        try:
            message = fast(payload)
        except Exception:
            if fast is decode:
                raise
            message = decode(payload)  # the careful path: fallback parser, clear error
        if type(message) is dict:
            event = message.get("event")  # dict.get: any JSON object is safe here
            if type(event) is str and event:
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
        found: dict[str, tuple[Registration, ...]],
        decode: Decode,
        dispatcher: Dispatcher,
        stats: Counters,
        logger: logging.Logger,
    ) -> None:
        super().__init__(name, mailbox, stats)
        self._channel = channel
        self._registrations_for = registrations_for
        # The channel's cache of lookups, read directly on the hot path; the channel
        # clears it (never replaces it) when its registrations change.
        self._found = found
        self._decode = decode
        self._dispatcher = dispatcher
        self._logger = logger

    async def consume(self) -> None:
        decode, lookup, found = self._decode, self._registrations_for, self._found
        dispatch, channel, name = self._dispatcher.dispatch, self._channel, self.name
        batch, base, stats = self._batch, self._base, self._stats
        while (index := self._next) < len(batch):
            self._next = index + 1
            message = batch[index]
            try:
                event, data = decode(message)
            except DECODE_ERRORS as exc:
                decode_failed(stats, self._logger, f"channel {name!r}", exc)
                continue
            registrations = found.get(event)
            if registrations is None:
                registrations = lookup(event)
            if registrations:
                pending = dispatch(registrations, (channel, event, data), name, base + index + 1)
                if pending is not None:
                    await self._interruptible(pending)
            else:
                stats.unrouted += 1
