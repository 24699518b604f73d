"""Issue: what one local user can learn or cause through jobrund, beyond their own jobs.

- another user's -E values (systemd shows Environment= to everyone);
- a user whose name is all digits runs as the UID it spells;
- a request that costs jobrund seconds (a backtracking parser);
- which paths exist where the caller cannot look (jobrund checked -C and --writable as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrun import envfile
from jobrun.errors import InvalidArgument
from jobrun.inputs import MAX_VALUE, parse_size
from jobrun.model import unit_name
from jobrun.properties import build_spec

from ..helpers import as_user_cmd, journal_output, systemctl_show, wait_for
from .common import jobrun, raw_start_as


def _wait_state(job: str, user: str) -> dict[str, object]:
    import json

    def done() -> dict[str, object]:
        proc = jobrun("status", job, "--json", user=user)
        assert proc.returncode == 0, proc.stderr
        data: dict[str, object] = json.loads(proc.stdout)
        return data if data["state"] != "running" else {}

    return wait_for(done, timeout=30, what=f"job {job} to end")


# -- item 2: -E values are readable by the job only ---------------------------------------------


@pytest.mark.integration
@pytest.mark.daemon
def test_another_user_cannot_read_a_jobs_environment_values() -> None:
    secret = "s3cret-t0ken-ä"
    proc = jobrun("start", "-E", f"TOKEN={secret}", "--", "/bin/sh", "-c",
                  'printenv TOKEN\nsleep 600', user="alice")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    try:
        # The job has it.
        wait_for(lambda: journal_output(job) == secret + "\n", timeout=30, what="the job's output")
        # bob, through systemd's own API (world-readable properties), sees no value.
        shown = subprocess.run(
            as_user_cmd("bob", "systemctl", "show", unit_name(job)),
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert secret not in shown
        assert "EnvironmentFiles=" in shown
        # nor in the file PID 1 read it from.
        path = Path(envfile.path(job))
        assert path.stat().st_uid == 0 and path.stat().st_mode & 0o077 == 0
        cat = subprocess.run(as_user_cmd("bob", "cat", str(path)), capture_output=True, text=True)
        assert cat.returncode != 0 and secret not in cat.stdout
        assert jobrun("status", job, user="bob").returncode == 3  # "no job", as for none
    finally:
        assert jobrun("stop", job, user="alice").returncode == 0
    # Once the job has ended, the file is gone.
    _wait_state(job, "alice")
    assert not Path(envfile.path(job)).exists()


# -- item 3: User= is the caller's UID, whatever their name ---------------------------------------


@pytest.fixture
def digits_user() -> Iterator[tuple[str, int]]:
    name = "1003"
    subprocess.run(["useradd", "--badname", "--no-create-home", "--user-group", name], check=True)
    uid = int(subprocess.check_output(["id", "-u", name]))
    assert uid != int(name)
    yield name, uid
    subprocess.run(["userdel", name], check=False)


@pytest.mark.integration
@pytest.mark.daemon
def test_a_user_named_with_digits_runs_as_their_own_uid(digits_user: tuple[str, int]) -> None:
    name, uid = digits_user
    proc = jobrun("start", "--", "/usr/bin/id", "-u", user=name)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    wait_for(lambda: journal_output(job).strip(), timeout=30, what="the job's output")
    assert journal_output(job).strip() == str(uid)
    assert systemctl_show(unit_name(job), "User")["User"] in ("", str(uid))


# -- item 4: bounded input, parsed in linear time -------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "text",
    [
        "1" + " " * (MAX_VALUE - 2) + "x",  # the worst case of the old regular expression
        "1" * MAX_VALUE,
        "1." + "1" * (MAX_VALUE - 3) + "Q",
        " " * MAX_VALUE,
    ],
)
def test_a_size_of_the_maximum_length_costs_microseconds_not_seconds(text: str) -> None:
    t0 = time.perf_counter()
    for _ in range(100):
        with pytest.raises(InvalidArgument):
            parse_size(text, "--memory-max")
    # 100 worst cases; the old parser took 8.7 s for one (30,000 spaces) on this machine.
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.unit
@pytest.mark.parametrize(
    "values",
    [
        {"memory_max": "1" + " " * 30000 + "x"},
        {"cpu_quota": "1" * 100_000},
        {"cpu_affinity": "0," * 50_000},
        {"stop_timeout": "1" * 100_000},
        {"profile": "x" * 100_000},
        {"workdir": "/" + "a" * 100_000},
        {"env": ["A=" + "x" * 200_000]},
        {"env": [f"A{i}=x" for i in range(5000)]},
        {"writable": ["/usr"] * 100_000},
    ],
)
def test_every_oversized_value_is_refused_before_it_is_parsed(values: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    with pytest.raises(InvalidArgument):
        build_spec(["/bin/true"], **values)
    assert time.perf_counter() - t0 < 0.2


@pytest.mark.integration
@pytest.mark.daemon
def test_the_worst_case_request_over_dbus_is_answered_at_once() -> None:
    t0 = time.monotonic()
    reply = raw_start_as("alice", ["/bin/true"], {"memory_max": "1" + " " * 30000 + "x"})
    elapsed = time.monotonic() - t0
    assert reply["error"] == "org.jobrun.Error.InvalidArgument"
    assert elapsed < 5  # a whole interpreter start included; the old parser alone took 8.7 s


# -- item 6: no answer depends on what root can see -----------------------------------------------


@pytest.fixture
def hidden() -> Iterator[Path]:
    d = Path("/srv/jobrun-hidden")
    (d / "exists").mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree("/srv/jobrun-open", ignore_errors=True)


@pytest.mark.integration
@pytest.mark.daemon
@pytest.mark.parametrize("option", ["workdir", "writable"])
def test_a_user_learns_nothing_about_paths_they_cannot_see(hidden: Path, option: str) -> None:
    answers = []
    for path in (hidden / "exists", hidden / "missing"):
        value: object = [str(path)] if option == "writable" else str(path)
        reply = raw_start_as("alice", ["/bin/true"], {option: value, "profile": "relaxed"})
        assert "job" in reply, reply  # jobrund does not look: the same answer for both
        job = str(reply["job"]["id"])
        final = _wait_state(job, "alice")
        answers.append((final["state"], str(final["reason"]).replace(str(path), "PATH")))
    assert answers[0] == answers[1]
    assert answers[0][0] == "failed"
    # A path the user can reach works, and a missing one is named clearly.
    reply = raw_start_as("alice", ["/bin/true"], {option: "/srv/jobrun-missing-path"} if option
                         == "workdir" else {option: ["/srv/jobrun-missing-path"]})  # fmt: skip
    job = str(reply["job"]["id"])
    reason = str(_wait_state(job, "alice")["reason"])
    assert ("working directory" in reason) if option == "workdir" else ("--writable" in reason)
    Path("/srv/jobrun-open").mkdir(exist_ok=True)
    os.chmod("/srv/jobrun-open", 0o777)
    value2: object = ["/srv/jobrun-open"] if option == "writable" else "/srv/jobrun-open"
    reply = raw_start_as("alice", ["/bin/true"], {option: value2})
    job = str(reply["job"]["id"])
    assert _wait_state(job, "alice")["state"] == "succeeded"
