"""Steering running jobs against the real systemd: pause and resume, `set` (live limits), and the
accounting a job leaves behind. As root in-process, and as alice and bob through jobrund."""

from __future__ import annotations

import asyncio
import json
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import (
    as_user,
    dbus_call_as,
    jobrun,
    start,
    start_as,
    status,
    status_as,
    systemctl_show,
    wait_for,
)

pytestmark = pytest.mark.integration

# Prints a growing counter every 20 ms: its output stops growing while it is paused.
COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done"]
CONFIG = Path("/etc/jobrun/jobrund.toml")


def _lines(job_id: str, user: str = "root") -> int:
    proc = as_user(user, "logs", job_id) if user != "root" else jobrun("logs", job_id)
    assert proc.returncode == 0, proc.stderr
    return len(proc.stdout.splitlines())


def _holds_still(job_id: str, user: str = "root", seconds: float = 1.0) -> bool:
    """Whether the job's output stays the same for `seconds` (a paused job's does)."""
    first = _lines(job_id, user)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _lines(job_id, user) != first:
            return False
    return True


def _advances(job_id: str, user: str = "root") -> None:
    first = _lines(job_id, user)
    wait_for(lambda: _lines(job_id, user) > first + 3, what="the job's counter to advance")


def test_pause_stops_progress_resume_continues_stop_works(state_dir: Path) -> None:
    job = start("--", *COUNTER)
    _advances(job)
    proc = jobrun("pause", job)
    assert proc.returncode == 0, proc.stderr
    assert status(job)["state"] == "paused"
    assert _holds_still(job)
    again = jobrun("pause", job)
    assert again.returncode == 1 and "paused already" in again.stderr
    assert jobrun("resume", job).returncode == 0
    assert status(job)["state"] == "running"
    _advances(job)
    running = jobrun("resume", job)
    assert running.returncode == 1 and "is running, not paused" in running.stderr
    # stop of a paused job: thawed, then SIGTERM reaches it (not a SIGKILL after the grace)
    assert jobrun("pause", job).returncode == 0
    t0 = time.monotonic()
    stop = jobrun("stop", job)
    assert stop.returncode == 0, stop.stderr
    assert time.monotonic() - t0 < 8  # TimeoutStopSec is 10 s: SIGKILL would take that long
    st = status(job)
    assert st["state"] == "stopped" and st["signal"] == "SIGTERM", st
    finished = jobrun("pause", job)
    assert finished.returncode == 1 and "has finished" in finished.stderr
    assert jobrun("resume", job).returncode == 1


