"""``python -m bench``: run the benchmarks and write bench/results/."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.harness import SCENARIOS, chart, print_table, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per contender (median of them)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run: a smoke test")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated scenario names",
    )
    parser.add_argument("--only", default=None, help="comma-separated contender names")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="output folder")
    args = parser.parse_args(argv)
    wanted = set(args.scenarios.split(","))
    scenarios = [s for s in SCENARIOS if s.name in wanted]
    started = time.monotonic()
    report = run(
        scenarios,
        1 if args.quick else args.runs,
        args.quick,
        set(args.only.split(",")) if args.only else None,
    )
    report["seconds"] = round(time.monotonic() - started, 1)
    print_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    drawn = chart(report, args.out / "chart.png")
    print(
        f"\nwrote {args.out / 'results.json'}" + (f" and {args.out / 'chart.png'}" if drawn else "")
    )
    print(f"total {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
