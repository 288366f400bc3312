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

# One case of each multi-case scenario but receive-spread's (the curve needs two),
# and every kind of contender, at --quick sizes.
SCENARIOS = (
    "receive,receive-spread/1,receive-spread/100,receive-size/10KB,publish/10,"
    "publish-size/1MB,latency,register/10k,memory"
)
# The durable-channel scenarios, each with a plain and a durable tidings contender.
DURABLE = "durable-publish,catch-up,durable-receive,outage"
# The work queue, with two member processes per contender.
JOBS = "jobs/2"
ONLY = (
    "tidings-trio,redis-py,raw-hiredis,tidings-concurrent,tidings-register_many,trio-channel,"
    "tidings-trio-durable"
)


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
    assert set(receive) == {"tidings-trio", "redis-py", "raw-hiredis"}
    for name in ("receive", "receive-spread/100", "receive-size/10KB", "publish/10"):
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
    assert set(jobs["samples"]) == {"tidings-trio", "redis-py"}
    for contender, samples in jobs["samples"].items():
        sample = samples[0]
        # Every job handled once and acknowledged, by the two members together.
        assert len(sample["jobs"]) == 2, contender
        assert sum(sample["jobs"]) == sample["events"] == jobs["n"], contender
        assert sample["acked"] == jobs["n"], contender
        assert sample["entries_read"] == jobs["n"], contender
        assert {"rate", "cpu_us_per_msg", "redis_cpu_us_per_msg"} <= set(sample)
    assert Path(jobs["samples"]["tidings-trio"][0]["tidings"]).is_relative_to(ROOT / "tidings")
    assert "work queue, jobs/s by group members" in run.stdout
    assert "tidings-trio / redis-py" in run.stdout
