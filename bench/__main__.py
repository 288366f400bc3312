"""``python -m bench``: run the benchmarks and write bench/results/ (results.json, summary.md,
the charts)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.harness import (
    SCENARIOS,
    chart,
    entry_names,
    prepare_baseline,
    print_table,
    run,
    scaling_chart,
    select,
)
from bench.summary import summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="alternating rounds (median of them; the 100k registrations do at most 2)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: a smoke test")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated scenario names, or single cases as name/label: "
        + ", ".join(entry_names()),
    )
    parser.add_argument("--only", default=None, help="comma-separated contender names")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="an older source tree (git archive REV | tar -x -C DIR): every tidings "
        "contender also runs from it, as <contender>@base; bench/ is copied into DIR",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder")
    args = parser.parse_args(argv)
    wanted = set(args.scenarios.split(","))
    unknown = wanted - {s.name for s in SCENARIOS} - set(entry_names())
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}")
    baseline = prepare_baseline(args.baseline) if args.baseline is not None else None
    started = time.monotonic()
    report = run(
        select(wanted),
        1 if args.quick else args.runs,
        args.quick,
        set(args.only.split(",")) if args.only else None,
        baseline,
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    print_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "summary.md").write_text(summary(report))
    written = [args.out / "results.json", args.out / "summary.md"]
    if chart(report, args.out / "chart.png"):
        written.append(args.out / "chart.png")
    if scaling_chart(report, args.out / "scaling.png"):
        written.append(args.out / "scaling.png")
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    print(f"total {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
