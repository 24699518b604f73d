"""Schedules against the real systemd: transient timers made by jobrund, each firing a run of its
own through jobrund as the schedule's owner; refusals, isolation, jobrund killed, a reboot.

alice and bob are plain users, carol is a jobrun admin (tests/install.py). Nothing here sleeps
to wait: each test polls `schedule show --json` (or systemd) until what it expects is there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import as_user, dbus_call_as, status_as, systemctl_show, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

NOT_FOUND = 3


def schedule(user: str, *args: str) -> str:
    proc = as_user(user, "start", *args)
    assert proc.returncode == 0, proc.stderr
    sid = proc.stdout.strip()
    assert sid.isalnum() and len(sid) == 10, proc.stdout
    return sid


def show(user: str, sid: str) -> dict[str, Any]:
    proc = as_user(user, "schedule", "show", sid, "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def runs(data: dict[str, Any]) -> list[str]:
    return [e["job"] for e in data["events"] if e["kind"] == "run"]


def wait_runs(user: str, sid: str, n: int, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: len(runs(d := show(user, sid))) >= n and d,
        what=f"{n} runs of schedule {sid}",
        timeout=timeout,
        interval=0.2,
    )


def timers() -> str:
    return subprocess.run(
        ["systemctl", "list-timers", "--all", "--no-pager", "--plain"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def remove(user: str, sid: str) -> None:
    proc = as_user(user, "schedule", "rm", sid)
    assert proc.returncode == 0, proc.stderr


def test_in_fires_once_and_its_output_is_readable() -> None:
    sid = schedule("alice", "--in", "2s", "--", "echo", "hello from a schedule")
    assert f"jobrun-s-{sid}.timer" in timers()
    data = wait_runs("alice", sid, 1)
    (job,) = runs(data)
    assert data["once"] and data["owner"] == "alice" and data["next_run"] is None
    done = wait_for(
        lambda: (s := status_as("alice", job))["state"] != "running" and s, what="the run's end"
    )
    assert done["state"] == "succeeded" and done["owner"] == "alice"
    assert done["schedule"] == sid
    out = wait_for(lambda: as_user("alice", "logs", job).stdout, what="the run's output")
    assert out == "hello from a schedule\n"
    assert "Schedule" in as_user("alice", "status", job).stdout
    # One firing only: the timer is gone once it has fired; the schedule stays listed, done.
    wait_for(
        lambda: systemctl_show(f"jobrun-s-{sid}.timer", "LoadState")["LoadState"] == "not-found",
        what="the one-shot timer to unload",
    )
    assert runs(show("alice", sid)) == [job]
    remove("alice", sid)


def test_every_fires_repeatedly_and_rm_stops_it() -> None:
    sid = schedule("alice", "--every", "*:*:0/2", "--", "true")
    assert f"jobrun-s-{sid}.timer" in timers()
    listed = json.loads(as_user("alice", "schedule", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [sid] and listed[0]["calendar"] == "*:*:0/2"
    data = wait_runs("alice", sid, 3)
    ids = runs(data)
    assert len(set(ids)) == len(ids) >= 3
    for job in ids:
        assert status_as("alice", job)["schedule"] == sid
    remove("alice", sid)
    assert f"jobrun-s-{sid}" not in timers()
    assert systemctl_show(f"jobrun-s-{sid}.timer", "LoadState")["LoadState"] == "not-found"
    assert as_user("alice", "schedule", "show", sid).returncode == NOT_FOUND
    # Its runs stay; nothing can fire it any more.
    assert status_as("alice", ids[0])["state"] == "succeeded"
    err, _ = dbus_call_as("alice", "FireSchedule", f"[{sid!r}]")
    assert err == "org.jobrun.Error.NotFound"


@pytest.mark.parametrize("calendar", ["bogus spec", "*-*-* 25:00:00", "hourly\nExecStartPre=x"])
def test_an_invalid_calendar_is_refused_and_nothing_is_created(calendar: str) -> None:
    before = timers()
    proc = as_user("alice", "start", "--every", calendar, "--", "true")
    assert proc.returncode == 2, proc.stderr
    assert "calendar" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(as_user("alice", "schedule", "list", "--json").stdout) == []
    assert timers().count("jobrun-s-") == before.count("jobrun-s-")


def test_the_refusal_of_a_bad_calendar_is_systemds() -> None:
    proc = as_user("alice", "start", "--every", "Mon..Fri 99:99", "--", "true")
    assert proc.returncode == 2
    assert "systemd refused" in proc.stderr and "Invalid calendar" in proc.stderr


def test_bad_times_are_refused() -> None:
    for args in (["--in", "soon"], ["--at", "yesterday"], ["--at", "2001-01-01T00:00"],
                 ["--in", "2s", "--every", "hourly"], ["--catch-up"]):  # fmt: skip
        proc = as_user("alice", "start", *args, "--", "true")
        assert proc.returncode == 2, (args, proc.stderr)
    assert json.loads(as_user("alice", "schedule", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    "options",
    [
        "{}",
        '{"every": V("s", "hourly"), "in_seconds": V("d", 5.0)}',
        '{"every": V("x", 5)}',
        '{"in_seconds": V("d", -1.0)}',
        '{"in_seconds": V("d", 1e12)}',
        '{"at_usec": V("x", 1)}',
        '{"at_usec": V("x", -5)}',
        '{"every": V("s", "hourly\\nExecStartPre=/bin/sh")}',
        '{"every": V("s", "hourly"), "catch_up": V("s", "yes")}',
        '{"every": V("s", "hourly"), "memory_max": V("s", "lots")}',
        '{"every": V("s", "hourly"), "stdin": V("h", 0)}',
    ],
)
def test_bad_schedule_requests_are_refused_and_create_nothing(options: str) -> None:
    err, body = dbus_call_as("alice", "Schedule", f'[["true"], {options}]')
    assert err == "org.jobrun.Error.InvalidArgument", body
    assert json.loads(as_user("alice", "schedule", "list", "--json").stdout) == []
    assert "jobrun-s-" not in timers()


def test_a_run_still_running_is_not_started_twice() -> None:
    sid = schedule("alice", "--every", "*:*:0/2", "--", "sleep", "60")

    def skipped_once() -> dict[str, Any] | None:
        d = show("alice", sid)
        return d if any(e["kind"] == "skipped" for e in d["events"]) else None

    data = wait_for(
        skipped_once,
        what="a skipped firing",
        timeout=20,
        interval=0.2,
    )
    (job,) = runs(data)  # exactly one run while it runs
    skipped = [e for e in data["events"] if e["kind"] == "skipped"]
    assert skipped[0]["job"] == job and "still running" in skipped[0]["note"]
    assert status_as("alice", job)["state"] == "running"
    remove("alice", sid)
    assert as_user("alice", "stop", job).returncode == 0


def test_users_see_and_manage_only_their_own_schedules() -> None:
    mine = schedule("alice", "--in", "1h", "--", "true")
    roots = schedule("root", "--in", "1h", "--", "true")
    for user, other in (("bob", mine), ("alice", roots)):
        assert as_user(user, "schedule", "show", other).returncode == NOT_FOUND
        assert as_user(user, "schedule", "rm", other).returncode == NOT_FOUND
        assert other not in as_user(user, "schedule", "list").stdout
        err, _ = dbus_call_as(user, "FireSchedule", f"[{other!r}]")
        assert err == "org.jobrun.Error.NotFound"
        err, _ = dbus_call_as(user, "RemoveSchedule", f"[{other!r}]")
        assert err == "org.jobrun.Error.NotFound"
    # The timer's service calls jobrund as the owner: alice's runs as alice, root's as root.
    props = systemctl_show(f"jobrun-s-{mine}.service", "User")
    assert props["User"] == str(int(subprocess.check_output(["id", "-u", "alice"])))
    assert systemctl_show(f"jobrun-s-{roots}.service", "User")["User"] == ""
    # An admin sees everyone's.
    listed = as_user("carol", "schedule", "list").stdout
    assert mine in listed and roots in listed
    assert systemctl_show(f"jobrun-s-{mine}.timer", "LoadState")["LoadState"] == "loaded"
    remove("alice", mine)
    remove("root", roots)


def test_caps_apply_at_each_firing() -> None:
    config = Path("/etc/jobrun/jobrund.toml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[users.alice]\nrunning_jobs = 1\n")
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)
    try:
        sid = schedule("alice", "--in", "2s", "--", "true")  # allowed now: nothing runs
        busy = as_user("alice", "start", "--", "sleep", "60")
        assert busy.returncode == 0, busy.stderr

        def failed() -> dict[str, Any] | None:
            d = show("alice", sid)
            return d if any(e["kind"] == "failed" for e in d["events"]) else None

        data = wait_for(failed, what="the firing refused by the cap", timeout=20, interval=0.2)
        assert runs(data) == [] and "running jobs" in data["events"][0]["note"]
        assert as_user("alice", "stop", busy.stdout.strip()).returncode == 0
        remove("alice", sid)
    finally:
        config.unlink(missing_ok=True)
        subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)


def test_kill_9_of_jobrund_keeps_schedules_firing() -> None:
    sid = schedule("alice", "--every", "*:*:0/2", "--", "true")
    before = len(runs(wait_runs("alice", sid, 1)))
    pid = int(systemctl_show("jobrund.service", "MainPID")["MainPID"])
    os.kill(pid, signal.SIGKILL)
    # The next firings reach a new jobrund (restarted, or activated by the firing's call).
    data = wait_runs("alice", sid, before + 2, timeout=30)
    assert int(systemctl_show("jobrund.service", "MainPID")["MainPID"]) != pid
    # The timer outlived jobrund: the new one found it, made no second one, missed nothing.
    assert [e for e in data["events"] if e["kind"] == "missed"] == []
    assert timers().count(f"jobrun-s-{sid}.timer") == 1
    remove("alice", sid)


def test_schedules_over_the_remote_api_run_as_the_mapped_user() -> None:
    from .remote_helpers import remote_jobrund

    with remote_jobrund() as remote:
        proc = remote.cli("alice", "start", "--in", "2s", "--", "id", "-un")
        assert proc.returncode == 0, proc.stderr
        sid = proc.stdout.strip()

        def ran() -> dict[str, Any] | None:
            p = remote.cli("alice", "schedule", "show", sid, "--json")
            assert p.returncode == 0, p.stderr
            d: dict[str, Any] = json.loads(p.stdout)
            return d if runs(d) else None

        data = wait_for(ran, what="the remote schedule's run", timeout=30, interval=0.2)
        assert data["owner"] == "remote:alice"
        (job,) = runs(data)
        out = wait_for(lambda: remote.cli("alice", "logs", job).stdout, what="its output")
        assert out == "alice\n"  # run_as alice (remote_helpers.write_config), never root
        status = json.loads(remote.cli("alice", "status", job, "--json").stdout)
        assert status["schedule"] == sid and status["owner"] == "remote:alice"
        # Another certificate, and the local alice (another identity), do not see it.
        assert remote.cli("bob", "schedule", "show", sid).returncode == NOT_FOUND
        assert as_user("alice", "schedule", "show", sid).returncode == NOT_FOUND
        assert remote.cli("bob", "schedule", "rm", sid).returncode == NOT_FOUND
        assert remote.cli("alice", "schedule", "rm", sid).returncode == 0
        bad = remote.cli("alice", "start", "--every", "bogus spec", "--", "true")
        assert bad.returncode == 2 and "systemd refused" in bad.stderr


def test_a_revoked_certificate_stops_its_schedules() -> None:
    from jobrun import certs

    from .remote_helpers import PKI, make_pki, remote_jobrund

    if not PKI.exists():
        make_pki(PKI)
    if not (PKI / "frank.crt").exists():
        certs.issue(PKI, "frank")
    revoke = [sys.executable, "-m", "jobrun", "certs", "revoke", str(PKI)]
    subprocess.run(revoke, check=True, capture_output=True)  # PKI/ca.crl, nothing revoked
    with remote_jobrund(f'crl = "{PKI / "ca.crl"}"\n') as remote:
        proc = remote.cli("frank", "start", "--every", "*:*:0/2", "--", "true")
        assert proc.returncode == 0, proc.stderr
        sid = proc.stdout.strip()
        wait_runs("root", sid, 1)  # root (admin) sees every schedule
        subprocess.run([*revoke, str(PKI / "frank.crt")], check=True, capture_output=True)

        def refused() -> dict[str, Any] | None:
            d = show("root", sid)
            fails = [e for e in d["events"] if e["kind"] == "failed"]
            return d if fails and "revoked" in fails[-1]["note"] else None

        data = wait_for(refused, what="a firing refused for the revocation", timeout=20)
        assert data["events"][-1]["kind"] == "failed"
        remove("root", sid)


# -- a reboot: two boots of a nested systemd sharing jobrund's state directory ------------------


def _boot(tmp_path: Path, script: str) -> str:
    """Run `script` (sh) in a fresh boot of a nested systemd whose jobrund keeps its database
    in tmp_path/state (as /var/lib/jobrun survives a host's reboot); its stdout."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    dropin = (
        "mkdir -p /run/systemd/system/jobrund.service.d && printf "
        f"'[Service]\\nEnvironment=JOBRUN_STATE_DIR={state}\\nReadWritePaths={state}\\n"
        "PrivateTmp=no\\n' > /run/systemd/system/jobrund.service.d/state.conf && "
        "systemctl daemon-reload && "
    )
    env = dict(os.environ, WITH_SYSTEMD_BOOT="always", WITH_SYSTEMD_JOURNAL=str(tmp_path / "j"),
               JOBRUN_MODE="daemon")  # fmt: skip
    env.pop("JOBRUN_STATE_DIR", None)
    (tmp_path / "j").mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(Path(__file__).parent / "with-systemd"), "sh", "-c", dropin + script],
        env=env, capture_output=True, text=True, timeout=180, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def test_a_reboot_recreates_timers_reports_missed_firings_and_catches_up(tmp_path: Path) -> None:
    jr = f"{sys.executable} -m jobrun"
    # Boot 1: a one-shot in 4 s with --catch-up, one without, and an hourly one; the host goes
    # down before the one-shots fire.
    out = _boot(tmp_path, (
        f"a=$({jr} start --in 4s --catch-up -- echo caught up) && "
        f"b=$({jr} start --in 4s -- echo never) && "
        f"c=$({jr} start --every hourly -- true) && echo $a $b $c && date +%s"
    ))  # fmt: skip
    a, b, c, t0 = out.split()
    # Boot 2, once the one-shots' time has passed (polled: no fixed sleep).
    show = f"{jr} schedule show --json"
    out = _boot(tmp_path, (
        f"while [ $(date +%s) -le $(({t0} + 5)) ]; do sleep 0.1; done && "
        f"{show} {b} && {show} {c} && "
        f"for i in $(seq 300); do {show} {a} | grep -q '\"kind\": \"run\"' && break; "
        "sleep 0.1; done && "
        f"{show} {a} && systemctl list-timers --all --plain --no-pager"
    ))  # fmt: skip
    decoder = json.JSONDecoder()
    text, shown = out.strip(), []
    while text.startswith("{"):
        obj, end = decoder.raw_decode(text)
        shown.append(obj)
        text = text[end:].strip()
    never, hourly, caught = shown
    listed = text
    # b: its firing was missed while the host was down, and said so; nothing ran.
    assert [e["kind"] for e in never["events"]] == ["missed"]
    assert "while the host was down" in never["events"][0]["note"]
    # a: missed, and run once at start-up (--catch-up).
    kinds = [e["kind"] for e in caught["events"]]
    assert kinds == ["missed", "run"], caught["events"]
    # c: its timer is back.
    assert f"jobrun-s-{c}.timer" in listed and hourly["next_run"] is not None
    assert f"jobrun-s-{a}.timer" not in listed  # a past one-shot gets no timer again
