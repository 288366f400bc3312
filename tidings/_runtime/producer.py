"""Publishing for a `Channels` handler: the envelope, the durable append, the span.

A publish is checked by the facade (names, headers) and sent here: the envelope
``{"channel", "event", "data"}`` (and ``"headers"`` when there are any) is encoded by
the protocol, and goes out as a plain ``PUBLISH``, or on a durable channel as the
atomic append-and-publish of its log. With telemetry, the whole of it runs in a
``publish`` span whose context travels in the headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..brokers.base import Dedupe, Outgoing
from ..policies.streams import Retention
from ..protocols import Codec
from .lifecycle import Runtime
from .telemetry import Telemetry

__all__ = ["Checked", "Producer"]

#: One event of a ``publish_many``, checked by the facade: ``(broker_name, name, event,
#: data, headers, key)``.
Checked = tuple[str, str, str, Any, "dict[str, str] | None", "str | None"]


class Producer:
    """Sends a handler's events."""

    __slots__ = (
        "_connection",
        "_durable",
        "_encode",
        "_runtime",
        "_window",
        "publish",
        "telemetry",
    )

    def __init__(
        self,
        runtime: Runtime,
        protocol: Codec,
        durable: dict[str, Retention],
        telemetry: Telemetry | None,
    ) -> None:
        self._runtime = runtime
        self._connection = runtime.connection
        self._encode = protocol.encode
        self._durable = durable
        self._window = runtime.options.dedupe_window
        #: The handler's telemetry, or None (then nothing is traced).
        self.telemetry = telemetry
        #: Publish checked arguments; the receiver count (see `Channels.publish()`).
        #: Without telemetry it is `send()` itself: a publish is a few microseconds,
        #: and a coroutine frame fewer is a tenth of it.
        self.publish = self.send if telemetry is None else self._traced

    async def _traced(
        self,
        broker_name: str,
        name: str,
        event: str,
        data: Any,
        headers: dict[str, str] | None,
        key: str | None = None,
    ) -> int:
        """`send()` in a publish span whose context travels in the headers."""
        assert self.telemetry is not None
        return await self.telemetry.publish(
            broker_name,
            headers,
            lambda traced: self.send(broker_name, name, event, data, traced, key),
        )

    async def send(
        self,
        broker_name: str,
        name: str,
        event: str,
        data: Any,
        headers: dict[str, str] | None,
        key: str | None = None,
    ) -> int:
        """Encode and send one event (no span)."""
        envelope = {"channel": name, "event": event, "data": data}
        if headers:
            envelope["headers"] = headers
        payload = self._encode(envelope)
        runtime = self._runtime
        if not runtime.accepting:
            runtime.check_running("publish")
        if self._durable:
            retention = self._durable.get(broker_name)
            if retention is not None:
                dedupe = Dedupe(key, self._window) if key is not None else None
                return await self._connection.publish(broker_name, payload, retention, dedupe)
        return await self._connection.publish(broker_name, payload)

    async def publish_many(self, items: Sequence[Checked]) -> list[int]:
        """Encode every item (a `TypeError` before any I/O), then send them all in
        as few writes as the broker allows; the receiver counts in order. With
        telemetry, each is a ``publish`` span of its own."""
        runtime = self._runtime
        if not runtime.accepting:
            runtime.check_running("publish")
        if not items:
            return []
        if self.telemetry is None:
            return await self._send_many(items, [item[4] for item in items])
        return await self.telemetry.publish_many(
            [(item[0], item[4]) for item in items],
            lambda traced: self._send_many(items, traced),
        )

    async def _send_many(
        self, items: Sequence[Checked], headers: Sequence[dict[str, str] | None]
    ) -> list[int]:
        encode, durable, window = self._encode, self._durable, self._window
        outgoing: list[Outgoing] = []
        for index, (item, extra) in enumerate(zip(items, headers, strict=True)):
            broker_name, name, event, data, _, key = item
            envelope = {"channel": name, "event": event, "data": data}
            if extra:
                envelope["headers"] = extra
            try:
                payload = encode(envelope)
            except TypeError as exc:
                raise TypeError(f"publish_many item {index}: {exc}") from None
            retention = durable.get(broker_name) if durable else None
            dedupe = Dedupe(key, window) if key is not None and retention is not None else None
            outgoing.append((broker_name, payload, retention, dedupe))
        return await self._connection.publish_many(outgoing)
