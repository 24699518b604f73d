"""Issue: no string a caller sends can become a line of a transient unit file (unit-file injection).

systemd 252 writes a transient unit to /run/systemd/transient/ and parses it again on every
daemon-reload; Description=, WorkingDirectory= and ReadWritePaths= are written without escaping
line breaks. Each test here starts jobs with every control character and quote in every
string-valued option, reloads systemd, and checks that each unit is exactly what was asked and
that nothing ran as root. properties.py has the rule (one check per kind of string).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrun.errors import InvalidArgument
from jobrun.model import unit_name
from jobrun.properties import build_spec
from jobrun.unit import describe

from ..helpers import journal_output, systemctl_show, wait_for
from .common import jobrun as _jobrun
from .common import raw_start_as as _raw_start_as

# Every C0 control character, DEL, some C1 ones and Unicode's line breaks, quotes, backslash; and
# characters a unit file gives a meaning to ($ and % are expanded, ; separates commands).
CONTROLS = [chr(c) for c in (*range(1, 0x20), 0x7F, 0x85, 0x9B)] + ["\u2028", "\u2029"]
QUOTES = ['"', "'", "\\"]
OTHERS = ["$", "%", ";", " ", "é", "*"]
ALL = CONTROLS + QUOTES + OTHERS
MARK = Path("/run/jobrun-injected")
PAYLOAD = f"\n[Service]\nExecStopPost=+/bin/touch {MARK}\nX-A="


def accepted(**kw: Any) -> bool:
    command = kw.pop("command", ["/bin/true"])
    try:
        build_spec(command, **kw)
    except InvalidArgument:
        return False
    return True


# -- the rule, without systemd --------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("ch", ALL, ids=[f"U+{ord(c):04X}" for c in ALL])
def test_what_a_unit_file_would_not_hold_is_refused_in_every_string_option(ch: str) -> None:
    unsafe = ch in CONTROLS or ch in QUOTES
    # The name goes into Description= unescaped: a line break there is a new line of the unit
    # (quotes are text there: the reload test below proves it).
    assert accepted(name=f"a{ch}b") is (ch not in CONTROLS)
    # Paths go into WorkingDirectory= and ReadWritePaths=, where quotes and "\\" change them.
    assert accepted(workdir=f"/srv/a{ch}b") is not unsafe
    assert accepted(writable=[f"/srv/a{ch}b"], profile="relaxed") is not unsafe
    assert accepted(command=[f"/bin/a{ch}b"]) is not unsafe
    # Arguments and environment values are C-escaped by systemd: tab and newline are text.
    free = ch in "\t\n" or not unsafe or ch in QUOTES
    assert accepted(command=["/bin/echo", f"a{ch}b"]) is free
    assert accepted(env=[f"K=a{ch}b"]) is free


@pytest.mark.unit
@pytest.mark.parametrize("exe", ["+touch", "!touch", "-touch", "@touch", ":touch", "./x", "a/b"])
def test_an_executable_cannot_carry_a_unit_file_prefix_or_be_relative(exe: str) -> None:
    # "+touch" was written as ExecStart="+touch" and read back as the "+" prefix: run as root.
    with pytest.raises(InvalidArgument):
        build_spec([exe, "/run/x"])


@pytest.mark.unit
def test_description_is_the_id_and_the_name_never_the_command() -> None:
    spec = build_spec(["/bin/sh", "-c", "echo secret-token"], name="nightly ✓")
    assert describe("abc", spec) == "jobrun job abc (nightly ✓)"
    assert describe("abc", build_spec(["/bin/true"])) == "jobrun job abc"


# -- against systemd: start, daemon-reload, compare --------------------------------------------


def _reload() -> None:
    subprocess.run(["systemctl", "daemon-reload"], check=True)


def _props(unit: str) -> dict[str, Any]:
    from jobrun.systemd import Systemd

    async def get() -> dict[str, Any]:
        async with await Systemd.connect() as sd:
            path = await sd.get_unit(unit)
            assert path, f"{unit} is not loaded"
            props = await sd.unit_properties(path)
            # (path, argv, ignore failure): the rest are the run's PID and times
            props["ExecStart"] = [list(e[:3]) for e in props["ExecStart"]]
            return props

    return asyncio.run(get())


@pytest.fixture
def jobs() -> Iterator[list[str]]:
    started: list[str] = []
    MARK.unlink(missing_ok=True)
    yield started
    for job in started:
        subprocess.run(["systemctl", "stop", "--no-block", unit_name(job)], check=False)
    assert not MARK.exists(), "an injected command ran as root"


@pytest.fixture
def srv() -> Iterator[Path]:
    """Directories for -C and --writable, on the host's file system (not /tmp: a job's /tmp is
    its own), removed afterwards."""
    d = Path("/srv/jobrun-injection")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.usefixtures("state_dir")
def test_every_character_in_every_option_survives_daemon_reload_exactly(
    jobs: list[str], srv: Path
) -> None:
    asked: dict[str, dict[str, Any]] = {}
    for i, ch in enumerate(ALL):
        arg, env, d = f"a{ch}b{PAYLOAD}", f"K=v{ch}w{PAYLOAD}", srv / f"d{i}{ch}x"
        variants: list[tuple[str, ...]] = []
        refused: list[tuple[str, ...]] = []
        for ok, args in [
            (accepted(command=["/bin/sh", arg]), ("--", "/bin/sh", "-c", "sleep 600", "sh", arg)),
            (accepted(env=[env]), ("-E", env, "--", "/bin/sh", "-c", "printenv K\nsleep 600")),
            (accepted(name=f"n{ch}"), ("--name", f"n{ch}", "--", "/bin/sleep", "600")),
            (accepted(workdir=str(d)), ("--profile", "relaxed", "-C", str(d), "--writable", str(d),
                                        "--", "/bin/sleep", "600")),
        ]:  # fmt: skip
            (variants if ok else refused).append(args)
        for args in variants:
            if args[0] == "--profile":
                Path(args[3]).mkdir(parents=True, exist_ok=True)
            proc = _jobrun("start", *args)
            assert proc.returncode == 0, (repr(ch), args, proc.stderr)
            job = proc.stdout.strip()
            jobs.append(job)
            asked[job] = {"ch": ch, "args": args}
        for args in refused:  # a clear error, exit status 2, nothing started
            proc = _jobrun("start", *args)
            assert proc.returncode == 2 and proc.stderr and not proc.stdout, (repr(ch), args)
    # A string the rule refuses gets exit status 2 and starts nothing.
    for bad in (
        [f"--name=x{PAYLOAD}"],
        ["-C", f"/srv{PAYLOAD}"],
        ["--writable", f"/srv\r{PAYLOAD}"],
    ):
        proc = _jobrun("start", *bad, "--", "/bin/true")
        assert proc.returncode == 2 and "InvalidArgument" not in proc.stderr, proc.stderr
    before = {job: _props(unit_name(job)) for job in jobs}
    _reload()
    for job, info in asked.items():
        ch, args = info["ch"], info["args"]
        after = _props(unit_name(job))
        keys = ("Description", "ExecStart", "WorkingDirectory", "ReadWritePaths",
                "EnvironmentFiles", "Environment", "User", "DynamicUser")  # fmt: skip
        for key in keys:
            if key == "ExecStart" and ch in "$;":
                # systemd 252 reads "$" and ";" of ExecStart= arguments back with a backslash
                # before them (docs/DESIGN.md): only a restart would run the changed arguments,
                # and jobs never restart. Every other property is exactly as before.
                continue
            assert after.get(key) == before[job].get(key), (repr(ch), key, args)
        assert after["ExecStopPost"] == [], (repr(ch), args)
        assert after["LoadState"] == "loaded"
        assert after["Description"] == f"jobrun job {job}" + (
            f" ({args[1]})" if args[0] == "--name" else ""
        )
        assert after["Environment"] == [], "-E values must not be in Environment="
        if args[0] == "--":
            assert before[job]["ExecStart"][0][1] == [a.replace("$", "$$") for a in args[1:]]
        if args[0] == "--profile":
            assert after["WorkingDirectory"] == args[3]
            assert after["ReadWritePaths"] == [args[5]]
    # What the job got is exactly what was asked: its argument, its variable.
    for job, info in asked.items():
        args = info["args"]
        if args[0] == "-E":
            want = args[1].partition("=")[2]
            got = wait_for(
                lambda j=job, w=want: (out := journal_output(j)) == w + "\n" and out,  # type: ignore[misc]
                timeout=30,
                what=f"output of {job} ({info['ch']!r})",
            )
            assert got == want + "\n"


@pytest.mark.integration
@pytest.mark.daemon
def test_the_reported_attack_as_a_plain_user_through_jobrund_runs_nothing_as_root(
    jobs: list[str],
) -> None:
    # The exact command line of the outside review, as alice through jobrund.
    proc = _jobrun("start", "--", "/bin/sh", "-c", "sleep 6", PAYLOAD, user="alice")
    env = {**os.environ, "JOBRUN_MODE": "daemon"}
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    jobs.append(job)
    _reload()
    show = systemctl_show(unit_name(job), "ExecStopPost", "Description", "User")
    assert show.get("ExecStopPost", "") == "" and show["Description"] == f"jobrun job {job}"
    subprocess.run([sys.executable, "-m", "jobrun", "stop", job], env=env, check=True,
                   capture_output=True)  # fmt: skip
    assert not MARK.exists()
    # The same through the options that reached unescaped properties: refused by jobrund itself
    # (a raw D-Bus call, not the CLI, which refuses them before asking).
    for options in ({"name": f"x{PAYLOAD}"}, {"workdir": f"/tmp{PAYLOAD}"},
                    {"writable": [f"/tmp\r{PAYLOAD}"]}, {"name": "x\ry"}):  # fmt: skip
        reply = _raw_start_as("alice", ["/bin/true"], options)
        assert reply["error"] == "org.jobrun.Error.InvalidArgument", (options, reply)
    reply = _raw_start_as("alice", ["+touch", str(MARK)], {})
    assert reply["error"] == "org.jobrun.Error.InvalidArgument", reply
