"""The CLI's fast path (fastcli.py) against its full path (the typer app, JOBRUN_CLI_FULL=1):
the same command lines give the same stdout, stderr and exit status, byte for byte; as root in
process, root and alice through jobrund, and root in auto mode. The command lines are made from
the settings table (a good and a bad value of every setting) and the commands the fast path
knows, with their errors: missing and unknown IDs, bad values, unknown options, --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobrun import start_flags
from jobrun.cli.settings import fast_flags_source
from jobrun.properties import SETTINGS

from .helpers import as_user_cmd, daemon_env

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

# (who, JOBRUN_MODE)
CALLERS = [("root", "local"), ("root", "daemon"), ("alice", "daemon"), ("root", "auto")]
ID = re.compile(r"[0-9a-z]{10}\n")

# A value each setting takes, and one it refuses (or that its option cannot parse).
GOOD: dict[str, list[str]] = {
    "cpu_weight": ["--cpu-weight", "50"],
    "memory_high": ["--memory-high=512M"],
    "memory_max": ["--memory-max", "1G"],
    "io_weight": ["--io-weight", "20"],
    "tasks_max": ["--tasks-max", "64"],
    "cpu_quota": ["--cpu-quota", "150%"],
    "cpu_affinity": ["--cpu-affinity", "0"],
    "network": ["--network"],
    "private_tmp": ["--shared-tmp"],
    "env": ["-E", "A=héllo ✓", "--env", "B=2", "--env=C=3"],
    "workdir": ["-C", "/tmp"],
    "stop_timeout": ["--stop-timeout", "5"],
    "profile": ["--profile", "relaxed"],
    "writable": ["--writable", "/tmp"],
    "timeout": ["--timeout", "30"],
    "group": ["--group", "fastq"],
    "priority": ["--priority", "5"],
    # No job has this ID: refused alike by both paths (a real one is not known here).
    "after": ["--after", "0000000000"],
    "after_any": ["--after-any"],
    "retry": ["--retry", "1"],
    "retry_delay": ["--retry-delay", "0.5"],
    "retry_backoff": ["--retry-backoff"],
}
BAD: dict[str, list[list[str]]] = {
    "cpu_weight": [["--cpu-weight", "0"], ["--cpu-weight"]],
    "memory_high": [["--memory-high", "5Q"], ["--memory-high", "2G", "--memory-max", "1G"]],
    "memory_max": [["--memory-max", "-1"], ["--memory-max="]],
    "io_weight": [["--io-weight", "x"]],
    "tasks_max": [["--tasks-max", "99999999"]],
    "cpu_quota": [["--cpu-quota", "150"]],
    "cpu_affinity": [["--cpu-affinity", "a-b"]],
    "network": [["--network=yes"]],
    "private_tmp": [["--no-private-tmp"]],
    "env": [["-E", "NOEQUALS"], ["-E"], ["-EA=1"]],
    "workdir": [["-C", "/no/such/dir"], ["--workdir", "relative"]],
    "stop_timeout": [["--stop-timeout", "-1"], ["--stop-timeout", "1", "--stop-timeout", "2"]],
    "profile": [["--profile", "nope"]],
    "writable": [["--writable", "/no/such/path"]],
    "timeout": [["--timeout", "0"], ["--timeout", "x"]],
    "group": [["--group", "Bad-Name"]],
    "priority": [["--priority", "1001"]],
    "after": [["--after", "x!"]],
    "after_any": [["--after-any=yes"]],
    "retry": [["--retry", "101"]],
    "retry_delay": [["--retry-delay", "-1"]],
    "retry_backoff": [["--retry-backoff=1"]],
}


def test_the_corpus_covers_every_setting() -> None:
    assert set(GOOD) == set(BAD) == {s.field for s in SETTINGS}


def test_start_flags_are_the_settings_tables() -> None:
    """jobrun/start_flags.py is what packaging/gen-start-flags writes from the table now."""
    assert (Path(start_flags.__file__).read_text()) == fast_flags_source(), (
        "jobrun/start_flags.py is stale: run packaging/gen-start-flags"
    )


def start_lines() -> list[list[str]]:
    good = [["start", *GOOD[s.field], "--", "true"] for s in SETTINGS]
    good += [
        ["start", "--", "true"],
        ["start", "true"],
        ["start", "--name", "héllo ✓", "sh", "-c", "exit 0", "--", "x"],
        # All of them but --after (whose job does not exist) at once.
        [
            "start",
            "--name=n",
            *[a for s in SETTINGS if s.field != "after" for a in GOOD[s.field]],
            "true",
        ],
    ]
    bad = [["start", *b, "--", "true"] for s in SETTINGS for b in BAD[s.field]]
    bad += [
        ["start"],
        ["start", "--"],
        ["start", "--help"],
        ["start", "-h"],
        ["start", "--bogus", "--", "true"],
        ["start", "--name"],
        ["start", "--", "./no-such-program"],
        ["start", "--name", "a\nb", "--", "true"],
        # Paths the fast path cannot vouch for (relative; a way closed to others, for root's
        # dynamic UID), and one only jobrund refuses (relative, but there from /)
        ["start", "--writable", "no/such", "--", "true"],
        ["start", "--writable", "tmp", "--", "true"],
        ["start", "-C", "/root", "--", "true"],
        ["start", "-C", "tmp", "--", "true"],
    ]
    return good + bad


def read_lines(job: str, big: str) -> list[list[str]]:
    lines = [["--version"], [], ["--help"], ["-h"], ["bogus"], ["--remote"]]
    for flags in ([], ["--json"], ["-w"], ["--wide"], ["--json", "--wide"]):
        lines += [["status", job, *flags], ["status", *flags, job]]
    lines += [
        ["status"],
        ["status", "0" * 10],
        ["status", job[:4]],
        ["status", "zz"],
        ["status", job, "extra"],
        ["status", "--bogus", job],
        ["status", "--help"],
        ["status", "--", job],
        ["status", "-wj", job],
        ["status", "--json=1", job],
    ]
    for flags in ([], ["--json"], ["-a"], ["--all", "--json"], ["-w"], ["-a", "-w"], ["-aw"]):
        lines.append(["list", *flags])
    lines += [["list", "extra"], ["list", "--help"], ["list", "--bogus"]]
    logs_flags: list[list[str]] = [[], ["--tail", "1"], ["-n", "0"], ["-n", "2", "--tail", "1"]]
    logs_flags += [["-n", "x"], ["-n", "-1"], ["--json"], ["-f"], ["--tail", "1", "--since", "5m"]]
    for flags in logs_flags:
        lines += [["logs", job, *flags], ["logs", *flags, job]]
    lines += [["logs"], ["logs", "0" * 10], ["logs", job, "extra"], ["logs", "--help"]]
    lines += [["logs", big], ["logs", "-n", "3", big]]  # more than the fast path holds
    return lines


def jobrun(
    who: str, mode: str, args: list[str], full: bool, columns: str = "100"
) -> subprocess.CompletedProcess[str]:
    env = daemon_env() if mode != "local" else dict(os.environ)
    env.update(JOBRUN_MODE=mode, COLUMNS=columns)
    env.pop("JOBRUN_CLI_FULL", None)
    if full:
        env["JOBRUN_CLI_FULL"] = "1"
    argv = as_user_cmd(who, sys.executable, "-m", "jobrun", *args)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, cwd="/")


def same(who: str, mode: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    fast = jobrun(who, mode, args, full=False)
    full = jobrun(who, mode, args, full=True)
    got = (fast.returncode, fast.stdout, fast.stderr)
    assert got == (full.returncode, full.stdout, full.stderr), (who, mode, args)
    return fast


OUTPUT = "printf 'héllo ✓\\nline two\\000nul\\nno newline'"


def finished_job(who: str, mode: str, command: str = "true") -> str:
    proc = jobrun(who, mode, ["start", "--", "sh", "-c", command], full=True)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert jobrun(who, mode, ["wait", job], full=True).returncode == 0
    return job


def comparable(who: str, mode: str, job: str) -> dict[str, Any]:
    jobrun(who, mode, ["wait", job], full=True)
    d = json.loads(jobrun(who, mode, ["status", "--json", job], full=True).stdout)
    fields = ("name", "state", "exit_code", "reason", "command", "owner", "uid", "limits")
    return {k: d[k] for k in fields}


@pytest.mark.parametrize(("who", "mode"), CALLERS)
def test_reading_commands_are_byte_for_byte_the_full_clis(who: str, mode: str) -> None:
    job = finished_job(who, mode, OUTPUT)
    big = finished_job(who, mode, "seq 1 200000")
    for args in read_lines(job, big):
        same(who, mode, args)


@pytest.mark.parametrize(("who", "mode"), CALLERS)
def test_start_is_the_full_clis(who: str, mode: str) -> None:
    for args in start_lines():
        fast = jobrun(who, mode, args, full=False)
        full = jobrun(who, mode, args, full=True)
        assert (fast.returncode, fast.stderr) == (full.returncode, full.stderr), (who, mode, args)
        if not (fast.returncode == 0 and ID.fullmatch(fast.stdout)):
            assert fast.stdout == full.stdout, args  # an error, or --help
            continue
        assert ID.fullmatch(full.stdout), full.stdout
        started = [comparable(who, mode, p.stdout.strip()) for p in (fast, full)]
        assert started[0] == started[1], args


# Jobs of every state and ending: (options of start, command, stop it)
KINDS: list[tuple[list[str], list[str], bool]] = [
    ([], ["sh", "-c", "exit 3"], False),  # failed, exit 3
    ([], ["sh", "-c", "kill -9 $$"], False),  # failed, SIGKILL
    (["--name", "nïght ✓ 漢字", "--memory-max", "1G", "--cpu-weight", "50", "-E", "A=é",
      "--cpu-affinity", "0", "--stop-timeout", "5", "-C", "/"], ["true"], False),
    ([], ["echo", *[f"--a-long-argument-{i}" for i in range(30)]], False),
    (["--name", "stopped"], ["sleep", "600"], True),  # stopped
    (["--name", "running"], ["sleep", "600"], False),  # running (in process: the full CLI)
]  # fmt: skip


@pytest.mark.parametrize(("who", "mode"), CALLERS)
def test_every_kind_of_job_prints_as_the_full_cli(who: str, mode: str) -> None:
    """status and list of jobs running, succeeded, failed (exit code, signal), stopped, with
    limits, non-ASCII names, long commands; at 80 and 100 columns, --wide and --json."""
    jobs = []
    for options, command, stop in KINDS:
        proc = jobrun(who, mode, ["start", *options, "--", *command], full=True)
        assert proc.returncode == 0, proc.stderr
        jobs.append(proc.stdout.strip())
        if stop:
            assert jobrun(who, mode, ["stop", jobs[-1]], full=True).returncode == 0
        elif command[0] != "sleep":
            jobrun(who, mode, ["wait", jobs[-1]], full=True)
    try:
        lines = [["status", job, *flags] for job in jobs for flags in ([], ["--json"], ["-w"])]
        lines += [["list", *flags] for flags in ([], ["--json"], ["-w"])]
        for columns in ("80", "100"):
            for args in lines:
                # A running job's usage is measured anew by each: ask again if it moved.
                for _attempt in range(3):
                    fast = jobrun(who, mode, args, full=False, columns=columns)
                    full = jobrun(who, mode, args, full=True, columns=columns)
                    got, want = [(p.returncode, p.stdout, p.stderr) for p in (fast, full)]
                    if got == want:
                        break
                assert got == want, (who, mode, columns, args)
                assert fast.returncode == 0, fast.stderr
    finally:
        jobrun(who, mode, ["stop", jobs[-1]], full=True)


@pytest.mark.parametrize(("who", "mode"), CALLERS)
def test_stop_is_the_full_clis(who: str, mode: str) -> None:
    """stop of a running job (a fresh one for each path), of a finished one, and its errors."""
    for flags in ([], ["-t", "5"], ["--timeout", "0.5"], ["-t", "x"], ["--timeout=1"], ["-t"]):
        runs = []
        for full in (False, True):
            proc = jobrun(who, mode, ["start", "--", "sleep", "600"], full=True)
            job = proc.stdout.strip()
            p = jobrun(who, mode, ["stop", *flags, job], full=full)
            runs.append((p.returncode, p.stdout, p.stderr.replace(job, "ID")))
            jobrun(who, mode, ["stop", job], full=True)
        assert runs[0] == runs[1], (who, mode, flags)
    job = finished_job(who, mode)
    lines = [["stop", job], ["stop", "-t", "1", job], ["stop", "0" * 10], ["stop", job[:3]]]
    lines += [["stop"], ["stop", "--help"], ["stop", job, "extra"], ["stop", "-t", "1", "-t", "2"]]
    for args in lines:
        same(who, mode, args)


FAST = [
    ["--version"],
    ["status", "JOB"],
    ["status", "--json", "JOB"],
    ["list"],
    ["list", "--json"],
    ["logs", "OUTPUT"],
    ["logs", "-n", "1", "OUTPUT"],
    ["start", "--", "true"],
    ["start", "--memory-max", "1G", "-E", "A=1", "--", "true"],
    ["stop", "JOB"],
]


@pytest.mark.parametrize(
    ("who", "mode", "args"),
    [("root", "daemon", a) for a in FAST]
    + [("alice", "daemon", a) for a in FAST]
    + [("root", "local", ["status", "JOB"]), ("root", "local", ["status", "--json", "JOB"])],
)
def test_the_common_commands_take_the_fast_path(who: str, mode: str, args: list[str]) -> None:
    """No typer, click, rich, asyncio or dbus-fast imported for them (through jobrund; the
    status of a finished job in process)."""
    # (the status of a job whose command is not ASCII prints through rich: render.py)
    for placeholder, command in (("JOB", "true"), ("OUTPUT", OUTPUT)):
        if placeholder in args:
            job = finished_job(who, mode, command)
            args = [job if a == placeholder else a for a in args]
    env = daemon_env() if mode != "local" else dict(os.environ)
    env.update(JOBRUN_MODE=mode, PYTHONPROFILEIMPORTTIME="1")
    argv = as_user_cmd(who, sys.executable, "-m", "jobrun", *args)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & {"typer", "click", "rich", "asyncio", "dbus_fast"}, sorted(imported)
    if mode == "daemon":  # the job as it came: no model, settings table, dataclasses or
        # datetime (start parses its options with start_flags.py, jobrund checks them)
        lean = {"jobrun.model", "jobrun.properties", "dataclasses", "inspect", "datetime"}
        if "--json" not in args:  # replies read by json's C scanner (fastcli.json_loads)
            lean |= {"json", "re"}
        assert not imported & lean, sorted(imported)


ACTIVATION = Path("/usr/share/dbus-1/system-services/org.jobrun.Manager1.service")


def _reload_bus() -> None:
    subprocess.run(
        ["busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
         "org.freedesktop.DBus", "ReloadConfig"], check=True,
    )  # fmt: skip


def test_a_user_without_jobrund_hears_what_the_full_cli_says() -> None:
    """A user's commands go to jobrund without asking first whether it is there (a round trip
    of every command): where it is not, the bus's answer hands them to the full CLI, and what
    the user reads is the full CLI's, byte for byte. Where it is, they work as in daemon mode."""
    job = finished_job("alice", "daemon")
    lines = [["start", "--", "true"], ["stop", job], ["status", job], ["list"], ["logs", job]]
    for args in lines[2:]:
        assert same("alice", "auto", args).returncode == 0, args
    aside = ACTIVATION.with_name(ACTIVATION.name + ".aside")
    ACTIVATION.rename(aside)
    try:
        _reload_bus()
        subprocess.run(["systemctl", "stop", "jobrund.service"], check=True)
        for args in lines:
            proc = same("alice", "auto", args)
            assert proc.returncode != 0 and proc.stderr, args
    finally:
        aside.rename(ACTIVATION)
        _reload_bus()
