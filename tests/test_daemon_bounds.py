"""What jobrund holds while it is busy (and keeps after it): requests waiting, JobChanged
announcements, results of systemd jobs.

- Requests beyond MAX_ACTIVE wait as messages in a queue, served oldest first by at most
  MAX_ACTIVE tasks; beyond MAX_QUEUED a caller is told Busy at once.
- systemd sends a burst of PropertiesChanged signals for every change of a unit (its Unit and
  Service interfaces, several times per start and exit). Reading the job's status once per signal
  had hundreds of reads of the same jobs in flight under load: one read in flight per job, and one
  after it if anything changed meanwhile.
- A systemd job's JobRemoved can come before its caller has handled the reply naming the job; its
  result is kept for that caller only, not for every job of the system.
- Nothing of a journald stream's name is interned for good.

Here the daemon runs in-process against a fake bus, and its work is held at a gate, so what is in
flight is counted exactly.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant

from jobrun import dbus_api as api
from jobrun import systemd as systemd_module
from jobrun.config import Config
from jobrun.daemon import fairshare as daemon_module
from jobrun.daemon.dbus import Daemon
from jobrun.journal.streams import Streams
from jobrun.manager import Caller
from jobrun.model import Job, JobState, Outcome
from jobrun.properties import build_spec
from jobrun.systemd import Systemd

JOB = "abcdef0123456789"
PATH = "/org/freedesktop/systemd1/unit/jobrun_2d" + JOB + "_2eservice"


class FakeBus:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, msg: Message) -> asyncio.Future[None]:
        self.sent.append(msg)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class GatedManager:
    """status() returns the job in the `state` it began in, once the test opens the gate."""

    def __init__(self) -> None:
        self.state = JobState.RUNNING
        self.in_flight = 0
        self.most_in_flight = 0
        self.reads = 0
        self.gate = asyncio.Event()

    async def status(self, job_id: str, caller: Caller | None = None) -> Job:
        self.reads += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        state = self.state
        try:
            await self.gate.wait()
            self.gate.clear()
        finally:
            self.in_flight -= 1
        return Job(
            JOB,
            build_spec(["true"]),
            "alice",
            1000,
            datetime.now(UTC),
            outcome=Outcome(state),
        )


SYSTEMD = ":1.1"  # the unique name of systemd on the fake bus


def changed() -> Message:
    return Message(
        message_type=MessageType.SIGNAL,
        sender=SYSTEMD,
        path=PATH,
        interface="org.freedesktop.DBus.Properties",
        member="PropertiesChanged",
        signature="sa{sv}as",
        body=["org.freedesktop.systemd1.Unit", {"ActiveState": Variant("s", "active")}, []],
    )


def announced(bus: FakeBus) -> list[list[Any]]:
    return [list(m.body) for m in bus.sent if m.member == "JobChanged"]


def signals_to(daemon: Daemon) -> Systemd:
    """The systemd client that passes systemd's signals on to the daemon, as in jobrund."""
    sd = Systemd(FakeSystemdBus())  # type: ignore[arg-type]
    sd._owner = SYSTEMD
    sd._listeners.append(daemon.on_signal)
    return sd


