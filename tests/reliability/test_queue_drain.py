"""A long queue behind --parallel 4 drains completely, in order, with no job run twice; and one
`kill -9` of jobrund in the middle loses nothing (reduced: 200 jobs; full: 10,000)."""

from __future__ import annotations

import asyncio
import collections
import time
from datetime import datetime
from typing import Any

import pytest

from jobrun.bus import connect_system_bus
from jobrun.client.dbus import DaemonBackend
from jobrun.model import Job

from ..helpers import job_starts, wait_for
from .common import FULL, jobrund_answers, jobrund_pid, kill_jobrund, report, size

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

PARALLEL = 4


async def _submit(n: int, group: str) -> list[str]:
    bus = await connect_system_bus()
    backend = DaemonBackend(bus)
    try:
        await backend.set_group(group, {"parallel": str(PARALLEL), "paused": "yes"})
        ids = []
        for _ in range(n):
            job = await backend.start(["true"], None, {"group": group})
            ids.append(job.id)
        await backend.set_group(group, {"paused": "no"})
        return ids
    finally:
        await backend.close()
        bus.disconnect()


async def _call(fn: Any) -> Any:
    bus = await connect_system_bus()
    backend = DaemonBackend(bus)
    try:
        return await fn(backend)
    finally:
        await backend.close()
        bus.disconnect()


def _group(name: str) -> dict[str, int]:
    async def go(b: DaemonBackend) -> dict[str, int]:
        (g,) = [g for g in await b.groups() if g.name == name]
        return {"queued": g.queued, "running": g.running}

    result: dict[str, int] = asyncio.run(_call(go))
    return result


def test_a_long_queue_drains_in_order_once_each_through_a_kill_9() -> None:
    n = size(200, 10_000)
    since = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    t0 = time.monotonic()
    ids = asyncio.run(_submit(n, "drain"))
    submitted = time.monotonic() - t0
    # Mid-drain: jobrund killed, back by itself or by the next call; the queue carries on.
    wait_for(lambda: _group("drain")["queued"] < n - 2 * PARALLEL, timeout=120, what="a start")
    killed = kill_jobrund("KILL")
    wait_for(lambda: jobrund_pid() != killed, timeout=30, what="jobrund to go")
    jobrund_answers()
    wait_for(
        lambda: _group("drain") == {"queued": 0, "running": 0},
        timeout=3600 if FULL else 300,
        interval=0.5,
        what="the queue to drain",
    )
    drained = time.monotonic() - t0

    async def listed(b: DaemonBackend) -> list[Job]:
        jobs: list[Job] = await b.list(True)
        return jobs

    by_id = {j.id: j for j in asyncio.run(_call(listed))}
    jobs = [by_id[i] for i in ids]
    assert [j.state.value for j in jobs] == ["succeeded"] * n
    # Started in the order asked (PID 1's start records), each exactly once.
    mine = set(ids)
    order = [i for i in job_starts(since) if i in mine]
    counts = collections.Counter(order)
    assert not [i for i in ids if counts[i] != 1], [(i, counts[i]) for i in ids if counts[i] != 1]
    # The dispatcher releases jobs in order; systemd may run the start jobs of one release (up
    # to PARALLEL requests back to back) in another order: no job moves by PARALLEL or more.
    moved = [(k, order.index(i)) for k, i in enumerate(ids) if abs(order.index(i) - k) >= PARALLEL]
    assert not moved, moved[:10]

    report(
        "queue_drain",
        {"jobs": n, "parallel": PARALLEL, "submit_s": round(submitted, 1),
         "drain_s": round(drained, 1), "jobs_per_s": round(n / drained, 1)},
    )  # fmt: skip
