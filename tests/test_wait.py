"""`jobrun wait ID...`: until the jobs have ended; the first failing job's status; --timeout.

In-process as root, and through jobrund as alice.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from .homes import jobrun_in

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

MODES = [("root", "local"), ("alice", "daemon")]


def cli(who: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    user, mode = who
    return jobrun_in("/", user, *args, mode=mode)


def start(who: tuple[str, str], *command: str) -> str:
    proc = cli(who, "start", "--", *command)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("who", MODES, ids=[m for _, m in MODES])
def test_wait_exits_with_the_first_failing_jobs_status(who: tuple[str, str]) -> None:
    ok = start(who, "sh", "-c", "sleep 0.5")
    three = start(who, "sh", "-c", "sleep 0.3; exit 3")
    term = start(who, "sh", "-c", "kill -TERM $$")
    proc = cli(who, "wait", ok)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    proc = cli(who, "wait", ok, three, term)
    assert proc.returncode == 3, proc.stderr
    assert f"job {three} failed" in proc.stderr and f"job {term} failed" in proc.stderr
    proc = cli(who, "wait", ok, term[:6], three)  # a prefix works as everywhere
    assert proc.returncode == 128 + 15, proc.stderr
    missing = cli(who, "wait", ok, "zzzzzzzzzz")
    assert missing.returncode == 3 and "Traceback" not in missing.stderr, missing.stderr


@pytest.mark.parametrize("who", MODES, ids=[m for _, m in MODES])
def test_wait_blocks_until_the_jobs_end_or_the_timeout(who: tuple[str, str]) -> None:
    short = start(who, "sleep", "1")
    t0 = time.monotonic()
    proc = cli(who, "wait", short)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(cli(who, "status", "--json", short).stdout)
    assert status["state"] == "succeeded"

    long = start(who, "sleep", "600")
    t0 = time.monotonic()
    proc = cli(who, "wait", "--timeout", "0.5", short, long)
    took = time.monotonic() - t0
    assert proc.returncode == 124, proc.stderr
    assert f"still running after 0.5s: {long}" in proc.stderr
    assert took < 10, took
    assert json.loads(cli(who, "status", "--json", long).stdout)["state"] == "running"
    assert cli(who, "stop", long).returncode == 0
    assert cli(who, "wait", long).returncode == 128 + 15  # ended by SIGTERM
