"""A smoke run of the benchmark harness at tiny sizes: it runs, and reports.

Nothing here asserts speed (that is `make bench`'s job, as ratios in one run).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.redis

# One case of the multi-case scenarios (two of receive-spread: the curve needs two),
# and every kind of contender, at --quick sizes. (The payload-size cases run the code
# of receive and publish/10 with other sizes: left to `make bench`, for time.)
SCENARIOS = (
    "receive,receive-spread/1,receive-spread/100,publish/10,"
    "publish-many/100,latency,register/10k,memory"
)
# The durable-channel scenarios, each with a plain and a durable tidings contender.
DURABLE = "durable-publish,catch-up,durable-receive,outage"
# The work queue, with two member processes per contender.
JOBS = "jobs/2"
# The peer libraries (the bench extra; the test environment may lack them) and the
# module each contender imports: measured where installed, reported skipped elsewhere.
PEERS = {
    "coredis-asyncio": "coredis",
    "coredis-pipeline": "coredis",
    "faststream": "faststream",
    "broadcaster": "broadcaster",
    "taskiq": "taskiq_redis",
}
ONLY = (
    "tidings-trio,redis-py,raw-hiredis,tidings-concurrent,tidings-register_many,trio-channel,"
    "tidings-trio-durable,redis-py-pipeline," + ",".join(PEERS)
)


def installed(contender: str) -> bool:
    return importlib.util.find_spec(PEERS[contender]) is not None


def measured_or_skipped(entry: dict[str, Any], contender: str) -> dict[str, Any] | None:
    """The contender's one sample if its library is installed (it must have run), else
    None (it must have been skipped as not installed)."""
    if not installed(contender):
        assert "not installed" in entry["skipped"][contender], entry["skipped"]
        assert contender not in entry["samples"]
        return None
    assert contender not in entry["skipped"], entry["skipped"]
    [sample] = entry["samples"][contender]
    return dict(sample)


@dataclass
class Run:
    stdout: str
    report: dict[str, Any]
    out: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One harness run for every test here (starting it is most of the time)."""
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scenarios",
            f"{SCENARIOS},{DURABLE},{JOBS}",
            "--only",
            ONLY,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Run(result.stdout, json.loads((out / "results.json").read_text()), out)


def test_the_harness_runs_every_scenario(run: Run) -> None:
    report = run.report
    assert set(report["scenarios"]) == {*SCENARIOS.split(","), *DURABLE.split(","), JOBS}
    receive = report["scenarios"]["receive"]["medians"]
    peers = {"coredis-asyncio", "faststream", "broadcaster"}
    assert set(receive) == {"tidings-trio", "redis-py", "raw-hiredis"} | {
        c for c in peers if installed(c)
    }
    for name in ("receive", "receive-spread/100", "publish/10"):
        entry = report["scenarios"][name]
        for medians in entry["medians"].values():
            assert {"rate", "cpu_us_per_msg"} <= set(medians)
    for name in ("receive", "receive-spread/1", "receive-spread/100"):
        assert all(
            m["events"] == report["scenarios"][name]["n"]
            for m in report["scenarios"][name]["medians"].values()
        )
    trio = report["scenarios"]["receive"]["samples"]["tidings-trio"][0]
    assert Path(trio["tidings"]).is_relative_to(ROOT / "tidings")
    register = report["scenarios"]["register/10k"]
    for contender, samples in register["samples"].items():
        sample = samples[0]
        assert sample["confirmed"] == sample["events"] == register["n"], contender
        assert sample["sample_subscribed"] == sample["sample"], contender
        assert {"seconds", "traced_bytes_per_channel", "rss_bytes_per_channel"} <= set(sample)
    # register_many is measured when tidings has it, and reported skipped otherwise.
    assert set(register["samples"]) | set(register["skipped"]) == {
        "tidings-concurrent",
        "tidings-register_many",
    }
    names = {t["target"] for t in report["targets"]}
    assert "receive, tidings-trio / redis-py" in names
    assert "receive CPU/msg, tidings-trio, 10k channels / 1" in names
    assert "median" in run.stdout
    # Charts need matplotlib, a bench extra (`make bench` installs it; `make test` not).
    charted = importlib.util.find_spec("matplotlib") is not None
    assert (run.out / "chart.png").is_file() is charted
    assert (run.out / "scaling.png").is_file() is charted


def test_the_durable_scenarios_run(run: Run) -> None:
    scenarios = run.report["scenarios"]
    publish = scenarios["durable-publish"]
    assert set(publish["medians"]) == {"tidings-trio", "tidings-trio-durable"}
    assert publish["peers"]["tidings-trio-durable"] == "tidings-trio"
    for medians in publish["medians"].values():
        assert {"rate", "cpu_us_per_msg", "redis_cpu_us_per_msg"} <= set(medians)
    catch_up = scenarios["catch-up"]
    assert set(catch_up["medians"]) == {"tidings-trio", "redis-py"}
    for medians in catch_up["medians"].values():
        assert medians["events"] == catch_up["n"]
        assert medians["misplaced"] == 0
    assert catch_up["medians"]["tidings-trio"]["replayed"] == catch_up["n"]
    receive = scenarios["durable-receive"]
    assert set(receive["medians"]) == {"tidings-trio", "tidings-trio-durable"}
    for medians in receive["medians"].values():
        assert medians["events"] == receive["n"]
        assert {"rate", "cpu_us_per_msg"} <= set(medians)
    outage = scenarios["outage"]
    assert set(outage["samples"]) == {"tidings-trio", "tidings-trio-durable", "redis-py"}
    for samples in outage["samples"].values():
        sample = samples[0]
        assert sample["events"] == outage["n"]
        assert sample["cut"] >= 1  # its connections went through the proxy, and were cut
        assert 0 <= sample["lost"] <= sample["events"]
    names = {t["target"] for t in run.report["targets"]}
    assert "durable publish, tidings-trio-durable / plain" in names
    assert "outage, tidings-trio-durable, lost (worst run)" in names


