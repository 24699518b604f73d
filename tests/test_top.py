"""`jobrun top` and jobrund's metrics against the real systemd: CPU of a busy and an idle job,
memory, who sees which jobs, the full-screen view in a terminal, the metrics file."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import as_user, daemon_env, jobrun, jobrun_cmd, start, start_as, wait_for
from .test_usage import check_exposition

pytestmark = [pytest.mark.integration]

# Two busy processes: more than half a CPU even on a loaded machine of 2 shared cores.
BUSY = ("--", "sh", "-c", "while :; do :; done & while :; do :; done")
MIB64 = 64 << 20


def top_once(*args: str, user: str | None = None) -> dict[str, dict[str, Any]]:
    argv = ("top", "--once", "--json", "--interval", "0.5", *args)
    proc = as_user(user, *argv) if user else jobrun(*argv)
    assert proc.returncode == 0, proc.stderr
    return {row["id"]: row for row in json.loads(proc.stdout)}


@pytest.fixture
def stop_after() -> Iterator[list[str]]:
    jobs: list[str] = []
    yield jobs
    for job in jobs:
        subprocess.run(["systemctl", "stop", f"jobrun-{job}.service"], capture_output=True)


@pytest.mark.usefixtures("state_dir")
def test_busy_idle_and_memory(stop_after: list[str]) -> None:
    busy = start(*BUSY)
    idle = start("--", "sleep", "300")
    mem = start("--memory-max", "512M", "--", "python3", "-c",
                f"b = bytearray({MIB64}); b[::4096] = b'x' * len(b[::4096]); "
                "import time; time.sleep(300)")  # fmt: skip
    stop_after += [busy, idle, mem]

    last: list[dict[str, dict[str, Any]]] = [{}]

    def seen() -> dict[str, dict[str, Any]] | None:
        rows = last[0] = top_once()
        if busy not in rows or idle not in rows or mem not in rows:
            return None
        ok = (rows[busy]["cpu_percent"] or 0) > 50 and (rows[mem]["memory_bytes"] or 0) >= MIB64
        return rows if ok else None

    try:
        rows = wait_for(seen, what="the busy job over 50% CPU, 64 MiB in the other", timeout=120)
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {last[0]}") from None
    assert rows[idle]["cpu_percent"] is not None and rows[idle]["cpu_percent"] < 5
    assert rows[mem]["memory_max"] == 512 << 20 and rows[busy]["memory_max"] is None
    assert rows[busy]["tasks"] >= 1 and rows[busy]["state"] == "running"
    assert rows[busy]["user"] == "root"
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    assert (rows[busy]["io_read_bytes"] is None) is (not v2)  # no IO counters on cgroup v1
    # Sorted by CPU by default, by ID on request.
    proc = jobrun("top", "--once", "--json", "--interval", "0.2", "--sort", "id", check=True)
    ids = [r["id"] for r in json.loads(proc.stdout)]
    assert ids == sorted(ids)
    bad = jobrun("top", "--sort", "colour")
    assert bad.returncode != 0 and "--sort takes" in bad.stderr


@pytest.mark.daemon
def test_users_see_their_own_jobs_admins_all(stop_after: list[str]) -> None:
    alice = start_as("alice", "--", "sleep", "300")
    bob = start_as("bob", "--", "sleep", "300")
    stop_after += [alice, bob]
    mine = top_once(user="alice")
    assert alice in mine and bob not in mine and mine[alice]["user"] == "alice"
    assert set(mine) == {alice} | {j for j, r in mine.items() if r["user"] == "alice"}
    for admin in ("carol", "root"):
        every = top_once(user=admin)
        assert {alice, bob} <= set(every), admin
        assert every[bob]["user"] == "bob"


def _read_until(fd: int, proc: subprocess.Popen[bytes], want: list[str], timeout: float) -> str:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
        text = out.decode(errors="replace")
        if all(w in text for w in want):
            return text
        if proc.poll() is not None:
            break
    raise AssertionError(f"{want} not seen in top's screen: {out[-2000:]!r}")


@pytest.mark.daemon
@pytest.mark.parametrize("quit_with", ["q", "SIGINT"])
def test_full_screen_in_a_terminal(stop_after: list[str], quit_with: str) -> None:
    jobs = [start_as("alice", "--", "sleep", "300") for _ in range(2)]
    stop_after += jobs
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = daemon_env({"TERM": "xterm-256color", "HOME": "/"})
    proc = subprocess.Popen(
        jobrun_cmd("alice", "top", "--interval", "0.2"),
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd="/", start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        # Two refreshes: the second has CPU rates, hence a number in the CPU% column.
        text = _read_until(master, proc, [*jobs, "sorted by cpu"], timeout=30)
        assert "\x1b[?1049h" in text  # the alternate screen: full-screen
        os.write(master, b"m")
        _read_until(master, proc, ["sorted by mem"], timeout=10)
        if quit_with == "q":
            os.write(master, b"q")
        else:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


CONFIG = Path("/etc/jobrun/jobrund.toml")
METRICS_DIR = Path("/var/lib/prometheus/node-exporter")


def _restart_jobrund() -> None:
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)


@pytest.mark.daemon
def test_metrics_file_on_updated_valid_and_gone_when_off(stop_after: list[str]) -> None:
    METRICS_DIR.mkdir(parents=True, exist_ok=True)  # the sandbox's own /var/lib (an overlay)
    prom = METRICS_DIR / "jobrun.prom"
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    try:
        CONFIG.unlink(missing_ok=True)
        _restart_jobrund()
        job = start_as("alice", *BUSY)
        stop_after.append(job)
        # Off by default: nothing is written.
        assert as_user("alice", "status", job).returncode == 0
        assert not prom.exists()
        CONFIG.write_text(f'[metrics]\nenabled = true\npath = "{METRICS_DIR}"\ninterval = 1\n')
        _restart_jobrund()

        def cpu_of_job() -> float | None:
            if not prom.exists():
                return None
            fam = check_exposition(prom.read_text())
            for labels, value in fam.get("jobrun_job_cpu_seconds_total", []):
                if labels == {"job": job, "user": "alice"}:
                    return value
            return None

        first = wait_for(cpu_of_job, what="the metrics file with the job", timeout=30)
        assert prom.stat().st_mode & 0o777 == 0o644
        fam = check_exposition(prom.read_text())
        assert any(lb == {"state": "running"} and v >= 1 for lb, v in fam["jobrun_jobs"])
        assert any(lb == {"user": "alice"} for lb, _ in fam["jobrun_user_memory_bytes"])
        wait_for(lambda: (c := cpu_of_job()) is not None and c > first,
                 what="the file to be updated", timeout=30)  # fmt: skip
        assert [p.name for p in METRICS_DIR.iterdir()] == ["jobrun.prom"]  # no temporary left
        CONFIG.write_text("[metrics]\nenabled = false\n")
        _restart_jobrund()
        assert not prom.exists()  # removed when jobrund stopped, not written again
        assert as_user("alice", "status", job).returncode == 0
        assert not prom.exists()
    finally:
        CONFIG.unlink(missing_ok=True)
        _restart_jobrund()


@pytest.mark.daemon
def test_over_the_remote_api_each_identity_sees_its_own_an_admin_all(
    stop_after: list[str],
) -> None:
    from .remote_helpers import remote_jobrund

    with remote_jobrund() as remote:

        def start_remote(name: str) -> str:
            proc = remote.cli(name, "start", "--", "sleep", "300")
            assert proc.returncode == 0, proc.stderr
            return proc.stdout.strip()

        def top_remote(name: str) -> dict[str, dict[str, Any]]:
            proc = remote.cli(name, "top", "--once", "--json", "--interval", "0.2")
            assert proc.returncode == 0, proc.stderr
            return {row["id"]: row for row in json.loads(proc.stdout)}

        alice, bob = start_remote("alice"), start_remote("bob")
        stop_after += [alice, bob]
        mine = top_remote("alice")
        assert alice in mine and bob not in mine
        assert mine[alice]["user"] == "remote:alice" and mine[alice]["tasks"] >= 1
        assert {alice, bob} <= set(top_remote("carol"))
        # A local alice is not remote:alice: neither sees the other's jobs.
        assert alice not in top_once(user="alice")
