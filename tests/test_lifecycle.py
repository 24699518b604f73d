"""Jobs as transient services: start, stop, status, list — against a real systemd."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobrun import manager as manager_mod
from jobrun.errors import AmbiguousJobId, JobNotFound
from jobrun.manager import Caller, Manager
from jobrun.model import Job, JobState, unit_name
from jobrun.properties import build_spec
from jobrun.store import Store

from .helpers import (
    cgroup_pids,
    jobrun,
    journal_output,
    start,
    status,
    systemctl_show,
    wait_finished,
    wait_for,
    wait_for_async,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("state_dir")]


def test_start_prints_only_the_id_and_sets_what_every_job_gets() -> None:
    job = start("--name", "hello", "--", "sleep", "30")
    assert re.fullmatch(r"[0-9a-z]{10}", job)
    unit = unit_name(job)
    show = systemctl_show(
        unit, "Slice", "KillMode", "CPUAccounting", "MemoryAccounting", "IOAccounting",
        "TasksAccounting", "Description", "LogNamespace", "PrivateNetwork", "PrivateTmp",
        "TimeoutStopUSec", "ActiveState", "Type", "StandardOutput", "StandardError",
    )  # fmt: skip
    assert show["Slice"] == "jobrun-u0.slice"  # root's jobs, in jobrun.slice
    assert show["KillMode"] == "control-group"
    for acct in ("CPUAccounting", "MemoryAccounting", "IOAccounting", "TasksAccounting"):
        assert show[acct] == "yes", acct
    # The ID and the name, never the command line (other users read Description=).
    assert show["Description"] == f"jobrun job {job} (hello)"
    assert show["LogNamespace"] == "jobrun"
    assert show["StandardOutput"] == show["StandardError"] == "journal"
    assert show["PrivateNetwork"] == "yes"
    assert show["PrivateTmp"] == "yes"
    assert show["TimeoutStopUSec"] == "10s"
    assert show["ActiveState"] in ("active", "activating")
    s = status(job)
    assert s["state"] == "running"
    assert s["name"] == "hello" and s["command"] == ["sleep", "30"]
    assert s["owner"] == "root" and s["unit"] == unit
    assert s["started_at"] and s["created_at"] and s["finished_at"] is None
    assert s["usage"]["memory_bytes"] is not None and s["usage"]["tasks"] == 1
    assert s["usage"]["cpu_seconds"] is not None
    jobrun("stop", job, check=True)


def test_limits_reach_the_unit_and_the_cgroup() -> None:
    job = start(
        "--cpu-weight", "400", "--memory-high", "200M", "--memory-max", "256M",
        "--io-weight", "300", "--tasks-max", "17", "--cpu-quota", "150%",
        "--network", "--shared-tmp", "--profile", "relaxed", "--stop-timeout", "3",
        "--", "sleep", "30",
    )  # fmt: skip
    unit = unit_name(job)
    show = systemctl_show(
        unit, "CPUWeight", "MemoryHigh", "MemoryMax", "IOWeight", "TasksMax",
        "CPUQuotaPerSecUSec", "PrivateNetwork", "PrivateTmp", "TimeoutStopUSec",
    )  # fmt: skip
    assert show == {
        "CPUWeight": "400",
        "MemoryHigh": str(200 << 20),
        "MemoryMax": str(256 << 20),
        "IOWeight": "300",
        "TasksMax": "17",
        "CPUQuotaPerSecUSec": "1.500000s",
        "PrivateNetwork": "no",
        "PrivateTmp": "no",
        "TimeoutStopUSec": "3s",
    }
    # The cgroup files this host has (v1 here; MemoryHigh and IOWeight have no v1 file).
    cg = f"jobrun.slice/jobrun-u0.slice/{unit}"
    files = {
        f"/sys/fs/cgroup/cpu/{cg}/cpu.shares": str(400 * 1024 // 100),
        f"/sys/fs/cgroup/memory/{cg}/memory.limit_in_bytes": str(256 << 20),
        f"/sys/fs/cgroup/pids/{cg}/pids.max": "17",
        f"/sys/fs/cgroup/cpu/{cg}/cpu.cfs_quota_us": "150000",
    }
    checked = 0
    for path, want in files.items():
        if Path(path).exists():
            assert Path(path).read_text().strip() == want, path
            checked += 1
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # cgroup v2 host
        v2 = Path("/sys/fs/cgroup") / cg
        assert (v2 / "memory.max").read_text().strip() == str(256 << 20)
        assert (v2 / "memory.high").read_text().strip() == str(200 << 20)
        assert (v2 / "pids.max").read_text().strip() == "17"
        checked += 3
    assert checked >= 3
    limits = status(job)["limits"]
    assert limits["cpu_weight"] == 400 and limits["memory_max"] == 256 << 20
    assert limits["cpu_quota"] == 150 and limits["network"] is True
    jobrun("stop", job, check=True)


def test_only_set_properties_are_sent() -> None:
    job = start("--", "sleep", "30")
    show = systemctl_show(unit_name(job), "CPUWeight", "MemoryMax", "TasksMax", "IOWeight")
    # systemd's defaults, untouched: nothing was sent for them.
    assert show["CPUWeight"] == "[not set]" and show["IOWeight"] == "[not set]"
    assert show["MemoryMax"] == "infinity"
    jobrun("stop", job, check=True)


def test_argv_runs_as_given_with_its_own_environment_and_workdir(tmp_path: Path) -> None:
    os.environ["JOBRUN_TEST_LEAK"] = "leaked"
    try:
        job = start(
            "-E", "GREETING=hello world", "-C", str(tmp_path), "--shared-tmp",
            "--profile", "relaxed", "--",
            "sh", "-c", 'printf "%s|" "$0" "$1" "$GREETING" "${JOBRUN_TEST_LEAK:-unset}" "$(pwd)"',
            "$$ %n ${HOME}", "two words",
        )  # fmt: skip
    finally:
        del os.environ["JOBRUN_TEST_LEAK"]
    assert wait_finished(job)["state"] == "succeeded"
    out = wait_for(lambda: journal_output(job), what="output")
    assert out.strip() == f"$$ %n ${{HOME}}|two words|hello world|unset|{tmp_path}|"


def test_exact_exit_codes_and_signals() -> None:
    forty_two = start("--", "sh", "-c", "exit 42")
    segv = start("--", "sh", "-c", "kill -SEGV $$")
    missing = start("--", "no-such-command-jobrun")
    ok = start("--", "true")
    s = wait_finished(forty_two)
    assert (s["state"], s["exit_code"], s["signal"], s["result"]) == (
        "failed",
        42,
        None,
        "exit-code",
    )
    s = wait_finished(segv)
    assert s["state"] == "failed" and s["exit_code"] is None
    assert s["signal"] == "SIGSEGV" and s["result"] in ("signal", "core-dump")
    s = wait_finished(missing)
    assert s["state"] == "failed" and s["exit_code"] is None
    assert "command not found" in s["reason"] and "no-such-command-jobrun" in s["reason"]
    s = wait_finished(ok)
    assert (s["state"], s["exit_code"], s["signal"]) == ("succeeded", 0, None)
    assert s["finished_at"] >= s["started_at"]


def test_status_outlives_the_unit() -> None:
    ok = start("--", "true")
    bad = start("--", "sh", "-c", "exit 3")
    wait_finished(bad)
    # A succeeded transient unit is unloaded at once; a failed one is, after reset-failed.
    subprocess.run(["systemctl", "reset-failed", unit_name(bad)], check=True)
    for job in (ok, bad):

        def unloaded(j: str = job) -> bool:
            return systemctl_show(unit_name(j), "LoadState")["LoadState"] == "not-found"

        wait_for(unloaded, what="unit unloaded")
    # Nothing cached: re-derive from the journal (what a fresh machine with this DB would do).
    assert status(ok)["state"] == "succeeded" and status(ok)["exit_code"] == 0
    s = status(bad)
    assert (s["state"], s["exit_code"]) == ("failed", 3)


async def test_cached_outcome_equals_what_systemd_says(state_dir: Path) -> None:
    """jobrun's cache cannot drift: a fresh derivation from systemd gives the same answer."""
    async with await Manager.open(Store(state_dir)) as m:
        specs = [["true"], ["sh", "-c", "exit 5"], ["sh", "-c", "kill -KILL $$"], ["sleep", "60"]]
        jobs = [await m.start(build_spec(c)) for c in specs]
        await m.stop(jobs[3].id)
        for j in jobs[:3]:
            await m.wait(j.id)
        for j in jobs:
            cached = await m.status(j.id)
            fresh = await m.status(j.id, fresh=True)
            assert cached.outcome == fresh.outcome, j.spec.command
        states = [(await m.status(j.id)).state for j in jobs]
        assert states == [JobState.SUCCEEDED, JobState.FAILED, JobState.FAILED, JobState.STOPPED]


