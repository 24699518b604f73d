"""Signals forged by another local user change nothing in jobrund (issue 15, item 5).

Anyone may send a unicast signal to any connection on the system bus, past every match rule; the
bus only vouches for its sender. jobrund believes systemd's signals only from the current owner
of org.freedesktop.systemd1 and the bus's only from org.freedesktop.DBus. Here alice forges, to
each of jobrund's connections, what would hurt most if believed: a PropertiesChanged giving a
job a false InvocationID and a 1970 start, a JobRemoved ending a stop early, a NameOwnerChanged
saying a subscriber left, and one saying alice is now systemd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType

from jobrun.systemd import Systemd

from ..helpers import as_user, start_as, status_as, systemctl_show, wait_for

FORGE = Path(__file__).with_name("forge.py")
FAKE_INVOCATION = "aa" * 16


def jobrund_pid() -> int:
    assert as_user("alice", "list").returncode == 0  # activates jobrund if it is not running
    return int(systemctl_show("jobrund.service", "MainPID")["MainPID"])


def forge(*actions: str) -> list[str]:
    """alice sends the forged signals to every connection of jobrund; returns those names."""
    proc = subprocess.run(
        ["setpriv", "--reuid=alice", "--regid=alice", "--init-groups",
         sys.executable, str(FORGE), str(jobrund_pid()), *actions],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    targets: list[str] = json.loads(proc.stdout)
    assert len(targets) == 2, targets  # its service connection and its systemd client's
    return targets


def start_fields(job: dict[str, object]) -> tuple[object, ...]:
    return job["started_at"], job["invocation_id"], job["state"]


def assert_true_start(job: dict[str, object], unit: str) -> None:
    assert job["invocation_id"] != FAKE_INVOCATION
    assert job["invocation_id"] == systemctl_show(unit, "InvocationID")["InvocationID"]
    started = datetime.fromisoformat(str(job["started_at"]))
    assert started.year > 2000, job


@pytest.mark.integration
@pytest.mark.daemon
def test_a_forged_properties_changed_changes_no_jobs_start() -> None:
    # root's job started in-process while jobrund was down: its start is not recorded yet, so
    # the first PropertiesChanged jobrund believes would be kept for good.
    subprocess.run(["systemctl", "stop", "jobrund.service"], check=True)
    proc = as_user("root", "start", "--", "sleep", "120", env={"JOBRUN_MODE": "local"})
    assert proc.returncode == 0, proc.stderr
    root_job = proc.stdout.strip()
    bob_job = start_as("bob", "--", "sleep", "120")
    bob_before = wait_for(
        lambda: (s := status_as("bob", bob_job))["invocation_id"] and s, what="bob's job to run"
    )
    forge(f"props:{root_job}", f"props:{bob_job}")
    root_after = status_as("root", root_job)
    assert root_after["state"] == "running"
    assert_true_start(root_after, f"jobrun-{root_job}.service")
    bob_after = status_as("bob", bob_job)
    assert start_fields(bob_after) == start_fields(bob_before)
    assert_true_start(bob_after, f"jobrun-{bob_job}.service")
    for job in (root_job, bob_job):
        assert as_user("root", "stop", job).returncode == 0


@pytest.mark.integration
@pytest.mark.daemon
def test_a_forged_job_removed_does_not_end_a_stop_early() -> None:
    job = start_as(
        "bob", "--stop-timeout", "4", "--", "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"
    )
    unit = f"jobrun-{job}.service"
    wait_for(lambda: status_as("bob", job)["invocation_id"], what="bob's job to run")
    began = time.monotonic()
    stopper = subprocess.Popen(
        ["setpriv", "--reuid=bob", "--regid=bob", "--init-groups",
         sys.executable, "-m", "jobrun", "stop", job],
        env={**os.environ, "JOBRUN_MODE": "daemon"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip

    def stop_job() -> str | None:
        out = subprocess.run(
            ["systemctl", "list-jobs", "--no-legend", "--plain"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == unit and fields[2] == "stop":
                return f"/org/freedesktop/systemd1/job/{fields[0]}"
        return None

    sd_job = wait_for(stop_job, what="bob's stop job")
    forge(f"removed:{sd_job}:{unit}")
    _, err = stopper.communicate(timeout=60)
    ended = time.monotonic() - began
    # When bob's stop returns, the job has ended: SIGTERM is ignored, so after the 4 s grace.
    active = systemctl_show(unit, "ActiveState")["ActiveState"]
    assert stopper.returncode == 0, err
    assert active in ("inactive", "failed"), active
    assert ended >= 3.5, ended
    assert status_as("bob", job)["state"] == "stopped"


SUBSCRIBER = """
import asyncio, sys
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

