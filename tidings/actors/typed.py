"""Typed callbacks: ``register(..., schema=T)`` converts ``data`` before the call.

A `Typed` callback stands for the callback itself (equal to it, hashed like it), so
that the same callback is found, deduplicated and unregistered whatever its schema.
Data that does not fit raises `Unfit`: the dispatcher counts it as a decode error for
that registration (the callback is not called, and that is not its failure); it is
logged here, once per interval per registration, with how many more did not fit.

msgspec converts (a Struct, a dataclass, a TypedDict, builtins); pydantic validates
what msgspec cannot build (models, and types holding them) when the application uses
pydantic. pydantic is never imported here: a model exists only once its application
has imported pydantic, so `sys.modules` is where to find it.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import msgspec.inspect

from .callbacks import Unfit, Wrapper, named

__all__ = ["UNFIT_LOG_INTERVAL", "Convert", "Typed", "check_schema", "converter"]

#: Seconds between two warnings of a registration's data not fitting its schema.
UNFIT_LOG_INTERVAL = 60.0

#: Decoded data -> the schema's type; raises `ValueError` for data that does not fit.
Convert = Callable[[Any], Any]


def check_schema(schema: Any) -> None:
    """Refuse, before any I/O, a ``schema=`` that can be neither converted nor validated.

    Raises:
        TypeError: naming the type and why.
    """
    converter(schema)


def converter(schema: Any) -> tuple[Convert, tuple[type[Exception], ...]]:
    """How decoded data becomes ``schema``, and the errors that mean it does not fit.

    msgspec accepts any class as a *custom* type (to be built by a hook tidings does
    not give it), so a type holding one goes to pydantic when the application uses
    it, and is refused otherwise: every event would fail to fit it.

    Raises:
        TypeError: naming the type and why.
    """
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and _pydantic_type(schema):
        return _validator(pydantic, schema)
    try:
        info = msgspec.inspect.type_info(schema)
    except TypeError as exc:
        raise TypeError(f"schema={schema!r} is not a type msgspec converts to: {exc}") from None
    custom = _custom_type(info, set())
    if custom is None:
        return functools.partial(msgspec.convert, type=schema), (msgspec.ValidationError,)
    if pydantic is not None:
        return _validator(pydantic, schema)
    raise TypeError(
        f"schema={schema!r} is not a type msgspec converts to: it cannot build "
        f"{custom!r} from decoded data (use a msgspec Struct, a dataclass, a "
        "TypedDict, a builtin type, or a pydantic model)"
    )


def _pydantic_type(schema: Any) -> bool:
    """A pydantic model or pydantic dataclass: validated by pydantic, even where
    msgspec could build it (a pydantic dataclass), so that its validators run."""
    return isinstance(schema, type) and hasattr(schema, "__pydantic_validator__")


def _validator(pydantic: Any, schema: Any) -> tuple[Convert, tuple[type[Exception], ...]]:
    try:
        adapter = pydantic.TypeAdapter(schema)
    except Exception as exc:  # PydanticSchemaGenerationError and kin: a RuntimeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TypeError(
            f"schema={schema!r} can be neither converted by msgspec nor validated by "
            f"pydantic: {first}"
        ) from None
    return adapter.validate_python, (pydantic.ValidationError,)


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
    """``callback`` given its data converted to ``schema`` (see `converter`).

    Raises:
        TypeError: at construction, for a type that can be neither converted nor
            validated (naming it).
    """

    __slots__ = (
        "_convert",
        "_logger",
        "_quiet_until",
        "_unfits",
        "_unlogged",
        "_where",
        "schema",
    )

    def __init__(
        self, callback: Callable[..., Any], schema: Any, logger: logging.Logger, where: str
    ) -> None:
        super().__init__(callback)
        self._convert, self._unfits = converter(schema)
        self.schema = schema
        self._logger = logger
        self._where = where
        self._quiet_until = -float("inf")
        self._unlogged = 0

    def __call__(self, channel: Any, event: str, data: Any, *meta: Any) -> Any:
        try:
            data = self._convert(data)
        except self._unfits as exc:
            why = _why(exc)
            self._unfit(event, why)
            raise Unfit(why) from None
        return self.callback(channel, event, data, *meta)

    def _unfit(self, event: str, why: str) -> None:
        now = anyio.current_time()
        if now < self._quiet_until:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last warning)" if self._unlogged else ""
        self._logger.warning(
            "channel %r: event %r does not fit schema %s of %s: %s%s",
            self._where,
            event,
            _type_name(self.schema),
            named(self.callback),
            why,
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


def _why(exc: Exception) -> str:
    """One line: pydantic lists every error on lines of their own."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    found = errors()
    if not found:
        return str(exc)
    first = found[0]
    where = ".".join(map(str, first.get("loc", ()))) or "data"
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{first.get('msg', exc)} at {where}{more}"
