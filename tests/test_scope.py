"""`jobrun run --scope`: the caller's own process in a transient scope, against the real systemd.

Root runs it in-process (the library); alice goes through jobrund, which must refuse any process
that is not provably alice's own child (processes.py): another user's, PID 1, jobrund's own, and
one whose PID no longer names the process alice meant.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from .helpers import (
    as_user,
    as_user_cmd,
    cgroup_pids,
    daemon_env,
    jobrun,
    jobrun_cmd,
    status,
    status_as,
    systemctl_show,
    wait_for,
)

pytestmark = pytest.mark.integration

# Prints the scope the command runs in (from its own cgroup) and what systemd says of it.
SHOW = (
    'u=$(grep -o "jobrun-[a-z0-9]*\\.scope" /proc/self/cgroup | head -n1); echo "unit=$u"; '
    "systemctl show $u -p CPUWeight -p MemoryMax -p TasksMax -p Slice -p ActiveState; "
)


def _unit_of(out: str) -> str:
    line = next(ln for ln in out.splitlines() if ln.startswith("unit="))
    unit = line.removeprefix("unit=")
    assert unit.startswith("jobrun-") and unit.endswith(".scope"), out
    return unit


def _props(out: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)


def _scope_jobs(run: Any = jobrun) -> list[dict[str, Any]]:
    out = run("list", "--json").stdout
    return [j for j in json.loads(out) if j["kind"] == "scope"]


_test_started = [datetime.now(UTC)]


@pytest.fixture(autouse=True)
def _note_the_start() -> None:
    """When this test began: a running scope job of an earlier test (its client killed, its
    end on the way) is not this test's."""
    _test_started[0] = datetime.now(UTC)