async def main(job):
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    got = asyncio.get_running_loop().create_future()
    def on(msg):
        if msg.member == "JobChanged" and msg.body[0] == job and msg.body[1] != "running":
            if not got.done():
                got.set_result(msg.body[1])
    bus.add_message_handler(on)
    reply = await bus.call(Message(destination="org.jobrun.Manager1", path="/org/jobrun/Manager1",
                                   interface="org.jobrun.Manager1", member="Subscribe"))
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    print(bus.unique_name, flush=True)
    print(await asyncio.wait_for(got, 30), flush=True)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.integration
@pytest.mark.daemon
def test_forged_name_owner_changes_neither_drop_a_subscriber_nor_make_alice_systemd() -> None:
    job = start_as("bob", "--", "sleep", "120")
    unit = f"jobrun-{job}.service"
    before = wait_for(
        lambda: (s := status_as("bob", job))["invocation_id"] and s, what="bob's job to run"
    )
    subscriber = subprocess.Popen(
        ["setpriv", "--reuid=bob", "--regid=bob", "--init-groups",
         sys.executable, "-c", SUBSCRIBER, job],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
    )  # fmt: skip
    assert subscriber.stdout is not None
    bob_name = subscriber.stdout.readline().strip()
    assert bob_name.startswith(":"), subscriber.stderr.read() if subscriber.stderr else ""
    # "bob has left", then "alice is systemd now", then as systemd: "bob's job started in 1970".
    forge(f"gone:{bob_name}", "owner", f"props:{job}")
    assert start_fields(status_as("bob", job)) == start_fields(before)
    assert as_user("root", "stop", job).returncode == 0
    out, err = subscriber.communicate(timeout=60)
    assert subscriber.returncode == 0, err
    assert out.strip() == "stopped"
    after = status_as("bob", job)
    assert (after["started_at"], after["invocation_id"]) == (
        before["started_at"],
        before["invocation_id"],
    )
    assert_true_start(after, unit)
    # jobrund still serves everyone.
    assert as_user("alice", "list").returncode == 0


class _Bus:
    def add_message_handler(self, handler: object) -> None:
        pass


def _signal(sender: str, member: str, body: list[object], signature: str) -> Message:
    bus_signal = member == "NameOwnerChanged"
    return Message(
        message_type=MessageType.SIGNAL,
        sender=sender,
        path="/org/freedesktop/DBus" if bus_signal else "/org/freedesktop/systemd1",
        interface="org.freedesktop.DBus" if bus_signal else "org.freedesktop.systemd1.Manager",
        member=member,
        signature=signature,
        body=body,
    )


def test_the_systemd_client_passes_on_only_systemds_and_the_bus_signals() -> None:
    sd = Systemd(_Bus())  # type: ignore[arg-type]
    seen: list[str | None] = []
    sd._listeners.append(lambda m: seen.append(m.sender))
    removed = ["uoss", [1, "/org/freedesktop/systemd1/job/1", "jobrun-x.service", "done"]]
    for sender in (None, ":1.1", ":1.9"):  # before subscribe() systemd's name is unknown
        sd._on_message(_signal(sender or "", "JobRemoved", removed[1], removed[0]))  # type: ignore[arg-type]
    assert seen == []
    sd._owner = ":1.1"
    for sender in (":1.1", ":1.9", "org.freedesktop.systemd1"):
        sd._on_message(_signal(sender, "JobRemoved", removed[1], removed[0]))  # type: ignore[arg-type]
    assert seen == [":1.1"]
    # Only the bus says who owns systemd's name.
    forged = ["org.freedesktop.systemd1", ":1.1", ":1.9"]
    sd._on_message(_signal(":1.9", "NameOwnerChanged", forged, "sss"))  # type: ignore[arg-type]
    sd._on_message(_signal(":1.1", "NameOwnerChanged", forged, "sss"))  # type: ignore[arg-type]
    assert sd._owner == ":1.1"
    sd._on_message(_signal("org.freedesktop.DBus", "NameOwnerChanged", forged, "sss"))  # type: ignore[arg-type]
    assert sd._owner == ":1.9" and seen[-1] == "org.freedesktop.DBus"
