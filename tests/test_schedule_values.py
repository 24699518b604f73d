"""Schedules without systemd: the checks of times and calendars, the wire forms both ways, the
store's tables and the link of a job to its schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobrun.errors import InvalidArgument, JobNotFound
from jobrun.model import Job, JobSpec
from jobrun.schedule import (
    Event,
    Schedule,
    Schedules,
    at_calendar,
    check_calendar,
    parse_at,
    parse_in,
)
from jobrun.store import Store

NOW = datetime(2026, 12, 6, 4, 0, 0, tzinfo=UTC)


def test_durations() -> None:
    assert parse_in("90") == parse_in("90s") == parse_in("1m30s") == parse_in("1m 30s") == 90
    assert parse_in("2h") == 7200 and parse_in("1d") == 86400 and parse_in(2.5) == 2.5
    for bad in ("", "soon", "-5s", "0s", "5x", "1e9s", True, None, "9" * 50, "99999d"):
        with pytest.raises(InvalidArgument):
            parse_in(bad)


def test_times() -> None:
    assert parse_at("2026-12-06T05:00:00+00:00", NOW) == NOW + timedelta(hours=1)
    assert parse_at("2026-12-06 06:00+01:00", NOW) == NOW + timedelta(hours=1)
    nxt = parse_at("03:00", NOW)  # the next 03:00 of the local zone: within a day
    assert NOW < nxt <= NOW + timedelta(days=1)
    for bad in ("yesterday", "2026-12-06T03:00:00+00:00", "2040-13-01", "", "x" * 100, 5):
        with pytest.raises(InvalidArgument):
            parse_at(bad, NOW)
    assert at_calendar(NOW + timedelta(microseconds=1)) == "2026-12-06 04:00:01 UTC"


@pytest.mark.parametrize(
    "text", ["hourly", "*:*:0/2", "Mon..Fri *-*-* 9:00", "2026-12-06 05:00:00 Europe/Berlin"]
)
def test_calendars_passed_to_systemd(text: str) -> None:
    assert check_calendar(text) == text


@pytest.mark.parametrize(
    "text", ["hourly\nExecStartPre=/bin/sh", "a'b", 'a"b', "a\\x0ab", "", "x" * 201, "%n", None]
)
def test_calendars_that_could_change_the_unit_file_are_refused(text: Any) -> None:
    with pytest.raises(InvalidArgument):
        check_calendar(text)


def _schedule(**kw: Any) -> Schedule:
    base: dict[str, Any] = dict(
        id="abcdefgh12", spec=JobSpec(command=("echo", "hi"), name="n", memory_max=1 << 20),
        owner="alice", uid=1001, calendar="*:*:0/2", once=False, catch_up=True, created_at=NOW,
    )  # fmt: skip
    base.update(kw)
    return Schedule(**base)


def test_a_schedule_survives_json_and_protobuf() -> None:
    from jobrun.wire.schedules import schedule_from_dict, schedule_to_dict
    from jobrun.wire.schedules_proto import schedule_from_proto, schedule_to_proto

    run = Event(NOW, "run", job="j000000001")
    s = _schedule(next_run=NOW + timedelta(seconds=2), last_run=run,
                  events=(Event(NOW - timedelta(days=1), "missed", count=3,
                                until=NOW - timedelta(hours=1), note="down"),
                          run, Event(NOW, "skipped", job="j000000001", note="busy")))  # fmt: skip
    d = schedule_to_dict(s)
    assert schedule_to_dict(schedule_from_dict(d)) == d
    assert schedule_to_dict(schedule_from_proto(schedule_to_proto(s))) == d
    assert d["limits"] == {"memory_max": 1 << 20} and d["timer"] == "jobrun-s-abcdefgh12.timer"


def test_the_store_keeps_schedules_events_and_each_runs_schedule(tmp_path: Path) -> None:
    store = Store(tmp_path).open()
    table = Schedules(store)
    table.add(_schedule())
    table.add(_schedule(id="zzzzzzzz12", owner="bob", uid=1002))
    table.add_event("abcdefgh12", Event(NOW, "run", job="j000000001"))
    got = table.get(table.resolve("abc", 1001, "alice"))
    assert got.last_run == Event(NOW, "run", job="j000000001") and got.spec.memory_max == 1 << 20
    with pytest.raises(JobNotFound):  # bob's is not alice's
        table.resolve("zzz", 1001, "alice")
    assert [s.id for s in table.all(1002, "bob")] == ["zzzzzzzz12"]
    assert len(table.all()) == 2 and table.count(1001, "alice") == 1
    store.add(Job("j000000001", JobSpec(command=("true",)), "alice", 1001, NOW,
                  schedule="abcdefgh12"))  # fmt: skip
    job, _ = store.get("j000000001")
    assert job.schedule == "abcdefgh12"
    table.remove("abcdefgh12")
    with pytest.raises(JobNotFound):
        table.get("abcdefgh12")
    assert store.get("j000000001")[0].schedule == "abcdefgh12"  # runs stay
    store.close()


def test_done_one_shots_do_not_count_and_are_forgotten_after_a_while(tmp_path: Path) -> None:
    store = Store(tmp_path).open()
    table = Schedules(store)
    table.add(_schedule(id="once000001", once=True, calendar="2026-12-06 04:00:00 UTC"))
    table.add(_schedule(id="once000002", once=True, calendar="2026-12-07 04:00:00 UTC"))
    table.add(_schedule(id="every00001"))
    table.add_event("once000001", Event(NOW, "run", job="j000000001"))
    table.add_event("every00001", Event(NOW, "run", job="j000000002"))
    assert table.count(1001, "alice") == 2  # once000001 is done
    table.prune(NOW)  # done, but not before NOW: kept
    assert len(table.all()) == 3
    table.prune(NOW + timedelta(seconds=1))
    assert [s.id for s in table.all()] == ["once000002", "every00001"]
    store.close()


def test_a_database_of_before_schedules_gets_the_link_column(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, uid INTEGER NOT NULL, "
        "spec TEXT NOT NULL, created_at TEXT NOT NULL, invocation_id TEXT, started_at TEXT, "
        "stop_requested_at TEXT, outcome TEXT);"
        "INSERT INTO jobs VALUES ('old0000001', 'root', 0, '{\"command\": [\"true\"]}', "
        "'2026-01-01T00:00:00+00:00', NULL, NULL, NULL, NULL);"
    )
    db.close()
    store = Store(tmp_path).open()
    assert store.get("old0000001")[0].schedule is None
    store.close()


def test_schedules_need_jobrund(tmp_path: Path) -> None:
    """In-process (root without jobrund) there is nobody to fire a timer: a clear error, exit 69,
    before anything is made."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, JOBRUN_MODE="local", JOBRUN_STATE_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "jobrun", "start", "--every", "hourly", "-C", "/", "--", "true"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 69, proc.stderr
    assert "schedules are jobrund's" in proc.stderr and proc.stdout == ""
