"""The dispatch actor: decode each message, find its callbacks, call them in order.

One actor per mailbox: a channel's (Channels: the event envelope decoded, the
callbacks whose event pattern matches), the status channel's, or a PubSub's clients
(the protocol's decoding, every client). The actor owns its mailbox; for each
message, in arrival order, ``decode`` gives the key its registrations are found by
and the arguments to call them with.
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

__all__ = ["DECODE_ERRORS", "Decode", "DispatchActor", "decode_failed", "envelope_decoder"]

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


#: A message -> (the key to find its registrations by, the callback arguments).
Decode = Callable[[Any], tuple[str, tuple[Any, ...]]]


def envelope_decoder(protocol: Codec, channel: object = None) -> Decode:
    """Decode ``{"channel": ..., "event": ..., "data": ...}`` for ``channel``'s actor.

    The result is ``(event, (channel, event, data))``: the key to find callbacks by,
    and their arguments.
    """
    decode = protocol.decode
    # The default codec's fast decoder is called directly: one frame less per message.
    fast = protocol.fast_decode if type(protocol) is Json else decode

    def decode_event(payload: bytes) -> tuple[str, tuple[Any, ...]]:
        try:
            message = fast(payload)
        except Exception:
            if fast is decode:
                raise
            message = decode(payload)  # the careful path: fallback parser, clear error
        if type(message) is dict:
            event = message.get("event")  # dict.get: any JSON object is safe here
            if type(event) is str and event:
                return event, (channel, event, message.get("data"))
        raise ProtocolError(
            f"not a tidings event (an object with a non-empty string 'event'): {payload[:80]!r}"
        )

    return decode_event


class DispatchActor(Actor[Any]):
    """Decodes and dispatches the messages of one mailbox."""

    def __init__(
        self,
        name: str,
        mailbox: Mailbox[Any],
        *,
        decode: Decode,
        registrations_for: Callable[[str], tuple[Registration, ...]],
        found: dict[str, tuple[Registration, ...]] | None = None,
        dispatcher: Dispatcher,
        stats: Counters,
        logger: logging.Logger,
        where: Callable[[Any], str] | None = None,
    ) -> None:
        super().__init__(name, mailbox, stats)
        #: How logs name where a message came from (only called when one fails).
        self.where: Callable[[Any], str] = where if where is not None else lambda message: name
        self._decode = decode
        self._registrations_for = registrations_for
        # The owner's cache of lookups, read directly on the hot path; the owner
        # clears it (never replaces it) when its registrations change.
        self._found: dict[str, tuple[Registration, ...]] = found if found is not None else {}
        self._dispatcher = dispatcher
        self._logger = logger

    async def consume(self) -> None:
        decode, lookup, found = self._decode, self._registrations_for, self._found
        dispatch, name = self._dispatcher.dispatch, self.name
        batch, base, stats = self._batch, self._base, self._stats
        while (index := self._next) < len(batch):
            self._next = index + 1
            try:
                key, args = decode(batch[index])
            except DECODE_ERRORS as exc:
                decode_failed(stats, self._logger, self.where(batch[index]), exc)
                continue
            registrations = found.get(key)
            if registrations is None:
                registrations = lookup(key)
            if registrations:
                pending = dispatch(registrations, args, name, base + index + 1)
                if pending is not None:
                    await self._interruptible(pending)
            else:
                stats.unrouted += 1
