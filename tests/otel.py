"""What the header and telemetry tests share: an OpenTelemetry SDK set up once per
process that records only while a test asks it to, and a producer / subscriber pair
whose subscriber can be cut off while the producer keeps publishing.

The API's global providers can be set once per process, and a configured tracer
changes what every handler sends (each publish then carries a ``traceparent``
header). Set plainly for the whole pytest session, it would change the payloads of
every test that runs after the first telemetry test. So the global tracer provider
is a switch in front of a real SDK ``TracerProvider``: outside `Otel.recording()`
it hands out the API's no-op tracer, whose spans are invalid and inject nothing, as
when no SDK is configured at all. Metrics need no switch: the SDK only aggregates
in memory, and the in-memory reader collects (and runs the observable instruments'
callbacks) only when a test reads it; tests tell their series apart by unique
channel names and by the ``tidings.handler`` attribute (`Otel.started()`).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.faults import FaultyProxy, running_proxy
from tests.helpers import FAST, Harness, MemoryHarness, eventually
from tidings import Channels

__all__ = ["Otel", "Point", "Split", "install"]

_NOOP = trace.NoOpTracer()


class _Switch:
    on = False


class _SwitchedTracer(trace.Tracer):
    """The SDK's tracer while recording, the no-op tracer otherwise."""

    def __init__(self, real: trace.Tracer) -> None:
        self._real = real

    def _tracer(self) -> trace.Tracer:
        return self._real if _Switch.on else _NOOP

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._tracer().start_as_current_span(*args, **kwargs)


class _SwitchedTracerProvider(trace.TracerProvider):
    def __init__(self, real: TracerProvider) -> None:
        self.real = real

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _SwitchedTracer(self.real.get_tracer(*args, **kwargs))


class Point:
    """One data point of a collected metric: its attributes, and its value (a sum or
    a gauge) or its count, sum and bucket boundaries (a histogram)."""

    def __init__(self, raw: Any) -> None:
        self.attributes: dict[str, Any] = dict(raw.attributes or {})
        self.value: float | None = getattr(raw, "value", None)
        self.count: int | None = getattr(raw, "count", None)
        self.sum: float | None = getattr(raw, "sum", None)
        self.bounds: tuple[float, ...] = tuple(getattr(raw, "explicit_bounds", ()) or ())

    def __repr__(self) -> str:
        shown = self.value if self.count is None else (self.count, self.sum)
        return f"<Point {self.attributes} {shown}>"


class Otel:
    """The SDK the tests installed: finished spans, collected metrics."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        #: A tracer of the tests' own (switched like tidings').
        self.tracer = _SwitchedTracer(self.tracer_provider.get_tracer("tests"))
        self._handlers: weakref.WeakKeyDictionary[Channels, str | None] = (
            weakref.WeakKeyDictionary()
        )

    @contextmanager
    def recording(self) -> Iterator[Otel]:
        """Record spans (from an empty exporter) until the block ends."""
        self.exporter.clear()
        _Switch.on = True
        try:
            yield self
        finally:
            _Switch.on = False
            self.exporter.clear()

    # -- spans -------------------------------------------------------------------------

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """The spans ended so far (named ``name``), in the order they ended."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    async def wait_spans(self, name: str, count: int) -> list[ReadableSpan]:
        """Wait (bounded) until ``count`` spans named ``name`` have ended."""
        await eventually(lambda: len(self.spans(name)) >= count)
        spans = self.spans(name)
        assert len(spans) == count, spans
        return spans

    # -- metrics -----------------------------------------------------------------------

    def collect(self) -> dict[str, list[Point]]:
        """Collect every metric now (the observable instruments are read now)."""
        data = self.reader.get_metrics_data()
        collected: dict[str, list[Point]] = {}
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    collected.setdefault(metric.name, []).extend(
                        Point(p) for p in metric.data.data_points
                    )
        return collected

    def points(self, name: str, **attributes: Any) -> list[Point]:
        """The points of metric ``name`` whose attributes include ``attributes``
        (keys spelled with ``_`` for ``.``: ``messaging_system="memory"``)."""
        wanted = {key.replace("_", "."): value for key, value in attributes.items()}
        return [
            p
            for p in self.collect().get(name, [])
            if all(p.attributes.get(k) == v for k, v in wanted.items())
        ]

    def handlers(self) -> set[str]:
        """The ``tidings.handler`` attribute of every handler observed now."""
        return {str(p.attributes["tidings.handler"]) for p in self.points("tidings.reconnects")}

    @asynccontextmanager
    async def started(self, channels: Channels) -> AsyncIterator[Channels]:
        """Run ``channels``, learning the ``tidings.handler`` its observations carry
        (`handler()`): the one that appears when it starts (none with
        ``telemetry=False``)."""
        before = self.handlers()
        async with channels:
            new = self.handlers() - before
            assert len(new) <= 1, new
            self._handlers[channels] = next(iter(new), None)
            yield channels

    def handler(self, channels: Channels) -> str | None:
        """The ``tidings.handler`` of a handler run by `started()` (None: it has no
        telemetry)."""
        return self._handlers[channels]

    def observed(self, name: str, channels: Channels, **attributes: Any) -> list[Point]:
        """The points of ``name`` observed for one handler (see `points()`)."""
        handler = self.handler(channels)
        assert handler is not None, f"{channels!r} has no telemetry"
        return self.points(name, tidings_handler=handler, **attributes)


