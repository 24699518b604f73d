"""Escape attempts from inside a job: each must fail, and each has a control showing that the
same attempt is detected when the protection is not there (another profile, a flag, or the same
act outside jobrun).

Jobs are started by root in-process, except in the test marked `daemon`, where alice's job tries
to read bob's output through jobrund's users (tests/install.py creates them in the sandbox).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrun import profiles
from jobrun.model import unit_name

from .helpers import jobrun, journal_output, start, status, systemctl_show, wait_finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("state_dir")]

MAX_DEFAULT_EXPOSURE = 2.5


def run_job(*args: str, timeout: float = 30) -> tuple[dict[str, Any], str]:
    """Start a job whose command prints END last; its final status and its whole output."""
    job = start(*args)
    s = wait_finished(job, timeout=timeout)
    out = wait_for(lambda: (o := journal_output(job)) and "END" in o and o, what=f"{job} output")
    return s, out


def running(*args: str, ready: str = "READY") -> str:
    """Start a job that prints `ready` once it has set itself up; return its ID then."""
    job = start(*args)
    wait_for(lambda: ready in journal_output(job), what=f"job {job} to be ready")
    return job


def stop(*jobs: str) -> None:
    for job in jobs:
        jobrun("stop", "--timeout", "2", job, check=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory outside /tmp and /home (which jobs see as themselves), removed afterwards."""
    d = Path("/var/lib") / f"jobrun-isolation-{secrets.token_hex(6)}"
    d.mkdir(mode=0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def grab(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m, (pattern, text)
    return m.group(1)


def exposure(unit: str) -> float:
    out = subprocess.run(
        ["systemd-analyze", "security", "--no-pager", unit],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out[-500:]
    return float(m.group(1))


# -- the profiles reach the unit, and what systemd-analyze makes of them ---------------------

# How `systemctl show` prints what a profile sets, where that is not the text after "=".
SHOWN = {
    "SystemCallErrorNumber": "1",  # EPERM
    "IPAddressDeny": "0.0.0.0/0 ::/0",
    "TemporaryFileSystem": "/dev/shm:mode=1777",
}


@pytest.mark.parametrize("name", profiles.names())
def test_every_property_of_a_profile_reaches_the_unit(name: str) -> None:
    job = start("--profile", name, "--", "sleep", "60")
    settings = profiles.get(name).settings
    show = systemctl_show(unit_name(job), *{h.prop for h in settings})
    for h in settings:
        value = h.text.partition("=")[2]
        if h.prop == "SystemCallFilter":
            allowed = set(show[h.prop].split())
            assert "read" in allowed and "mount" not in allowed and "ptrace" not in allowed
            if h.text.startswith("SystemCallFilter=~"):
                assert "chown" not in allowed and "setpriority" not in allowed
        elif h.prop in ("RestrictAddressFamilies", "IPAddressDeny"):  # in no fixed order
            assert set(show[h.prop].split()) == set(SHOWN.get(h.prop, value).split()), h.text
        else:
            assert show[h.prop] == SHOWN.get(h.prop, value), h.text
    stop(job)


def test_exposure_of_each_profile() -> None:
    """docs/ISOLATION.md reports these figures; the default one must stay at most 2.5."""
    figures = {}
    for name in profiles.names():
        job = start("--profile", name, "--", "sleep", "60")
        figures[name] = exposure(unit_name(job))
        stop(job)
    job = start("--network", "--", "sleep", "60")
    with_network = exposure(unit_name(job))
    stop(job)
    print(f"systemd-analyze security: {figures}, default --network: {with_network}")
    assert figures["default"] <= MAX_DEFAULT_EXPOSURE
    assert figures["strict"] < figures["default"] < figures["relaxed"]


def test_default_jobs_run_as_unprivileged_uids_of_their_own() -> None:
    script = "echo uid=$(id -u); echo READY; sleep 60"
    a, b = running("--", "sh", "-c", script), running("--", "sh", "-c", script)
    uids = [int(grab(r"uid=(\d+)", journal_output(j))) for j in (a, b)]
    assert 0 not in uids and uids[0] != uids[1], uids
    relaxed = running("--profile", "relaxed", "--", "sh", "-c", script)
    assert "uid=0\n" in journal_output(relaxed)  # control: relaxed keeps the caller (root)
    stop(a, b, relaxed)


# -- network ------------------------------------------------------------------------------

CONNECT = """
import socket, sys
try:
    s = socket.socket()
    s.settimeout(3)
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.sendall(sys.argv[2].encode())
    print("connected")
except OSError as e:
    print("refused:", e)
print("END")
"""


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_job_cannot_reach_the_hosts_loopback(profile: str) -> None:
    token = secrets.token_hex(8)
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = str(srv.getsockname()[1])
        _, out = run_job("--profile", profile, "--", "python3", "-c", CONNECT, port, token)
        assert "refused:" in out and "connected" not in out, out
        srv.settimeout(0.5)
        with pytest.raises(TimeoutError):
            srv.accept()
        # Control: the same job with the host's network gets through.
        _, out = run_job("--network", "--", "python3", "-c", CONNECT, port, token)
        assert "connected" in out, out
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(100) == token.encode()


BACKDOOR = """
import socket, subprocess, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen()
print("READY", flush=True)
conn, _ = srv.accept()
line = conn.makefile().readline()
subprocess.run(line, shell=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _send(port: int, line: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
        c.sendall(line.encode() + b"\n")


def test_a_backdoor_listener_in_a_job_is_unreachable_from_the_host() -> None:
    """The seeds' `nc -kl 4444 | bash`: a job listening for commands on 127.0.0.1."""
    token = secrets.token_hex(8)
    port = _free_port()
    job = running("--", "python3", "-c", BACKDOOR, str(port))
    with pytest.raises(ConnectionRefusedError):
        _send(port, f"echo pwned-{token}")
    stop(job)
    # Control: with the host's network the same backdoor takes commands.
    port = _free_port()
    job = running("--network", "--", "python3", "-c", BACKDOOR, str(port))
    _send(port, f"echo pwned-{token}")
    assert wait_finished(job)["state"] == "succeeded"
    wait_for(lambda: f"pwned-{token}" in journal_output(job), what="the backdoor's output")


# -- other jobs' files, processes and output -----------------------------------------------

PLANT = (
    "umask 022; for d in /tmp /var/tmp /dev/shm; do echo {token} > $d/secret-{token}; done; "
    "echo READY; sleep 60"
)
PEEK = (
    "for d in /tmp /var/tmp /dev/shm; do "
    "cat $d/secret-{token} 2>/dev/null || echo no-$d; done; echo END"
)


def test_job_cannot_read_another_jobs_tmp_files() -> None:
    token = secrets.token_hex(8)
    owner = running("--", "sh", "-c", PLANT.format(token=token))
    _, out = run_job("--", "sh", "-c", PEEK.format(token=token))
    assert token not in out and out.count("no-/") == 3, out
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not Path(d, f"secret-{token}").exists()  # nor did it land on the host
    stop(owner)
    # Control: two relaxed jobs sharing the host's /tmp read each other's files.
    shared = ("--profile", "relaxed", "--shared-tmp")
    owner = running(*shared, "--", "sh", "-c", PLANT.format(token=token))
    try:
        _, out = run_job(*shared, "--", "sh", "-c", PEEK.format(token=token))
        assert out.count(token) == 3, out
    finally:
        stop(owner)
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            Path(d, f"secret-{token}").unlink(missing_ok=True)


LIST_PROCS = """
import os
mine = os.getuid()
seen = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        continue
    seen.append((int(pid), uid, cmd))
print("pids", sorted(p for p, _, _ in seen))
print("foreign", [p for p, uid, _ in seen if uid != mine])
print("cmdlines", " | ".join(c for _, _, c in seen))
print("END")
"""


def test_job_cannot_see_other_processes() -> None:
    token = f"1000.{secrets.randbelow(10**9):09d}"  # a unique sleep duration to look for
    other = running("--", "sh", "-c", f"echo READY; exec sleep {token}")
    _, out = run_job("--", "python3", "-c", LIST_PROCS)
    assert token not in out, out
    assert "foreign []" in out, out  # nothing of root (PID 1, this test) or of another job
    pids = [int(p) for p in grab(r"pids \[(.*)\]", out).split(", ")]
    assert 1 not in pids and os.getpid() not in pids
    # Control: a relaxed (root) job sees both.
    _, out = run_job("--profile", "relaxed", "--", "python3", "-c", LIST_PROCS)
    assert token in out and "sleep" in out, out
    stop(other)


def test_job_cannot_signal_another_jobs_processes() -> None:
    victim = running("--", "sh", "-c", "echo pid=$$; echo READY; exec sleep 60")
    pid = grab(r"pid=(\d+)", journal_output(victim))
    kill = ["sh", "-c", f"kill -KILL {pid} && echo killed || echo refused; echo END"]
    _, out = run_job("--", *kill)
    assert "refused" in out and "killed" not in out, out
    assert status(victim)["state"] == "running"
    # Control: a relaxed (root) job can.
    _, out = run_job("--profile", "relaxed", "--", *kill)
    assert "killed" in out, out
    s = wait_finished(victim)
    assert s["state"] == "failed" and s["signal"] == "SIGKILL"


def test_job_cannot_read_another_jobs_output() -> None:
    token = secrets.token_hex(8)
    talker = start("--", "sh", "-c", f"echo secret-{token}")
    wait_for(lambda: token in journal_output(talker), what="the secret in the journal")
    read = [
        "sh", "-c",
        f"journalctl --namespace=jobrun -o cat --no-pager JOBRUN_JOB={talker} 2>&1; "
        f"grep -r -a -o -h secret-{token} /var/log/journal 2>&1 | head -n 1; echo END",
    ]  # fmt: skip
    _, out = run_job("--", *read)
    assert f"secret-{token}" not in out, out
    _, out = run_job("--profile", "relaxed", "--", *read)  # control: root reads the journal
    assert f"secret-{token}" in out, out


def _as_user(user: str, *args: str) -> str:
    """`jobrun start ARGS` as `user`, through jobrund; the job's ID."""
    env = {k: v for k, v in os.environ.items() if k != "JOBRUN_STATE_DIR"}
    proc = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
         sys.executable, "-m", "jobrun", "start", *args],
        capture_output=True, text=True, env={**env, "JOBRUN_MODE": "daemon"}, cwd="/",
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.daemon
def test_a_users_job_cannot_read_another_users_job_output() -> None:
    token = secrets.token_hex(8)
    bobs = _as_user("bob", "--", "sh", "-c", f"echo secret-{token}")
    wait_for(lambda: token in journal_output(bobs), what="bob's secret in the journal")
    read = (
        f"journalctl --namespace=jobrun -o cat --no-pager JOBRUN_JOB={bobs} 2>&1; "
        f"journalctl --namespace=jobrun -o cat --no-pager 2>&1 | grep secret-{token}; "
        f"grep -r -a -o -h secret-{token} /var/log/journal 2>&1 | head -n 1; echo END"
    )
    # (the sleep keeps alice's unit loaded for systemctl show below)
    alices = _as_user("alice", "--", "sh", "-c", read + "; sleep 10")
    try:
        show = systemctl_show(unit_name(alices), "User", "DynamicUser", "ProtectSystem")
        alice_uid = subprocess.check_output(["id", "-u", "alice"], text=True).strip()
        assert show == {"User": alice_uid, "DynamicUser": "no", "ProtectSystem": "strict"}
        out = wait_for(lambda: (o := journal_output(alices)) and "END" in o and o, what="output")
        assert f"secret-{token}" not in out, out
    finally:  # alice logged in would keep later tests from changing her account (usermod)
        subprocess.run(["systemctl", "stop", unit_name(alices)], check=False)
    # Control: the same reader as root (relaxed) finds it.
    _, out = run_job("--profile", "relaxed", "--", "sh", "-c", read)
    assert f"secret-{token}" in out, out


# -- the file system ------------------------------------------------------------------------

WRITE = (
    "for f in {dir}/x /etc/jobrun-escape-{token} /usr/jobrun-escape-{token} "
    "/var/lib/jobrun-escape-{token} /run/jobrun-escape-{token} /root/jobrun-escape-{token}; do "
    "echo {token} > $f 2>/dev/null && echo wrote-$f || echo refused-$f; done; echo END"
)


def test_job_cannot_write_outside_the_paths_it_was_given(scratch: Path) -> None:
    scratch.chmod(0o777)  # writable for any UID: only the sandbox stands in the way
    token = secrets.token_hex(8)
    escapes = [
        scratch / "x", *(Path(d, f"jobrun-escape-{token}") for d in
                         ("/etc", "/usr", "/var/lib", "/run", "/root")),
    ]  # fmt: skip
    try:
        for profile in ("default", "strict"):
            _, out = run_job("--profile", profile, "--", "sh", "-c",
                             WRITE.format(dir=scratch, token=token))  # fmt: skip
            assert "wrote-" not in out and out.count("refused-") == 6, out
            assert not any(p.exists() for p in escapes)
        # Controls: the same job with --writable writes there (and only there) …
        _, out = run_job("--writable", str(scratch), "--", "sh", "-c",
                         WRITE.format(dir=scratch, token=token))  # fmt: skip
        assert f"wrote-{scratch}/x" in out and out.count("wrote-") == 1, out
        st = (scratch / "x").stat()
        assert st.st_uid != 0 and stat.S_IMODE(st.st_mode) == 0o600  # its UID, UMask=0077
        (scratch / "x").unlink()
        # … and a relaxed (root) job writes anywhere.
        _, out = run_job("--profile", "relaxed", "--", "sh", "-c",
                         WRITE.format(dir=scratch, token=token))  # fmt: skip
        assert out.count("wrote-") == 6, out
    finally:
        for p in escapes:
            p.unlink(missing_ok=True)


def test_setuid_binaries_give_a_job_nothing(scratch: Path) -> None:
    suid_id = scratch / "id"
    shutil.copy("/usr/bin/id", suid_id)
    suid_id.chmod(0o4755)  # a setuid-root copy, as an attacker might find one
    script = f"{suid_id}; mount -t tmpfs none /mnt && echo mounted; echo END"
    for profile in ("default", "strict"):
        _, out = run_job("--profile", profile, "--", "sh", "-c", script)
        assert "uid=" in out and "euid=0" not in out and "uid=0(" not in out, out
        assert "mounted" not in out, out
    # Control: outside jobrun the same binary does make an unprivileged user root.
    control = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(suid_id)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "euid=0(root)" in control, control


def test_job_cannot_create_setuid_files(scratch: Path) -> None:
    scratch.chmod(0o777)
    target = scratch / "mine"
    script = f"cp /usr/bin/id {target}; chmod u+s {target}; echo END"
    run_job("--writable", str(scratch), "--", "sh", "-c", script)
    assert target.exists() and not target.stat().st_mode & stat.S_ISUID
    target.unlink()
    run_job("--profile", "relaxed", "--", "sh", "-c", script)  # control: root may
    assert target.stat().st_mode & stat.S_ISUID


def test_job_cannot_get_systemd_to_run_something_for_it(scratch: Path) -> None:
    """Root on the system bus is root: a job that reaches systemd as root starts a unit with no
    sandbox at all. Default jobs do not run as root, so systemd refuses them."""
    scratch.chmod(0o777)
    victim = running("--", "sh", "-c", "echo READY; sleep 60")
    escape = f"jobrun-escape-{secrets.token_hex(6)}"
    script = (
        f"systemd-run --unit={escape} --wait -p Type=oneshot touch {scratch}/escaped; "
        f"systemctl stop {unit_name(victim)}; echo END"
    )
    _, out = run_job("--", "sh", "-c", script)
    assert not (scratch / "escaped").exists(), out
    assert systemctl_show(f"{escape}.service", "LoadState")["LoadState"] == "not-found"
    assert status(victim)["state"] == "running"
    # Control: a relaxed (root) job does all of it.
    run_job("--profile", "relaxed", "--", "sh", "-c", script)
    assert (scratch / "escaped").exists()
    assert wait_finished(victim)["state"] == "stopped"


# -- what strict adds -------------------------------------------------------------------------

STRICT_PROBE = """
import ctypes, mmap, socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    print("inet-ok")
except OSError as e:
    print("inet-refused", e.errno)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
    print("wx-ok")
except OSError as e:
    print("wx-refused", e.errno)
print("END")
"""


def test_strict_takes_ip_sockets_and_writable_executable_memory() -> None:
    s, out = run_job("--profile", "strict", "--", "python3", "-c", STRICT_PROBE)
    assert s["state"] == "succeeded", (s, out)
    assert "inet-refused" in out and "wx-refused" in out, out
    _, out = run_job("--", "python3", "-c", STRICT_PROBE)  # control: default allows both
    assert "inet-ok" in out and "wx-ok" in out, out


def test_profile_refusals_start_nothing() -> None:
    for args, text in [
        (["--profile", "lax"], "strict, default, relaxed"),
        (["--profile", "strict", "--network"], "--network"),
        (["--shared-tmp"], "--profile relaxed"),
        (["--writable", "/nonexistent-jobrun"], "no such file"),
        # root may show its job a home directory, but not one its dynamic UID cannot enter
        (["-C", "/root"], "closed to others"),
    ]:
        proc = jobrun("start", *args, "--", "true")
        assert proc.returncode == 2 and text in proc.stderr, (args, proc.stderr)
    assert jobrun("list", "--json", "--all").stdout.strip() == "[]"
