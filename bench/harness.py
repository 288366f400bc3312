"""Runs the scenarios, alternating contenders, and reports medians and ratios.

A scenario has one or more cases (a number of channels, of publishers, a payload
size, a registration count); each case is reported as its own entry, named
``scenario`` when there is one case and ``scenario/label`` otherwise. With a baseline
tree (``--baseline DIR``), every tidings contender also runs from that tree as
``<contender>@base``, right after the current one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.contenders import (
    CHANNEL,
    DURABLE,
    JOB_GROUP,
    JOBS,
    JOBS_KEY,
    OTEL_SETUPS,
    PAYLOAD,
    SPREAD_PREFIX,
    TRACED_PAYLOAD,
    cpu_us,
    fill_log,
    job_key,
    publish_durable,
    redis_cpu_seconds,
    sized_payload,
)
from bench.web import detail as web_detail
from bench.web import run_web
from tests.redis_server import RedisServer

HERE = Path(__file__).parent
ROOT = HERE.parent
BASE = "@base"


@dataclass
class Case:
    label: str  # short, in the entry's name: "10k", "100", "1MB"; "" for a scenario's only case
    n: int
    quick_n: int
    params: dict[str, Any] = field(default_factory=dict)  # added to the contender's spec
    max_runs: int | None = None  # fewer rounds than --runs for the slow ones
    contenders: list[str] | None = None  # a subset of the scenario's
    fill: str | None = None  # instead of the scenario's (see Scenario.fill)
    # Fewer events for these (slow) contenders: their rate from n_for[c] events (at
    # most quick_n with --quick), so that one run takes seconds, not minutes.
    n_for: dict[str, int] = field(default_factory=dict)

    def n_of(self, contender: str, quick: bool) -> int:
        n = self.quick_n if quick else self.n
        return min(n, self.n_for.get(contender.removesuffix(BASE), n))


@dataclass
class Scenario:
    name: str
    title: str  # "{}" is the case's label
    contenders: list[str]
    cases: list[Case]
    metric: str  # the number compared across contenders
    peer: str  # ratios are against this contender
    peers: dict[str, str] = field(default_factory=dict)  # ... or, for these, against another
    higher_is_better: bool = True
    unit: str = "events/s"
    fill: str | None = None  # how the harness publishes while the consumer is paused
    axis: str | None = None  # the spec key the scaling chart plots against
    headline: str = ""  # the case in chart.png (default: the only one)
    traced: bool = False  # one more run per contender under tracemalloc (untimed)
    extra: dict[str, Any] = field(default_factory=dict)

    def entry(self, case: Case) -> str:
        return f"{self.name}/{case.label}" if case.label else self.name

    def peer_of(self, contender: str) -> str:
        base = BASE if contender.endswith(BASE) else ""
        peer = self.peers.get(contender.removesuffix(BASE))
        return self.peer if peer is None else peer + base


TIDINGS = ["tidings-trio", "tidings-asyncio"]
PUBLISHERS = [*TIDINGS, "redis-py"]  # the peer libraries too with 10 publishers only
# FastStream's pub/sub subscriber handles a few thousand events/s (0.7.8 deep-copies its
# subscription's schema twice per message, for its log context): 20,000 events
# take it seconds, 200,000 would take a minute a run.
SLOW_RECEIVE = {"faststream": 20_000}
# Durable channels: each tidings contender plain and durable, the durable one compared
# with the plain one.
PLAIN_AND_DURABLE = [c for name in TIDINGS for c in (name, name + DURABLE)]
DURABLE_PEERS = {name + DURABLE: name for name in TIDINGS}

SCENARIOS = [
    Scenario(
        "receive",
        "1. receive throughput (redis-benchmark publishes, consumer drains)",
        [
            *TIDINGS,
            "redis-py",
            "coredis-trio",
            "coredis-asyncio",
            "faststream",
            "broadcaster",
            "raw-hiredis",
        ],
        [Case("", n=200_000, quick_n=500, n_for=SLOW_RECEIVE)],
        metric="rate",
        peer="redis-py",
        fill="redis-benchmark",
    ),
    Scenario(
        "receive-spread",
        "2. receive spread over K={} channels (redis-benchmark -r K, consumer drains)",
        [*TIDINGS, "redis-py"],
        [
            Case(label, n=200_000, quick_n=500, params={"channels": k})
            for label, k in (("1", 1), ("100", 100), ("10k", 10_000))
        ],
        metric="rate",
        peer="redis-py",
        fill="redis-benchmark",
        axis="channels",
        headline="10k",
    ),
    Scenario(
        "receive-size",
        "3. receive throughput, {} payloads (consumer drains)",
        [*TIDINGS, "redis-py"],
        [
            Case("100B", n=100_000, quick_n=500, params={"size": 100}),
            Case("10KB", n=20_000, quick_n=200, params={"size": 10_000}),
            Case("1MB", n=300, quick_n=10, params={"size": 1_000_000}),
        ],
        metric="rate",
        peer="redis-py",
        fill="pipeline",
        axis="size",
    ),
    Scenario(
        "publish",
        "4. publish throughput, concurrent publishers: {}",
        [*TIDINGS, "redis-py", "coredis-trio", "coredis-asyncio", "faststream"],
        [
            Case("1", n=10_000, quick_n=100, params={"publishers": 1}, contenders=PUBLISHERS),
            Case(
                "10", n=50_000, quick_n=200, params={"publishers": 10}, n_for={"faststream": 20_000}
            ),
            Case("100", n=30_000, quick_n=500, params={"publishers": 100}, contenders=PUBLISHERS),
        ],
        metric="rate",
        peer="redis-py",
        axis="publishers",
        headline="10",
    ),
    Scenario(
        "publish-size",
        "5. publish throughput, {} payloads (10 concurrent publishers)",
        [*TIDINGS, "redis-py"],
        [
            Case("100B", n=50_000, quick_n=200, params={"size": 100}),
            Case("10KB", n=20_000, quick_n=100, params={"size": 10_000}),
            Case("1MB", n=300, quick_n=10, params={"size": 1_000_000}),
        ],
        metric="rate",
        peer="redis-py",
        axis="size",
    ),
    Scenario(
        "publish-many",
        "4b. publish many: calls of {} events each (publish_many / a pipeline of PUBLISH), "
        "one call at a time",
        [*TIDINGS, "redis-py-pipeline", "coredis-pipeline", "raw-hiredis"],
        [Case(str(b), n=200_000, quick_n=2_000, params={"batch": b}) for b in (100, 1000)],
        metric="rate",
        peer="redis-py-pipeline",
        axis="batch",
        headline="100",
    ),
    Scenario(
        "latency",
        "6. latency publish -> callback at a steady 5,000 events/s",
        ["tidings-trio", "redis-py"],
        [Case("", n=15_000, quick_n=100)],
        metric="p99_ms",
        peer="redis-py",
        higher_is_better=False,
        unit="ms",
        fill="pace",
        extra={"rate": 5000},
    ),
    Scenario(
        "register",
        "7. registering {} channels (each confirmed by Redis)",
        ["tidings-concurrent", "tidings-sequential", "tidings-register_many"],
        [
            Case("10k", n=10_000, quick_n=100),
            Case("100k", n=100_000, quick_n=1_000, max_runs=2),
        ],
        metric="seconds",
        peer="tidings-sequential",
        higher_is_better=False,
        unit="s",
        axis="n",
        headline="10k",
        traced=True,
    ),
    Scenario(
        "memory",
        "8. in-process publish -> callback (memory://)",
        [*TIDINGS, "broadcaster", "trio-channel"],
        [Case("", n=100_000, quick_n=500)],
        metric="rate",
        peer="broadcaster",
    ),
    Scenario(
        "durable-publish",
        "9. durable vs plain publish, 10 concurrent publishers (default retention)",
        PLAIN_AND_DURABLE,
        [Case("", n=50_000, quick_n=200, params={"publishers": 10, "redis_cpu": True})],
        metric="rate",
        peer="tidings-trio",
        peers=DURABLE_PEERS,
    ),
    Scenario(
        "catch-up",
        '10. catch-up: a new registration reads a durable channel\'s log of n events (since="all")',
        [*TIDINGS, "redis-py"],
        [Case("", n=100_000, quick_n=1_000)],
        metric="rate",
        peer="redis-py",
    ),
    Scenario(
        "durable-receive",
        "11. live receive, durable vs plain (pipelined publishes, consumer drains)",
        PLAIN_AND_DURABLE,
        [Case("", n=200_000, quick_n=500)],
        metric="rate",
        peer="tidings-trio",
        peers=DURABLE_PEERS,
        fill="durable",
    ),
    Scenario(
        "outage",
        "12. events lost to an outage of the subscriber's connections "
        "(a quarter of the publishing: 1 s of 4 s at 5,000 events/s)",
        ["tidings-trio", "tidings-trio-durable", "redis-py"],
        [Case("", n=20_000, quick_n=2_000, params={"rate": 5000})],
        metric="lost",
        peer="redis-py",
        higher_is_better=False,
        unit="events",
        fill="outage",
    ),
    Scenario(
        "jobs",
        "13. work queue: a consumer group of {} member process(es) works off a log of n jobs",
        # FastStream and taskiq (asyncio only) each drain a log that their own enqueue
        # wrote (bench.contenders.JOB_FILLS), of fewer jobs: an XACK per job is slow.
        [*TIDINGS, "redis-py", "faststream", "taskiq"],
        [
            Case(
                str(m),
                n=30_000,
                quick_n=300,
                params={"members": m},
                n_for={"faststream": 10_000, "taskiq": 10_000},
            )
            for m in (1, 2, 4)
        ],
        metric="rate",
        peer="redis-py",
        unit="jobs/s",
        fill="group",
        axis="members",
        headline="2",
    ),
    Scenario(
        "telemetry",
        "14. the cost of OpenTelemetry: tidings-trio {}, API absent / API alone / SDK "
        "(spans discarded) / SDK with telemetry=False",
        list(OTEL_SETUPS),
        [
            # As "publish/10": 10 concurrent publishers, each awaiting its reply.
            Case("publish", n=5_000, quick_n=100, params={"op": "publish", "publishers": 10}),
            # As "receive", the events carrying a traceparent (TRACED_PAYLOAD).
            Case(
                "receive",
                n=20_000,
                quick_n=500,
                params={"op": "receive", "traceparent": True},
                fill="redis-benchmark",
            ),
            # As "memory": publish -> callback in one process (both spans).
            Case("memory", n=5_000, quick_n=500, params={"op": "memory"}),
        ],
        metric="rate",
        peer="tidings-absent",
    ),
    Scenario(
        "web",
        "15. web fan-out: {} SSE clients on one app process (uvicorn), a broadcast to all: "
        "p99 publish -> receive",
        ["tidings-asyncio", "broadcaster", "faststream", "faststream-per-client"],
        [
            Case("1k", n=1_000, quick_n=20, params={"broadcasts": 5}, max_runs=3),
            # FastStream's per-client subscribers are a Redis connection each: 1k only.
            # More broadcasts: a full garbage collection of the server (~0.5-0.8 s with
            # 10k clients) falls in some of them, and the p99 says how often.
            Case(
                "10k",
                n=10_000,
                quick_n=50,
                params={"broadcasts": 8},
                max_runs=2,
                contenders=["tidings-asyncio", "broadcaster", "faststream"],
            ),
        ],
        metric="p99_ms",
        peer="broadcaster",
        higher_is_better=False,
        unit="ms",
        fill="web",  # three processes of its own: see bench/web.py
        headline="10k",
    ),
]


def select(wanted: set[str]) -> list[Scenario]:
    """The scenarios named in ``wanted``, by name (all cases) or ``name/label``."""
    chosen = []
    for scenario in SCENARIOS:
        cases = [
            c for c in scenario.cases if scenario.name in wanted or scenario.entry(c) in wanted
        ]
        if cases:
            chosen.append(dataclasses.replace(scenario, cases=cases))
    return chosen


def entry_names() -> list[str]:
    return [s.entry(c) for s in SCENARIOS for c in s.cases]


# -- child processes -------------------------------------------------------------------------


def prepare_baseline(tree: Path) -> Path:
    """Copy this bench/ package into ``tree`` (an older source tree), so that the same
    contender code runs against the old library there."""
    tree = tree.resolve()
    if not (tree / "tidings" / "__init__.py").is_file():
        raise SystemExit(f"--baseline {tree}: no tidings/__init__.py there")
    if tree == ROOT.resolve():
        raise SystemExit("--baseline must be another tree than this one")
    shutil.rmtree(tree / "bench", ignore_errors=True)
    shutil.copytree(HERE, tree / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
    return tree


def _placed(tree: Path | None) -> tuple[Path, dict[str, str] | None]:
    """The working directory and environment of a child run from ``tree`` (None: this
    one). ``-m`` puts the working directory first on sys.path, so a baseline child runs
    there, with ``tree`` on PYTHONPATH too: it imports that tree's tidings and its copy
    of bench/ (see :func:`prepare_baseline`)."""
    if tree is None:
        return ROOT, None
    paths = [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])]
    return tree, {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _child(
    spec: dict[str, Any], tree: Path | None = None, stdin: bool = False
) -> subprocess.Popen[str]:
    """``python -m bench.contenders SPEC`` from this tree, or from ``tree`` (with
    ``stdin``, its standard input is a pipe from here)."""
    cwd, env = _placed(tree)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.contenders", json.dumps(spec)],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


def tidings_file(tree: Path | None) -> str:
    """Where ``import tidings`` resolves for a child run from ``tree`` (None: this one)."""
    cwd, env = _placed(tree)
    return subprocess.run(
        [sys.executable, "-c", "import tidings; print(tidings.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's next line; it is killed if that takes more than ``timeout`` s."""
    assert process.stdout is not None
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        process.kill()

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    try:
        line = process.stdout.readline()
    finally:
        watchdog.cancel()
    if not line:
        code = process.wait()
        if timed_out.is_set():
            raise RuntimeError(f"contender killed after {timeout:g} s")
        raise RuntimeError(f"contender exited early (code {code})")
    return line.strip()


