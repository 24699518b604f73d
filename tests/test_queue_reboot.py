"""The queue survives a reboot: two boots of a (nested) systemd sharing a state directory and a
persistent journal, as the status tests do. In the first, a group holds a running job and three
queued ones when the host goes down; in the second, a dispatcher started from the same database
finds the running one ended with the host and runs the queued ones, in order, once each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_FIRST = """
import asyncio
from jobrun.caller import Caller
from jobrun.dispatch import Dispatcher
from jobrun.manager import Manager
from jobrun.model import JobState
from jobrun.properties import build_spec

async def main():
    m = await Manager.open()
    d = Dispatcher(m)
    root = Caller(0, "root", admin=True)
    await d.set_group(root, "boot", parallel=1)
    ids = [(await d.submit(build_spec(["sleep", "1000"], group="boot"), root)).id]
    for _ in range(3):
        ids.append((await d.submit(build_spec(["true"], group="boot"), root)).id)
    assert (await m.status(ids[3], root)).state is JobState.QUEUED
    d.start()
    for _ in range(400):
        if (await m.status(ids[0], root)).state is JobState.RUNNING:
            break
        await asyncio.sleep(0.05)
    print(*ids)

asyncio.run(main())
"""

_SECOND = """
import asyncio, json, sys
from jobrun.caller import Caller
from jobrun.dispatch import Dispatcher
from jobrun.manager import Manager
from jobrun.wire.jobs import job_to_dict

async def main(ids):
    m = await Manager.open()
    root = Caller(0, "root", admin=True)
    before = [(await m.status(i, root)).state.value for i in ids]
    d = Dispatcher(m)
    d.start()
    jobs = [await asyncio.wait_for(m.wait(i, root), 60) for i in ids]
    print(json.dumps({"before": before, "after": [job_to_dict(j) for j in jobs]}))
    await d.close()
    await m.close()

asyncio.run(main(sys.argv[1:]))
"""


def test_queued_jobs_survive_a_reboot(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    env = dict(os.environ, WITH_SYSTEMD_BOOT="always", WITH_SYSTEMD_JOURNAL=str(journal),
               JOBRUN_STATE_DIR=str(tmp_path / "state"), JOBRUN_MODE="local")  # fmt: skip
    with_systemd = str(Path(__file__).parent / "with-systemd")
    first = subprocess.run(
        [with_systemd, sys.executable, "-c", _FIRST], env=env, capture_output=True, text=True,
        timeout=120, cwd="/",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    ids = first.stdout.split()
    assert len(ids) == 4, first.stdout
    second = subprocess.run(
        [with_systemd, sys.executable, "-c", _SECOND, *ids], env=env, capture_output=True,
        text=True, timeout=180, cwd="/",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    # Before the dispatcher ran in the second boot, the three still wait.
    assert result["before"][1:] == ["queued"] * 3, result
    after = result["after"]
    assert after[0]["state"] == "failed" and "host went down" in after[0]["reason"], after[0]
    assert [j["state"] for j in after[1:]] == ["succeeded"] * 3, after
    starts = [j["started_at"] for j in after[1:]]
    assert None not in starts and starts == sorted(starts), starts
