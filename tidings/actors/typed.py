"""Typed callbacks: ``register(..., schema=T)`` converts ``data`` before the call.

A `Typed` callback stands for the callback itself (equal to it, hashed like it), so
that the same callback is found, deduplicated and unregistered whatever its schema.
Data that does not fit raises `Unfit`: the dispatcher counts it as a decode error for
that registration (the callback is not called, and that is not its failure); it is
logged here, once per interval per registration, with how many more did not fit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import msgspec.inspect

from .callbacks import Unfit, Wrapper

__all__ = ["UNFIT_LOG_INTERVAL", "Typed", "check_schema"]

#: Seconds between two warnings of a registration's data not fitting its schema.
UNFIT_LOG_INTERVAL = 60.0


def check_schema(schema: Any) -> None:
    """Refuse, before any I/O, a ``schema=`` msgspec cannot convert to.

    msgspec accepts any class as a *custom* type (to be built by a hook tidings does
    not give it), so such a type, alone or inside another, is refused here too: every
    event would fail to fit it.

    Raises:
        TypeError: naming the type and why.
    """
    try:
        info = msgspec.inspect.type_info(schema)
    except TypeError as exc:
        raise TypeError(f"schema={schema!r} is not a type msgspec converts to: {exc}") from None
    custom = _custom_type(info, set())
    if custom is not None:
        raise TypeError(
            f"schema={schema!r} is not a type msgspec converts to: it cannot build "
            f"{custom!r} from decoded data (use a msgspec Struct, a dataclass, a "
            "TypedDict, or a builtin type)"
        )


def _custom_type(info: Any, seen: set[int]) -> Any:
    """The first class msgspec would treat as custom in a type's description."""
    if isinstance(info, msgspec.inspect.CustomType):
        return info.cls
    if id(info) in seen:  # a recursive type: described once
        return None
    seen.add(id(info))
    values: Any = ()
    if isinstance(info, msgspec.Struct):
        values = (getattr(info, name) for name in info.__struct_fields__)
    elif isinstance(info, tuple):
        values = info
    for value in values:
        if isinstance(value, msgspec.Struct | tuple):
            found = _custom_type(value, seen)
            if found is not None:
                return found
    return None


class Typed(Wrapper):
    """``callback`` given its data converted to ``schema`` (msgspec's conversion).

    Raises:
        TypeError: at construction, for a type msgspec cannot convert to (naming it).
    """

    __slots__ = ("_logger", "_quiet_until", "_unlogged", "_where", "schema")

    def __init__(
        self, callback: Callable[..., Any], schema: Any, logger: logging.Logger, where: str
    ) -> None:
        check_schema(schema)
        super().__init__(callback)
        self.schema = schema
        self._logger = logger
        self._where = where
        self._quiet_until = -float("inf")
        self._unlogged = 0

    def __call__(self, channel: Any, event: str, data: Any, *meta: Any) -> Any:
        try:
            data = msgspec.convert(data, self.schema)
        except msgspec.ValidationError as exc:
            self._unfit(event, exc)
            raise Unfit(str(exc)) from None
        return self.callback(channel, event, data, *meta)

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
            _type_name(self.schema),
            self.callback,
            exc,
            more,
        )
        self._quiet_until, self._unlogged = now + UNFIT_LOG_INTERVAL, 0

    def __repr__(self) -> str:
        return f"{self.callback!r} (schema {_type_name(self.schema)})"


def _type_name(schema: Any) -> str:
    """``Order`` for a class, ``list[int]`` for a generic alias (whose ``__name__``
    would say only ``list``)."""
    if isinstance(schema, type):
        return schema.__qualname__
    return repr(schema)