def test_paused_state_is_kernel_state_not_only_jobruns(state_dir: Path) -> None:
    """On this hybrid host the freeze is the kernel's cgroup v2 freezer: `status` derives it from
    the cgroup, so a fresh process (a restarted jobrund) still says paused."""
    job = start("--", *COUNTER)
    assert jobrun("pause", job).returncode == 0
    cgroup = systemctl_show(f"jobrun-{job}.service", "ControlGroup")["ControlGroup"]
    mirror = Path("/sys/fs/cgroup/unified") / cgroup.lstrip("/")
    if (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
        frozen = systemctl_show(f"jobrun-{job}.service", "FreezerState")["FreezerState"]
        assert frozen == "frozen"
    else:
        assert "frozen 1" in (mirror / "cgroup.events").read_text()
        (mirror / "cgroup.freeze").write_text("0")  # thawed behind jobrun's back
        assert status(job)["state"] == "running"
        (mirror / "cgroup.freeze").write_text("1")
    assert status(job)["state"] == "paused"
    jobrun("stop", job)


def test_set_changes_limits_live_and_status_shows_both(state_dir: Path) -> None:
    job = start("--memory-max", "200M", "--cpu-weight", "100", "--", "sleep", "60")
    unit = f"jobrun-{job}.service"
    proc = jobrun("set", job, "--memory-max", "300M", "--cpu-weight", "50", "--cpu-quota", "150%")
    assert proc.returncode == 0, proc.stderr
    shown = systemctl_show(unit, "MemoryMax", "CPUWeight", "CPUQuotaPerSecUSec")
    assert shown == {
        "MemoryMax": str(300 << 20), "CPUWeight": "50", "CPUQuotaPerSecUSec": "1.500000s"
    }  # fmt: skip
    cgroup = systemctl_show(unit, "ControlGroup")["ControlGroup"].lstrip("/")
    limit = Path("/sys/fs/cgroup/memory", cgroup, "memory.limit_in_bytes")
    if limit.exists():  # v1 memory controller: enforced there
        assert int(limit.read_text()) == 300 << 20
    st = status(job)
    assert st["limits"]["memory_max"] == 200 << 20  # what was asked
    assert st["live_limits"] == {"memory_max": 300 << 20, "cpu_weight": 50, "cpu_quota": 150}
    text = jobrun("status", job, "--wide").stdout
    assert f"memory_max={300 << 20} (asked {200 << 20})" in text
    assert "cpu_quota=150 (asked none)" in text
    # Only resource control changes live; bad input changes nothing.
    bad = jobrun("set", job, "--memory-max", "lots")
    assert bad.returncode == 2
    assert systemctl_show(unit, "MemoryMax")["MemoryMax"] == str(300 << 20)
    high = jobrun("set", job, "--memory-high", "1G")
    assert high.returncode == 2 and "memory-high must not be above" in high.stderr
    jobrun("stop", job)
    ended = jobrun("set", job, "--memory-max", "1G")
    assert ended.returncode == 1 and "has finished" in ended.stderr


def test_set_refuses_settings_that_cannot_change_live() -> None:
    from jobrun.errors import InvalidArgument
    from jobrun.properties import LIVE_SETTINGS, build_changes

    assert {s.field for s in LIVE_SETTINGS} == {
        "cpu_weight", "memory_high", "memory_max", "io_weight", "tasks_max", "cpu_quota"
    }  # fmt: skip
    with pytest.raises(InvalidArgument, match="--cpu-affinity cannot be changed"):
        build_changes({"cpu_affinity": "0"})
    with pytest.raises(InvalidArgument, match="nothing to change"):
        build_changes({})
    assert build_changes({"memory_max": "1G"}) == {"memory_max": 1 << 30}


@pytest.fixture
def config() -> Iterator[Path]:
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text('[limits]\nmemory_max = "512M"\n')
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)
    yield CONFIG
    CONFIG.unlink(missing_ok=True)
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)


@pytest.mark.daemon
def test_alice_pauses_resumes_and_resizes_her_job_within_caps(config: Path) -> None:
    job = start_as("alice", "--memory-max", "100M", "--", *COUNTER)
    _advances(job, "alice")
    assert as_user("alice", "pause", job).returncode == 0
    assert status_as("alice", job)["state"] == "paused"
    assert _holds_still(job, "alice")
    if not (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
        # jobrund's sandbox lets it write the jobs' cgroup.freeze: the kernel freezer, not SIGSTOP
        cgroup = systemctl_show(f"jobrun-{job}.service", "ControlGroup")["ControlGroup"]
        events = Path("/sys/fs/cgroup/unified", cgroup.lstrip("/"), "cgroup.events")
        assert "frozen 1" in events.read_text()
    # another user's job is "not found", for every new verb
    for verb in (["pause", job], ["resume", job], ["set", job, "--memory-max", "10M"]):
        proc = as_user("bob", *verb)
        assert proc.returncode == 3 and f"no job {job}" in proc.stderr, proc.stderr
    # jobrund restarted: the job is still paused (derived from the cgroup or the record)
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)
    assert status_as("alice", job)["state"] == "paused"
    assert as_user("alice", "resume", job).returncode == 0
    _advances(job, "alice")
    over = as_user("alice", "set", job, "--memory-max", "1G")
    assert over.returncode == 4 and "above the most allowed" in over.stderr
    ok = as_user("alice", "set", job, "--memory-max", "300M")
    assert ok.returncode == 0, ok.stderr
    assert systemctl_show(f"jobrun-{job}.service", "MemoryMax")["MemoryMax"] == str(300 << 20)
    # an admin is not capped
    assert as_user("carol", "set", job, "--memory-max", "1G").returncode == 0
    assert as_user("alice", "pause", job).returncode == 0
    stop = as_user("alice", "stop", job)
    assert stop.returncode == 0, stop.stderr
    assert status_as("alice", job)["state"] == "stopped"


