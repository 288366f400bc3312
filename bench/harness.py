"""Runs the scenarios, alternating contenders, and reports medians and ratios."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contenders import CHANNEL, PAYLOAD
from tests.redis_server import RedisServer

HERE = Path(__file__).parent


@dataclass
class Scenario:
    name: str
    title: str
    contenders: list[str]
    n: int
    quick_n: int
    metric: str  # the number compared across contenders
    higher_is_better: bool = True
    unit: str = "events/s"
    extra: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario(
        "receive",
        "1. receive throughput (redis-benchmark publishes, consumer drains)",
        ["tidings-trio", "tidings-asyncio", "redis-py", "coredis-trio", "raw-hiredis"],
        n=200_000,
        quick_n=500,
        metric="rate",
    ),
    Scenario(
        "publish",
        "2. publish throughput (10 concurrent publishers)",
        ["tidings-trio", "tidings-asyncio", "redis-py", "coredis-trio"],
        n=50_000,
        quick_n=200,
        metric="rate",
    ),
    Scenario(
        "latency",
        "3. latency publish -> callback at a steady 5,000 events/s",
        ["tidings-trio", "redis-py"],
        n=15_000,
        quick_n=100,
        metric="p99_ms",
        higher_is_better=False,
        unit="ms",
        extra={"rate": 5000},
    ),
    Scenario(
        "scale",
        "4. registering 10,000 channels (subscribed and confirmed)",
        ["tidings-batched", "tidings-sequential"],
        n=10_000,
        quick_n=100,
        metric="seconds",
        higher_is_better=False,
        unit="s",
    ),
    Scenario(
        "memory",
        "5. in-process publish -> callback (memory://)",
        ["tidings-trio", "tidings-asyncio", "broadcaster", "trio-channel"],
        n=100_000,
        quick_n=500,
        metric="rate",
    ),
]


def _child(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.contenders", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )


def _line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"contender exited early (code {process.wait()})")
    if time.monotonic() > deadline:
        raise RuntimeError("contender took too long")
    return line.strip()


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_line(process, 300))
    if process.wait(timeout=60) != 0:
        raise RuntimeError("contender failed")
    return result


def run_one(scenario: Scenario, contender: str, server: RedisServer, n: int) -> dict[str, Any]:
    spec = {"scenario": scenario.name, "contender": contender, "port": server.port, "n": n}
    process = _child(spec)
    try:
        if scenario.name == "receive":
            assert _line(process, 60) == "ready"
            # The consumer sleeps while everything is published into Redis's output
            # buffer, then drains it: this times the consumer, not the publisher.
            os.kill(process.pid, signal.SIGSTOP)
            subprocess.run(
                [
                    "redis-benchmark",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(server.port),
                    "-n",
                    str(n),
                    "-c",
                    "2",
                    "-P",
                    "500",
                    "-q",
                    "PUBLISH",
                    CHANNEL,
                    PAYLOAD,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            os.kill(process.pid, signal.SIGCONT)
        elif scenario.name == "latency":
            assert _line(process, 60) == "ready"
            pacer = _child(
                {"scenario": "pace", "port": server.port, "n": n, "rate": scenario.extra["rate"]}
            )
            _result(pacer)
        return _result(process)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()


def run(scenarios: list[Scenario], runs: int, quick: bool, only: set[str] | None) -> dict[str, Any]:
    server = RedisServer("--client-output-buffer-limit", "pubsub 0 0 0")
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "runs": runs,
        "quick": quick,
        "scenarios": {},
    }
    try:
        for scenario in scenarios:
            contenders = [c for c in scenario.contenders if only is None or c in only]
            if not contenders:
                continue
            n = scenario.quick_n if quick else scenario.n
            samples: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
            print(f"\n{scenario.title}  (n={n:,}, {runs} runs, alternating)", flush=True)
            for round_ in range(runs):
                for contender in contenders:  # A B C, A B C, ...: same conditions for all
                    result = run_one(scenario, contender, server, n)
                    samples[contender].append(result)
                    print(
                        f"  run {round_ + 1}: {contender:<20} {_fmt(scenario, result)}", flush=True
                    )
            medians = {
                c: {
                    key: statistics.median(r[key] for r in rs)
                    for key in rs[0]
                    if isinstance(rs[0][key], int | float)
                }
                for c, rs in samples.items()
            }
            report["scenarios"][scenario.name] = {
                "title": scenario.title,
                "n": n,
                "metric": scenario.metric,
                "unit": scenario.unit,
                "higher_is_better": scenario.higher_is_better,
                "samples": samples,
                "medians": medians,
            }
    finally:
        server.close()
    report["targets"] = targets(report["scenarios"])
    return report


def _fmt(scenario: Scenario, result: dict[str, Any]) -> str:
    if scenario.name == "latency":
        return f"p50 {result['p50_ms']:.2f} ms   p99 {result['p99_ms']:.2f} ms"
    if scenario.name == "scale":
        return f"{result['seconds']:.3f} s   {result['bytes_per_channel'] / 1024:.2f} KiB/channel"
    return f"{result['rate']:>12,.0f} {scenario.unit}"


def _ratio(scenarios: dict[str, Any], name: str, a: str, b: str, key: str) -> float | None:
    medians = scenarios.get(name, {}).get("medians", {})
    if a not in medians or b not in medians:
        return None
    return float(medians[a][key] / medians[b][key])


def targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, checked against this run's medians."""
    found: list[dict[str, Any]] = []

    def check(label: str, value: float | None, goal: str, ok: bool | None) -> None:
        if value is not None:
            found.append({"target": label, "value": round(value, 3), "goal": goal, "met": ok})

    for backend in ("trio", "asyncio"):
        r = _ratio(scenarios, "receive", f"tidings-{backend}", "redis-py", "rate")
        check(f"receive, tidings-{backend} / redis-py", r, ">= 4.0", r is not None and r >= 4.0)
        r = _ratio(scenarios, "receive", f"tidings-{backend}", "raw-hiredis", "rate")
        check(f"receive, tidings-{backend} / raw hiredis", r, ">= 0.5", r is not None and r >= 0.5)
        r = _ratio(scenarios, "publish", f"tidings-{backend}", "redis-py", "rate")
        check(f"publish, tidings-{backend} / redis-py", r, ">= 4.0", r is not None and r >= 4.0)
        r = _ratio(scenarios, "memory", f"tidings-{backend}", "broadcaster", "rate")
        check(
            f"memory://, tidings-{backend} / broadcaster", r, ">= 1.0", r is not None and r >= 1.0
        )
    r = _ratio(scenarios, "latency", "tidings-trio", "redis-py", "p99_ms")
    check("p99 latency, tidings / redis-py", r, "<= 1.0", r is not None and r <= 1.0)
    scale = scenarios.get("scale", {}).get("medians", {})
    for mode in ("batched", "sequential"):
        m = scale.get(f"tidings-{mode}")
        if m:
            check(f"10k channels {mode}, seconds", m["seconds"], "< 1", m["seconds"] < 1)
            kib = m["bytes_per_channel"] / 1024
            check(f"10k channels {mode}, KiB per channel", kib, "< 4", kib < 4)
    return found


