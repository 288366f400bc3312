"""The checks of a `Channels` handler's arguments, made before any I/O.

Each names the bad value and, where there is one, the fix. The facade calls them;
what they return is what the runtime is given (a `Wanted` registration, the durable
channels by broker name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..actors.typed import check_schema
from ..policies.names import Namespace, check_name
from ..policies.streams import DEFAULT_RETENTION, Retention, position, start_after
from ..protocols import Codec
from .registry import Wanted

__all__ = ["check_protocol", "check_registration", "durable_channels"]


def check_protocol(protocol: Codec) -> None:
    """Refuse a codec that cannot encode an event envelope: every publish would fail
    (``tidings.Bytes`` is for `PubSub`).

    Raises:
        TypeError: naming the codec and what it did.
    """
    if not callable(getattr(protocol, "encode", None)) or not callable(
        getattr(protocol, "decode", None)
    ):
        raise TypeError(f"protocol must have encode() and decode(), got {protocol!r}")
    try:
        protocol.encode({"channel": "c", "event": "e", "data": None})
    except Exception as exc:
        raise TypeError(
            f"Channels needs a protocol that encodes event envelopes (dicts); "
            f"{protocol!r} cannot ({type(exc).__name__}: {exc}). tidings.Bytes passes "
            "bytes through: use it with a PubSub"
        ) from exc


def durable_channels(
    durable: Iterable[str] | Mapping[str, Retention] | None, namespace: Namespace
) -> dict[str, Retention]:
    """``durable=`` as retention by broker name.

    Raises:
        TypeError: a single name, or a mapping to something not a `Retention`.
        ValueError: a bad channel name.
    """
    if durable is None:
        return {}
    if isinstance(durable, str | bytes):
        raise TypeError(
            f"durable= takes an iterable of channel names or a mapping of name -> "
            f"Retention, not a single {type(durable).__name__}: {durable!r}"
        )
    if isinstance(durable, Mapping):
        items = list(durable.items())
    else:
        items = [(name, DEFAULT_RETENTION) for name in durable]
    channels: dict[str, Retention] = {}
    for name, retention in items:
        if not isinstance(retention, Retention):
            raise TypeError(
                f"durable={{{name!r}: ...}} takes a tidings.Retention, not {retention!r}"
            )
        channels[namespace.broker_name(name)] = retention
    return channels


def check_registration(
    namespace: Namespace,
    durable: Mapping[str, Retention],
    channel: str,
    event: str,
    callback: Callable[..., Any],
    since: Any = "new",
    consumer: str | None = None,
    group: str | None = None,
    schema: Any = None,
) -> Wanted:
    """A registration's arguments, checked (see `Channels.register()`).

    Raises:
        ValueError: a bad name, or ``since``/``consumer``/``group`` where they do
            not apply.
        TypeError: a callback that is not callable, or a schema msgspec cannot build.
    """
    broker_name, name = namespace.names(channel)
    check_name(event, "event pattern")
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}: {callback!r}")
    if schema is not None:
        check_schema(schema)
    new = isinstance(since, str) and since == "new"
    start: tuple[int, bool] | None = None
    if broker_name in durable:
        if not new:
            after, exact = start_after(since)
            start = position(after), exact
    elif not new or consumer is not None or group is not None:
        what = (
            f"group={group!r}"
            if group is not None
            else f"consumer={consumer!r}"
            if consumer is not None
            else f"since={since!r}"
        )
        raise ValueError(
            f"{what} needs a durable channel, and {name!r} is not one "
            "(name it in Channels(durable=...))"
        )
    if consumer is not None:
        check_name(consumer, "consumer name")
    if group is not None:
        check_name(group, "group name")
        if consumer is not None:
            raise ValueError(
                f"consumer={consumer!r} and group={group!r} do not go together: a "
                "group keeps its members' place itself"
            )
    return Wanted(broker_name, name, event, callback, start, consumer, group, schema=schema)
