"""P3: reading a finished job's output back: `jobrun logs ID > /dev/null` (in-process and through
jobrund) against `journalctl --namespace=jobrun -o cat JOBRUN_JOB=ID > /dev/null`, in lines/s.

The job is P5's (1,000,000 lines of 70 B, started through jobrund); the in-process runs use
jobrund's job store so that both paths know it. The readers take turns, run by run; each reader's
line count is checked once, outside the timed runs. A last row reads the job in-process with the
library's iterator (`JobOutput.records()`), without printing: the reader's own speed.
"""

from __future__ import annotations

import asyncio
import time

from . import remote
from .common import (
    BenchError,
    Config,
    Row,
    count_lines,
    jobrun_argv,
    jobrund_state_dir,
    median,
    wall_devnull,
)
from .p5_ingest import big_job

GOAL = 1.0


async def library_seconds(job_id: str, n: int) -> float:
    from jobrun.journal import JobOutput

    count = 0
    t = time.perf_counter()
    async for _ in JobOutput(job_id).records():
        count += 1
    elapsed = time.perf_counter() - t
    if count != n:
        raise BenchError(f"JobOutput.records() gave {count} records, not {n}")
    return elapsed


async def run(cfg: Config) -> list[Row]:
    info = await big_job(cfg)
    job_id, n = info["id"], info["lines"]
    readers = {
        "journalctl": (
            ["journalctl", "--namespace=jobrun", "-o", "cat", "--no-pager", f"JOBRUN_JOB={job_id}"],
            None,
        ),
        "local": (jobrun_argv("logs", job_id), cfg.env("local", jobrund_state_dir())),
        "daemon": (jobrun_argv("logs", job_id), cfg.env("daemon")),
    }
    if remote.available():
        readers["remote"] = (remote.argv("logs", job_id), remote.env())
    for name in [k for k in readers if k != "journalctl"]:
        argv, env = readers[name]
        got = await asyncio.to_thread(count_lines, argv, env)
        if got != n:
            raise BenchError(f"`jobrun logs` ({name}) printed {got} lines of the job's {n}")
    reps = cfg.size(3, 1)
    times: dict[str, list[float]] = {k: [] for k in (*readers, "library")}
    names = list(times)
    for i in range(reps):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            if name == "library":
                times[name].append(await library_seconds(job_id, n))
            else:
                argv, env = readers[name]
                times[name].append(await asyncio.to_thread(wall_devnull, argv, env))
    rates = {k: [n / t for t in v] for k, v in times.items()}
    base = median(rates["journalctl"])
    labels = {
        "local": "`jobrun logs ID > /dev/null`, in-process (root)",
        "daemon": "`jobrun logs ID > /dev/null` through jobrund (root)",
        "remote": "`jobrun --remote … logs ID > /dev/null` (gRPC, mutual TLS 1.3, admin)",
        "library": "library `JobOutput(ID).records()` in-process, nothing printed",
    }
    return [
        Row(
            "P3",
            f"{label}, {n:,} lines, median of {reps}",
            median(rates[name]),
            "lines/s",
            base,
            "`journalctl --namespace=jobrun -o cat JOBRUN_JOB=ID > /dev/null`",
            goal="" if name == "library" else f"≥ {GOAL}×",
            met=None if name == "library" else median(rates[name]) >= GOAL * base,
            samples={name: rates[name], "journalctl": rates["journalctl"]},
        )
        for name, label in labels.items()
        if name in rates
    ]
