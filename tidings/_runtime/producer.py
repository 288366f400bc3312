"""Publishing for a `Channels` handler: the envelope, the durable append, the span.

A publish is checked by the facade (names, headers) and sent here: the envelope
``{"channel", "event", "data"}`` (and ``"headers"`` when there are any) is encoded by
the protocol, and goes out as a plain ``PUBLISH``, or on a durable channel as the
atomic append-and-publish of its log. With telemetry, the whole of it runs in a
``publish`` span whose context travels in the headers.
"""

from __future__ import annotations

from typing import Any

from ..brokers.base import Dedupe
from ..policies.streams import Retention
from ..protocols import Codec
from .lifecycle import Runtime
from .telemetry import Telemetry

__all__ = ["Producer"]


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
