"""`python -m bench [--quick] [--only P1,P2,...] [--json FILE] [--installed]`: run, then print
the table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from types import ModuleType

from . import p1_start, p2_throughput, p3_read, p4_follow, p5_ingest, p6_cold, p7_top, p8_queue
from .common import BenchError, Config, Row, machine, prepare, remove, scratch_dir

# Run order: P5 makes the big job that P3 reads.
MODULES: dict[str, ModuleType] = {
    "P1": p1_start,
    "P2": p2_throughput,
    "P5": p5_ingest,
    "P3": p3_read,
    "P4": p4_follow,
    "P6": p6_cold,
    "P7": p7_top,
    "P8": p8_queue,
}
TITLES = {
    "P1": "CLI start",
    "P2": "API throughput",
    "P3": "reading logs",
    "P4": "follow latency",
    "P5": "ingestion",
    "P6": "CLI cold start",
    "P7": "top's cost",
    "P8": "queue overhead",
}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("lines/s", "jobs/s") and value >= 10_000:
        return f"{value / 1000:,.0f}k {unit}"
    if unit == "lines":
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def table(rows: list[Row]) -> str:
    out = [
        "| | measure | jobrun | baseline | ratio | goal | met | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {p: i for i, p in enumerate(sorted(TITLES))}
    for r in sorted(rows, key=lambda r: order.get(r.p, 99)):
        base = f"{fmt(r.baseline, r.unit)} ({r.baseline_what})" if r.baseline_what else ""
        ratio = f"{r.ratio:.2f}×" if r.ratio is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        cells = [r.p, r.what, fmt(r.value, r.unit), base, ratio, r.goal, met, r.note]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def report(info: dict[str, str], rows: list[Row], cfg: Config, timings: dict[str, float]) -> str:
    lines = ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += [
        "",
        "## Results" + (" (--quick: tiny sizes, not comparable)" if cfg.quick else ""),
        "",
    ]
    lines += [table(rows), ""]
    imports = cfg.shared.get("imports")
    if imports:
        lines += ["P6 import time by top-level package (self time of its modules, median):", ""]
        lines += ["| package | ms |", "|---|---|"]
        lines += [f"| {p} | {ms:.1f} |" for p, ms in imports]
        lines.append("")
    total = sum(timings.values())
    each = ", ".join(f"{p} {s:.0f} s" for p, s in timings.items())
    lines.append(f"Run time: {total:.0f} s ({each}).")
    return "\n".join(lines)


def run_one(p: str, fn: Callable[[Config], Awaitable[list[Row]]], cfg: Config) -> list[Row]:
    try:
        return asyncio.run(fn(cfg))  # type: ignore[arg-type]
    except Exception as e:
        traceback.print_exc()
        return [Row(p, f"FAILED: {type(e).__name__}: {e}"[:300], None, "", met=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds per P")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. P3,P5")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--installed",
        action="store_true",
        help="measure the jobrun apt installed (run with /usr/bin/python3: its /usr/bin/jobrun)",
    )
    args = parser.parse_args(argv)
    only = {p.strip().upper() for p in args.only.split(",") if p.strip()}
    if only - set(MODULES):
        parser.error(f"--only takes {', '.join(sorted(MODULES))}")
    try:
        prepare(args.installed)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    cfg = Config(quick=args.quick, work=scratch_dir() / f"run-{os.getpid()}")
    cfg.state.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["jobrun"] = "the installed package (/usr/bin/jobrun)" if args.installed else "this tree"
    rows: list[Row] = []
    timings: dict[str, float] = {}
    try:
        for p, module in MODULES.items():
            if only and p not in only:
                continue
            print(f"bench: {p} ({TITLES[p]}) ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            rows += run_one(p, module.run, cfg)
            timings[p] = time.monotonic() - t
            print(f"bench: {p} done in {timings[p]:.0f} s", file=sys.stderr, flush=True)
    finally:
        remove(cfg.work)
    info["load average at end"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print(report(info, rows, cfg, timings))
    if args.json:
        with open(args.json, "w") as f:
            data = {
                "machine": info,
                "quick": cfg.quick,
                "rows": [r.to_dict() for r in rows],
                "imports": cfg.shared.get("imports"),
                "big_job": cfg.shared.get("big_job"),
                "seconds": timings,
            }
            json.dump(data, f, indent=2)
    return 1 if any(r.value is None and r.what.startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
