"""summary.md: one Markdown table, tidings against each peer library, every scenario.

Written by ``python -m bench`` beside results.json, for docs/performance.md: per
scenario and case (entry), one row per peer (a contender that is not tidings and not
a physical limit), with the peer's median, tidings-trio's and tidings-asyncio's, the
ratio of each to the peer, and the physical limit measured in the same entry (the raw
hiredis loops: no decoding, no encoding). CPU µs per message in parentheses
where the contender measured it. Entries with no peer library (tidings against itself:
registrations, durable against plain, telemetry) are named below the table.
"""

from __future__ import annotations

from typing import Any

from bench.harness import BASE, TIDINGS, _cpu

TIMES = "\u00d7"  # the multiplication sign, as docs/performance.md writes ratios

#: Contenders that are the practical ceiling of an entry, not a library.
LIMITS = ("raw-hiredis",)


#: How the metric column names a metric that is not a rate (a rate: its unit).
LABELS = {"p99_ms": "p99 ms", "seconds": "seconds", "lost": "events lost"}


def _is_limit(contender: str) -> bool:
    return contender.startswith(LIMITS)


def _is_peer(contender: str) -> bool:
    return not (contender.startswith("tidings") or contender.endswith(BASE) or _is_limit(contender))


def _number(value: float, unit: str) -> str:
    if unit.endswith("/s") or unit == "events":
        return f"{value:,.0f}"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"


def _cell(entry: dict[str, Any], contender: str) -> str:
    """The median (and CPU µs per message), "skipped", or "-" when not run."""
    values = entry["medians"].get(contender)
    if values is None:
        return "skipped" if contender in entry["skipped"] else "-"
    value = values.get(entry["metric"])
    if value is None:
        return "-"
    text = _number(value, entry["unit"])
    cpu = _cpu(values)
    return f"{text} ({cpu:.2f})" if cpu is not None else text


def _ratio(entry: dict[str, Any], contender: str, peer: str) -> str:
    mine = entry["medians"].get(contender, {}).get(entry["metric"])
    theirs = entry["medians"].get(peer, {}).get(entry["metric"])
    if mine is None or not theirs:
        return ""
    return f"{mine / theirs:.2f}{TIMES}"


def _limit(entry: dict[str, Any]) -> str:
    cells = [
        f"{c} {_cell(entry, c)}"
        for c in (*entry["medians"], *entry["skipped"])
        if _is_limit(c) and not c.endswith(BASE)
    ]
    return "; ".join(cells)


def _name(entry: dict[str, Any]) -> str:
    return f"{entry['scenario']}/{entry['case']}" if entry["case"] else entry["scenario"]


def summary(report: dict[str, Any]) -> str:
    """The Markdown text of summary.md."""
    if report["quick"]:
        runs = "One run at --quick sizes"
    elif report["runs"] == 1:
        runs = "One run"
    else:
        runs = f"Medians of {report['runs']} runs"
    lines = [
        "| scenario | metric | peer | peer's | tidings-trio | trio ÷ peer "
        "| tidings-asyncio | asyncio ÷ peer | physical limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    without: list[str] = []
    fewer: list[str] = []
    for entry in report["scenarios"].values():
        peers = [c for c in (*entry["medians"], *entry["skipped"]) if _is_peer(c)]
        if not peers:
            without.append(_name(entry))
            continue
        better = "↑" if entry["higher_is_better"] else "↓"
        metric = f"{LABELS.get(entry['metric'], entry['unit'])} {better}"
        limit = _limit(entry)
        for peer in dict.fromkeys(peers):
            cells = [_name(entry), metric, peer, _cell(entry, peer)]
            for mine in TIDINGS:
                cells += [_cell(entry, mine), _ratio(entry, mine, peer)]
            cells.append(limit)
            lines.append("| " + " | ".join(cells) + " |")
        fewer += [
            f"{contender} in {_name(entry)}: {k:,} events (the others {entry['n']:,})"
            for contender, k in entry.get("n_for", {}).items()
        ]
    notes = [
        "",
        f"{runs}, contenders alternating in one `python -m bench` run on "
        f"{report['machine']['cpus']} CPUs (Python {report['machine']['python']}). "
        "Each cell: the median, with CPU µs per message (or per job) in parentheses "
        f"where measured. ↑: higher is better, so a ratio above 1{TIMES} favours tidings; "
        f"↓: lower is better, so a ratio below 1{TIMES} does. FastStream, broadcaster and "
        "taskiq run on asyncio only.",
    ]
    if fewer:
        notes.append("Fewer events (rates are per second all the same): " + "; ".join(fewer) + ".")
    if without:
        notes.append("No peer library in: " + ", ".join(without) + " (see results.json).")
    return "\n".join(["## tidings against each peer, every scenario", "", *lines, *notes]) + "\n"