@pytest.mark.daemon
def test_accounting_outlives_the_unit() -> None:
    """A job that allocates ~64 MiB and burns some CPU: after it ended and systemd has unloaded
    its unit, `status` and `list --json` still say what it used."""
    script = (
        "b = bytearray(64 << 20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "import time; t = time.time()\n"
        "while time.time() - t < 2.5: pass\n"
    )
    job = start_as("alice", "--", "/usr/bin/python3", "-c", script)
    wait_for(
        lambda: status_as("alice", job)["state"] == "succeeded", timeout=30, what="the job's end"
    )
    unit = f"jobrun-{job}.service"
    assert systemctl_show(unit, "LoadState")["LoadState"] == "not-found"  # gone from systemd
    acct = status_as("alice", job)["accounting"]
    assert acct is not None
    assert acct["memory_peak_bytes"] >= 64 << 20, acct
    # ~2.5 s of busy loop, on 2 shared CPUs, read at most SAMPLE_INTERVAL before its end
    assert acct["cpu_seconds"] >= 0.25, acct
    assert acct["tasks_peak"] >= 1, acct
    listed = json.loads(as_user("alice", "list", "--json").stdout)
    assert [j["accounting"] for j in listed if j["id"] == job] == [acct]
    text = as_user("alice", "status", job).stdout
    assert "peak memory" in text


@pytest.mark.daemon
@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"User": V("s", "root")}', "unknown setting"),
        ('{"MemoryMax": V("t", 1)}', "unknown setting"),
        ('{"writable": V("as", ["/"])}', "cannot be changed while a job runs"),
        ('{"profile": V("s", "relaxed")}', "cannot be changed while a job runs"),
        ('{"memory_max": V("s", "-1")}', "memory-max"),
        ("{}", "nothing to change"),
    ],
)
def test_set_over_dbus_takes_only_live_settings(body: str, error: str) -> None:
    job = start_as("alice", "--memory-max", "100M", "--", "sleep", "60")
    err, reply = dbus_call_as("alice", "Set", f"[{job!r}, {body}]")
    assert err == "org.jobrun.Error.InvalidArgument", (err, reply)
    assert error in reply[0]
    unit = f"jobrun-{job}.service"
    uid = str(pwd.getpwnam("alice").pw_uid)
    assert systemctl_show(unit, "MemoryMax", "User") == {"MemoryMax": str(100 << 20), "User": uid}
    as_user("alice", "stop", job)


async def test_sigstop_is_the_last_resort_and_its_pause_is_remembered(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where neither systemd nor the kernel's cgroup v2 freezer can freeze (here: cgroup.freeze
    made unwritable), SIGSTOP to every process; a fresh Manager (a restarted jobrund) still says
    paused, from jobrun's record."""
    from jobrun import freezer
    from jobrun.manager import Manager
    from jobrun.model import JobState
    from jobrun.properties import build_spec
    from jobrun.store import Store

    monkeypatch.setattr(freezer, "_write_freeze", lambda control_group, value: False)
    async with await Manager.open(Store(state_dir)) as m:
        job = await m.start(build_spec(COUNTER, workdir="/"))
        await asyncio.to_thread(_advances, job.id)
        assert (await m.pause(job.id)).state is JobState.PAUSED
        assert m.store.pause_info(job.id)[1] == freezer.How.SIGSTOP
        cgroup = systemctl_show(job.unit, "ControlGroup")["ControlGroup"].lstrip("/")
        assert freezer.kernel_frozen(cgroup) is not True  # not the freezer: signals
        where = Path("/sys/fs/cgroup/systemd", cgroup)  # v1 hosts: systemd's own hierarchy
        if not where.exists():
            where = Path("/sys/fs/cgroup", cgroup)
        pids = (where / "cgroup.procs").read_text().split()
        states = [Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] for p in pids]
        assert pids and set(states) == {"T"}, states  # every process stopped
        assert await asyncio.to_thread(_holds_still, job.id)
    async with await Manager.open(Store(state_dir)) as m:
        assert (await m.status(job.id)).state is JobState.PAUSED
        assert (await m.resume(job.id)).state is JobState.RUNNING
        await asyncio.to_thread(_advances, job.id)
        stopped, was_running = await m.stop(job.id)
        assert was_running and stopped.state is JobState.STOPPED
