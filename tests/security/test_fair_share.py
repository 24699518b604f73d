"""Fair share between users (issue 15, item 7): slices of their own, default caps, and jobrund's
request and stream bounds per user, so one user at their limit leaves the others untouched.

Each user's jobs run in jobrun-u<UID>.slice under jobrun.slice, with the aggregate limits of
/etc/jobrun/jobrund.toml (`slice_*` keys) or the built-in ones. alice floods jobrund with
thousands of pending calls and holds more log streams than her share; bob's calls meanwhile are
answered, never Busy, about as fast as without her.
"""

from __future__ import annotations

import asyncio
import json
import pwd
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType

from jobrun import dbus_api as api
from jobrun.config import BUILTIN_LIMITS, Config
from jobrun.daemon import fairshare as daemon_module
from jobrun.daemon.dbus import Daemon
from jobrun.manager import Caller

from ..helpers import as_user, as_user_cmd, start_as, systemctl_show, wait_for
from ..test_daemon import CONFIG, restart_jobrund
from ..test_daemon import config as config
from ..test_daemon_bounds import FakeBus, settle

FLOOD = Path(__file__).with_name("flood.py")


def uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def slice_of(user: str) -> str:
    return f"jobrun-u{uid(user)}.slice"


def run_as(user: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        as_user_cmd(user, sys.executable, str(FLOOD), *args),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd="/", **kw,
    )  # fmt: skip


def cgroup_file(controller: str, user: str, name: str) -> str:
    return Path(f"/sys/fs/cgroup/{controller}/jobrun.slice/{slice_of(user)}/{name}").read_text()


