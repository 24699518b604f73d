"""--timeout through jobrund (deadline.py): a clock that stands still while the job is paused,
kept in jobrund's database across its restarts; against the real systemd, as alice."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobrun.deadline import deadline

from .helpers import as_user, start_as, status_as, systemctl_show, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

FINAL = ("succeeded", "failed", "stopped")


def _final(job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status_as("alice", job_id))["state"] in FINAL and s,
        timeout=60,
        interval=0.1,
        what=f"job {job_id} to end",
    )


def _running(job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status_as("alice", job_id))["state"] == "running" and s["started_at"] and s,
        what=f"job {job_id} to run",
    )


def _ran_for(s: dict[str, Any]) -> float:
    finished = datetime.fromisoformat(s["finished_at"])
    return (finished - datetime.fromisoformat(s["started_at"])).total_seconds()


def test_deadline_is_start_plus_timeout_plus_time_paused() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert deadline(start, 2.5, 0) == start + timedelta(seconds=2.5)
    assert deadline(start, 2.5, 60) == start + timedelta(seconds=62.5)


def test_a_paused_jobs_timeout_clock_stands_still() -> None:
    job = start_as("alice", "--timeout", "2", "--stop-timeout", "1", "--", "sleep", "60")
    _running(job)
    # systemd's clock could not be stopped: jobrund keeps this one.
    unit = f"jobrun-{job}.service"
    assert systemctl_show(unit, "TimeoutStartUSec")["TimeoutStartUSec"] == "infinity"
    paused = as_user("alice", "pause", job)
    assert paused.returncode == 0, paused.stderr
    paused_at = time.monotonic()
    # Paused past the 2 s a running job has (a wait for something that must not happen).
    time.sleep(3)
    assert status_as("alice", job)["state"] == "paused"
    assert systemctl_show(unit, "ActiveState")["ActiveState"] == "activating"
    resumed = as_user("alice", "resume", job)
    assert resumed.returncode == 0, resumed.stderr
    paused_for = time.monotonic() - paused_at
    done = _final(job)
    assert (done["state"], done["result"], done["reason"]) == ("failed", "timeout", "timeout")
    # It ran its 2 s, and the pause on top: not less, and not much more.
    assert 2 + paused_for - 0.3 <= _ran_for(done) <= 2 + paused_for + 10, (done, paused_for)
    assert "timeout" in as_user("alice", "status", job).stdout


def test_a_deadline_that_passed_while_jobrund_was_down_ends_the_job_when_it_is_back() -> None:
    job = start_as("alice", "--timeout", "1", "--stop-timeout", "1", "--", "sleep", "60")
    started = datetime.fromisoformat(_running(job)["started_at"])
    subprocess.run(["systemctl", "stop", "jobrund.service"], check=True)
    try:
        wait_for(
            lambda: (datetime.now(UTC) - started).total_seconds() > 2,
            what="the deadline to pass",
        )
        # Nobody ended it meanwhile: systemd holds no clock of its own for it.
        assert systemctl_show(f"jobrun-{job}.service", "ActiveState")["ActiveState"] == (
            "activating"
        )
    finally:
        subprocess.run(["systemctl", "start", "jobrund.service"], check=True)
    back = datetime.now(UTC)
    done = _final(job)
    assert (done["state"], done["reason"]) == ("failed", "timeout")
    assert datetime.fromisoformat(done["finished_at"]) >= back - timedelta(seconds=1)


def test_a_stop_before_the_deadline_is_a_stop_and_a_quick_job_succeeds() -> None:
    job = start_as("alice", "--timeout", "30", "--", "sleep", "60")
    _running(job)
    assert as_user("alice", "stop", job).returncode == 0
    assert _final(job)["state"] == "stopped"
    ok = start_as("alice", "--timeout", "30", "--", "true")
    assert _final(ok)["state"] == "succeeded"
