"""The Prometheus recipe (examples/prometheus_metrics.py), for real: the program runs
as a process of its own, serves the OpenTelemetry Prometheus exporter's endpoint, and
a scrape of it shows tidings' messaging and handler metrics with their values."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.redis_server import RedisServer
from tidings.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "prometheus_metrics.py"

#: (sample name, labels, value) of one scrape.
Sample = tuple[str, dict[str, str], float]


@contextmanager
def running_example(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The example on a free port; interrupted (Ctrl-C) at the end, and it must exit
    cleanly."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args, "--port", str(port), "--serve-seconds", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in out


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def values(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [
        value
        for sample, have, value in samples
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    ]


def scrape_when(
    process: subprocess.Popen[str], port: int, ready: str, expected: float, limit: float = 20
) -> list[Sample]:
    """Scrape until the sample ``ready`` reaches ``expected`` (bounded polling: the
    endpoint comes up, then the events go through)."""
    deadline = time.monotonic() + limit
    samples: list[Sample] = []
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            samples = scrape(port)
        except (urllib.error.URLError, ConnectionError):
            pass  # not serving yet
        else:
            if values(samples, ready) == [expected]:
                return samples
        time.sleep(0.05)
    raise AssertionError(f"{ready} never reached {expected}: {samples}")


def check(samples: list[Sample], events: int, system: str, channel: str) -> None:
    where = {"messaging_system": system, "messaging_destination_name": channel}
    sent = values(
        samples,
        "messaging_client_sent_messages_total",
        messaging_operation_type="send",
        messaging_operation_name="publish",
        **where,
    )
    assert sent == [events]
    consumed = "messaging_client_consumed_messages_total"
    assert values(samples, consumed, messaging_operation_name="process", **where) == [events]
    assert values(samples, "messaging_process_duration_seconds_count", **where) == [events]
    [duration] = values(samples, "messaging_process_duration_seconds_sum", **where)
    assert 0 <= duration < 5
    assert values(samples, "messaging_process_duration_seconds_bucket", le="+Inf", **where) == [
        events
    ]
    # The handler's own counters: one handler, nothing went wrong.
    for name in (
        "dropped",
        "decode_errors",
        "callback_errors",
        "reconnects",
        "dead_lettered",
        "redeliveries",
    ):
        assert values(samples, f"tidings_{name}_total", messaging_system=system) == [0], name
    [handler] = {
        labels["tidings_handler"] for _, labels, _ in samples if "tidings_handler" in labels
    }
    assert handler
    # Its gauges, observed while it runs: nothing waiting, the durable channel caught up.
    assert values(samples, "tidings_mailbox_depth", **where) == [0]
    assert values(samples, "tidings_stream_lag_seconds", **where) == [0]
    [info] = [labels for name, labels, _ in samples if name == "target_info"]
    assert info["service_name"] == "tidings-prometheus-example"


def test_the_recipe_on_memory() -> None:
    with running_example("--events", "7") as (process, port):
        samples = scrape_when(process, port, "messaging_client_consumed_messages_total", 7)
        check(samples, 7, "memory", "example:orders")


@pytest.mark.redis
def test_the_recipe_on_redis_with_asyncio(redis_server: RedisServer) -> None:
    namespace = f"p{uuid.uuid4().hex[:8]}"  # the log outlives the process on the server
    args = (redis_server.url, "--namespace", namespace, "--events", "12", "--backend", "asyncio")
    with running_example(*args) as (process, port):
        samples = scrape_when(process, port, "messaging_client_consumed_messages_total", 12)
        check(samples, 12, "redis", f"{namespace}:orders")