@pytest.mark.integration
@pytest.mark.daemon
def test_each_users_jobs_run_in_a_slice_of_their_own_with_the_admins_limits(
    config: Path,
) -> None:
    config.write_text(
        '[users.alice]\nslice_memory_max = "300M"\nslice_tasks_max = 50\nslice_cpu_weight = 50\n'
    )
    restart_jobrund()
    # alice's two jobs try to hold 30 tasks each; her slice allows 50 for all of her jobs
    # together. (bash: dash exits when a fork fails.)
    hold = "for i in $(seq 30); do sleep 300 & done 2>/dev/null; wait"
    alice = start_as("alice", "--", "bash", "-c", hold)
    alice2 = start_as("alice", "--", "bash", "-c", hold)
    bob = start_as("bob", "--", "sleep", "300")
    root = start_as("root", "--", "sleep", "300")
    for job, user in ((alice, "alice"), (alice2, "alice"), (bob, "bob"), (root, "root")):
        unit = f"jobrun-{job}.service"

        def running(u: str = unit) -> dict[str, str] | None:
            s = systemctl_show(u, "Slice", "ControlGroup")
            return s if s["ControlGroup"] else None

        show = wait_for(running, what=f"{user}'s job to run")
        assert show["Slice"] == slice_of(user)
        assert show["ControlGroup"] == f"/jobrun.slice/{slice_of(user)}/jobrun-{job}.service"
    assert systemctl_show(slice_of("alice"), "MemoryMax", "TasksMax", "CPUWeight") == {
        "MemoryMax": str(300 << 20),
        "TasksMax": "50",
        "CPUWeight": "50",
    }
    assert cgroup_file("memory", "alice", "memory.limit_in_bytes").strip() == str(300 << 20)
    assert cgroup_file("pids", "alice", "pids.max").strip() == "50"
    assert cgroup_file("cpu", "alice", "cpu.shares").strip() == str(50 * 1024 // 100)
    # 62 tasks asked for (two shells and their 60 sleeps), 50 given.
    wait_for(lambda: int(cgroup_file("pids", "alice", "pids.current")) == 50,
             what="alice's jobs to hold all the tasks of her slice")  # fmt: skip
    refused = [
        int(Path(f"/sys/fs/cgroup/pids/jobrun.slice/{slice_of('alice')}/jobrun-{j}.service/"
                 "pids.events").read_text().split()[1])
        for j in (alice, alice2)
    ]  # fmt: skip
    assert sum(refused) > 0
    # bob has the built-in limits; root's slice is left as it is.
    builtin = BUILTIN_LIMITS.slice
    assert systemctl_show(slice_of("bob"), "MemoryMax", "TasksMax") == {
        "MemoryMax": str(builtin["memory_max"]),
        "TasksMax": str(builtin["tasks_max"]),
    }
    assert systemctl_show("jobrun-u0.slice", "TasksMax")["TasksMax"] != str(builtin["tasks_max"])
    # Without alice's entry, her next job's slice has the built-in limits again.
    for job in (alice, alice2, bob, root):
        assert as_user("root", "stop", job).returncode == 0
    CONFIG.unlink()
    restart_jobrund()
    again = start_as("alice", "--", "sleep", "300")
    assert systemctl_show(slice_of("alice"), "MemoryMax", "TasksMax", "CPUWeight") == {
        "MemoryMax": str(builtin["memory_max"]),
        "TasksMax": str(builtin["tasks_max"]),
        "CPUWeight": "[not set]",
    }
    assert as_user("root", "stop", again).returncode == 0


def probe(user: str, n: int) -> dict[str, Any]:
    proc = run_as(user, "probe", str(n))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[-1]


def summary(latencies: list[float]) -> list[float]:
    return [
        round(1000 * x, 1) for x in (statistics.median(latencies), p95(latencies), max(latencies))
    ]


@pytest.mark.integration
@pytest.mark.daemon
def test_one_user_flooding_jobrund_leaves_the_others_latency_untouched() -> None:
    probe("bob", 20)  # jobrund up, polkitd warm
    quiet = probe("bob", 100)
    # 40 connections × 60 calls pending: 2,400 at once, far past alice's share.
    flood = run_as("alice", "flood", "20", "40", "60")
    assert flood.stdout is not None
    assert flood.stdout.readline().strip() == "flooding", flood.communicate()[1]
    loud = probe("bob", 100)
    # On a queue shared by all, bob's first call waited 9.1 s behind alice's 2,400.
    assert flood.poll() is None, (
        f"alice's flood ended before bob's calls: {summary(loud['latencies'])}"
    )
    out, err = flood.communicate(timeout=120)
    assert flood.returncode == 0, err
    alice = json.loads(out.splitlines()[-1])
    report = {
        "bob p50/p95/max quiet (ms)": summary(quiet["latencies"]),
        "bob p50/p95/max during alice's flood (ms)": summary(loud["latencies"]),
        "alice's answers": alice,
    }
    print(json.dumps(report))
    assert quiet["errors"] == [] and loud["errors"] == [], report
    assert alice.get("org.jobrun.Error.Busy", 0) > 0 and alice.get("ok", 0) > 0, report
    assert p95(loud["latencies"]) < 0.5, report  # generous: a 2-core machine shared by others


@pytest.mark.integration
@pytest.mark.daemon
def test_a_user_holds_at_most_her_share_of_log_streams() -> None:
    share = daemon_module.PER_UID_STREAMS
    job = start_as("alice", "--", "sleep", "300")
    bob_job = start_as("bob", "--", "sleep", "300")
    alice = run_as("alice", "streams", job, str(share + 10))
    assert alice.stdout is not None and alice.stdin is not None
    counts = json.loads(alice.stdout.readline())
    assert counts == {"ok": share, "org.jobrun.Error.Busy": 10}, counts
    bob = run_as("bob", "streams", bob_job, "5")
    assert bob.stdout is not None
    assert json.loads(bob.stdout.readline()) == {"ok": 5}
    for proc in (alice, bob):
        proc.communicate("\n", timeout=60)
    for j in (job, bob_job):
        assert as_user("root", "stop", j).returncode == 0


# -- the dispatcher's turns, exactly (in-process, a fake bus, work held at a gate) ------------


def whoami(sender: str, serial: int) -> Message:
    return Message(
        destination=api.BUS_NAME,
        path=api.PATH,
        interface=api.INTERFACE,
        member="Whoami",
        serial=serial,
        sender=sender,
    )


async def test_workers_serve_users_in_turn_and_each_user_within_a_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon_module, "MAX_ACTIVE", 4)
    monkeypatch.setattr(daemon_module, "PER_UID_ACTIVE", 2)
    monkeypatch.setattr(daemon_module, "PER_UID_QUEUED", 10)
    bus = FakeBus()
    daemon = Daemon(bus, None, Config())  # type: ignore[arg-type]
    gate = asyncio.Event()
    served: list[str] = []
    asked: list[str] = []

    async def uid_of(sender: str) -> int:
        asked.append(sender)
        return {":1.a1": 1001, ":1.a2": 1001, ":1.b": 1002}[sender]

    async def caller(msg: Message, verb: str, interactive: bool) -> Caller:
        return Caller(0, "root", admin=True)

    async def handler(msg: Message, caller: Caller) -> list[Any]:
        served.append(f"{msg.sender}#{msg.serial}")
        await gate.wait()
        return ["x", False]

    monkeypatch.setattr(daemon, "_uid_of", uid_of)
    monkeypatch.setattr(daemon, "_caller", caller)
    daemon._handlers["Whoami"] = handler
    # alice sends 30 calls over two connections (one user), then bob 3.
    for n in range(15):
        daemon.on_message(whoami(":1.a1", 100 + n))
        daemon.on_message(whoami(":1.a2", 200 + n))
    await settle()
    for n in range(3):
        daemon.on_message(whoami(":1.b", 300 + n))
    await settle()
    assert sorted(asked) == [":1.a1", ":1.a2", ":1.b"]  # once per connection
    busy = [m.reply_serial for m in bus.sent if m.error_name == "org.jobrun.Error.Busy"]
    assert len(busy) == 20 and min(busy) >= 100 and max(busy) < 300  # alice's share: 10
    # alice has 2 workers (her share), bob 2 at once although alice was first.
    assert sorted(s[:5] for s in served) == [":1.a1", ":1.a1", ":1.b#", ":1.b#"]
    served.clear()
    gate.set()
    async with asyncio.timeout(5):
        while daemon._tasks:
            await asyncio.gather(*daemon._tasks)
    answered = [m.reply_serial for m in bus.sent if m.message_type == MessageType.METHOD_RETURN]
    assert len(answered) == 13
    assert (daemon._workers, daemon._waiting, daemon._held, dict(daemon._active)) == (0, {}, {}, {})


async def test_the_uid_is_asked_once_per_connection_and_a_failure_answers_its_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = FakeBus()
    daemon = Daemon(bus, None, Config())  # type: ignore[arg-type]
    release = asyncio.Event()
    asked = 0

    async def no_answer(sender: str) -> int | None:
        nonlocal asked
        asked += 1
        await release.wait()
        return None

    monkeypatch.setattr(daemon, "_uid_of", no_answer)
    for n in range(5):
        daemon.on_message(whoami(":1.x", n + 1))
    await settle()
    assert asked == 1 and daemon._unknown_held == 5
    release.set()
    await settle()
    errors = [m.error_name for m in bus.sent]
    assert errors == ["org.jobrun.Error.PermissionDenied"] * 5
    assert (daemon._unknown_held, daemon._unknown, daemon._queued) == (0, {}, 0)
