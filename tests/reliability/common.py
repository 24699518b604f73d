"""Shared by the reliability tests: the size knob, jobrund's vital signs, and the invariants.

Size: reduced by default (CI), full with JOBRUN_RELIABILITY=full (docs/RELIABILITY.md).
The invariants every test ends with: every job is accounted for (running, or a correct final
status), every line of output is there, no unit exists that jobrun does not know, and jobrund
answers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from ..helpers import as_user, status_as, systemctl_show, wait_for

MODE = os.environ.get("JOBRUN_RELIABILITY", "reduced")
if MODE not in ("reduced", "full"):
    raise RuntimeError(f"JOBRUN_RELIABILITY must be reduced or full, not {MODE!r}")
FULL = MODE == "full"

DB = Path("/var/lib/jobrun/jobs.sqlite3")  # jobrund's StateDirectory= (private to the sandbox)
JOBRUND = "jobrund.service"


def size(reduced: int, full: int) -> int:
    return full if FULL else reduced


def wait_final(user: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status_as(user, job_id))["state"] != "running" and s,
        timeout=timeout,
        interval=0.1,
        what=f"job {job_id} to end",
    )


def logs_as(user: str, job_id: str) -> str:
    proc = as_user(user, "logs", job_id)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def jobrund_pid() -> int:
    return int(systemctl_show(JOBRUND, "MainPID")["MainPID"])


def jobrund_answers() -> int:
    """Ask jobrund something (activating it if needed); its PID once it answered."""
    proc = subprocess.run(
        ["busctl", "call", "org.jobrun.Manager1", "/org/jobrun/Manager1",
         "org.jobrun.Manager1", "Whoami"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.startswith('sb "root" true'):
        why = subprocess.run(
            ["journalctl", "-u", JOBRUND, "-n", "40", "--no-pager", "-o", "short-monotonic"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        state = systemctl_show(JOBRUND, "ActiveState", "SubState", "MainPID", "NRestarts")
        raise AssertionError(f"jobrund does not answer: {proc.stderr.strip()}; {state}\n{why}")
    pid = jobrund_pid()
    assert pid > 0
    return pid


def kill_jobrund(sig: str = "KILL") -> int:
    """Signal jobrund's main process; returns the PID that got it."""
    pid = jobrund_pid()
    assert pid > 0, "jobrund is not running"
    subprocess.run(["kill", f"-{sig}", str(pid)], check=True)
    return pid


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, its parts (RssAnon: the heap; RssFile: mapped files, the journal's among them) and
    VmHWM (the peak RSS), in KiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            figures[key] = int(value.split()[0])
    if "VmRSS" not in figures:
        raise AssertionError(f"no VmRSS for {pid}")
    return figures


def rss_kib(pid: int) -> int:
    return memory_kib(pid)["VmRSS"]


def job_units() -> set[str]:
    """Every jobrun-*.service systemd has loaded, running or not."""
    out = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "jobrun-*.service"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def store_ids() -> set[str]:
    """Every job ID in jobrund's database (read directly: what jobrund says is under test)."""
    if not DB.exists():
        return set()
    db = sqlite3.connect(f"file:{DB}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in db.execute("SELECT id FROM jobs")}
    finally:
        db.close()


def unit_job_id(unit: str) -> str:
    return unit.removeprefix("jobrun-").removesuffix(".service")


def assert_no_unknown_units() -> None:
    """Every job unit systemd has is a job jobrun knows: nothing runs behind jobrun's back."""
    known = store_ids()
    unknown = {u for u in job_units() if unit_job_id(u) not in known}
    assert not unknown, f"units jobrun has no record of: {sorted(unknown)}"


def numbered(prefix: str, n: int, first: int = 1) -> list[str]:
    return [f"{prefix}{i}" for i in range(first, first + n)]


def chatty(prefix: str, n: int, pause: float = 0.0, tail: str = "") -> list[str]:
    """argv of a job printing prefix1..prefixN (a pause after every 10 lines), then `tail`."""
    script = (
        f'i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo "{prefix}$i"; '
        f"if [ $((i % 10)) = 0 ]; then sleep {pause}; fi; done; {tail or 'true'}"
    )
    return ["sh", "-c", script]


def seq(prefix: str, n: int) -> list[str]:
    """argv printing prefix1..prefixN with no "$" in it (see test_daemon_reload_during_starts)."""
    return ["seq", "-f", f"{prefix}%g", "1", str(n)]


def report(test: str, figures: dict[str, Any]) -> None:
    """Print a test's figures; with JOBRUN_RELIABILITY_REPORT=FILE also append them there as a
    JSON line (docs/RELIABILITY.md is written from them)."""
    line = json.dumps({"test": test, "mode": MODE, **figures}, sort_keys=True)
    print(f"figures: {line}")
    target = os.environ.get("JOBRUN_RELIABILITY_REPORT")
    if target:
        with open(target, "a") as f:
            f.write(line + "\n")