async def test_a_job_just_started_is_running_and_its_run_is_recorded(state_dir: Path) -> None:
    """start returns before systemd has run the start job (no question asked after it): the
    unit is still inactive then, with its start job queued. That is running, not finished."""
    async with await Manager.open(Store(state_dir)) as m:
        jobs = await asyncio.gather(*(m.start(build_spec(["sleep", "3"])) for _ in range(16)))
        states = await asyncio.gather(*(m.status(j.id) for j in jobs))
        assert [s.state for s in states] == [JobState.RUNNING] * 16
        assert await m.running_count(Caller.current()) == 16
        # The InvocationID and start time arrive with the unit's PropertiesChanged signal.
        # Polled in this event loop: the signals arrive in it.
        await wait_for_async(
            lambda: all(m.store.get(j.id)[0].invocation_id for j in jobs),
            what="the InvocationIDs to be recorded",
        )
        for j in jobs:
            recorded, _ = m.store.get(j.id)
            assert re.fullmatch(r"[0-9a-f]{32}", recorded.invocation_id or "")
            assert recorded.started_at is not None
        for j in jobs:
            await m.stop(j.id)


def test_db_saying_running_is_corrected_by_systemd(state_dir: Path) -> None:
    """A job that ended while no jobrun was looking is reported from systemd's records."""

    async def go() -> Job:
        async with await Manager.open(Store(state_dir)) as m:
            return await m.start(build_spec(["sleep", "60"]))

    job = asyncio.run(go())
    assert Store(state_dir).get(job.id)[0].outcome.state is JobState.RUNNING
    # jobrun is gone; the job is stopped behind its back.
    subprocess.run(["systemctl", "stop", job.unit], check=True)
    s = status(job.id)
    assert s["state"] == "stopped", s