def _running_scope(run: Any = jobrun, cli: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    """The running scope job this test started; if its client `cli` (stderr piped) ends first,
    the test fails with what the client said."""

    def mine(j: dict[str, Any]) -> bool:
        created = datetime.fromisoformat(j["created_at"])
        return j["state"] == "running" and created >= _test_started[0]

    def found() -> dict[str, Any] | None:
        job = next((j for j in _scope_jobs(run) if mine(j)), None)
        if job is None and cli is not None and cli.poll() is not None:
            _, stderr = cli.communicate()
            raise AssertionError(f"the client ended ({cli.returncode}) first: {stderr!r}")
        return job

    return wait_for(found, what="a running scope job", timeout=30)


def _let_go(cli: subprocess.Popen[bytes]) -> None:
    """End a client started with its stderr piped (if it still runs), and close the pipe."""
    if cli.poll() is None:
        cli.kill()
        cli.wait()
    if cli.stderr is not None:
        cli.stderr.close()


def test_limits_exit_code_and_status() -> None:
    proc = jobrun("run", "--scope", "--cpu-weight", "50", "--memory-max", "64M",
                  "--tasks-max", "20", "-E", "GREETING=hi", "--", "sh", "-c",
                  SHOW + 'echo "greeting=$GREETING"; test -t 0 || echo notty; exit 3')  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    unit = _unit_of(proc.stdout)
    props = _props(proc.stdout)
    assert props["CPUWeight"] == "50"
    assert props["MemoryMax"] == str(64 << 20)
    assert props["TasksMax"] == "20"
    assert props["Slice"] == "jobrun-u0.slice"
    assert props["ActiveState"] == "active"
    assert props["greeting"] == "hi"  # -E, applied by the CLI; the rest of the env inherited
    job_id = unit.removeprefix("jobrun-").removesuffix(".scope")
    job = status(job_id)
    assert job["kind"] == "scope" and job["unit"] == unit
    assert (job["state"], job["exit_code"], job["reported_by"]) == ("failed", 3, "client")
    assert job["limits"]["memory_max"] == 64 << 20
    assert job["finished_at"] and job["started_at"]
    human = jobrun("status", job_id).stdout
    assert "exit 3 (reported by the client)" in human and unit in human
    # systemd let go of the scope once its process was gone
    assert systemctl_show(unit, "LoadState")["LoadState"] == "not-found"


def test_success_and_systemctl_status_shows_the_scope() -> None:
    proc = jobrun("run", "--scope", "--name", "build", "--", "sh", "-c",
                  SHOW + 'systemctl status "$u" --no-pager | head -n1')  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    unit = _unit_of(proc.stdout)
    job_id = unit.removeprefix("jobrun-").removesuffix(".scope")
    assert f"jobrun job {job_id} (build)" in proc.stdout
    job = status(job_id)
    assert (job["state"], job["exit_code"], job["name"]) == ("succeeded", 0, "build")


def test_signal_death_is_128_plus_n() -> None:
    proc = jobrun("run", "--scope", "--", "sh", "-c", SHOW + "kill -TERM $$")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    job = status(_unit_of(proc.stdout).removeprefix("jobrun-").removesuffix(".scope"))
    assert (job["state"], job["signal"], job["exit_code"]) == ("failed", "SIGTERM", None)
    assert job["reported_by"] == "client"


def test_command_not_found() -> None:
    proc = jobrun("run", "--scope", "--", "no-such-command-xyz")
    assert proc.returncode == 127
    assert "command not found" in proc.stderr


def test_ctrl_c_in_a_terminal_reaches_the_command() -> None:
    """A real terminal: the command has it as its stdin (job control, tty), and Ctrl-C typed
    there ends the command with SIGINT while jobrun itself lives on to report it."""
    import pty

    master, slave = pty.openpty()
    cmd = ["setsid", "-c", sys.executable, "-m", "jobrun", "run", "--scope", "--", "sh", "-c",
           "test -t 0 && echo TTY; echo READY; exec sleep 1000"]  # fmt: skip
    cli = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""

    def read_until(text: bytes) -> bool:
        nonlocal seen
        import select

        if select.select([master], [], [], 0.05)[0]:
            seen += os.read(master, 4096)
        return text in seen

    try:
        wait_for(lambda: read_until(b"READY"), what="the command to start", timeout=30)
        assert b"TTY" in seen
        job = _running_scope()
        unit = job["unit"]
        wait_for(lambda: cgroup_pids(unit), what="the sleep in the scope")
        os.write(master, b"\x03")  # Ctrl-C: the terminal signals its foreground process group
        assert cli.wait(timeout=30) == 128 + signal.SIGINT
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        os.close(master)
    done = status(job["id"])
    assert (done["state"], done["signal"], done["reported_by"]) == ("failed", "SIGINT", "client")


def test_stop_from_elsewhere_kills_setsid_children() -> None:
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobrun",
            "run",
            "--scope",
            "--",
            "sh",
            "-c",
            "setsid sleep 1000 & sleep 1000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "JOBRUN_MODE": "local"},
    )
    try:
        job = _running_scope(cli=cli)
        pids = wait_for(
            lambda: (p := cgroup_pids(job["unit"])) and len(p) >= 3 and p,
            what="sh, its sleep and the setsid one in the scope",
        )
        sessions = {os.getsid(p) for p in pids}
        assert len(sessions) == 2  # one left its session: still in the scope
        stopped = jobrun("stop", job["id"])
        assert stopped.returncode == 0, stopped.stderr
        assert cli.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        _let_go(cli)
    wait_for(lambda: not cgroup_pids(job["unit"]), what="every process of the scope to end")
    done = status(job["id"])
    assert (done["state"], done["reported_by"]) == ("stopped", "client")


