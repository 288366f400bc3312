"""Codecs: how payloads become bytes on the broker and back.

A protocol is any object with ``encode(obj) -> bytes`` and ``decode(bytes) -> obj``
(`Codec`). `Json` is the default for `Channels`;
`Bytes` passes bytes through and is what a `PubSub` without a
protocol uses.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol, runtime_checkable

import msgspec

from .errors import ProtocolError

__all__ = ["Bytes", "Codec", "Json"]


@runtime_checkable
class Codec(Protocol):
    """What a protocol must implement.

    ``encode`` raises `TypeError` for a value it cannot encode (before any I/O
    happens); ``decode`` raises `ProtocolError` (or `ValueError`)
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

    Examples:
        >>> Json().encode({"event": "created", "data": [1, 2]})
        b'{"event":"created","data":[1,2]}'
    """

    __slots__ = ("_dumps", "_fast_encode", "fast_decode")

    def __init__(self) -> None:
        # The standard library decides what can be encoded: it refuses NaN and
        # infinities (msgspec silently sends them as null) and sets, bytes, dates
        # and dataclasses (which msgspec encodes in its own ways). msgspec encodes
        # only values that are plain JSON already (see _plain), where both give the
        # same JSON, three times faster.
        self._dumps = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_model
        ).encode
        self._fast_encode = msgspec.json.Encoder().encode
        # Decoding, the receive hot path, uses msgspec: about 7x faster than json,
        # strict RFC 8259, and exact on big integers (orjson turns them into floats).
        #: The strict decoder alone (raises msgspec errors); ``decode`` wraps it.
        self.fast_decode = msgspec.json.Decoder().decode

    def encode(self, obj: Any, /) -> bytes:
        """Encode ``obj`` as JSON; a pydantic model (anywhere in it) as its JSON-mode
        dump (``model_dump(mode="json")``).

        Raises:
            TypeError: ``obj`` holds something JSON cannot represent (the message
                names it), including NaN, infinities and circular references.
        """
        if _plain(obj, 3):
            try:
                return self._fast_encode(obj)
            except Exception:  # the standard library says what is wrong
                pass
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


def _model(obj: Any) -> Any:
    """What JSON cannot hold natively: pydantic models, as their JSON-mode dump.

    pydantic is never imported here: a model exists only once its application has
    imported pydantic.
    """
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_SCALARS = frozenset({str, int, bool, type(None)})


def _plain(value: Any, depth: int) -> bool:
    """True for plain JSON: exact dicts with str keys, lists and tuples, nested at
    most ``depth`` deep, of str, int, bool, None and finite floats.

    On these msgspec and the standard library write the same JSON (floats may
    differ in exponent style: ``1e16`` against ``1e+16``, the same number).
    Anything else (subclasses included) goes to the standard library.
    """
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
        if depth == 0 or any(type(key) is not str for key in value):
            return False
    elif kind is list or kind is tuple:
        items = value
        if depth == 0:
            return False
    else:
        return kind in _SCALARS or (kind is float and value - value == 0.0)
    for item in items:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is float:
            if item - item != 0.0:  # NaN and infinities
                return False
        elif not _plain(item, depth - 1):
            return False
    return True


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
