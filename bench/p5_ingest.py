"""P5: lines per second from a job into jobrun's journal namespace (journald@jobrun.conf: no rate
limit), against the same program writing the same lines to a plain file; and lines lost.

The job is started through jobrund and writes N numbered lines of 70 bytes as fast as journald
takes them (its stdout is a stream socket: a job that writes faster than journald stores waits).
Ingestion ends when journald has written the job's last line: the job's unit has ended and
journald's state file of its stream is gone (jobrun's reader uses the same signal). The lines are
then read back with journalctl and every number from 0 to N-1 must be there exactly once. The
job stays: P3 reads it back.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

from .common import BenchError, Config, Row, daemon_backend, wait_finished, wait_idle

# 9 digits, a space and 60 bytes of text: 70 bytes with the newline.
AWK = 'BEGIN { for (i = 0; i < n; i++) printf "%09d %s\\n", i, t }'
TEXT = "the quick brown fox jumps over the lazy dog 0123456789 abcd"
CONF = Path("/etc/systemd/journald@jobrun.conf")


def command(n: int) -> list[str]:
    return ["awk", "-v", f"n={n}", "-v", f"t={TEXT}", AWK]


def file_rate(cfg: Config, n: int) -> float:
    """The same lines from the same program to a plain file (beside the local job store)."""
    path = cfg.work / "p5-lines.txt"
    try:
        with path.open("wb") as f:
            t = time.perf_counter()
            subprocess.run(["/usr/bin/env", *command(n)], stdout=f, check=True, timeout=600)
            f.flush()
            elapsed = time.perf_counter() - t
        if path.stat().st_size != n * (len(TEXT) + 11):
            raise BenchError(f"{path}: unexpected size {path.stat().st_size}")
    finally:
        path.unlink(missing_ok=True)
    return n / elapsed


def lost_lines(job_id: str, n: int) -> tuple[int, int]:
    """(lines missing, lines extra or repeated) in the journal, read back by journalctl."""
    out = subprocess.run(
        ["journalctl", "--namespace=jobrun", "-o", "cat", "--no-pager", f"JOBRUN_JOB={job_id}"],
        capture_output=True,
        check=True,
        timeout=600,
    ).stdout
    seen = bytearray(n)
    extra = 0
    for line in out.splitlines():
        try:
            i = int(line[:9])
        except ValueError:
            extra += 1
            continue
        if 0 <= i < n and not seen[i] and line[10:] == TEXT.encode():
            seen[i] = 1
        else:
            extra += 1
    return n - sum(seen), extra


async def big_job(cfg: Config) -> dict[str, Any]:
    """The N-line job (made once per run, P5's measurement): id, lines, ingestion numbers."""
    if "big_job" in cfg.shared:
        return dict(cfg.shared["big_job"])
    from jobrun.journal.streams import Streams
    from jobrun.model import LOG_NAMESPACE, unit_name

    n = cfg.size(1_000_000, 20_000)
    await asyncio.to_thread(wait_idle)
    b = await daemon_backend()
    try:
        t0 = time.perf_counter()
        job = await b.start(command(n), "bench-p5", {})
        done = await wait_finished(b, job.id)
        t_exit = time.perf_counter()
        if done.state != "succeeded":
            raise BenchError(f"the P5 job ended {done.state}: {done.outcome.reason}")
        if not await Streams(LOG_NAMESPACE).drained(unit_name(job.id)):
            raise BenchError("cannot see journald's stream state files (not root?)")
        t_drained = time.perf_counter()
    finally:
        await b.close()
    info = {
        "id": job.id,
        "lines": n,
        "seconds": t_drained - t0,
        "job_seconds": t_exit - t0,
    }
    cfg.shared["big_job"] = info
    return info


async def run(cfg: Config) -> list[Row]:
    if not CONF.exists():
        raise BenchError(f"{CONF} is missing: jobrun's journal namespace is not configured")
    info = await big_job(cfg)
    n = info["lines"]
    journal_rate = n / info["seconds"]
    base = await asyncio.to_thread(file_rate, cfg, n)
    missing, extra = await asyncio.to_thread(lost_lines, info["id"], n)
    return [
        Row(
            "P5",
            f"{n:,} lines of 70 B from a job into the jobrun journal (no rate limit)",
            journal_rate,
            "lines/s",
            base,
            "the same `awk` writing to a plain file",
            note=f"job ran {info['job_seconds']:.1f} s, all written after {info['seconds']:.1f} s",
        ),
        Row(
            "P5",
            "lines lost (missing) / extra, read back with journalctl",
            missing,
            "lines",
            goal="0",
            met=missing == 0 and extra == 0,
            note=f"{extra} extra or repeated",
        ),
    ]
