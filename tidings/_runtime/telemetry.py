"""Native OpenTelemetry: spans and metrics through the API, when it is installed.

tidings uses the global tracer provider, meter provider and propagator, so an
application that configures the OpenTelemetry SDK sees its handlers with no further
code. Without ``opentelemetry-api`` nothing is imported and nothing is wrapped: the
message path is the one it always was. With it, a handler (``telemetry=True``, the
default) records, following the messaging semantic conventions:

- a ``publish <channel>`` span (PRODUCER) around each publish, whose context the
  propagator injects into the event's headers;
- a ``process <channel>`` span (CONSUMER) around each callback, a child of the
  producer's context taken from the headers (one message per process span: the
  conventions' "parent" case), with the callback's exception recorded on it;
- the ``messaging.client.sent.messages`` and ``messaging.client.consumed.messages``
  counters and the ``messaging.process.duration`` histogram, measured where they
  happen;
- tidings' own counters (drops, decode and callback errors, reconnects, dead letters,
  redeliveries) and gauges (mailbox depth, stream lag), *observed* from the
  handler's counters when a reader collects them: they cost the hot path nothing.

A callback is instrumented by wrapping it once, when it is registered (`Traced`);
iterators are not (the consumer of an ``async for`` continues the producer's trace
from ``Event.headers``, as the "Observability" page shows).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import itertools
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..actors.callbacks import Meta, Undelivered, Unfit, Wrapper
from ..actors.durable import DurableActor
from ..actors.router import Router
from ..errors import CallbackError, Retry
from ..policies.streams import position
from ..stats import Counters

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Span

__all__ = ["Telemetry", "Traced", "api_installed"]

#: The instrumentation scope's name.
SCOPE = "tidings"
#: Channels a mailbox-depth observation names one by one (the deepest); the others
#: are summed under `OTHER`, so that a handler of 100,000 channels makes a bounded
#: number of series.
DEPTH_SERIES = 50
#: The destination name of what is summed past `DEPTH_SERIES`.
OTHER = "_other"
#: Bucket boundaries (seconds) the messaging conventions give for durations.
PROCESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
#: Outages last longer: from a tenth of a second to an hour.
DISCONNECTED_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600)

# The OpenTelemetry API modules, once looked for: a namespace of them, or False when
# the API is not installed (asked once per process: a failed import is not cached).
_api: Any = None


def api_installed() -> bool:
    """True when ``opentelemetry-api`` can be imported (looked for once)."""
    return _load() is not None


def _load() -> Any:
    global _api
    if _api is None:
        try:
            from opentelemetry import context, metrics, propagate, trace
        except ImportError:
            _api = False
        else:
            _api = _Api(context, metrics, propagate, trace)
    return _api or None


class _Api:
    """The API modules, and the instruments every handler shares (instruments are
    made once per process; each handler's observations carry its own attributes)."""

    def __init__(self, context: Any, metrics: Any, propagate: Any, trace: Any) -> None:
        self.context = context
        self.propagate = propagate
        self.trace = trace
        self.producer = trace.SpanKind.PRODUCER
        self.consumer = trace.SpanKind.CONSUMER
        self.error = trace.StatusCode.ERROR
        self.empty = context.Context
        version = _version()
        self.tracer = trace.get_tracer(SCOPE, version)
        meter = metrics.get_meter(SCOPE, version)
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Messages a producer attempted to send.",
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Messages delivered to a consumer's callback.",
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of processing a message (one callback call).",
            explicit_bucket_boundaries_advisory=PROCESS_BUCKETS,
        )
        self.disconnected = meter.create_histogram(
            "tidings.disconnected.duration",
            unit="s",
            description="How long a subscription was deaf before a reconnect.",
            explicit_bucket_boundaries_advisory=DISCONNECTED_BUCKETS,
        )
        #: The telemetry of every live handler, observed by the instruments below.
        self.handlers: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        for name, field, unit, description in _COUNTED:
            meter.create_observable_counter(
                name, callbacks=[self._counter(field)], unit=unit, description=description
            )
        meter.create_observable_gauge(
            "tidings.mailbox.depth",
            callbacks=[self._observe(lambda t: t.depths())],
            unit="{message}",
            description="Messages waiting in a channel's mailbox.",
        )
        meter.create_observable_gauge(
            "tidings.stream.lag",
            callbacks=[self._observe(lambda t: t.lags())],
            unit="s",
            description="How far a durable consumer or group is behind the newest entry "
            "it knows of, in the log's time.",
        )

    def _counter(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return self._observe(lambda t: [(getattr(t.stats, field), t.attributes)])

    def _observe(
        self, read: Callable[[Telemetry], Iterable[tuple[float, Mapping[str, str]]]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        from opentelemetry.metrics import Observation

        def observe(options: CallbackOptions) -> Iterator[Observation]:
            for telemetry in list(self.handlers):
                for value, attributes in read(telemetry):
                    yield Observation(value, attributes)

        return observe


def _version() -> str | None:
    try:
        return importlib.metadata.version("tidings")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return None


#: tidings' own counters: (instrument, `Counters` field, description).
_COUNTED = (
    ("tidings.dropped", "dropped", "{message}", "Messages dropped: a buffer was full."),
    ("tidings.decode_errors", "decode_errors", "{message}", "Payloads not decoded."),
    ("tidings.callback_errors", "callback_errors", "{call}", "Callback calls that raised."),
    ("tidings.reconnects", "reconnects", "{connection}", "Connections after the first."),
    ("tidings.dead_lettered", "dead_lettered", "{message}", "Events dead-lettered."),
    ("tidings.redeliveries", "redeliveries", "{message}", "Group events delivered again."),
)

_handlers = itertools.count(1)


class Telemetry:
    """The instrumentation of one handler."""

    def __init__(self, api: _Api, *, system: str, stats: Counters, router: Router) -> None:
        self._api = api
        self.system = system
        self.stats = stats
        self._router = router
        #: What every observation of this handler carries: one series per handler.
        self.attributes = {"messaging.system": system, "tidings.handler": str(next(_handlers))}

    @classmethod
    def load(
        cls, enabled: bool, *, system: str, stats: Counters, router: Router
    ) -> Telemetry | None:
        """The telemetry of a handler, or None (turned off, or no API installed)."""
        api = _load() if enabled else None
        return cls(api, system=system, stats=stats, router=router) if api is not None else None

    def start(self) -> None:
        """The handler runs: observed from now on."""
        self._api.handlers.add(self)

    def stop(self) -> None:
        """The handler stopped: no longer observed."""
        self._api.handlers.discard(self)

    # -- producing ---------------------------------------------------------------------

    async def publish(
        self,
        destination: str,
        headers: dict[str, str] | None,
        send: Callable[[dict[str, str] | None], Awaitable[int]],
    ) -> int:
        """``send`` the event in a ``publish`` span, its context in the headers."""
        api = self._api
        attributes = self._sending(destination)
        # (start_span and attach, rather than start_as_current_span: the same, at
        # about half the cost when no SDK is configured.)
        span = api.tracer.start_span(
            f"publish {destination}", kind=api.producer, attributes=attributes
        )
        current = api.trace.set_span_in_context(span)
        token = api.context.attach(current)
        try:
            carrier = dict(headers) if headers else {}
            api.propagate.inject(carrier, context=current)
            received = await send(carrier or None)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._send_failed(span, attributes, exc)
            raise
        else:
            api.sent.add(1, attributes)
            return received
        finally:
            api.context.detach(token)
            span.end()

    async def publish_many(
        self,
        events: Sequence[tuple[str, dict[str, str] | None]],
        send: Callable[[list[dict[str, str] | None]], Awaitable[list[int]]],
    ) -> list[int]:
        """``send`` a batch of events, each in a ``publish`` span of its own (none of
        them current: they are siblings), each span's context in its headers."""
        api = self._api
        spans: list[Span] = []
        carriers: list[dict[str, str] | None] = []
        labels: list[dict[str, str]] = []
        for destination, headers in events:
            attributes = self._sending(destination)
            span = api.tracer.start_span(
                f"publish {destination}",
                kind=api.producer,
                attributes={**attributes, "messaging.batch.message_count": len(events)},
            )
            carrier = dict(headers) if headers else {}
            api.propagate.inject(carrier, context=api.trace.set_span_in_context(span))
            spans.append(span)
            carriers.append(carrier or None)
            labels.append(attributes)
        try:
            received = await send(carriers)
        except BaseException as exc:
            if isinstance(exc, Exception):
                for span, attributes in zip(spans, labels, strict=True):
                    self._send_failed(span, attributes, exc)
            raise
        else:
            for attributes in labels:
                api.sent.add(1, attributes)
            return received
        finally:
            for span in spans:
                span.end()

    def _sending(self, destination: str) -> dict[str, str]:
        """A publish span's attributes (and its sent-messages metric's)."""
        return {
            "messaging.system": self.system,
            "messaging.destination.name": destination,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
        }

    def _send_failed(self, span: Span, attributes: dict[str, str], exc: Exception) -> None:
        api = self._api
        span.record_exception(exc)
        span.set_status(api.error, f"{type(exc).__qualname__}: {exc}")
        api.sent.add(1, {**attributes, "error.type": _error_type(exc)})

    # -- consuming ---------------------------------------------------------------------

    def traced(self, callback: Callable[..., Any], destination: str, group: str | None) -> Traced:
        """``callback`` in a ``process`` span (it is registered ``takes_meta``)."""
        return Traced(callback, self, destination, group)

    def _process(self, destination: str, group: str | None, meta: Meta) -> tuple[Span, Context]:
        api = self._api
        # With no producer's context in the headers, a root span: the actor task's
        # own context (whatever was current when the handler started) is no parent.
        parent = api.propagate.extract(meta.headers) if meta.headers else api.empty()
        attributes: dict[str, Any] = {
            "messaging.system": self.system,
            "messaging.destination.name": destination,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
        }
        if meta.id is not None:
            attributes["messaging.message.id"] = meta.id
        if group is not None:
            attributes["messaging.consumer.group.name"] = group
            attributes["tidings.deliveries"] = meta.deliveries
        span = api.tracer.start_span(
            f"process {destination}", context=parent, kind=api.consumer, attributes=attributes
        )
        return span, api.trace.set_span_in_context(span, parent)

    def _processed(
        self,
        span: Span,
        started: float,
        destination: str,
        group: str | None,
        exc: BaseException | None,
    ) -> None:
        api = self._api
        attributes = {
            "messaging.system": self.system,
            "messaging.destination.name": destination,
            "messaging.operation.name": "process",
        }
        if group is not None:
            attributes["messaging.consumer.group.name"] = group
        if isinstance(exc, Unfit):  # not the callback's failure: the data did not fit
            span.set_attribute("tidings.unfit", str(exc))
        elif isinstance(exc, Retry):  # expected: the event runs again later
            span.set_attribute("tidings.retry", str(exc))
        elif isinstance(exc, Exception) and not isinstance(exc, CallbackError | Undelivered):
            span.record_exception(exc)
            span.set_status(api.error, f"{type(exc).__qualname__}: {exc}")
            attributes["error.type"] = _error_type(exc)
        api.process_duration.record(time.perf_counter() - started, attributes)
        api.consumed.add(1, attributes)
        span.end()

    # -- what the handler tells --------------------------------------------------------

    def reconnected(self, down_for: float) -> None:
        """A subscription was deaf for ``down_for`` seconds."""
        self._api.disconnected.record(down_for, self.attributes)

    def depths(self) -> list[tuple[float, Mapping[str, str]]]:
        """Mailbox depth per channel: the deepest by name, the rest summed."""
        depths = sorted(
            ((actor.mailbox.pending + actor.backlog, name) for name, actor in self._router),
            reverse=True,
        )
        shown: list[tuple[float, Mapping[str, str]]] = [
            (depth, {**self.attributes, "messaging.destination.name": name})
            for depth, name in depths[:DEPTH_SERIES]
        ]
        rest = sum(depth for depth, _ in depths[DEPTH_SERIES:])
        if len(depths) > DEPTH_SERIES:
            shown.append((rest, {**self.attributes, "messaging.destination.name": OTHER}))
        return shown

    def lags(self) -> list[tuple[float, Mapping[str, str]]]:
        """How far each durable channel's slowest registration, and each group
        member, is behind the newest entry the channel has seen (log time, seconds)."""
        lags: list[tuple[float, Mapping[str, str]]] = []
        for name, actor in self._router:
            if not isinstance(actor, DurableActor) or not actor.newest:
                continue
            attributes = {**self.attributes, "messaging.destination.name": name}
            # (A registration placed on an empty log, or at "all", is at 0: it is as
            # far behind as the first event this channel dispatched.)
            behind = actor.behind() or actor.first
            if behind:
                lags.append((_seconds(max(actor.newest - behind, 0)), attributes))
            for member in actor.groups:
                last = getattr(member, "last_read", None)
                at = position(last) if last is not None else 0
                group = getattr(member, "group", "")
                lags.append(
                    (
                        _seconds(max(actor.newest - at, 0)) if at else 0.0,
                        {**attributes, "messaging.consumer.group.name": group},
                    )
                )
        return lags


def _error_type(exc: BaseException) -> str:
    """``error.type``: the exception's fully qualified name (tidings' own as the
    public ``tidings.X``), a builtin's bare name."""
    kind = type(exc)
    module = kind.__module__
    if module == "builtins":
        return kind.__qualname__
    if module.startswith("tidings."):
        module = "tidings"
    return f"{module}.{kind.__qualname__}"


def _seconds(positions: int) -> float:
    """A difference of log positions as seconds of log time (ids are milliseconds)."""
    return max(positions >> 64, 0) / 1000


class Traced(Wrapper):
    """A callback in a ``process`` span: registered ``takes_meta``, it is given the
    delivery's `Meta` (id, delivery count, headers) after the arguments, and calls
    the callback with the arguments alone."""

    __slots__ = ("_destination", "_group", "_telemetry")

    def __init__(
        self,
        callback: Callable[..., Any],
        telemetry: Telemetry,
        destination: str,
        group: str | None,
    ) -> None:
        super().__init__(callback)
        self._telemetry = telemetry
        self._destination = destination
        self._group = group

    def __call__(self, channel: Any, event: str, data: Any, meta: Meta) -> Any:
        telemetry, destination = self._telemetry, self._destination
        context = telemetry._api.context
        span, current = telemetry._process(destination, self._group, meta)
        started = time.perf_counter()
        token = context.attach(current)
        try:
            result = self.callback(channel, event, data)
        except BaseException as exc:
            telemetry._processed(span, started, destination, self._group, exc)
            raise
        finally:
            context.detach(token)
        if result is not None and inspect.isawaitable(result):
            return self._finish(result, span, current, started)
        telemetry._processed(span, started, destination, self._group, None)
        return result

    async def _finish(
        self, awaitable: Awaitable[Any], span: Span, current: Context, started: float
    ) -> Any:
        """Await an async callback's result in its span's context, then end the span."""
        context = self._telemetry._api.context
        token = context.attach(current)
        try:
            result = await awaitable
        except BaseException as exc:
            self._telemetry._processed(span, started, self._destination, self._group, exc)
            raise
        finally:
            context.detach(token)
        self._telemetry._processed(span, started, self._destination, self._group, None)
        return result
