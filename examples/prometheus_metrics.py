"""tidings' metrics on a Prometheus endpoint, through the OpenTelemetry SDK.

    python -m pip install '.[otel]' opentelemetry-sdk opentelemetry-exporter-prometheus
    python examples/prometheus_metrics.py [URL] [--port 9464] [--events 10]
        [--serve-seconds 60] [--namespace example] [--backend trio|asyncio]
    curl http://127.0.0.1:9464/metrics

tidings records its metrics through the OpenTelemetry API; the application chooses
where they go by configuring the SDK. Here a ``MeterProvider`` with the Prometheus
exporter's reader, and ``prometheus_client``'s HTTP server (it comes with the
exporter) serving what that reader collects. No code of tidings is involved: any
handler started afterwards (or before: the API's proxies follow) is measured.

The program runs a handler on URL (default ``memory://``), publishes ``--events``
events on a durable channel and consumes them, then keeps the handler running for
``--serve-seconds`` (Ctrl-C ends it sooner) so that the endpoint can be scraped:

- ``messaging_client_sent_messages_total``, ``messaging_client_consumed_messages_total``
  and the ``messaging_process_duration_seconds`` histogram, per channel;
- ``tidings_dropped_total``, ``tidings_decode_errors_total``, ... (each handler's own
  counters, labelled ``tidings_handler``), and the ``tidings_mailbox_depth`` and
  ``tidings_stream_lag_seconds`` gauges, observed while the handler runs.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import anyio
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

import tidings


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Configure the SDK once, at start-up: a Prometheus endpoint on ``port``."""
    reader = PrometheusMetricReader()  # a collector in prometheus_client's registry
    resource = Resource.create({"service.name": "tidings-prometheus-example"})
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    start_http_server(port, addr=host)  # a daemon thread serving /metrics


async def main(url: str, namespace: str, events: int, serve_seconds: float) -> None:
    consumed = 0
    all_consumed = anyio.Event()

    def on_order(channel: tidings.Channel, event: str, data: Any) -> None:
        nonlocal consumed
        consumed += 1
        if consumed == events:
            all_consumed.set()

    async with tidings.open_channels(url, namespace=namespace, durable=["orders"]) as channels:
        await channels.register("orders", "created", on_order)
        for n in range(events):
            await channels.publish("orders", "created", {"id": n})
        if events:
            await all_consumed.wait()
        print(f"published and consumed {events} events", flush=True)
        await anyio.sleep(serve_seconds)  # the handler runs on: its gauges are observed


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tidings' metrics on a Prometheus endpoint")
    parser.add_argument("url", nargs="?", default="memory://", help="default: memory://")
    parser.add_argument("--namespace", default="example", help="default: example")
    parser.add_argument("--port", type=int, default=9464, help="default: 9464")
    parser.add_argument("--events", type=int, default=10, help="default: 10")
    parser.add_argument("--serve-seconds", type=float, default=60.0, help="default: 60")
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    return parser.parse_args()


if __name__ == "__main__":
    args = arguments()
    serve_metrics(args.port)
    print(f"serving metrics on http://127.0.0.1:{args.port}/metrics", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the handler was closed
        anyio.run(
            main, args.url, args.namespace, args.events, args.serve_seconds, backend=args.backend
        )