def print_table(report: dict[str, Any]) -> None:
    print("\n" + "=" * 78)
    print(f"{'scenario':<10} {'contender':<20} {'median':>16}   {'ratio':>8}")
    print("-" * 78)
    baselines = {
        "receive": "redis-py",
        "publish": "redis-py",
        "latency": "redis-py",
        "memory": "broadcaster",
        "scale": "tidings-sequential",
    }
    for name, data in report["scenarios"].items():
        metric, unit = data["metric"], data["unit"]
        base = data["medians"].get(baselines[name])
        for contender, medians in data["medians"].items():
            value = medians[metric]
            ratio = ""
            if base is not None:
                ratio = f"{(value / base[metric]):.2f}x"
            shown = f"{value:,.0f} {unit}" if unit == "events/s" else f"{value:.3f} {unit}"
            print(f"{name:<10} {contender:<20} {shown:>16}   {ratio:>8}")
    print("-" * 78)
    for target in report["targets"]:
        mark = "met " if target["met"] else "MISS"
        print(f"[{mark}] {target['target']:<42} {target['value']:>8}  (goal {target['goal']})")


def chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = list(report["scenarios"].values())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4 * len(scenarios), 4))
    if len(scenarios) == 1:
        axes = [axes]
    for ax, data in zip(axes, scenarios, strict=True):
        names = list(data["medians"])
        values = [data["medians"][c][data["metric"]] for c in names]
        colours = ["#2a7ab9" if c.startswith("tidings") else "#9a9a9a" for c in names]
        ax.barh(names, values, color=colours)
        ax.invert_yaxis()
        better = "higher" if data["higher_is_better"] else "lower"
        ax.set_title(
            f"{data['title'].split('(')[0].strip()}\n({data['unit']}, {better} is better)",
            fontsize=9,
        )
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True