_otel: Otel | None = None


def install() -> Otel:
    """Set the global providers (once per process); the SDK behind them."""
    global _otel
    if _otel is None:
        otel = Otel()
        switched = _SwitchedTracerProvider(otel.tracer_provider)
        trace.set_tracer_provider(switched)
        metrics.set_meter_provider(otel.meter_provider)
        if trace.get_tracer_provider() is not switched:
            raise RuntimeError("another TracerProvider was set in this process before the tests")
        if metrics.get_meter_provider() is not otel.meter_provider:
            raise RuntimeError("another MeterProvider was set in this process before the tests")
        _otel = otel
    return _otel


def parent_id(span: ReadableSpan) -> int | None:
    """The span id of ``span``'s parent (None: a root)."""
    return span.parent.span_id if span.parent is not None else None


# -- a subscriber that can be cut off -------------------------------------------------


class Split:
    """A producer and a subscriber on one broker; the subscriber can be cut off (its
    connections broken, new ones refused or left unanswered) while the producer goes
    on publishing, so that what it missed is read back from the log afterwards.

    On Redis the subscriber talks through a fault-injecting proxy; on memory:// the
    hub breaks the subscriber's connections alone (the producer's, opened first, are
    kept) and refuses new ones.
    """

    def __init__(self, broker: Harness, namespace: str, durable: Sequence[str]) -> None:
        self.broker = broker
        self.namespace = namespace
        self.durable = list(durable)
        self._proxy: FaultyProxy | None = None
        self._keep: set[Any] = set()

    def producer(self, **options: Any) -> Channels:
        return Channels(
            self.broker.store(),
            namespace=self.namespace,
            durable=self.durable,
            backoff=FAST,
            **options,
        )

    def subscriber(self, **options: Any) -> Channels:
        store: Any = self._proxy.url if self._proxy is not None else self.broker.store()
        return Channels(
            store,
            namespace=self.namespace,
            durable=self.durable,
            backoff=FAST,
            connect_timeout=0.5,
            **options,
        )

    @asynccontextmanager
    async def running(self, producer: Channels) -> AsyncIterator[Split]:
        """Run ``producer`` (made by `producer()`); `subscriber()` may be used inside."""
        if isinstance(self.broker, MemoryHarness):
            async with producer:
                await producer.publish("_split", "opened")  # its connections, opened now
                self._keep = set(self.broker.hub._connections)
                yield self
            return
        async with running_proxy(self.broker.server.port) as proxy, producer:
            self._proxy = proxy
            try:
                yield self
            finally:
                self._proxy = None

    @asynccontextmanager
    async def cut_off(self, subscriber: Channels) -> AsyncIterator[None]:
        """The subscriber is disconnected, and stays so until the block ends."""
        if isinstance(self.broker, MemoryHarness):
            hub = self.broker.hub
            hub.refusing = True
            try:
                for connection in tuple(hub._connections - self._keep):
                    connection.break_("cut off by the test")
                await eventually(lambda: subscriber.status.name != "connected")
                yield
            finally:
                hub.refusing = False
            return
        assert self._proxy is not None
        self._proxy.blackhole = True
        try:
            self._proxy.cut()
            await eventually(lambda: subscriber.status.name != "connected")
            yield
        finally:
            self._proxy.blackhole = False
