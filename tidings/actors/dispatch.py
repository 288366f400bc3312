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
from types import MappingProxyType
from typing import Any

import msgspec

from ..errors import ProtocolError
from ..policies.headers import Headers, decoded_headers
from ..protocols import Codec, Json
from ..stats import Counters
from .base import Actor, Pending
from .callbacks import NO_META, Dispatcher, Meta, Registration
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


#: ``(owner, message)`` -> (the key to find its registrations by, the callback
#: arguments, the message's headers or None); ``owner`` is what the actor was given
#: (a channel, or None).
Decode = Callable[[Any, Any], tuple[str, tuple[Any, ...], Headers | None]]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """An event envelope, as tidings publishes it.

    Other fields are refused rather than skipped: msgspec skips an unknown field
    without validating it, and this path must refuse exactly what the careful one
    does (an envelope with extra fields takes the careful path, and is accepted
    there when it is valid JSON).
    """

    event: str
    data: Any = None
    channel: Any = None
    headers: dict[str, str] | None = None


def envelope_decoder(protocol: Codec) -> Decode:
    """Decode ``{"channel": ..., "event": ..., "data": ..., "headers": ...}`` for a
    channel's actor.

    The result is ``(event, (channel, event, data), headers)``: the key to find
    callbacks by, their arguments (``channel`` is the actor's owner), and the
    headers, read-only (None when there are none).
    """
    decode = protocol.decode
    # The default codec decodes straight into a struct: one pass, no dict built
    # and searched. Anything that does not fit it takes the careful path below,
    # which accepts and refuses exactly what the codec's own decode does.
    fast = msgspec.json.Decoder(_Envelope).decode if type(protocol) is Json else None

    def decode_event(channel: Any, payload: bytes) -> tuple[str, tuple[Any, ...], Headers | None]:
        if fast is not None:
            try:
                envelope = fast(payload)
            except (msgspec.MsgspecError, RecursionError):
                pass  # the careful path says what is wrong with it
            else:
                if envelope.event:
                    headers = envelope.headers
                    return (
                        envelope.event,
                        (channel, envelope.event, envelope.data),
                        MappingProxyType(headers) if headers else None,
                    )
        message = decode(payload)
        if type(message) is dict:
            event = message.get("event")  # dict.get: any JSON object is safe here
            if type(event) is str and event:
                checked = decoded_headers(message.get("headers"))
                return event, (channel, event, message.get("data")), checked
        raise ProtocolError(
            f"not a tidings event (an object with a non-empty string 'event'): {payload[:80]!r}"
        )

    return decode_event


class DispatchActor(Actor[Any]):
    """Decodes and dispatches the messages of one mailbox."""

    __slots__ = (
        "_decode",
        "_dispatcher",
        "_found",
        "_logger",
        "_registrations_for",
        "owner",
        "where",
    )

    def __init__(
        self,
        name: str,
        mailbox: Mailbox[Any],
        *,
        decode: Decode,
        registrations_for: Callable[[str], tuple[Registration, ...]],
        found: dict[Any, tuple[Registration, ...]] | None = None,
        dispatcher: Dispatcher,
        stats: Counters,
        logger: logging.Logger,
        owner: Any = None,
        where: Callable[[Any, Any], str] | None = None,
        lazy: bool = False,
    ) -> None:
        super().__init__(name, mailbox, stats, lazy=lazy)
        #: Passed to ``decode`` with each message (the channel, for its callbacks).
        self.owner = owner
        #: How logs name where a message came from, ``where(owner, message)``
        #: (only called when one fails; default: the actor's name).
        self.where = where
        self._decode = decode
        self._registrations_for = registrations_for
        # The owner's cache of lookups, read directly on the hot path; the owner
        # clears it (never replaces it) when its registrations change.
        self._found: dict[Any, tuple[Registration, ...]] = found if found is not None else {}
        self._dispatcher = dispatcher
        self._logger = logger

    def consume(self) -> Pending | None:
        # (Bound once per batch: the lookup cache is a dict subclass, whose methods
        # cost an attribute lookup more per call than a plain dict's.)
        decode, lookup, found, owner = (
            self._decode,
            self._registrations_for,
            self._found.get,
            self.owner,
        )
        dispatch, name = self._dispatcher.dispatch, self.name
        batch, base, stats = self._batch, self._base, self._stats
        while (index := self._next) < len(batch):
            self._next = index + 1
            try:
                key, args, headers = decode(owner, batch[index])
            except DECODE_ERRORS as exc:
                where = self.where(owner, batch[index]) if self.where is not None else name
                decode_failed(stats, self._logger, where, exc)
                continue
            registrations = found(key)
            if registrations is None:
                registrations = lookup(key)
            if registrations:
                unfinished = dispatch(
                    registrations,
                    args,
                    name,
                    base + index + 1,
                    NO_META if headers is None else Meta(headers=headers),
                )
                if unfinished is not None:
                    return unfinished
            else:
                stats.unrouted += 1
        return None