def test_the_jobs_scenario_runs(run: Run) -> None:
    jobs = run.report["scenarios"][JOBS]
    assert jobs["params"] == {"members": 2}
    # (FastStream's and taskiq's members: test_the_peers_run_where_installed.)
    assert set(jobs["samples"]) - {"faststream", "taskiq"} == {"tidings-trio", "redis-py"}
    for contender in ("tidings-trio", "redis-py"):
        sample = jobs["samples"][contender][0]
        # Every job handled once and acknowledged, by the two members together.
        assert len(sample["jobs"]) == 2, contender
        assert sum(sample["jobs"]) == sample["events"] == jobs["n"], contender
        assert sample["acked"] == jobs["n"], contender
        assert sample["entries_read"] == jobs["n"], contender
        assert {"rate", "cpu_us_per_msg", "redis_cpu_us_per_msg"} <= set(sample)
    assert Path(jobs["samples"]["tidings-trio"][0]["tidings"]).is_relative_to(ROOT / "tidings")
    assert "work queue, jobs/s by group members" in run.stdout
    assert "tidings-trio / redis-py" in run.stdout


def test_the_peers_run_where_installed(run: Run) -> None:
    """Each peer library's contender did the same work (every event received,
    decoded and checked; every publish awaited), or was skipped as not installed."""
    scenarios = run.report["scenarios"]
    for entry_name, contenders in (
        ("receive", ("coredis-asyncio", "faststream", "broadcaster")),
        ("publish/10", ("coredis-asyncio", "faststream")),
    ):
        entry = scenarios[entry_name]
        for contender in contenders:
            sample = measured_or_skipped(entry, contender)
            if sample is not None:
                assert sample["events"] == entry["n"], (entry_name, contender)
                assert {"rate", "cpu_us_per_msg"} <= set(sample), (entry_name, contender)
    jobs = scenarios[JOBS]
    for contender in ("faststream", "taskiq"):
        sample = measured_or_skipped(jobs, contender)
        if sample is not None:
            # Its own log, filled by its own enqueue: every job handled once, and the
            # group read it all with nothing left pending (the harness's stop).
            assert len(sample["jobs"]) == 2, contender
            assert sum(sample["jobs"]) == sample["events"] == jobs["n"], contender
            assert sample["entries_read"] == jobs["n"], contender
            assert {"rate", "cpu_us_per_msg", "redis_cpu_us_per_msg"} <= set(sample)
    assert "faststream / redis-py" in run.stdout or not installed("faststream")


def test_publish_many_runs(run: Run) -> None:
    entry = run.report["scenarios"]["publish-many/100"]
    assert entry["params"] == {"batch": 100}
    assert entry["peer"] == "redis-py-pipeline"
    # tidings' publish_many is measured where this tree has it, reported skipped otherwise.
    assert set(entry["samples"]) | set(entry["skipped"]) >= {"tidings-trio"}
    for contender in ("tidings-trio", "redis-py-pipeline", "raw-hiredis", "coredis-pipeline"):
        if contender == "coredis-pipeline":
            sample = measured_or_skipped(entry, contender)
        elif contender in entry["skipped"]:
            assert "publish_many" in entry["skipped"][contender]
            continue
        else:
            [sample] = entry["samples"][contender]
        if sample is not None:
            assert sample["events"] == entry["n"], contender
            assert sample["calls"] == entry["n"] // 100, contender
            assert {"rate", "cpu_us_per_msg"} <= set(sample), contender


def test_the_summary_table(run: Run) -> None:
    """summary.md: one Markdown table, a row per peer in every entry that has one."""
    text = (run.out / "summary.md").read_text()
    assert text.startswith("## tidings against each peer, every scenario")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header, *body = rows
    assert "tidings-trio" in header
    assert "physical limit" in header
    peers = {(row.split(" | ")[0][2:], row.split(" | ")[2]) for row in body}
    assert ("receive", "redis-py") in peers
    assert ("publish-many/100", "redis-py-pipeline") in peers
    assert ("jobs/2", "redis-py") in peers
    if installed("faststream"):
        assert ("jobs/2", "faststream") in peers
    [receive] = [row for row in body if row.startswith("| receive | events/s ↑ | redis-py |")]
    assert "raw-hiredis" in receive  # the physical limit beside
    # Entries with no peer library are named, not left out silently.
    [without] = [line for line in text.splitlines() if line.startswith("No peer library in: ")]
    assert "register/10k" in without


def test_publish_many_is_skipped_where_tidings_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    import tidings
    from bench.contenders import publish_many_tidings

    monkeypatch.delattr(tidings.Channels, "publish_many", raising=False)
    result = anyio.run(publish_many_tidings, {"port": 1, "n": 10, "batch": 10})
    assert result == {"skipped": "this tidings has no Channels.publish_many"}


def test_a_missing_peer_library_is_a_skip() -> None:
    from bench.peers import missing_peer

    assert missing_peer(ModuleNotFoundError("no", name="faststream.redis")) == "faststream"
    assert missing_peer(ModuleNotFoundError("no", name="taskiq_redis")) == "taskiq_redis"
    # Not a peer (tidings' own dependencies, redis-py for the harness): a failure.
    assert missing_peer(ModuleNotFoundError("no", name="hiredis")) is None
    assert missing_peer(ImportError("cannot import name x")) is None
