"""P8: what jobrund's queue adds to a job. 1,000 jobs (`true`) wait in a group with --parallel 4
(submitted with the group paused, then resumed); against the same jobs started directly through
jobrund with at most 4 running, the client starting the next as soon as one ended (what a
script would do without a queue).

The measure is a slot's idle gap: from a job's end (PID 1's timestamp) to the start of the job
that took its slot, median over the jobs after the first four. Also the drain rates, and how long
a submission to the queue takes against a direct start.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .common import Config, Row, daemon_backend, median, percentile, wait_idle

PARALLEL = 4
COMMAND = ["true"]
GROUP = "bench_p7"


def _timed(jobs: list[Any]) -> list[Any]:
    """The jobs whose record has both times (a start time can be missing: see the note)."""
    return [j for j in jobs if j.started_at is not None and j.outcome.finished_at is not None]


def _gaps(jobs: list[Any]) -> list[float]:
    """For the k-th job to start (k ≥ PARALLEL), seconds from the (k-PARALLEL)-th end to it."""
    jobs = _timed(jobs)
    starts = sorted(j.started_at.timestamp() for j in jobs)
    ends = sorted(j.outcome.finished_at.timestamp() for j in jobs)
    return [max(0.0, starts[k] - ends[k - PARALLEL]) for k in range(PARALLEL, len(starts))]


async def _queued(n: int) -> tuple[list[Any], float, float]:
    """The jobs, seconds per submission, and seconds from resume to the last end."""
    b = await daemon_backend()
    try:
        await b.set_group(GROUP, {"parallel": str(PARALLEL), "paused": "yes"})
        t = time.perf_counter()
        ids = [(await b.start(COMMAND, None, {"group": GROUP})).id for _ in range(n)]
        submit = (time.perf_counter() - t) / n
        t = time.perf_counter()
        await b.set_group(GROUP, {"paused": "no"})
        while True:
            (g,) = [g for g in await b.groups() if g.name == GROUP]
            if g.queued == 0 and g.running == 0:
                break
            await asyncio.sleep(0.05)
        drain = time.perf_counter() - t
        jobs = [await b.status(i) for i in ids]
        return jobs, submit, drain
    finally:
        await b.close()


async def _direct(n: int) -> tuple[list[Any], float, float]:
    b = await daemon_backend()
    try:
        sem = asyncio.Semaphore(PARALLEL)
        starts: list[float] = []

        async def one() -> Any:
            async with sem:
                t = time.perf_counter()
                job = await b.start(COMMAND, None, {})
                starts.append(time.perf_counter() - t)
                return await b.wait(job.id)

        t = time.perf_counter()
        jobs = list(await asyncio.gather(*(one() for _ in range(n))))
        return jobs, median(starts), time.perf_counter() - t
    finally:
        await b.close()


async def run(cfg: Config) -> list[Row]:
    n = cfg.size(1000, 40)
    await asyncio.to_thread(wait_idle)
    direct, direct_start, direct_s = await _direct(n)
    await asyncio.to_thread(wait_idle)
    queued, submit, queued_s = await _queued(n)
    failed = sum(j.state.value != "succeeded" for j in direct + queued)
    gq, gd = _gaps(queued), _gaps(direct)
    note = f"{n} jobs, --parallel {PARALLEL}; p90 gap {percentile(gq, 90) * 1000:.1f} ms"
    if failed:
        note += f"; {failed} jobs did not succeed"
    untimed = 2 * n - len(_timed(direct)) - len(_timed(queued))
    if untimed:
        note += f"; {untimed} records without a start or end time left out"
    return [
        Row("P8", "queue: slot freed → next job started (median)", median(gq) * 1000, "ms",
            median(gd) * 1000, "direct Start as a slot frees, client-driven", note=note,
            samples={"queued": gq, "direct": gd}),
        Row("P8", "queue: drain rate", n / queued_s, "jobs/s", n / direct_s,
            "direct, 4 in flight", note=f"{n} jobs"),
        Row("P8", "queue: submit (Start with --group)", submit * 1000, "ms",
            direct_start * 1000, "direct Start, median"),
    ]  # fmt: skip
