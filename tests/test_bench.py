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


def test_the_harness_runs_every_scenario(tmp_path: Path) -> None:
    only = "tidings-trio,tidings-asyncio,redis-py,raw-hiredis,tidings-batched,trio-channel"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", only, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["scenarios"]) == {"receive", "publish", "latency", "scale", "memory"}
    receive = report["scenarios"]["receive"]["medians"]
    assert set(receive) == {"tidings-trio", "tidings-asyncio", "redis-py", "raw-hiredis"}
    assert all(m["events"] == report["scenarios"]["receive"]["n"] for m in receive.values())
    scale = report["scenarios"]["scale"]["samples"]["tidings-batched"][0]
    assert scale["confirmed"] == {"scale:c0": 1, f"scale:c{scale['events'] - 1}": 1}
    assert "receive, tidings-trio / redis-py" in {t["target"] for t in report["targets"]}
    assert "median" in result.stdout
