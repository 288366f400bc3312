"""A smoke run of the benchmark harness at tiny sizes: it runs, and reports.

Nothing here asserts speed (that is `make bench`'s job, as ratios in one run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.redis

# One case of each multi-case scenario but receive-spread's (the curve needs two),
# and every kind of contender, at --quick sizes.
SCENARIOS = (
    "receive,receive-spread/1,receive-spread/100,receive-size/10KB,publish/10,"
    "publish-size/1MB,latency,register/10k,memory"
)
ONLY = "tidings-trio,redis-py,raw-hiredis,tidings-concurrent,tidings-register_many,trio-channel"


def test_the_harness_runs_every_scenario(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scenarios",
            SCENARIOS,
            "--only",
            ONLY,
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["scenarios"]) == set(SCENARIOS.split(","))
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
    assert "median" in result.stdout
    assert (tmp_path / "chart.png").is_file()
    assert (tmp_path / "scaling.png").is_file()