def test_stop_kills_the_whole_tree_including_setsid_escapees() -> None:
    # Every sleeper's argv carries this unique duration, so /proc shows any survivor.
    token = f"1000.{time.monotonic_ns() % 10**9:09d}"
    script = (
        f"sleep {token} & "
        f"sh -c 'sleep {token} & wait' & "  # a grandchild
        f"setsid sh -c 'sleep {token} & exit 0' & "  # a new session, parent gone
        f"sh -c '(sleep {token} &) ; exit 0' ; "  # double fork: reparented daemon
        "wait"
    )
    job = start("--", "sh", "-c", script)
    unit = unit_name(job)
    wait_for(lambda: len(cgroup_pids(unit) or []) >= 6, what="all processes in the cgroup")
    proc = jobrun("stop", job)
    assert proc.returncode == 0, proc.stderr
    assert f"job {job} stopped" in proc.stderr
    # Returned only once the job had ended: the cgroup is gone (or empty) right now.
    assert not cgroup_pids(unit)
    leftovers = [
        p for p in Path("/proc").iterdir()
        if p.name.isdigit() and token.encode() in _cmdline(p)
    ]  # fmt: skip
    assert leftovers == []
    s = status(job)
    assert s["state"] == "stopped" and s["signal"] == "SIGTERM"


def _cmdline(p: Path) -> bytes:
    try:
        return p.joinpath("cmdline").read_bytes()
    except OSError:
        return b""


def test_sigterm_trap_gets_its_grace_period() -> None:
    script = (
        "trap 'echo got-term; sleep 1; echo bye; exit 0' TERM; "
        "echo ready; while :; do sleep 0.05; done"
    )
    job = start("--stop-timeout", "20", "--", "sh", "-c", script)
    wait_for(lambda: "ready" in journal_output(job), what="job ready")
    t0 = time.monotonic()
    jobrun("stop", job, check=True)
    took = time.monotonic() - t0
    assert took >= 1.0  # it got to finish its handler…
    out = wait_for(lambda: (o := journal_output(job)) and "bye" in o and o, what="bye")
    assert "got-term" in out
    assert status(job)["state"] == "stopped"


def test_stop_timeout_escalates_to_sigkill() -> None:
    job = start("--", "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done")
    wait_for(lambda: "ready" in journal_output(job), what="job ready")
    t0 = time.monotonic()
    jobrun("stop", "--timeout", "1", job, check=True)
    assert time.monotonic() - t0 >= 1.0
    s = status(job)
    assert s["state"] == "stopped" and s["signal"] == "SIGKILL"


def test_stopping_a_finished_job_is_a_noop() -> None:
    job = start("--", "true")
    wait_finished(job)
    proc = jobrun("stop", job)
    assert proc.returncode == 0
    assert "already finished (succeeded)" in proc.stderr
    assert status(job)["state"] == "succeeded"


def test_systemctl_stop_is_reported_as_stopped() -> None:
    job = start("--", "sleep", "60")
    subprocess.run(["systemctl", "stop", unit_name(job)], check=True)
    s = status(job)
    assert s["state"] == "stopped" and s["exit_code"] is None


