"""A job runs in the caller's current directory; what it sees of the home directories.

As a user would: alice (through jobrund) and root (in-process and through jobrund) in a project
directory under a home, with bob's home beside it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .homes import jobrun_in, make, mkdir, scratch_homes

pytestmark = [pytest.mark.integration, pytest.mark.daemon]


@pytest.fixture
def homes() -> Iterator[dict[str, Path]]:
    with scratch_homes("alice", "bob") as homes:
        alice, bob = homes["alice"], homes["bob"]
        make(alice / "notes", "alice's notes\n", "alice")
        mkdir(alice / "proj", "alice")
        make(alice / "proj" / "input", "input\n", "alice")
        make(bob / "secret", "bob's secret\n", "bob")  # 0644 in a 0755 home: alice may read it
        (alice / "link").symlink_to(bob)
        yield homes


SCRIPT = (
    "pwd; cat input; cat ../notes; echo built > out && echo wrote-out; "
    "{{ echo x > ../x; }} 2>/dev/null || echo home-read-only; "
    "cat {bob}/secret 2>/dev/null || echo no-bob; cat ../link/secret 2>/dev/null || echo no-link; "
    "ls /root 2>/dev/null | wc -l"
)


def test_a_users_job_works_in_their_current_directory_and_sees_only_their_home(
    homes: dict[str, Path],
) -> None:
    alice, bob = homes["alice"], homes["bob"]
    proc = jobrun_in(alice / "proj", "alice", "run", "--", "sh", "-c", SCRIPT.format(bob=bob))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n") == [
        str(alice / "proj"),
        "input",
        "alice's notes",
        "wrote-out",
        "home-read-only",
        "no-bob",
        "no-link",
        "0",
        "",
    ]
    assert (alice / "proj" / "out").read_text() == "built\n"
    assert (alice / "proj" / "out").stat().st_uid == (alice / "proj").stat().st_uid
    assert not (alice / "x").exists()


def test_a_user_cannot_work_in_another_users_home(homes: dict[str, Path]) -> None:
    before = jobrun_in("/", "alice", "list", "--json")
    assert before.returncode == 0, before.stderr
    for args in (["-C", str(homes["bob"])], ["--writable", str(homes["bob"])]):
        proc = jobrun_in(homes["alice"], "alice", "start", *args, "--", "true")
        assert proc.returncode == 2, proc.stderr
        assert "other than yours" in proc.stderr and "Traceback" not in proc.stderr
    proc = jobrun_in(homes["bob"], "alice", "start", "--", "true")  # bob's home as the cwd
    assert proc.returncode == 2 and "other than yours" in proc.stderr, proc.stderr
    after = jobrun_in("/", "alice", "list", "--json")
    assert json.loads(after.stdout) == json.loads(before.stdout)  # nothing was started


@pytest.mark.parametrize("mode", ["local", "daemon"])
def test_a_root_job_reads_its_working_directory_in_a_home(
    homes: dict[str, Path], mode: str
) -> None:
    alice, bob = homes["alice"], homes["bob"]
    proc = jobrun_in(alice / "proj", "root", "run", "--", "sh", "-c", SCRIPT.format(bob=bob),
                     mode=mode)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # A dynamic UID: it reads what others may, writes nothing there, sees no other home.
    assert proc.stdout.split("\n")[:2] == [str(alice / "proj"), "input"]
    assert "wrote-out" not in proc.stdout and "no-bob" in proc.stdout
    assert not (alice / "proj" / "out").exists()


@pytest.mark.parametrize("mode", ["local", "daemon"])
def test_a_root_job_in_a_directory_closed_to_others_is_refused_before_it_starts(
    homes: dict[str, Path], mode: str
) -> None:
    closed = mkdir(homes["alice"] / "closed", "alice", mode=0o700)
    proc = jobrun_in(closed, "root", "start", "--", "true", mode=mode)
    assert proc.returncode == 2, proc.stderr
    assert f"{closed} is closed to others" in proc.stderr
    assert "--profile relaxed" in proc.stderr and "chmod o+x" in proc.stderr
    relaxed = jobrun_in(closed, "root", "run", "--profile", "relaxed", "--", "sh", "-c",
                        "pwd; id -u; echo ok > out", mode=mode)  # fmt: skip
    assert relaxed.returncode == 0, relaxed.stderr
    assert relaxed.stdout == f"{closed}\n0\n"
    assert (closed / "out").read_text() == "ok\n"


def test_a_job_runs_in_the_current_directory_outside_homes_too(tmp_path: Path) -> None:
    # /tmp is private to a job: a working directory there is refused, saying what to do.
    proc = jobrun_in(tmp_path, "root", "start", "--", "true", mode="local")
    assert proc.returncode == 2
    assert "private /tmp" in proc.stderr and "-C" in proc.stderr
    proc = jobrun_in("/usr/share", "root", "run", "--", "pwd", mode="local")
    assert (proc.returncode, proc.stdout) == (0, "/usr/share\n"), proc.stderr
    proc = jobrun_in("/usr/share", "alice", "run", "-C", "/etc", "--", "pwd")
    assert (proc.returncode, proc.stdout) == (0, "/etc\n"), proc.stderr
