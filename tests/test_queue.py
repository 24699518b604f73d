"""jobrund's queue: --timeout, groups with a parallel limit and aggregate limits (a slice of
their own), --priority, pause/resume, --after/--after-any, --retry, stopping a queued job, and
queued jobs surviving `kill -9` of jobrund."""

from __future__ import annotations

import json
import pwd
from datetime import datetime
from typing import Any

import pytest

from .helpers import as_user, job_starts, start_as, status_as, systemctl_show, wait_for
from .reliability.common import jobrund_answers, jobrund_pid, kill_jobrund

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

FINAL = ("succeeded", "failed", "stopped")


def final(user: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status_as(user, job_id))["state"] in FINAL and s,
        timeout=timeout,
        interval=0.1,
        what=f"job {job_id} to end",
    )


def group_set(user: str, name: str, *args: str) -> dict[str, Any]:
    proc = as_user(user, "group", "set", name, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    data: list[dict[str, Any]] = json.loads(proc.stdout)
    return data[0]


def started(s: dict[str, Any]) -> datetime:
    assert s["started_at"], s
    return datetime.fromisoformat(s["started_at"])


def finished(s: dict[str, Any]) -> datetime:
    assert s["finished_at"], s
    return datetime.fromisoformat(s["finished_at"])


def uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def test_timeout_fails_the_job_with_reason_timeout() -> None:
    job = start_as("alice", "--timeout", "0.5", "--stop-timeout", "1", "--", "sleep", "30")
    # jobrund keeps the clock (deadline.py; tests/test_deadline.py), not systemd.
    assert systemctl_show(f"jobrun-{job}.service", "TimeoutStartUSec")["TimeoutStartUSec"] == (
        "infinity"
    )
    s = final("alice", job, timeout=30)
    assert s["state"] == "failed" and s["reason"] == "timeout" and s["result"] == "timeout", s
    assert (finished(s) - started(s)).total_seconds() < 10
    fresh = as_user("alice", "status", job)
    assert "timeout" in fresh.stdout
    # A job within its timeout is not touched.
    ok = start_as("alice", "--timeout", "30", "--", "true")
    assert final("alice", ok)["state"] == "succeeded"


def test_bad_queue_options_are_refused_and_nothing_is_recorded() -> None:
    for args, text in (
        (["--group", "Bad-Name"], "group name"),
        (["--timeout", "0"], "--timeout"),
        (["--retry", "101"], "--retry"),
        (["--after", "nosuchjob0"], "no job"),
        (["--after", "x!"], "not a job ID"),
    ):
        before = as_user("alice", "list", "--json").stdout
        proc = as_user("alice", "start", *args, "--", "true")
        assert proc.returncode != 0 and text in proc.stderr, (args, proc.stderr)
        assert as_user("alice", "list", "--json").stdout == before


def test_group_runs_at_most_parallel_jobs_in_order_in_its_slice() -> None:
    group = group_set("alice", "build", "--parallel", "2", "--memory-max", "256M")
    assert group["parallel"] == 2 and group["limits"] == {"memory_max": 256 << 20}, group
    slice_name = f"jobrun-u{uid('alice')}-g-build.slice"
    assert systemctl_show(slice_name, "MemoryMax")["MemoryMax"] == str(256 << 20)
    since = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    jobs = [start_as("alice", "--group", "build", "--", "sleep", "2") for _ in range(5)]
    # Beyond the two slots: queued at once, saying why.
    s = status_as("alice", jobs[4])
    assert s["state"] == "queued" and "slot in group build" in s["reason"], s
    listed = {j["id"]: j for j in json.loads(as_user("alice", "list", "--json").stdout)}
    assert listed[jobs[4]]["state"] == "queued"
    # The first runs in the group's slice (inside alice's own slice: her limits still hold).
    unit = f"jobrun-{jobs[0]}.service"
    wait_for(
        lambda: systemctl_show(unit, "Slice")["Slice"] == slice_name, what="the job in its slice"
    )
    cgroup = systemctl_show(unit, "ControlGroup")["ControlGroup"]
    assert f"/jobrun-u{uid('alice')}.slice/" in cgroup and f"/{slice_name}/" in cgroup, cgroup
    ends = [final("alice", j) for j in jobs]
    assert all(e["state"] == "succeeded" for e in ends), ends
    # In the order asked (systemd may swap two start requests made back to back), never more
    # than two at once.
    order = [j for j in job_starts(since) if j in jobs]
    assert sorted(order) == sorted(jobs)
    assert all(abs(order.index(j) - k) < 2 for k, j in enumerate(jobs)), (order, jobs)
    for i, e in enumerate(ends):
        overlapping = [o for o in ends if started(o) <= started(e) < finished(o)]
        assert len(overlapping) <= 2, (i, ends)
    groups = json.loads(as_user("alice", "group", "list", "--json").stdout)
    mine = [g for g in groups if g["name"] == "build"]
    assert mine and mine[0]["queued"] == 0 and mine[0]["running"] == 0, groups
    # bob does not see alice's group.
    bobs = json.loads(as_user("bob", "group", "list", "--json").stdout)
    assert not [g for g in bobs if g["owner"] == "alice"], bobs


def test_pause_priority_and_resume() -> None:
    group_set("alice", "prio", "--parallel", "1")
    since = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    assert as_user("alice", "group", "pause", "prio").returncode == 0
    a = start_as("alice", "--group", "prio", "--", "true")
    b = start_as("alice", "--group", "prio", "--", "true")
    c = start_as("alice", "--group", "prio", "--priority", "5", "--", "true")
    s = status_as("alice", a)
    assert s["state"] == "queued" and "paused" in s["reason"], s
    shown = json.loads(as_user("alice", "group", "show", "prio", "--json").stdout)
    assert shown[0]["paused"] is True and shown[0]["queued"] == 3, shown
    assert as_user("alice", "group", "resume", "prio").returncode == 0
    for j in (a, b, c):
        final("alice", j)
    assert [j for j in job_starts(since) if j in (a, b, c)] == [c, a, b]


def test_stopping_a_queued_job_means_it_never_runs() -> None:
    group_set("alice", "stopq", "--parallel", "1")
    blocker = start_as("alice", "--group", "stopq", "--", "sleep", "30")
    waiting = start_as("alice", "--group", "stopq", "--", "true")
    assert status_as("alice", waiting)["state"] == "queued"
    assert as_user("bob", "stop", waiting).returncode != 0  # another's: not found
    proc = as_user("alice", "stop", waiting)
    assert proc.returncode == 0, proc.stderr
    s = status_as("alice", waiting)
    assert s["state"] == "stopped" and s["started_at"] is None, s
    as_user("alice", "stop", blocker)
    assert final("alice", blocker)["state"] == "stopped"
    assert status_as("alice", waiting)["started_at"] is None


def test_after_waits_for_success_and_fails_without_running_otherwise() -> None:
    first = start_as("alice", "--", "sleep", "3")
    bad = start_as("alice", "--", "sh", "-c", "sleep 2; exit 3")
    later = start_as("alice", "--after", first, "--", "true")
    doomed = start_as("alice", "--after", f"{first},{bad}", "--", "true")
    anyway = start_as("alice", "--after", bad, "--after-any", "--", "true")
    assert status_as("alice", later)["state"] == "queued"
    s_first, s_later = final("alice", first), final("alice", later)
    assert s_later["state"] == "succeeded" and started(s_later) >= finished(s_first)
    s_doomed = final("alice", doomed)
    assert s_doomed["state"] == "failed" and s_doomed["reason"] == f"dependency {bad} failed"
    assert s_doomed["started_at"] is None and s_doomed["invocation_id"] is None, s_doomed
    assert final("alice", anyway)["state"] == "succeeded"
    # Another user's job is no job to depend on.
    proc = as_user("bob", "start", "--after", first, "--", "true")
    assert proc.returncode != 0 and "no job" in proc.stderr, proc.stderr


def test_retry_runs_each_attempt_as_a_job_of_its_own() -> None:
    first = start_as(
        "alice", "--retry", "2", "--retry-delay", "0.2", "--retry-backoff", "--",
        "sh", "-c", "echo attempt output; exit 3",
    )  # fmt: skip
    s = wait_for(
        lambda: len((st := status_as("alice", first))["attempts"]) == 3 and st,
        timeout=60,
        interval=0.1,
        what="three attempts",
    )
    assert s["attempt"] == 1 and s["attempts"][0] == first, s
    last = final("alice", s["attempts"][2])
    assert last["state"] == "failed" and last["attempt"] == 3, last
    for n, job in enumerate(s["attempts"], 1):
        st = final("alice", job)
        assert st["state"] == "failed" and st["exit_code"] == 3 and st["attempt"] == n, st
        assert as_user("alice", "logs", job).stdout == "attempt output\n"
    # `list` tells the attempts as `status` does (one query for all of its jobs).
    listed = {j["id"]: j for j in json.loads(as_user("alice", "list", "--json").stdout)}
    for n, job in enumerate(s["attempts"], 1):
        assert (listed[job]["attempt"], listed[job]["attempts"]) == (n, s["attempts"]), listed[job]
    # No fourth attempt: the retries are spent.
    assert len(status_as("alice", first)["attempts"]) == 3
    assert "Attempt" in as_user("alice", "status", first).stdout
    # A stopped job is not retried.
    stopped = start_as("alice", "--retry", "3", "--", "sleep", "30")
    wait_for(lambda: status_as("alice", stopped)["state"] == "running", what="it to run")
    as_user("alice", "stop", stopped)
    assert final("alice", stopped)["state"] == "stopped"
    assert status_as("alice", stopped)["attempts"] == []


def test_queued_jobs_survive_kill_9_of_jobrund() -> None:
    group_set("alice", "survive", "--parallel", "1")
    since = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    jobs = [start_as("alice", "--group", "survive", "--", "sleep", "0.3") for _ in range(6)]
    wait_for(
        lambda: status_as("alice", jobs[0])["state"] in ("running", *FINAL), what="a first start"
    )
    killed = kill_jobrund("KILL")
    wait_for(lambda: jobrund_pid() != killed, timeout=30, what="jobrund to go")
    jobrund_answers()  # back: restarted by systemd, or activated by this call
    ends = [final("alice", j) for j in jobs]
    assert [e["state"] for e in ends] == ["succeeded"] * 6, ends
    # In order, each once: PID 1 started each unit once.
    assert [j for j in job_starts(since) if j in jobs] == jobs
