"""Codecs: how payloads become bytes on the broker and back.

A protocol is any object with ``encode(obj) -> bytes`` and ``decode(bytes) -> obj``
(:class:`Codec`). :class:`Json` is the default for :class:`~tidings.Channels`;
:class:`Bytes` passes bytes through and is what a :class:`~tidings.PubSub` without a
protocol uses.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

import msgspec

from .errors import ProtocolError

__all__ = ["Bytes", "Codec", "Json"]


@runtime_checkable
class Codec(Protocol):
    """What a protocol must implement.

    ``encode`` raises :class:`TypeError` for a value it cannot encode (before any I/O
    happens); ``decode`` raises :class:`~tidings.ProtocolError` (or :class:`ValueError`)
    for bytes that are not a valid payload.
    """

    def encode(self, obj: Any, /) -> bytes:
        """Turn ``obj`` into the bytes sent to the broker."""
        ...

    def decode(self, payload: bytes, /) -> Any:
        """Turn bytes received from the broker back into an object."""
        ...


class Json:
    """UTF-8 JSON, compact, with NaN and infinities refused (other languages reject them).

    Example:
        >>> Json().encode({"event": "created", "data": [1, 2]})
        b'{"event":"created","data":[1,2]}'
    """

    __slots__ = ("_dumps", "fast_decode")

    def __init__(self) -> None:
        # Encoding stays with the standard library: it refuses NaN and infinities
        # (the fast encoders silently send them as null) and nothing else.
        self._dumps = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode
        # Decoding, the receive hot path, uses msgspec: about 7x faster than json,
        # strict RFC 8259, and exact on big integers (orjson turns them into floats).
        #: The strict decoder alone (raises msgspec errors); ``decode`` wraps it.
        self.fast_decode = msgspec.json.Decoder().decode

    def encode(self, obj: Any, /) -> bytes:
        """Encode ``obj`` as JSON.

        Raises:
            TypeError: ``obj`` holds something JSON cannot represent (the message
                names it), including NaN, infinities and circular references.
        """
        try:
            return self._dumps(obj).encode()
        except ValueError as exc:
            raise TypeError(f"cannot encode as JSON: {exc}") from exc
        except TypeError as exc:
            raise TypeError(f"cannot encode as JSON: {exc}") from None

    def decode(self, payload: bytes, /) -> Any:
        """Decode a JSON payload.

        Raises:
            ProtocolError: the payload is not valid UTF-8 JSON.
        """
        try:
            return self.fast_decode(payload)
        except msgspec.MsgspecError:
            pass
        except RecursionError:
            raise ProtocolError(
                f"JSON payload nested too deeply to decode ({len(payload)} bytes): "
                f"{bytes(payload[:64])!r}"
            ) from None
        # What msgspec refuses but Python's json reads (NaN, lone surrogates,
        # huge exponents) is still accepted: the same inputs as ever, only faster.
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise ProtocolError(f"invalid JSON payload {bytes(payload[:64])!r}: {exc}") from None
        except RecursionError:
            # Nesting deeper than the interpreter's stack: hostile or broken input.
            raise ProtocolError(
                f"JSON payload nested too deeply to decode ({len(payload)} bytes): "
                f"{bytes(payload[:64])!r}"
            ) from None

    def __repr__(self) -> str:
        return "Json()"


class Bytes:
    """Pass-through: payloads are bytes on both sides (``str`` is sent as UTF-8)."""

    __slots__ = ()

    def encode(self, obj: Any, /) -> bytes:
        """Return ``obj`` as bytes.

        Raises:
            TypeError: ``obj`` is neither bytes-like nor ``str``.
        """
        if isinstance(obj, bytes):
            return obj
        if isinstance(obj, bytearray | memoryview):
            return bytes(obj)
        if isinstance(obj, str):
            return obj.encode()
        raise TypeError(
            f"the Bytes protocol sends bytes or str, not {type(obj).__name__}: {obj!r:.80}"
        )

    def decode(self, payload: bytes, /) -> bytes:
        """Return ``payload`` unchanged."""
        return payload

    def __repr__(self) -> str:
        return "Bytes()"