def _result(process: subprocess.Popen[str], line: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(line if line is not None else _line(process, 1800))
    if process.wait(timeout=60) != 0:
        raise RuntimeError("contender failed")
    return result


def _redis_benchmark(port: int, n: int, channel: str, *extra: str, payload: str = PAYLOAD) -> None:
    subprocess.run(
        [
            "redis-benchmark",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-n",
            str(n),
            "-c",
            "2",
            "-P",
            "500",
            "-q",
            *extra,
            "PUBLISH",
            channel,
            payload,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _publish_pipelined(port: int, n: int, payload: str) -> None:
    """Publish ``payload`` n times on CHANNEL, pipelined by about 4 MB (redis-benchmark
    takes the payload as an argument: no 1 MB ones)."""
    import redis

    client = redis.Redis(port=port)
    try:
        batch = max(1, min(1000, 4_000_000 // len(payload)))
        data = payload.encode()
        for start in range(0, n, batch):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(batch, n - start)):
                pipe.publish(CHANNEL, data)
            pipe.execute()
    finally:
        client.close()


def run_one(
    scenario: Scenario,
    case: Case,
    contender: str,
    server: RedisServer,
    n: int,
    baseline: Path | None = None,
    trace: bool = False,
) -> dict[str, Any]:
    name = contender.removesuffix(BASE)
    at_base = contender.endswith(BASE)
    if case.fill is not None:
        scenario = dataclasses.replace(scenario, fill=case.fill)
    spec = {
        "scenario": scenario.name,
        "contender": name,
        "port": server.port,
        "n": n,
        **case.params,
        **({"trace": True} if trace else {}),
        **({"baseline": True} if at_base else {}),
    }
    if scenario.fill == "group":
        tree = baseline if at_base else None
        try:
            return _run_group(spec, case.params["members"], server, n, tree)
        except RuntimeError as exc:
            raise RuntimeError(f"{scenario.entry(case)}, {contender}: {exc}") from None
    if scenario.fill == "web":
        return run_web(spec, *_placed(baseline if at_base else None))
    process = _child(spec, baseline if at_base else None, stdin=scenario.fill == "outage")
    try:
        return _drive(scenario, case, name, process, server, n)
    except RuntimeError as exc:
        raise RuntimeError(f"{scenario.entry(case)}, {contender}: {exc}") from None
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()


def _drive(
    scenario: Scenario,
    case: Case,
    contender: str,
    process: subprocess.Popen[str],
    server: RedisServer,
    n: int,
) -> dict[str, Any]:
    """Publish what the contender consumes, if anything; return its result."""
    if scenario.fill is None:
        return _result(process)
    line = _line(process, 300)
    if line != "ready":
        return _result(process, line)  # skipped
    if scenario.fill == "pace":
        pacer = _child(
            {"scenario": "pace", "port": server.port, "n": n, "rate": scenario.extra["rate"]}
        )
        _result(pacer)
        return _result(process)
    if scenario.fill == "outage":
        # Steady publishing; the contender cuts its own connections meanwhile, and
        # is then told how many events it should have had.
        pacer = _child(
            {
                "scenario": "pace-outage",
                "port": server.port,
                "n": n,
                "rate": case.params["rate"],
                "durable": contender.endswith(DURABLE),
            }
        )
        published = _result(pacer)["published"]
        assert process.stdin is not None
        process.stdin.write(json.dumps({"published": published}) + "\n")
        process.stdin.flush()
        return _result(process)
    # The consumer sleeps while everything is published into Redis's output
    # buffer, then drains it: this times the consumer, not the publisher.
    os.kill(process.pid, signal.SIGSTOP)
    if scenario.fill == "redis-benchmark":
        k = case.params.get("channels")
        if k is None:
            payload = TRACED_PAYLOAD if case.params.get("traceparent") else PAYLOAD
            _redis_benchmark(server.port, n, CHANNEL, payload=payload)
        else:  # __rand_int__: 12 digits, zero-padded, in [0, k)
            _redis_benchmark(server.port, n, f"{SPREAD_PREFIX}__rand_int__", "-r", str(k))
    elif scenario.fill == "pipeline":
        _publish_pipelined(server.port, n, sized_payload(case.params["size"]))
    elif scenario.fill == "durable":  # as tidings publishes on a durable channel, or not
        if contender.endswith(DURABLE):
            publish_durable(server.port, (PAYLOAD for _ in range(n)), max_len=n)
        else:
            _publish_pipelined(server.port, n, PAYLOAD)
    else:
        raise ValueError(f"unknown fill {scenario.fill!r}")
    os.kill(process.pid, signal.SIGCONT)
    return _result(process)


def _tell(process: subprocess.Popen[str], word: str) -> None:
    assert process.stdin is not None
    process.stdin.write(word + "\n")
    process.stdin.flush()


def _fill_jobs(client: Any, spec: dict[str, Any], n: int) -> dict[str, Any] | None:
    """n jobs in the contender's log (`job_key`), unless it holds n from the run
    before (the members only read and acknowledge it); the consumer group JOB_GROUP
    removed. tidings' and redis-py's log is JOBS' (fill_log); a job-queue library's
    is filled by its own enqueue, in a child process (``fill-jobs``), untimed.
    Returns the child's ``{"skipped": ...}`` if it could not fill, else None."""
    key = job_key(spec["contender"])
    if client.xlen(key) != n:
        client.delete(key)
        if key == JOBS_KEY:
            fill_log(spec["port"], n, JOBS)
        else:
            filler = {"scenario": "fill-jobs", "contender": spec["contender"]}
            done = _result(_child({**filler, "port": spec["port"], "n": n}))
            if "skipped" in done:
                return done
            if client.xlen(key) != n:
                raise RuntimeError(f"{spec['contender']}'s fill left {client.xlen(key)} jobs")
    client.xgroup_destroy(key, JOB_GROUP)  # (a library's own fill may have made one)
    return None


def _run_group(
    spec: dict[str, Any], members: int, server: RedisServer, n: int, tree: Path | None
) -> dict[str, Any]:
    """The work-queue scenario: n jobs in the contender's log (`_fill_jobs`), the
    consumer group JOB_GROUP created anew at its start, then ``members`` processes of
    the contender started together.
    Timed from "go" (every member connected and ready) until XINFO GROUPS says the
    group read the last entry and has nothing pending: every job was acknowledged.
    The CPU time is the members' own, from "go" to "stop", summed."""
    import redis

    client = redis.Redis(port=server.port)
    processes: list[subprocess.Popen[str]] = []
    key = job_key(spec["contender"])
    try:
        skipped = _fill_jobs(client, spec, n)
        if skipped is not None:
            return skipped
        client.xgroup_create(key, JOB_GROUP, id="0")
        newest: Any = client.xrevrange(key, count=1)
        [(last_id, _fields)] = newest
        processes = [_child({**spec, "member": i}, tree, stdin=True) for i in range(members)]
        for process in processes:
            line = _line(process, 300)
            if line != "ready":
                return _result(process, line)  # skipped (the others are killed below)
        server_cpu = redis_cpu_seconds(server.port)
        started = time.perf_counter()
        for process in processes:
            _tell(process, "go")
        group = _group_done(client, key, last_id, processes)
        seconds = time.perf_counter() - started
        server_cpu = redis_cpu_seconds(server.port) - server_cpu
        for process in processes:
            _tell(process, "stop")
        # (A member that does not stop within a minute is killed: an error, not a hang.)
        results = [_result(process, _line(process, 60)) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        client.close()
    jobs = [r["jobs"] for r in results]
    firsts = [r["first"] - started for r in results if r["first"] is not None]
    result: dict[str, Any] = {
        "events": n,
        "seconds": seconds,
        "rate": n / seconds,
        "cpu_us_per_msg": cpu_us(sum(r["cpu_seconds"] for r in results), n),
        "redis_cpu_us_per_msg": cpu_us(server_cpu, n),
        "entries_read": group.get("entries-read"),
        "jobs": jobs,
        "duplicated": sum(jobs) - n,
        "acked": sum(r.get("acked", 0) for r in results),
        # Each member's share of the jobs against an even split (1.0 each when even).
        "share_min": min(jobs) * members / n,
        "share_max": max(jobs) * members / n,
        "idle_members": sum(1 for j in jobs if j == 0),
        # From "go" to the first job of the slowest member to start.
        "first_job_ms": max(firsts) * 1e3 if firsts else None,
    }
    for key in ("callback_errors", "dead_lettered"):
        if key in results[0]:
            result[key] = sum(r[key] for r in results)
    if "tidings" in results[0]:
        result["tidings"] = results[0]["tidings"]
    return result


def _group_done(
    client: Any,
    key: str,
    last_id: bytes,
    processes: list[subprocess.Popen[str]],
    stall: float = 60,
) -> dict[str, Any]:
    """Poll XINFO GROUPS of ``key`` every 2 ms until JOB_GROUP has read ``last_id``
    and nothing is pending; return its entry. A member that exits, or no progress for
    ``stall`` s, is a RuntimeError that says where the group stood."""
    state: tuple[Any, ...] = ()
    moved = time.monotonic()
    while True:
        [info] = [g for g in client.xinfo_groups(key) if g["name"] == JOB_GROUP.encode()]
        if info["pending"] == 0 and info["last-delivered-id"] == last_id:
            return dict(info)
        now = time.monotonic()
        if (info["last-delivered-id"], info["pending"]) != state:
            state, moved = (info["last-delivered-id"], info["pending"]), now
        exited = [p.returncode for p in processes if p.poll() is not None]
        if exited or now - moved > stall:
            consumers = client.xinfo_consumers(key, JOB_GROUP)
            why = f"a member exited (codes {exited})" if exited else f"no progress in {stall:g} s"
            raise RuntimeError(f"{why}; group {info}; consumers {consumers}")
        time.sleep(0.002)


def _check_tree(contender: str, result: dict[str, Any], baseline: Path | None) -> None:
    """The child's ``tidings.__file__`` must be from the tree it was meant to run."""
    path = result.get("tidings")
    if path is None:
        return
    tree = baseline if contender.endswith(BASE) and baseline is not None else ROOT
    if not Path(path).resolve().is_relative_to((tree / "tidings").resolve()):
        raise RuntimeError(f"{contender} imported tidings from {path}, not from {tree}")


# -- the run -------------------------------------------------------------------------------


def _medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    keys = dict.fromkeys(k for s in samples for k, v in s.items() if _number(v))
    return {k: statistics.median(s[k] for s in samples if _number(s.get(k))) for k in keys}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run(
    scenarios: list[Scenario],
    runs: int,
    quick: bool,
    only: set[str] | None,
    baseline: Path | None = None,
) -> dict[str, Any]:
    server = RedisServer("--client-output-buffer-limit", "pubsub 0 0 0")
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "runs": runs,
        "quick": quick,
        "tidings": tidings_file(None),
        "scenarios": {},
    }
    if baseline is not None:
        report["baseline"] = {"dir": str(baseline), "tidings": tidings_file(baseline)}
        print(f"baseline: {report['baseline']['tidings']} (current: {report['tidings']})")
    try:
        for scenario in scenarios:
            for case in scenario.cases:
                entry = _run_case(scenario, case, runs, quick, only, server, baseline)
                if entry is not None:
                    report["scenarios"][scenario.entry(case)] = entry
    finally:
        server.close()
    report["targets"] = targets(report["scenarios"])
    return report


def _run_case(
    scenario: Scenario,
    case: Case,
    runs: int,
    quick: bool,
    only: set[str] | None,
    server: RedisServer,
    baseline: Path | None,
) -> dict[str, Any] | None:
    contenders = []
    for c in case.contenders or scenario.contenders:
        if only is None or c in only:
            contenders.append(c)
            if baseline is not None and c.startswith("tidings"):
                contenders.append(c + BASE)  # right after the current one
    if not contenders:
        return None
    n = case.quick_n if quick else case.n
    rounds = runs if case.max_runs is None else min(runs, case.max_runs)
    title = scenario.title.format(case.label)
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    skipped: dict[str, str] = {}
    n_for = {c: case.n_of(c, quick) for c in contenders if case.n_of(c, quick) != n}
    fewer = "".join(f"; {c}: n={k:,}" for c, k in n_for.items())
    print(f"\n{title}  (n={n:,}{fewer}, {rounds} runs, alternating)", flush=True)
    for round_ in range(rounds):
        for contender in contenders:  # A B C, A B C, ...: same conditions for all
            if contender in skipped:
                continue
            n_c = n_for.get(contender, n)
            try:
                result = run_one(scenario, case, contender, server, n_c, baseline)
            except RuntimeError as exc:
                if contender.startswith("tidings"):
                    raise  # ours: the run is wrong, say so
                # A peer that hangs or crashes (taskiq's worker once ignored its
                # shutdown) is reported, and the rest of the run goes on.
                result = {"skipped": f"failed: {exc}"}
            if "skipped" in result:
                skipped[contender] = result["skipped"]
                print(f"  {contender:<24} skipped: {result['skipped']}", flush=True)
                continue
            _check_tree(contender, result, baseline)
            if scenario.traced and round_ == 0:
                traced = run_one(scenario, case, contender, server, n_c, baseline, trace=True)
                _check_tree(contender, traced, baseline)
                result.update((k, v) for k, v in traced.items() if k.startswith("traced_"))
            samples[contender].append(result)
            print(f"  run {round_ + 1}: {contender:<24} {_fmt(scenario, result)}", flush=True)
    x = n if scenario.axis == "n" else case.params.get(scenario.axis or "")
    return {
        "scenario": scenario.name,
        "case": case.label,
        "title": title,
        "n": n,
        "n_for": n_for,  # the contenders that ran fewer events than n
        "x": x,
        "params": case.params,
        "rounds": rounds,
        "metric": scenario.metric,
        "unit": scenario.unit,
        "higher_is_better": scenario.higher_is_better,
        "peer": scenario.peer,
        "peers": {c: scenario.peer_of(c) for c in contenders},
        "samples": {c: rs for c, rs in samples.items() if rs},
        "medians": {c: _medians(rs) for c, rs in samples.items() if rs},
        "skipped": skipped,
    }


def _cpu(values: dict[str, Any]) -> float | None:
    cpu = values.get("cpu_us_per_msg", values.get("cpu_us_per_channel"))
    return float(cpu) if cpu is not None else None


def _fmt(scenario: Scenario, result: dict[str, Any]) -> str:
    if scenario.name in ("latency", "web"):
        text = f"p50 {result['p50_ms']:.2f} ms   p99 {result['p99_ms']:.2f} ms"
    elif scenario.name == "register":
        text = f"{result['seconds']:.3f} s   {_memory(result)}"
    elif scenario.name == "outage":
        return f"lost {result['lost']:>6,}   " + _outage(result)
    else:
        text = f"{result['rate']:>12,.0f} {scenario.unit}"
    cpu = _cpu(result)
    if cpu is not None:
        per = "channel" if scenario.name == "register" else "msg"
        text += f"   {cpu:.2f} µs CPU/{per}"
    detail = "" if scenario.name in ("latency", "register") else _detail(scenario.name, result)
    return f"{text}   {detail}" if detail else text


def _detail(scenario: str, values: dict[str, Any]) -> str:
    """What the table shows beside a scenario's metric."""
    if scenario == "register":
        return _memory(values)
    if scenario == "latency":
        return f"p50 {values['p50_ms']:.3f} ms"
    if scenario == "web":
        return web_detail(values)
    if scenario == "durable-publish" and "redis_cpu_us_per_msg" in values:
        return f"redis-server {values['redis_cpu_us_per_msg']:.2f} µs CPU/msg"
    if scenario == "catch-up":
        text = f"all in {values['seconds']:.3f} s"
        if "register_returned_s" in values:
            text += f" (register returned after {values['register_returned_s']:.3f} s)"
        return text
    if scenario == "durable-receive" and "replayed" in values:
        return f"replayed {values['replayed']:,.0f}, superseded {values['superseded']:,.0f}"
    if scenario == "outage":
        return _outage(values)
    if scenario == "jobs":
        return _jobs(values)
    if scenario == "telemetry" and values.get("spans_per_msg"):
        return f"{values['spans_per_msg']:.2f} spans exported per event"
    return ""


def _jobs(values: dict[str, Any]) -> str:
    """Redis's CPU per job; how evenly the members shared the jobs; the slow start."""
    text = f"redis-server {values['redis_cpu_us_per_msg']:.2f} µs CPU/job"
    if isinstance(values.get("jobs"), list):  # one run: each member's count
        text += f"; per member {'/'.join(f'{j:,}' for j in values['jobs'])}"
    else:
        text += f"; shares {values['share_min']:.2f}-{values['share_max']:.2f} of even"
    if values.get("first_job_ms") is not None:
        text += f"; last member to start got its first job at {values['first_job_ms']:.0f} ms"
    if values.get("idle_members"):
        text += f"; {values['idle_members']:.0f} member(s) got NO JOB"
    if values.get("duplicated"):
        text += f"; DUPLICATED {values['duplicated']:,.0f}"
    if values.get("acked") and values["acked"] != values["events"]:
        text += f"; ACKED {values['acked']:,.0f}"
    return text


def _outage(values: dict[str, Any]) -> str:
    text = (
        f"duplicated {values['duplicated']:,.0f}, out of order {values['out_of_order']:,.0f}; "
        f"lost {values['lost_ms']:,.0f} ms of events, cut {values['down_ms']:,.0f} ms"
    )
    if values.get("back_ms") is not None:
        text += f", events again {values['back_ms']:,.0f} ms after"
    if "reconnects" in values:
        text += f"; reconnects {values['reconnects']:.0f}, replayed {values['replayed']:,.0f}"
    return text


def _memory(values: dict[str, Any]) -> str:
    parts = []
    if "traced_bytes_per_channel" in values:
        parts.append(
            f"traced {values['traced_bytes_per_channel'] / 1024:.2f} KiB/ch"
            f" (peak {values['traced_peak_bytes_per_channel'] / 1024:.2f})"
        )
    if "rss_bytes_per_channel" in values:
        parts.append(
            f"RSS {values['rss_bytes_per_channel'] / 1024:.2f} KiB/ch ({values['rss_mb']:.0f} MB)"
        )
    if "confirmed" in values:
        note = "" if values["confirmed"] == values["events"] else "  NOT ALL CONFIRMED"
        parts.append(f"confirmed {values['confirmed']:,.0f}/{values['events']:,.0f}{note}")
    return ", ".join(parts)


# -- targets ---------------------------------------------------------------------------------


def _get(scenarios: dict[str, Any], entry: str, contender: str, key: str) -> float | None:
    value = scenarios.get(entry, {}).get("medians", {}).get(contender, {}).get(key)
    return float(value) if value is not None else None


def _ratio(
    scenarios: dict[str, Any], entry: str, a: str, b: str, key: str, entry_b: str | None = None
) -> float | None:
    x = _get(scenarios, entry, a, key)
    y = _get(scenarios, entry_b or entry, b, key)
    return x / y if x is not None and y else None


def _full(
    scenarios: dict[str, Any], entry: str, contender: str, key: str, scale: float = 1.0
) -> float | None:
    """A median from a registration entry run at its nominal count ("10k": 10,000)."""
    nominal = int(entry.rsplit("/", 1)[-1].removesuffix("k")) * 1000
    value = _get(scenarios, entry, contender, key)
    if value is None or scenarios[entry]["n"] != nominal:
        return None
    return value * scale


def _at_n(scenarios: dict[str, Any], entry: str, contender: str, key: str, n: int) -> float | None:
    """A median from an entry run with n events (None at other sizes)."""
    value = _get(scenarios, entry, contender, key)
    return value if value is not None and scenarios[entry]["n"] == n else None


def _worst(scenarios: dict[str, Any], entry: str, contender: str, key: str) -> float | None:
    """The largest value over the entry's runs."""
    samples = scenarios.get(entry, {}).get("samples", {}).get(contender)
    return max(float(s[key]) for s in samples) if samples else None


def targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, checked against this run's medians (``met`` is None when
    this run did not measure it)."""
    found: list[dict[str, Any]] = []

    def check(label: str, value: float | None, op: str, goal: float) -> None:
        met = None
        if value is not None:
            met = value >= goal if op == ">=" else value <= goal if op == "<=" else value < goal
        found.append(
            {
                "target": label,
                "value": None if value is None else round(value, 3),
                "goal": f"{op} {goal:g}",
                "met": met,
            }
        )

    for name in TIDINGS:
        check(
            f"receive, {name} / redis-py",
            _ratio(scenarios, "receive", name, "redis-py", "rate"),
            ">=",
            10.0,
        )
        check(
            f"receive, {name} / raw hiredis",
            _ratio(scenarios, "receive", name, "raw-hiredis", "rate"),
            ">=",
            0.5,
        )
        check(
            f"receive CPU/msg, {name}, 10k channels / 1",
            _ratio(
                scenarios,
                "receive-spread/10k",
                name,
                name,
                "cpu_us_per_msg",
                entry_b="receive-spread/1",
            ),
            "<=",
            2.0,
        )
        for publishers, goal in (("10", 5.0), ("100", 8.0)):
            check(
                f"publish, {publishers} publishers, {name} / redis-py",
                _ratio(scenarios, f"publish/{publishers}", name, "redis-py", "rate"),
                ">=",
                goal,
            )
        check(
            f"memory://, {name} / broadcaster",
            _ratio(scenarios, "memory", name, "broadcaster", "rate"),
            ">=",
            1.0,
        )
    check(
        "p99 latency, tidings / redis-py",
        _ratio(scenarios, "latency", "tidings-trio", "redis-py", "p99_ms"),
        "<=",
        1.0,
    )
    # Durable channels.
    for name in TIDINGS:
        check(
            f"durable publish, {name}-durable / plain",
            _ratio(scenarios, "durable-publish", name + DURABLE, name, "rate"),
            ">=",
            0.75,
        )
        check(
            f"durable receive, {name}-durable / plain",
            _ratio(scenarios, "durable-receive", name + DURABLE, name, "rate"),
            ">=",
            0.9,
        )
        check(
            f"catch-up of 100k events, {name}, s",
            _at_n(scenarios, "catch-up", name, "seconds", 100_000),
            "<",
            0.5,
        )
    for key in ("lost", "duplicated"):
        check(
            f"outage, tidings-trio-durable, {key} (worst run)",
            _worst(scenarios, "outage", "tidings-trio" + DURABLE, key),
            "<=",
            0,
        )
    # Absolute goals: only at the full counts (not --quick).
    for entry, seconds, megabytes in (("10k", 1, None), ("100k", 10, 200)):
        for mode in ("concurrent", "register_many"):
            at = (scenarios, f"register/{entry}", f"tidings-{mode}")
            check(f"{entry} channels {mode}, s", _full(*at, "seconds"), "<", seconds)
            if megabytes is None:
                traced = _full(*at, "traced_bytes_per_channel", 1 / 1024)
                check(f"{entry} channels {mode}, KiB/ch traced", traced, "<", 2)
            else:
                check(
                    f"{entry} channels {mode}, MB RSS growth", _full(*at, "rss_mb"), "<", megabytes
                )
    return found


# -- the table -------------------------------------------------------------------------------


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    whole = unit.startswith(("events", "jobs"))
    return f"{value:,.0f} {unit}" if whole else f"{value:.3f} {unit}"


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def print_table(report: dict[str, Any]) -> None:
    rule = 124
    print("\n" + "=" * rule)
    print(
        f"{'scenario':<20} {'contender':<24} {'median':>18} {'CPU µs':>8} "
        f"{'vs peer':>8} {'new/base':>8} {'CPU n/b':>8}   detail"
    )
    print("-" * rule)
    for name, data in report["scenarios"].items():
        metric, unit, medians = data["metric"], data["unit"], data["medians"]
        peers = data.get("peers", {})
        for contender, values in medians.items():
            peer = medians.get(peers.get(contender, data["peer"]), {}).get(metric)
            value = values.get(metric)
            cpu = _cpu(values)
            vs_peer = value / peer if value is not None and peer else None
            new_base = cpu_base = None
            base = medians.get(contender + BASE)
            if base is not None:
                if value is not None and base.get(metric):
                    new_base = value / base[metric]
                base_cpu = _cpu(base)
                if cpu is not None and base_cpu:
                    cpu_base = cpu / base_cpu
            detail = _detail(data["scenario"], values)
            if data["scenario"] == "outage":
                samples = data["samples"][contender]
                detail += (
                    f"; worst run: lost {max(s['lost'] for s in samples):,}"
                    f", duplicated {max(s['duplicated'] for s in samples):,}"
                )
            print(
                f"{name:<20} {contender:<24} {_shown(value, unit):>18} "
                f"{'' if cpu is None else f'{cpu:.2f}':>8} {_x(vs_peer):>8} "
                f"{_x(new_base):>8} {_x(cpu_base):>8}   {detail}".rstrip()
            )
        for contender, reason in data["skipped"].items():
            print(f"{name:<20} {contender:<24} {'skipped':>18}   {reason}")
    print("-" * rule)
    _print_spread(report["scenarios"])
    _print_jobs(report["scenarios"])
    _print_telemetry(report["scenarios"])
    unmeasured = 0
    for target in report["targets"]:
        if target["met"] is None:
            unmeasured += 1
            continue
        mark = "met" if target["met"] else "not met"
        print(f"[{mark:^7}] {target['target']:<52} {target['value']:>9}  (goal {target['goal']})")
    if unmeasured:
        print(f"({unmeasured} more targets not measured at their sizes in this run)")
    if report["quick"]:
        print("(--quick: tiny sizes, one run; these numbers only show that it works)")


def _print_spread(scenarios: dict[str, Any]) -> None:
    """CPU µs per message by number of channels: the key result of receive-spread."""
    entries = sorted(
        (e for e in scenarios.values() if e["scenario"] == "receive-spread"),
        key=lambda e: e["x"],
    )
    if len(entries) < 2:
        return
    first, last = entries[0], entries[-1]
    labels = [e["case"] for e in entries]
    print(
        "receive spread, CPU µs/msg by channels: "
        + "".join(f"{label:>9}" for label in labels)
        + f"{last['case'] + '/' + first['case']:>10}"
    )
    for contender in first["medians"]:
        cpus = [_cpu(e["medians"].get(contender, {})) for e in entries]
        ratio = cpus[-1] / cpus[0] if cpus[0] and cpus[-1] is not None else None
        print(
            f"  {contender:<38}"
            + "".join(f"{'-' if c is None else f'{c:.2f}':>9}" for c in cpus)
            + f"{_x(ratio):>10}"
        )
    print("-" * 124)


def _print_jobs(scenarios: dict[str, Any]) -> None:
    """The work queue's rates by group members, and each tidings contender's ratio to
    redis-py's loop at each size (no target: the ratio is the result)."""
    entries = sorted(
        (e for e in scenarios.values() if e["scenario"] == "jobs"), key=lambda e: e["x"]
    )
    if not entries:
        return
    contenders = list(dict.fromkeys(c for e in entries for c in e["medians"]))
    print(
        "work queue, jobs/s by group members:"
        + "".join(f"{e['case']:>10}" for e in entries)
        + (f"{entries[-1]['case'] + '/' + entries[0]['case']:>10}" if len(entries) > 1 else "")
    )
    for contender in contenders:
        rates = [e["medians"].get(contender, {}).get("rate") for e in entries]
        scaling = rates[-1] / rates[0] if len(rates) > 1 and rates[0] and rates[-1] else None
        print(
            f"  {contender:<34}"
            + "".join(f"{'-' if r is None else f'{r:,.0f}':>10}" for r in rates)
            + f"{_x(scaling):>10}"
        )
    for contender in contenders:
        peer = entries[0]["peers"].get(contender, "redis-py")
        if contender == peer:
            continue
        ratios = [_ratio(scenarios, _entry_name(e), contender, peer, "rate") for e in entries]
        print(
            f"  {contender + ' / ' + peer:<34}"
            + "".join(f"{'-' if r is None else f'{r:.2f}x':>10}" for r in ratios)
        )
    print("-" * 124)


def _print_telemetry(scenarios: dict[str, Any]) -> None:
    """Each OpenTelemetry set-up against "absent": rate and CPU per event, and the CPU
    it adds per event."""
    entries = [e for e in scenarios.values() if e["scenario"] == "telemetry"]
    if not entries:
        return
    print(
        f"{'telemetry vs API absent':<25}{'events/s':>12} {'x':>7}{'CPU µs':>10} {'x':>8}{'+µs':>8}"
    )
    for entry in entries:
        absent = entry["medians"].get(entry["peer"], {})
        for contender, values in entry["medians"].items():
            rate, cpu = values.get("rate"), _cpu(values)
            base_rate, base_cpu = absent.get("rate"), _cpu(absent)
            ratio = rate / base_rate if rate and base_rate else None
            cpu_ratio = cpu / base_cpu if cpu is not None and base_cpu else None
            added = cpu - base_cpu if cpu is not None and base_cpu is not None else None
            print(
                f"  {entry['case']:<8} {contender.removeprefix('tidings-'):<14}"
                f"{'-' if rate is None else f'{rate:,.0f}':>12} {_x(ratio):>7}"
                f"{'-' if cpu is None else f'{cpu:.2f}':>10} {_x(cpu_ratio):>9}"
                f"{'' if added is None else f'{added:+.2f}':>8}"
            )
    print("-" * 124)


def _entry_name(entry: dict[str, Any]) -> str:
    return f"{entry['scenario']}/{entry['case']}" if entry["case"] else entry["scenario"]


# -- charts ----------------------------------------------------------------------------------

COLOURS = {
    "tidings-trio": "#2a7ab9",
    "tidings-asyncio": "#3aa17e",
    "tidings-trio-durable": "#15456b",
    "tidings-asyncio-durable": "#1f6149",
    "tidings-concurrent": "#2a7ab9",
    "tidings-sequential": "#7b4fa0",
    "tidings-register_many": "#d9822b",
    "redis-py": "#9a9a9a",
    "coredis-trio": "#c9a227",
    "coredis-asyncio": "#e0bf4a",
    "coredis-pipeline": "#e0bf4a",
    "redis-py-pipeline": "#9a9a9a",
    "faststream": "#c2452d",
    "broadcaster": "#8e5ba8",
    "taskiq": "#d9822b",
    "raw-hiredis": "#555555",
}


def _colour(contender: str) -> str:
    name = contender.removesuffix(BASE)
    return COLOURS.get(name, "#2a7ab9" if name.startswith("tidings") else "#9a9a9a")


def _headline(data: dict[str, Any]) -> bool:
    for scenario in SCENARIOS:
        if scenario.name == data["scenario"]:
            return bool(data["medians"]) and data["case"] == scenario.headline
    return False


def chart(report: dict[str, Any], path: Path) -> bool:
    """Bars: the medians of each scenario's headline case."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = [data for data in report["scenarios"].values() if _headline(data)]
    if not scenarios:
        return False
    columns = min(4, len(scenarios))
    rows = math.ceil(len(scenarios) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(scenarios) :]:
        ax.set_visible(False)
    for ax, data in zip(axes.flat, scenarios, strict=False):
        names = list(data["medians"])
        values = [data["medians"][c].get(data["metric"], 0) for c in names]
        colours = [_colour(c) for c in names]
        bars = ax.barh(names, values, color=colours)
        for bar, contender in zip(bars, names, strict=True):
            if contender.endswith(BASE):
                bar.set_alpha(0.45)
        ax.invert_yaxis()
        better = "higher" if data["higher_is_better"] else "lower"
        ax.set_title(
            textwrap.fill(data["title"].split("(")[0].strip(), 44)
            + f"\n({data['unit']}, {better} is better)",
            fontsize=9,
        )
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# (scenario, value key, scale, title, y label, log y)
CURVES = [
    ("receive-spread", "cpu_us_per_msg", 1, "receive: CPU per message", "CPU µs/msg", False),
    ("register", "seconds", 1, "registration time", "seconds", True),
    (
        "register",
        "traced_bytes_per_channel",
        1 / 1024,
        "memory per channel (tracemalloc)",
        "KiB",
        False,
    ),
    ("publish", "rate", 1, "publish rate", "events/s", True),
    ("publish-many", "rate", 1, "publish_many / pipelines", "events/s", True),
    ("publish-size", "rate", 1, "publish rate by payload size", "events/s", True),
    ("receive-size", "rate", 1, "receive rate by payload size", "events/s", True),
    ("jobs", "rate", 1, "work queue throughput", "jobs/s", False),
]
X_LABELS = {
    "receive-spread": "channels subscribed",
    "register": "channels registered",
    "publish": "concurrent publishers",
    "publish-many": "events per call",
    "publish-size": "payload bytes",
    "receive-size": "payload bytes",
    "jobs": "consumer group members (processes)",
}


def scaling_chart(report: dict[str, Any], path: Path) -> bool:
    """Curves: each multi-case scenario's medians against its case parameter (log x)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = []
    for scenario, key, scale, title, ylabel, logy in CURVES:
        entries = sorted(
            (
                e
                for e in report["scenarios"].values()
                if e["scenario"] == scenario and e["x"] is not None
            ),
            key=lambda e: e["x"],
        )
        lines: dict[str, list[tuple[float, float]]] = {}
        for e in entries:
            for contender, values in e["medians"].items():
                if values.get(key) is not None:
                    lines.setdefault(contender, []).append((e["x"], values[key] * scale))
        if lines:
            panels.append((scenario, title, ylabel, logy, lines))
    if not panels:
        return False
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (scenario, title, ylabel, logy, lines) in zip(axes.flat, panels, strict=False):
        for contender, points in lines.items():
            xs, ys = zip(*points, strict=True)
            ax.plot(
                xs,
                ys,
                label=contender,
                color=_colour(contender),
                linestyle="--" if contender.endswith(BASE) else "-",
                marker="x" if contender.endswith(BASE) else "o",
            )
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(X_LABELS[scenario], fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