def test_cpu_weight_shares_cpu_in_ratio() -> None:
    busy = ["sh", "-c", "while :; do :; done"]
    low = start("--cpu-affinity", "0", "--cpu-weight", "100", "--", *busy)
    high = start("--cpu-affinity", "0", "--cpu-weight", "400", "--", *busy)
    wait_for(lambda: (status(low)["usage"]["cpu_seconds"] or 0) > 0.5, what="low to run")
    a0, b0 = status(low)["usage"]["cpu_seconds"], status(high)["usage"]["cpu_seconds"]
    wait_for(lambda: status(high)["usage"]["cpu_seconds"] - b0 > 3.0, timeout=30, what="3 s of CPU")
    a1, b1 = status(low)["usage"]["cpu_seconds"], status(high)["usage"]["cpu_seconds"]
    jobrun("stop", low, check=True)
    jobrun("stop", high, check=True)
    ratio = (b1 - b0) / max(a1 - a0, 1e-6)
    print(f"CPUWeight 400 vs 100: {b1 - b0:.2f}s vs {a1 - a0:.2f}s of CPU, ratio {ratio:.2f}")
    assert 2.5 < ratio < 6.0


def test_job_over_memory_max_is_reported_out_of_memory() -> None:
    job = start(
        "--memory-max", "64M", "--",
        "python3", "-c", "import time; b = bytearray(512 << 20); time.sleep(30)",
    )  # fmt: skip
    s = wait_finished(job)
    assert s["state"] == "failed" and s["signal"] == "SIGKILL"
    assert "out of memory" in s["reason"]
    # Same answer once the unit is gone and the outcome comes from the journal.
    subprocess.run(["systemctl", "reset-failed", unit_name(job)], check=True)
    assert json.loads(jobrun("status", job, "--json").stdout)["reason"] == s["reason"]


def test_fifty_concurrent_starts_all_succeed() -> None:
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        procs = list(pool.map(lambda _: jobrun("start", "--", "sleep", "300"), range(50)))
    assert [p.returncode for p in procs] == [0] * 50, [p.stderr for p in procs if p.returncode]
    ids = {p.stdout.strip() for p in procs}
    assert len(ids) == 50
    listed = json.loads(jobrun("list", "--json", check=True).stdout)
    running = {j["id"] for j in listed if j["state"] == "running"}
    assert ids <= running
    subprocess.run(["systemctl", "stop", "jobrun.slice"], check=True)
    assert {j["id"]: j["state"] for j in json.loads(jobrun("list", "--json").stdout)} == {
        i: "stopped" for i in ids
    }


