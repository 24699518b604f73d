"""A long queue behind --parallel 4 drains completely, in order, with no job run twice; and one
`kill -9` of jobrund in the middle loses nothing (reduced: 200 jobs; full: 10,000)."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import time
from datetime import datetime
from typing import Any

import pytest

from jobrun.bus import connect_system_bus
from jobrun.client.dbus import DaemonBackend
from jobrun.model import Job

from ..helpers import wait_for
from .common import FULL, jobrund_answers, jobrund_pid, kill_jobrund, report, size

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

PARALLEL = 4
MSG_UNIT_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"


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


def _starts_in_journal(since: str) -> collections.Counter[str]:
    out = subprocess.run(
        ["journalctl", "-q", "-o", "json", "--output-fields=UNIT", f"--since={since}", "_PID=1",
         f"MESSAGE_ID={MSG_UNIT_STARTING}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return collections.Counter(str(json.loads(line).get("UNIT")) for line in out.splitlines())


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
    starts = [j.started_at for j in jobs]
    assert None not in starts
    assert starts == sorted(starts)  # in the order asked
    counts = _starts_in_journal(since)
    twice = [i for i in ids if counts[f"jobrun-{i}.service"] != 1]
    assert not twice, [(i, counts[f"jobrun-{i}.service"]) for i in twice[:10]]
    report(
        "queue_drain",
        {"jobs": n, "parallel": PARALLEL, "submit_s": round(submitted, 1),
         "drain_s": round(drained, 1), "jobs_per_s": round(n / drained, 1)},
    )  # fmt: skip