async def settle() -> None:
    """Let every task that can run, run (nothing here waits on anything but the gate)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def done(daemon: Daemon) -> None:
    async with asyncio.timeout(5):
        await asyncio.gather(*daemon._tasks)
    assert not daemon._tasks


async def test_a_burst_of_signals_is_one_read_in_flight_and_one_after_it() -> None:
    bus, manager = FakeBus(), GatedManager()
    daemon = Daemon(bus, manager, Config())  # type: ignore[arg-type]
    sd = signals_to(daemon)
    daemon._subscribers[":1.42"] = Caller(1000, "alice")
    sd._on_message(changed())
    await settle()
    assert manager.in_flight == 1
    for _ in range(200):
        sd._on_message(changed())
    await settle()
    assert (manager.reads, manager.in_flight) == (1, 1)
    # The job ends while the first read is in flight: that read says running, and the one read
    # that follows it (for the 200 signals) says succeeded.
    manager.state = JobState.SUCCEEDED
    manager.gate.set()
    await settle()
    assert (manager.reads, manager.in_flight) == (2, 1)
    manager.gate.set()
    await done(daemon)
    assert manager.reads == 2 and manager.most_in_flight == 1
    assert announced(bus) == [[JOB, "running"], [JOB, "succeeded"]]
    assert not daemon._announcing


async def test_a_signal_after_the_reads_end_is_read_again() -> None:
    bus, manager = FakeBus(), GatedManager()
    daemon = Daemon(bus, manager, Config())  # type: ignore[arg-type]
    sd = signals_to(daemon)
    daemon._subscribers[":1.42"] = Caller(1000, "alice")
    manager.gate.set()
    sd._on_message(changed())
    await done(daemon)
    manager.state = JobState.FAILED
    manager.gate.set()
    sd._on_message(changed())
    await done(daemon)
    assert manager.reads == 2
    assert announced(bus) == [[JOB, "running"], [JOB, "failed"]]


async def test_no_subscriber_no_read() -> None:
    bus, manager = FakeBus(), GatedManager()
    daemon = Daemon(bus, manager, Config())  # type: ignore[arg-type]
    sd = signals_to(daemon)
    for _ in range(10):
        sd._on_message(changed())
    await settle()
    assert manager.reads == 0 and not daemon._tasks


def status_call(serial: int) -> Message:
    return Message(
        destination=api.BUS_NAME,
        path=api.PATH,
        interface=api.INTERFACE,
        member="Status",
        signature="s",
        body=[f"job{serial}"],
        serial=serial,
        sender=":1.7",
    )


async def test_waiting_requests_are_messages_served_in_order_by_a_bounded_set_of_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon_module, "MAX_ACTIVE", 4)
    monkeypatch.setattr(daemon_module, "MAX_QUEUED", 50)
    bus = FakeBus()
    daemon = Daemon(bus, GatedManager(), Config())  # type: ignore[arg-type]
    gate = asyncio.Event()
    begun: list[str] = []
    served: list[str] = []

    async def caller(msg: Message, verb: str, interactive: bool) -> Caller:
        return Caller(0, "root", admin=True)

    async def status(msg: Message, caller: Caller) -> list[Any]:
        begun.append(msg.body[0])
        await gate.wait()
        served.append(msg.body[0])
        return [msg.body[0]]

    monkeypatch.setattr(daemon, "_caller", caller)
    daemon._handlers["Status"] = status
    daemon._uids[":1.7"] = 0  # the sender's uid, as the bus told it
    for serial in range(1, 61):
        assert daemon.on_message(status_call(serial))
    await settle()
    # 50 accepted: 4 being served, 46 waiting as messages; the other 10 told Busy at once.
    assert len(daemon._tasks) == 4 and len(daemon._waiting[0]) == 46 and daemon._queued == 50
    busy = [m.reply_serial for m in bus.sent if m.error_name == "org.jobrun.Error.Busy"]
    assert busy == list(range(51, 61))
    gate.set()
    await done(daemon)
    assert begun == [f"job{n}" for n in range(1, 51)]  # oldest first
    assert sorted(served) == sorted(begun)
    replies = [m for m in bus.sent if m.message_type == MessageType.METHOD_RETURN]
    assert sorted(m.reply_serial for m in replies) == list(range(1, 51))
    assert (daemon._queued, daemon._workers, daemon._waiting, daemon._held) == (0, 0, {}, {})
    # Idle again: the next request gets a worker of its own.
    assert daemon.on_message(status_call(99))
    await done(daemon)
    assert begun[-1] == served[-1] == "job99"


class FakeSystemdBus:
    def add_message_handler(self, handler: Any) -> None:
        self.handler = handler


def job_removed(n: int, result: str = "done") -> Message:
    return Message(
        message_type=MessageType.SIGNAL,
        sender=SYSTEMD,
        path="/org/freedesktop/systemd1",
        interface="org.freedesktop.systemd1.Manager",
        member="JobRemoved",
        signature="uoss",
        body=[n, f"/org/freedesktop/systemd1/job/{n}", f"unit{n}.service", result],
    )


def racing_systemd(monkeypatch: pytest.MonkeyPatch) -> Systemd:
    """A client whose every job-queuing call sees its job's JobRemoved before the reply."""
    sd = Systemd(FakeSystemdBus())  # type: ignore[arg-type]
    sd._subscribed = True
    sd._owner = SYSTEMD
    jobs = iter(range(100, 10**6))

    async def call(member: str, signature: str = "", body: Any = None, **kw: Any) -> list[Any]:
        n = next(jobs)
        sd._on_message(job_removed(n, "canceled" if member == "StopUnit" else "done"))
        return [f"/org/freedesktop/systemd1/job/{n}"]

    monkeypatch.setattr(sd, "call", call)
    return sd


async def test_a_job_removed_before_the_reply_still_reaches_its_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sd = racing_systemd(monkeypatch)
    path = await sd.stop_unit("jobrun-a.service")
    async with asyncio.timeout(5):
        assert await sd.expect_job(path) == "canceled"
    await sd.start_transient_unit("jobrun-b.service", [])
    # Nothing left behind: no result kept, no slot taken.
    assert not sd._removed and not sd._queued and not sd._job_waiters
    assert sd._job_slots._value == systemd_module.MAX_QUEUED_JOBS


async def test_results_of_jobs_nobody_waits_for_are_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sd = racing_systemd(monkeypatch)
    for n in range(2000):  # other clients' jobs, and ours once their slots are taken
        sd._on_message(job_removed(n))
    assert not sd._removed
    for n in range(10):  # also with our own starts in between
        await sd.start_transient_unit(f"jobrun-{n}.service", [])
        sd._on_message(job_removed(50_000 + n))
    assert not sd._removed and not sd._queued


def test_reading_journald_stream_files_interns_none_of_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stream's state file has a new name; pathlib would intern every one of them (the
    interpreter's table of interned strings grew by 0.94 MB for good under load)."""
    (tmp_path / "streams").mkdir()
    names = {f"8:{100000 + i}" for i in range(200)}
    for name in names:
        (tmp_path / "streams" / name).write_text(f"UNIT=jobrun-{name}.service\n")
    interned: list[str] = []
    real = sys.intern

    def spy(s: str) -> str:
        interned.append(s)
        return real(s)

    streams = Streams("jobrun")
    streams.runtime_dir = tmp_path
    monkeypatch.setattr(sys, "intern", spy)
    texts = list(streams.state_files())
    monkeypatch.setattr(sys, "intern", real)
    assert len(texts) == 200 and all(t.startswith("UNIT=jobrun-") for t in texts)
    assert not names & set(interned)
