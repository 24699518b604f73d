"""jobrund: multi-user jobs on the system bus, with a real polkitd and real users.

alice and bob are plain users, carol is in jobrun-admin (tests/install.py creates them inside
the sandbox). Every verb × (own job, another's job) × (alice, carol, root) is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType

from jobrun import dbus_api as api
from jobrun.bus import connect_system_bus

from .helpers import (
    as_user,
    dbus_call_as,
    inotify_instances,
    options_code,
    start_as,
    status_as,
    systemctl_show,
    wait_for,
    wait_for_async,
)

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

CONFIG = Path("/etc/jobrun/jobrund.toml")


def restart_jobrund() -> None:
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)


@pytest.fixture
def config() -> Iterator[Path]:
    """Write jobrund's config for one test, restart jobrund to load it, and remove it after."""
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    yield CONFIG
    CONFIG.unlink(missing_ok=True)
    restart_jobrund()


def test_bus_activation_from_cold_and_introspection() -> None:
    subprocess.run(["systemctl", "stop", "jobrund.service"], check=True)
    assert systemctl_show("jobrund.service", "ActiveState")["ActiveState"] == "inactive"
    proc = as_user("alice", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert systemctl_show("jobrund.service", "ActiveState")["ActiveState"] == "active"
    out = subprocess.run(
        ["busctl", "introspect", api.BUS_NAME, api.PATH], capture_output=True, text=True, check=True
    ).stdout
    for member in api.METHODS:
        assert f".{member}" in out
    assert ".JobChanged" in out


def test_a_users_job_runs_as_that_user() -> None:
    job = start_as("alice", "--", "sh", "-c", "id -un; id -u; sleep 1")
    unit = f"jobrun-{job}.service"
    # As a UID: systemd would read an all-digit user name as one (tests/security).
    alice_uid = subprocess.check_output(["id", "-u", "alice"], text=True).strip()
    assert systemctl_show(unit, "User")["User"] == alice_uid
    done = wait_for(
        lambda: (s := status_as("alice", job))["state"] != "running" and s, what="the job to end"
    )
    assert done["state"] == "succeeded" and done["owner"] == "alice"
    out = subprocess.run(
        ["journalctl", "--namespace=jobrun", "-o", "cat", f"JOBRUN_JOB={job}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.split() == ["alice", str(int(subprocess.check_output(["id", "-u", "alice"])))]


@pytest.mark.parametrize("verb", ["status", "logs", "stop"])
def test_every_verb_own_and_others_for_alice_carol_root(verb: str) -> None:
    for who, whose, allowed in [
        ("alice", "alice", True),
        ("alice", "bob", False),
        ("carol", "bob", True),
        ("carol", "carol", True),
        ("root", "bob", True),
        ("root", "alice", True),
    ]:
        job = start_as(whose, "--", "sleep", "60")
        proc = as_user(who, verb, job)
        if allowed:
            assert proc.returncode == 0, (who, whose, proc.stderr)
        else:
            # Not "permission denied": another user's job must look like no job at all.
            assert proc.returncode == 3, (who, whose, proc.stderr)
            assert f"no job {job}" in proc.stderr
            unknown = as_user(who, verb, "0" * 10)
            assert unknown.stderr.replace("0" * 10, job) == proc.stderr
        state = status_as("root", job)["state"]
        assert state == ("stopped" if verb == "stop" and allowed else "running")
        as_user("root", "stop", job)


def test_list_shows_own_jobs_to_users_and_all_to_admins() -> None:
    a = start_as("alice", "--", "sleep", "60")
    b = start_as("bob", "--", "sleep", "60")
    seen = {}
    for who in ("alice", "bob", "carol", "root"):
        proc = as_user(who, "list", "--json", "--all")
        assert proc.returncode == 0, proc.stderr
        seen[who] = {j["id"] for j in json.loads(proc.stdout)}
    assert a in seen["alice"] and b not in seen["alice"]
    assert b in seen["bob"] and a not in seen["bob"]
    assert {a, b} <= seen["carol"] and {a, b} <= seen["root"]
    assert all(j["owner"] == "alice" for j in json.loads(as_user("alice", "list", "--json").stdout))
    for job in (a, b):
        as_user("root", "stop", job)


def test_prefix_of_another_users_job_is_not_found() -> None:
    b = start_as("bob", "--", "sleep", "60")
    proc = as_user("alice", "status", b[:6])
    assert proc.returncode == 3
    as_user("root", "stop", b)


async def _call_as(user: str, member: str, body: list[Any]) -> tuple[str | None, list[Any]]:
    """dbus_call_as with `body` as values; a dictionary second in it is options, each a string."""
    code = repr(body)
    if len(body) == 2 and isinstance(body[1], dict):
        code = f"[{body[0]!r}, {options_code(body[1])}]"
    return await asyncio.to_thread(dbus_call_as, user, member, code)


@pytest.mark.parametrize(
    "options",
    [{"user": "root"}, {"User": "root"}, {"DynamicUser": "no"}, {"ExecStart": "/bin/sh"},
     {"DeviceAllow": "/dev/sda rw"}, {"PrivateDevices": "no"}],
)  # fmt: skip
async def test_alice_cannot_choose_user_or_any_raw_property(options: dict[str, str]) -> None:
    before = _job_units()
    err, body = await _call_as("alice", "Start", [["id"], options])
    assert err == "org.jobrun.Error.InvalidArgument", (err, body)
    assert "unknown setting" in body[0]
    assert _job_units() == before


def _job_units() -> set[str]:
    out = subprocess.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "jobrun-*.service"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_caps_from_the_admins_config_are_enforced(config: Path) -> None:
    config.write_text(
        "[limits]\n"
        'memory_max = "512M"\n'
        "running_jobs = 3\n"
        "network = false\n"
        "[users.alice]\n"
        "running_jobs = 2\n"
    )
    restart_jobrund()
    too_big = as_user("alice", "start", "--memory-max", "1G", "--", "true")
    assert too_big.returncode == 4 and "above the most allowed" in too_big.stderr
    net = as_user("alice", "start", "--network", "--", "true")
    assert net.returncode == 4 and "--network" in net.stderr
    a = start_as("alice", "--", "sleep", "60")
    # A cap is also the value of a job that asks for nothing.
    assert systemctl_show(f"jobrun-{a}.service", "MemoryMax")["MemoryMax"] == str(512 << 20)
    b = start_as("alice", "--memory-max", "100M", "--", "sleep", "60")
    third = as_user("alice", "start", "--", "sleep", "60")
    assert third.returncode == 4 and "running jobs" in third.stderr
    # bob has the general cap of 3; carol (admin) and root have none.
    assert as_user("carol", "start", "--memory-max", "2G", "--", "true").returncode == 0
    assert as_user("root", "start", "--network", "--", "true").returncode == 0
    # Nor the value a cap gives a job that asks for nothing (jobrund asks polkit whether she is
    # an admin where the caps would change her job: admission.admit_start).
    c = start_as("carol", "--", "sleep", "60")
    assert systemctl_show(f"jobrun-{c}.service", "MemoryMax")["MemoryMax"] == "infinity"
    for job in (a, b, c):
        as_user("root", "stop", job)


def test_caps_of_a_group_reach_its_members() -> None:
    """[groups.NAME] applies to the group's members, by their primary group or another."""
    from jobrun.config import BUILTIN_LIMITS, Caps, Config

    config = Config(groups={"jobrun-admin": Caps(running_jobs=1), "bob": Caps(running_jobs=2)})
    assert config.caps_for("carol").running_jobs == 1  # jobrun-admin: another group of hers
    assert config.caps_for("bob").running_jobs == 2  # his own group
    assert config.caps_for("alice").running_jobs == BUILTIN_LIMITS.running_jobs


def test_bad_config_keeps_jobrund_from_starting_with_a_clear_log(config: Path) -> None:
    config.write_text('[limits]\nmemory_max = "lots"\n')
    subprocess.run(["systemctl", "restart", "jobrund.service"])
    log = subprocess.run(
        ["journalctl", "-u", "jobrund.service", "-o", "cat", "-n", "20", "--no-pager"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert "--memory-max must be a size" in log


def test_kill_9_of_jobrund_loses_nothing() -> None:
    job = start_as("alice", "--", "sh", "-c", "echo before; sleep 3; echo after")
    pid = systemctl_show("jobrund.service", "MainPID")["MainPID"]
    subprocess.run(["kill", "-9", pid], check=True)
    # The job is its own unit: it keeps running.
    assert systemctl_show(f"jobrun-{job}.service", "ActiveState")["ActiveState"] == "activating"
    # jobrund comes back (restart or bus activation) and answers at once.
    assert status_as("alice", job)["state"] == "running"
    assert systemctl_show("jobrund.service", "MainPID")["MainPID"] != pid
    proc = as_user("alice", "run", "--", "sh", "-c", "exit 4")
    assert proc.returncode == 4
    done = wait_for(
        lambda: (s := status_as("alice", job))["state"] != "running" and s,
        timeout=20,
        what="the job to end",
    )
    assert done["state"] == "succeeded"


def test_run_through_jobrund_exits_with_the_jobs_status() -> None:
    assert as_user("bob", "run", "--", "sh", "-c", "exit 9").returncode == 9
    assert as_user("bob", "run", "--", "true").returncode == 0


async def test_job_changed_signals_go_only_to_those_who_may_see_the_job() -> None:
    """bob, subscribed, hears nothing of alice's job; alice hears it end."""
    listener = (
        "import asyncio, sys\n"
        "from dbus_fast import Message, MessageType\n"
        "from jobrun.bus import connect_system_bus\n"
        "from jobrun import dbus_api as api\n"
        "async def main():\n"
        "    bus = await connect_system_bus()\n"
        "    def h(m):\n"
        "        if m.member == 'JobChanged':\n"
        "            print(*m.body, flush=True)\n"
        "    bus.add_message_handler(h)\n"
        "    await bus.call(Message(destination=api.BUS_NAME, path=api.PATH, "
        "interface=api.INTERFACE, member='Subscribe'))\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(float(sys.argv[1]))\n"
        "asyncio.run(main())\n"
    )
    procs: dict[str, asyncio.subprocess.Process] = {}
    for user in ("alice", "bob"):
        proc = procs[user] = await asyncio.create_subprocess_exec(
            "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
            sys.executable, "-c", listener, "4", stdout=subprocess.PIPE, cwd="/",
        )  # fmt: skip
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready"
    job = await asyncio.to_thread(start_as, "alice", "--", "sh", "-c", "sleep 0.5")
    outs = {u: (await p.communicate())[0].decode() for u, p in procs.items()}
    assert f"{job} succeeded" in outs["alice"]
    assert job not in outs["bob"]


async def test_two_thousand_concurrent_calls_leave_jobrund_answering() -> None:
    bus_count, per_bus = 20, 100
    buses = [await connect_system_bus() for _ in range(bus_count)]
    try:

        async def one(bus: Any) -> str:
            r = await bus.call(
                Message(
                    destination=api.BUS_NAME,
                    path=api.PATH,
                    interface=api.INTERFACE,
                    member="List",
                    signature="b",
                    body=[False],
                )
            )
            return "ok" if r.message_type == MessageType.METHOD_RETURN else str(r.error_name)

        # jobrund up first: a burst at a service still being activated is refused by dbus-daemon
        # itself (LimitsExceeded) before jobrund sees any of it.
        assert await one(buses[0]) == "ok"
        results = await asyncio.gather(*(one(b) for b in buses for _ in range(per_bus)))
    finally:
        for b in buses:
            b.disconnect()
    counts = {r: results.count(r) for r in set(results)}
    print(f"2000 concurrent List calls: {counts}")
    assert sum(counts.values()) == 2000
    # Every call got an answer; the ones over the bound get a clear Busy, nothing else.
    assert set(counts) <= {"ok", "org.jobrun.Error.Busy"}
    assert counts.get("ok", 0) >= 1000
    bus = await connect_system_bus()
    r = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="NameHasOwner",
            signature="s",
            body=[api.BUS_NAME],
        )
    )
    assert r.body == [True]
    pid_before = systemctl_show("jobrund.service", "MainPID")["MainPID"]
    assert as_user("root", "list", "--json").returncode == 0
    assert systemctl_show("jobrund.service", "MainPID")["MainPID"] == pid_before
    bus.disconnect()


def test_doctor_says_which_mode_and_checks_the_host() -> None:
    proc = as_user("alice", "doctor", env={"JOBRUN_MODE": "auto"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mode: jobrund" in proc.stdout
    for name in ("PID 1", "systemd: version", "jobrund", "cgroups", "journal namespace", "polkit"):
        assert name in proc.stdout
    assert "FAIL" not in proc.stdout
    local = as_user("root", "doctor", env={"JOBRUN_MODE": "local"})
    assert "mode: in-process (root)" in local.stdout
    alone = as_user("alice", "doctor", env={"JOBRUN_MODE": "local"})
    assert alone.returncode == 1 and "mode: unavailable" in alone.stdout


def test_output_only_for_who_may_see_the_job() -> None:
    job = start_as("alice", "--", "sh", "-c", "echo secret-of-alice")
    wait_for(lambda: status_as("alice", job)["state"] == "succeeded", what="the job to succeed")
    assert as_user("alice", "logs", job).stdout == "secret-of-alice\n"
    assert as_user("carol", "logs", job).stdout == "secret-of-alice\n"
    bob = as_user("bob", "logs", job)
    assert bob.returncode == 3 and bob.stdout == "" and f"no job {job}" in bob.stderr


def test_follower_resumes_across_kill_9_of_jobrund_without_gap_or_duplicate() -> None:
    job = start_as(
        "alice",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo n$i; sleep 0.01; done",
    )
    env = {k: v for k, v in os.environ.items() if k != "JOBRUN_STATE_DIR"}
    env["JOBRUN_MODE"] = "daemon"
    follower = subprocess.Popen(
        ["setpriv", "--reuid=alice", "--regid=alice", "--init-groups",
         sys.executable, "-m", "jobrun", "logs", "--follow", job],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd="/",
    )  # fmt: skip
    assert follower.stdout is not None
    first = follower.stdout.readline()
    assert first == b"n1\n"
    kills = 0
    for _ in range(2):  # twice, mid-stream
        pid = systemctl_show("jobrund.service", "MainPID")["MainPID"]
        subprocess.run(["kill", "-9", pid], check=True)
        kills += 1

        def restarted(p: str = pid) -> bool:
            return systemctl_show("jobrund.service", "MainPID")["MainPID"] not in (p, "0")

        wait_for(restarted, timeout=20, what="jobrund to be restarted")
    # read() on the same buffered reader: communicate() would skip what readline() buffered
    rest = follower.stdout.read()
    follower.wait(timeout=60)
    assert follower.stderr is not None
    err = follower.stderr.read()
    follower.stdout.close()
    follower.stderr.close()
    lines = (first + rest).decode().split()
    assert follower.returncode == 0, err
    assert lines == [f"n{i}" for i in range(1, 401)], (len(lines), kills)


async def test_two_followers_through_jobrund_get_everything() -> None:
    job = start_as("bob", "--", "sh", "-c", "seq 20000; sleep 0.5; seq 20001 40000")

    async def follow() -> bytes:
        env = {k: v for k, v in os.environ.items() if k != "JOBRUN_STATE_DIR"}
        env["JOBRUN_MODE"] = "daemon"
        p = await asyncio.create_subprocess_exec(
            "setpriv", "--reuid=bob", "--regid=bob", "--init-groups",
            sys.executable, "-m", "jobrun", "logs", "-f", job,
            stdout=subprocess.PIPE, env=env, cwd="/",
        )  # fmt: skip
        out, _ = await p.communicate()
        assert p.returncode == 0
        return out

    a, b = await asyncio.gather(follow(), follow())
    want = "".join(f"{i}\n" for i in range(1, 40001)).encode()
    assert a == want and b == want


async def test_followers_through_jobrund_catching_up_across_a_rotation_get_everything(
    tmp_path: Path,
) -> None:
    # Two `jobrun logs -f` of a 200,000-line flood lost the same range of lines, silently: they
    # had fallen behind jobrund's buffer (20,000 records) and were catching up through readers of
    # their own when journald started a new journal file. Here: followers that join after the
    # buffer dropped the first lines, and whose own reader waits (their stdout is not read) while
    # journald rotates and the job writes more than the buffer holds.
    from jobrun.client.dbus import DaemonBackend

    gate = tmp_path / "gate"
    first, n = 25_000, 50_000
    # 100-byte lines: the pipes and jobrund's 1 MiB write buffer hold some 10,000 of them, so
    # the waiting followers' readers stop well before the end of the first part.
    fmt = "%0100.0f"
    script = (
        f"seq -f {fmt} 1 {first}; while [ ! -e {gate} ]; do sleep 0.01; done; "
        f"seq -f {fmt} {first + 1} {n}"
    )
    want = "".join(f"{i:0100d}\n" for i in range(1, n + 1)).encode()
    b = DaemonBackend(await connect_system_bus())
    try:
        job = await b.start(
            ["sh", "-c", script], None, {"profile": "relaxed", "private_tmp": False}
        )
        got = 0

        async def keep_up() -> bytes:
            nonlocal got
            out = bytearray()
            async for batch in b.log_batches(job.id, follow=True):
                out += b"".join(r.data for r in batch)
                got += len(batch)
            return bytes(out)

        fast = asyncio.create_task(keep_up())
        await wait_for_async(
            lambda: got >= first, what="the first part to be read", timeout=60, interval=0.01
        )
        env = {k: v for k, v in os.environ.items() if k != "JOBRUN_STATE_DIR"}
        env["JOBRUN_MODE"] = "daemon"
        late = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "jobrun",
                "logs",
                "-f",
                job.id,
                stdout=subprocess.PIPE,
                env=env,
                cwd="/",
            )
            for _ in range(2)
        ]
        firsts = []
        async with asyncio.timeout(30):
            for p in late:
                assert p.stdout is not None
                firsts.append(await p.stdout.readline())
        rotate = await asyncio.create_subprocess_exec(
            "journalctl", "--namespace=jobrun", "--quiet", "--rotate"
        )
        assert await rotate.wait() == 0
        gate.touch()
        async with asyncio.timeout(120):
            assert await fast == want
            for p, line in zip(late, firsts, strict=True):
                rest, _ = await p.communicate()
                assert p.returncode == 0
                out = line + rest
                assert out.count(b"\n") == n and out == want
    finally:
        await b.close()


def test_admin_caps_the_loosest_profile(config: Path) -> None:
    config.write_text('[limits]\nprofile = "default"\n[users.bob]\nprofile = "strict"\n')
    restart_jobrund()
    relaxed = as_user("alice", "start", "--profile", "relaxed", "--", "true")
    assert relaxed.returncode == 4 and "--profile relaxed" in relaxed.stderr
    assert as_user("alice", "start", "--profile", "strict", "--", "true").returncode == 0
    bob = as_user("bob", "start", "--", "true")  # his default, "default", is above his cap
    assert bob.returncode == 4 and "loosest allowed is strict" in bob.stderr
    assert as_user("bob", "start", "--profile", "strict", "--", "true").returncode == 0
    assert as_user("carol", "start", "--profile", "relaxed", "--", "true").returncode == 0


async def test_many_followers_through_jobrund_share_one_journal_reader(tmp_path: Path) -> None:
    from jobrun.client.dbus import DaemonBackend

    gate = tmp_path / "gate"
    n = 5000
    b = DaemonBackend(await connect_system_bus())
    try:
        job = await b.start(
            ["sh", "-c", f"seq 1 10; while [ ! -e {gate} ]; do sleep 0.01; done; seq 11 {n}"],
            None,
            {"profile": "relaxed", "private_tmp": False},
        )
        pid = systemctl_show("jobrund.service", "MainPID")["MainPID"]
        before = inotify_instances(pid)
        first_lines = 0
        everyone = asyncio.Event()
        followers = 200

        async def follow() -> bytes:
            nonlocal first_lines
            out = bytearray()
            async for batch in b.log_batches(job.id, follow=True):
                if not out:
                    first_lines += 1
                    if first_lines == followers:
                        everyone.set()
                out += b"".join(r.data for r in batch)
            return bytes(out)

        tasks = [asyncio.create_task(follow()) for _ in range(followers)]
        async with asyncio.timeout(120):
            await everyone.wait()
        # Every follower is attached and reading: one journal reader serves them all, woken by
        # jobrund's one inotify instance for the journal.
        assert inotify_instances(pid) - before <= 1
        gate.touch()
        async with asyncio.timeout(180):
            results = await asyncio.gather(*tasks)
        want = "".join(f"{i}\n" for i in range(1, n + 1)).encode()
        assert all(r == want for r in results)
        wait_for(lambda: inotify_instances(pid) == before, what="the reader closed")
    finally:
        await b.close()
