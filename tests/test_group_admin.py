"""An admin setting another user's group (--owner), and [queue] owners_may_set, against the
real systemd through jobrund (carol is a jobrun admin, alice and bob plain users)."""

from __future__ import annotations

import json
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import as_user, systemctl_show, wait_for
from .reliability.common import jobrund_answers

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

CONFIG = Path("/etc/jobrun/jobrund.toml")


def restart_jobrund() -> None:
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)
    wait_for(jobrund_answers, timeout=30, what="jobrund to answer")


@pytest.fixture
def config() -> Iterator[Path]:
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    yield CONFIG
    CONFIG.unlink(missing_ok=True)
    restart_jobrund()


def alice_slice(name: str) -> str:
    return f"jobrun-u{pwd.getpwnam('alice').pw_uid}-g-{name}.slice"


def show(user: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return as_user(user, "group", "show", name, *args, "--json")


def test_admin_sets_another_users_group_and_others_find_nothing() -> None:
    made = as_user("alice", "group", "set", "ga1", "--parallel", "2", "--json")
    assert made.returncode == 0, made.stderr
    proc = as_user("carol", "group", "set", "ga1", "--owner", "alice", "--parallel", "3",
                   "--memory-max", "300M", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    group = json.loads(proc.stdout)[0]
    assert (group["owner"], group["parallel"]) == ("alice", 3)
    assert group["limits"]["memory_max"] == 300 << 20
    wait_for(
        lambda: systemctl_show(alice_slice("ga1"), "MemoryMax")["MemoryMax"] == str(300 << 20),
        what="alice's group slice to take carol's limit",
    )
    assert as_user("carol", "group", "pause", "ga1", "--owner", "alice").returncode == 0
    assert json.loads(show("alice", "ga1").stdout)[0]["paused"] is True
    assert as_user("carol", "group", "resume", "ga1", "--owner", "alice").returncode == 0
    assert json.loads(show("carol", "ga1", "--owner", "alice").stdout)[0]["paused"] is False
    # bob: another user's group is not found, and nothing changes
    for args in (("set", "ga1", "--parallel", "9"), ("pause", "ga1"), ("show", "ga1")):
        proc = as_user("bob", "group", *args, "--owner", "alice")
        assert proc.returncode != 0 and "no group" in proc.stderr.lower(), proc
    assert as_user("bob", "group", "set", "ga1", "--owner", "alice", "--memory-max",
                   "1M").returncode != 0  # fmt: skip
    after = json.loads(show("alice", "ga1").stdout)[0]
    assert (after["parallel"], after["paused"]) == (3, False)
    assert systemctl_show(alice_slice("ga1"), "MemoryMax")["MemoryMax"] == str(300 << 20)


def test_owners_may_set_false_leaves_groups_to_admins(config: Path) -> None:
    config.write_text("[queue]\nowners_may_set = false\n")
    restart_jobrund()
    for args in (("--parallel", "1"), ("--memory-max", "200M")):
        proc = as_user("alice", "group", "set", "ga2", *args)
        assert proc.returncode != 0 and "queue.owners_may_set" in proc.stderr, proc
    assert as_user("alice", "group", "pause", "ga2").returncode != 0
    assert json.loads(as_user("alice", "group", "list", "--json").stdout) == [] or all(
        g["name"] != "ga2" for g in json.loads(as_user("alice", "group", "list", "--json").stdout)
    )
    proc = as_user("carol", "group", "set", "ga2", "--owner", "alice", "--memory-max", "200M")
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: systemctl_show(alice_slice("ga2"), "MemoryMax")["MemoryMax"] == str(200 << 20),
        what="alice's group slice to take carol's limit",
    )