async def test_unique_prefixes_are_accepted_and_ambiguous_ones_refused(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter(["abc1000000", "abc2000000"])
    monkeypatch.setattr(manager_mod, "new_job_id", lambda: next(ids))
    async with await Manager.open(Store(state_dir)) as m:
        a = await m.start(build_spec(["true"]))
        b = await m.start(build_spec(["true"]))
        assert (a.id, b.id) == ("abc1000000", "abc2000000")
        assert (await m.status("abc1")).id == a.id
        assert (await m.status("ABC2")).id == b.id
        with pytest.raises(AmbiguousJobId):
            await m.status("abc")
        with pytest.raises(JobNotFound):
            await m.status("abd")
    proc = jobrun("status", "ab")
    assert proc.returncode == 2 and "matches several jobs" in proc.stderr
    assert jobrun("status", "abc1", "--json", check=True).stdout.count('"abc1000000"') == 1


def test_list_shows_running_and_recent_and_all() -> None:
    a = start("--name", "listed", "--", "sleep", "30")
    b = start("--", "true")
    wait_finished(b)
    rows = {j["id"]: j for j in json.loads(jobrun("list", "--json", check=True).stdout)}
    assert rows[a]["state"] == "running" and rows[a]["name"] == "listed"
    assert rows[b]["state"] == "succeeded"
    human = jobrun("list", check=True).stdout
    assert a in human and "listed" in human and "running" in human
    human_status = jobrun("status", a, check=True).stdout
    assert "running" in human_status and "sleep 30" in human_status
    jobrun("stop", a, check=True)


def test_run_follows_and_exits_with_the_job_status() -> None:
    assert jobrun("run", "--", "sh", "-c", "exit 7").returncode == 7
    assert jobrun("run", "--", "sh", "-c", "kill -SEGV $$").returncode == 128 + 11
    assert jobrun("run", "--", "true").returncode == 0
    assert jobrun("run", "--", "no-such-command-jobrun").returncode == 127


def test_unknown_id_is_an_error() -> None:
    for verb in ("status", "stop"):
        proc = jobrun(verb, "zzzzzzzzzz")
        assert proc.returncode == 3 and "no job zzzzzzzzzz" in proc.stderr


def test_nonexistent_workdir_starts_nothing(tmp_path: Path) -> None:
    before = _job_units()
    proc = jobrun("start", "-C", str(tmp_path / "missing"), "--", "true")
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    assert proc.stdout == ""
    assert _job_units() == before
    assert json.loads(jobrun("list", "--json", "--all").stdout) == []


def test_workdir_hidden_by_private_tmp_is_refused(tmp_path: Path) -> None:
    proc = jobrun("start", "-C", str(tmp_path), "--", "true")
    assert proc.returncode == 2 and "--shared-tmp" in proc.stderr
    assert json.loads(jobrun("list", "--json", "--all").stdout) == []


def test_unreachable_bus_is_a_clear_error() -> None:
    proc = jobrun("start", "--", "true", env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent"})
    assert proc.returncode == 69
    assert "cannot connect to the system bus" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(jobrun("list", "--json", "--all").stdout) == []


def test_not_root_is_a_clear_error() -> None:
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         sys.executable, "-m", "jobrun", "start", "--", "true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "only as root" in proc.stderr and "Traceback" not in proc.stderr


def _job_units() -> list[str]:
    out = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "jobrun-*"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_library_wait_returns_the_outcome(state_dir: Path) -> None:
    async def go() -> None:
        async with await Manager.open(Store(state_dir)) as m:
            job = await m.start(build_spec(["sh", "-c", "sleep 0.3; exit 9"]))
            done = await m.wait(job.id)
            assert done.outcome.exit_code == 9 and done.state is JobState.FAILED

    asyncio.run(go())


def test_status_survives_a_reboot(tmp_path: Path) -> None:
    """Two boots of a (nested) systemd sharing a persistent journal, as two boots of one host:
    what ran in the first is answered correctly in the second, from the journal alone."""
    journal = tmp_path / "journal"
    journal.mkdir()
    env = dict(os.environ, WITH_SYSTEMD_BOOT="always", WITH_SYSTEMD_JOURNAL=str(journal),
               JOBRUN_STATE_DIR=str(tmp_path / "state"), JOBRUN_MODE="local")  # fmt: skip
    with_systemd = str(Path(__file__).parent / "with-systemd")
    jr = f"{sys.executable} -m jobrun"
    first_boot = (
        f"a=$({jr} start -- sh -c 'exit 3') && b=$({jr} start -- true) && "
        f"c=$({jr} start -- sleep 1000) && echo $a $b $c && "
        # wait for a and b to end (bounded), without asking jobrun: nothing may be cached
        "for i in $(seq 200); do systemctl is-failed -q jobrun-$a.service && "
        "! systemctl is-active -q jobrun-$b.service && break; sleep 0.05; done && "
        "journalctl --flush"
    )
    boot1 = subprocess.run([with_systemd, "sh", "-c", first_boot], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert boot1.returncode == 0, boot1.stderr
    a, b, c = boot1.stdout.split()
    second_boot = f"for j in {a} {b} {c}; do {jr} status --json $j; done"
    boot2 = subprocess.run([with_systemd, "sh", "-c", second_boot], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert boot2.returncode == 0, boot2.stderr
    decoder = json.JSONDecoder()
    text, jobs = boot2.stdout.strip(), []
    while text:
        obj, end = decoder.raw_decode(text)
        jobs.append(obj)
        text = text[end:].strip()
    assert [(j["id"], j["state"], j["exit_code"]) for j in jobs] == [
        (a, "failed", 3),
        (b, "succeeded", 0),
        (c, "failed", None),
    ]
    # c was still running when the sandbox went down; its teardown is a crash, not an orderly
    # shutdown (PID 1 is killed), so no record says how c ended — and jobrun says exactly that.
    assert "host went down" in jobs[2]["reason"]


def test_daemon_reload_leaves_running_jobs_loaded_and_their_argv_intact() -> None:
    job = start("--", "sh", "-c", 'echo "$1"; sleep 600', "x", "$$ ${HOME} %n $1")
    unit = unit_name(job)
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    assert systemctl_show(unit, "LoadState", "ActiveState") == {
        "LoadState": "loaded",
        "ActiveState": "activating",
    }
    assert wait_for(lambda: journal_output(job), what="output") == "$$ ${HOME} %n $1\n"
    jobrun("stop", job, check=True)
    assert status(job)["state"] == "stopped"