def test_hangup_of_the_terminal_is_reported() -> None:
    """A hangup reaches the whole foreground process group: the command dies of it, jobrun
    lives on to report that."""
    cli = subprocess.Popen(
        [sys.executable, "-m", "jobrun", "run", "--scope", "--", "sleep", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )
    try:
        job = _running_scope(cli=cli)
        wait_for(lambda: cgroup_pids(job["unit"]), what="the sleep in the scope")
        os.killpg(cli.pid, signal.SIGHUP)
        assert cli.wait(timeout=30) == 128 + signal.SIGHUP
    finally:
        _let_go(cli)
    done = status(job["id"])
    assert (done["signal"], done["reported_by"]) == ("SIGHUP", "client")


def test_client_killed_ends_unreported_not_running() -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "jobrun", "run", "--scope", "--", "sleep", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        job = _running_scope(cli=cli)
        (child,) = wait_for(lambda: cgroup_pids(job["unit"]), what="the sleep in the scope")
    finally:
        _let_go(cli)  # the client only: its child runs on, in the scope
    assert status(job["id"])["state"] == "running"
    os.kill(child, signal.SIGKILL)
    done = wait_for(
        lambda: (s := status(job["id"]))["state"] != "running" and s, what="the job to end"
    )
    assert done["state"] == "failed" and done["result"] == "unreported"
    assert "not reported" in done["reason"] and done["reported_by"] is None


def test_sandbox_settings_are_refused_and_nothing_starts() -> None:
    before = {j["id"] for j in _scope_jobs()}
    for args in (["--network"], ["--profile", "strict"], ["--writable", "/"],
                 ["--shared-tmp"]):  # fmt: skip
        proc = jobrun("run", "--scope", *args, "--", "true")
        assert proc.returncode == 2, (args, proc.stderr)
        assert "does not apply to --scope" in proc.stderr
    assert {j["id"] for j in _scope_jobs()} == before


def test_logs_of_a_scope_says_where_the_output_went() -> None:
    proc = jobrun("run", "--scope", "--", "sh", "-c", SHOW + "echo to-the-terminal")
    assert proc.returncode == 0 and "to-the-terminal" in proc.stdout
    job_id = _unit_of(proc.stdout).removeprefix("jobrun-").removesuffix(".scope")
    logs = jobrun("logs", job_id)
    assert logs.returncode == 5, logs.stderr
    assert "went there, not to the journal" in logs.stderr and logs.stdout == ""


def test_remote_refuses_scope() -> None:
    tls = ("--cert", "/dev/null", "--key", "/dev/null", "--ca", "/dev/null")
    proc = jobrun("--remote", "127.0.0.1:1", *tls, "run", "--scope", "--", "true")
    assert proc.returncode == 2
    assert "remote jobrund has no process of yours" in proc.stderr


# -- through jobrund, as alice ----------------------------------------------------------------


@pytest.mark.daemon
def test_alice_through_jobrund() -> None:
    uid = pwd.getpwnam("alice").pw_uid
    proc = as_user("alice", "run", "--scope", "--memory-max", "32M", "--tasks-max", "10",
                   "--", "sh", "-c", SHOW + "id -u; exit 4")  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    props = _props(proc.stdout)
    assert (props["MemoryMax"], props["TasksMax"]) == (str(32 << 20), "10")
    assert props["Slice"] == f"jobrun-u{uid}.slice"
    assert f"\n{uid}\n" in proc.stdout  # the command is alice's own process
    job_id = _unit_of(proc.stdout).removeprefix("jobrun-").removesuffix(".scope")
    job = status_as("alice", job_id)
    assert (job["owner"], job["kind"], job["exit_code"]) == ("alice", "scope", 4)
    assert job["reported_by"] == "client"
    assert as_user("bob", "status", job_id).returncode == 3  # another's: not found


@pytest.mark.daemon
def test_alice_sandbox_refused_through_jobrund() -> None:
    proc = as_user("alice", "run", "--scope", "--network", "--", "true")
    assert proc.returncode == 2 and "does not apply to --scope" in proc.stderr


# A raw StartScope as alice (the pid, start time and pidfd chosen by the test), and then a report.
_CLAIM = r"""
import asyncio, json, os, sys
from dbus_fast import Message, MessageType
from jobrun.bus import connect_system_bus
from jobrun import dbus_api as api
from jobrun.processes import start_time
from jobrun.wire.dbus import start_options

def call(bus, member, body, fds=()):
    return bus.call(Message(destination=api.BUS_NAME, path=api.PATH, interface=api.INTERFACE,
                            member=member, signature=api.METHODS[member].sig_in, body=body,
                            unix_fds=list(fds)))

def child():
    pid = os.fork()
    if pid == 0:
        os.read(os.pipe()[0], 1)  # waits forever (until killed)
        os._exit(0)
    return pid

async def main(case, target):
    bus = await connect_system_bus()
    kids = []
    if case == "own":
        pid = child(); kids.append(pid); fd = os.pidfd_open(pid); start = start_time(pid)
    elif case == "reused-pidfd":  # the pidfd of one that exited, the PID of another
        old = child(); fd = os.pidfd_open(old); start = start_time(old)
        os.kill(old, 9); os.waitpid(old, 0)
        pid = child(); kids.append(pid)
    elif case == "reused-start":  # a start time not its own: of another that had its PID
        pid = child(); kids.append(pid); fd = os.pidfd_open(pid); start = start_time(pid) - 1
    else:  # another's process: PID 1, jobrund's, bob's
        pid = target; fd = os.pidfd_open(pid); start = start_time(pid) or 0
    r = await call(bus, "StartScope", [["true"], start_options(None, {}, False), pid, start, 0],
                   [fd])
    out = {"error": r.error_name if r.message_type == MessageType.ERROR else None,
           "body": r.body}
    if out["error"] is None:
        job = json.loads(r.body[0])
        for k in kids:
            os.kill(k, 9); os.waitpid(k, 0)
        r1 = await call(bus, "ReportScopeExit", [job["id"], -1, 9])
        r2 = await call(bus, "ReportScopeExit", [job["id"], -1, 9])
        out["reports"] = [r1.error_name, r2.error_name]
        out["job"] = json.loads(r1.body[0]) if r1.error_name is None else None
    for k in kids:
        try:
            os.kill(k, 9); os.waitpid(k, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _claim_as_alice(case: str, target: int = 0) -> dict[str, Any]:
    proc = subprocess.run(
        as_user_cmd("alice", sys.executable, "-c", _CLAIM, case, str(target)),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=daemon_env(),
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@pytest.mark.daemon
def test_jobrund_takes_alices_own_child_and_one_report() -> None:
    out = _claim_as_alice("own")
    assert out["error"] is None, out
    # the first report is taken, a second is refused
    assert out["reports"] == [None, "org.jobrun.Error.InvalidArgument"]
    assert out["job"]["signal"] == "SIGKILL" and out["job"]["reported_by"] == "client"


@pytest.mark.daemon
@pytest.mark.parametrize("case", ["reused-pidfd", "reused-start"])
def test_jobrund_refuses_a_pid_that_names_another_process(case: str) -> None:
    out = _claim_as_alice(case)
    assert out["error"] == "org.jobrun.Error.PermissionDenied", out
    assert "reused" in out["body"][0]


@pytest.mark.daemon
def test_jobrund_refuses_pid_1_its_own_and_another_users() -> None:
    before = {j["id"] for j in _scope_jobs(lambda *a: as_user("carol", *a))}
    jobrund = int(systemctl_show("jobrund.service", "MainPID")["MainPID"])
    assert jobrund > 1
    bob = subprocess.Popen(as_user_cmd("bob", "sleep", "1000"))
    try:
        wait_for(lambda: _uid(bob.pid) == pwd.getpwnam("bob").pw_uid, what="bob's sleep")
        for target, words in ((1, "PID 1"), (jobrund, "jobrund's own"), (bob.pid, "not yours")):
            out = _claim_as_alice("other", target)
            assert out["error"] == "org.jobrun.Error.PermissionDenied", (target, out)
            assert words in out["body"][0]
    finally:
        bob.kill()
        bob.wait()
    # nothing was recorded for the refused ones
    assert {j["id"] for j in _scope_jobs(lambda *a: as_user("carol", *a))} == before


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


@pytest.mark.daemon
def test_report_for_another_users_job_is_not_found() -> None:
    cli = subprocess.Popen(
        jobrun_cmd("alice", "run", "--scope", "--", "sleep", "1000"),
        env=daemon_env(),
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        job = _running_scope(lambda *a: as_user("alice", *a), cli)
        from .helpers import dbus_call_as

        err, _ = dbus_call_as("bob", "ReportScopeExit", f"[{job['id']!r}, 0, 0]")
        assert err == "org.jobrun.Error.NotFound"
        waiter = subprocess.Popen(
            jobrun_cmd("alice", "wait", job["id"]),
            env=daemon_env(),
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # alice stops it from another terminal: jobrund kills the scope, her client reports
        assert as_user("alice", "stop", job["id"]).returncode == 0
        assert cli.wait(timeout=30) == 128 + signal.SIGTERM
        assert waiter.wait(timeout=30) == 128 + signal.SIGTERM  # `wait` sees the reported end
    finally:
        _let_go(cli)
    done = status_as("alice", job["id"])
    assert (done["state"], done["reported_by"]) == ("stopped", "client")


def test_ctrl_z_and_fg_in_an_interactive_shell() -> None:
    """Job control as for any foreground command: Ctrl-Z stops the command (and jobrun, which
    the shell reports as stopped), `fg` resumes both, and the command's status comes through."""
    import pty
    import select

    pid, master = pty.fork()
    if pid == 0:  # the child: an interactive bash on the pty, as a user's terminal has
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"],
                   {**os.environ, "PS1": "$ ", "TERM": "dumb"})  # fmt: skip
    seen = b""

    def until(text: bytes) -> bool:
        nonlocal seen
        if select.select([master], [], [], 0.05)[0]:
            with contextlib.suppress(OSError):  # EIO once the shell is gone
                seen += os.read(master, 4096)
        return text in seen

    try:
        cmd = f"{sys.executable} -m jobrun run --scope -- sh -c 'sleep 1000; exit 7'\n"
        os.write(master, cmd.encode())
        job = _running_scope()
        (sh,) = wait_for(lambda: (p := cgroup_pids(job["unit"])) and len(p) == 2 and p[:1],
                         what="sh and its sleep in the scope")  # fmt: skip
        os.write(master, b"\x1a")  # Ctrl-Z
        wait_for(lambda: until(b"Stopped"), what="the shell to report the job stopped")
        assert _state(sh) == "T"
        assert status(job["id"])["state"] == "running"
        os.write(master, b"fg\n")
        wait_for(lambda: _state(sh) == "S", what="fg to resume the command")
        sleep = next(p for p in cgroup_pids(job["unit"]) or [] if p != sh)
        os.kill(sleep, signal.SIGKILL)  # sh goes on to exit 7
        os.write(master, b"echo rc=$?\n")
        wait_for(lambda: until(b"rc=7"), what="the command's status in the shell")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(master)
    done = status(job["id"])
    assert (done["state"], done["exit_code"], done["reported_by"]) == ("failed", 7, "client")


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.daemon
def test_a_scope_job_shows_in_top_and_keeps_its_accounting() -> None:
    """Through jobrund (alice): `top` lists a running scope job, and the last reading of its
    cgroup stays with it once it has ended, as a service's does."""
    cli = subprocess.Popen(
        jobrun_cmd("alice", "run", "--scope", "--", "sh", "-c", "sleep 3"),
        env=daemon_env(),
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        job = _running_scope(lambda *a: as_user("alice", *a), cli)

        def in_top() -> bool:
            out = as_user("alice", "top", "--once", "--json", "--interval", "0.2")
            return out.returncode == 0 and job["id"] in {r["id"] for r in json.loads(out.stdout)}

        wait_for(in_top, what="the scope job in alice's top")
        assert cli.wait(timeout=60) == 0
    finally:
        _let_go(cli)
    done = status_as("alice", job["id"])
    assert done["state"] == "succeeded" and done["kind"] == "scope", done
    used = done["accounting"]
    assert used is not None and used["cpu_seconds"] is not None, done
    assert used["tasks_peak"] is None or used["tasks_peak"] >= 1, used
