"""jobrun's job database: round trips, prefixes, and records of released versions still load."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobrun.errors import AmbiguousJobId, InvalidArgument, JobNotFound, StateError
from jobrun.model import Job, JobState, Outcome
from jobrun.properties import build_spec
from jobrun.store import Store, outcome_from_json, spec_from_json
from jobrun.wire.jobs import job_to_dict

DATA = Path(__file__).parent / "data"


def make(job_id: str, uid: int = 0) -> Job:
    spec = build_spec(["sleep", "1"], name="n", cpu_weight="5", env=["A=1"])
    return Job(id=job_id, spec=spec, owner="root", uid=uid, created_at=datetime.now(UTC))


def test_round_trip(tmp_path: Path) -> None:
    s = Store(tmp_path).open()
    s.add(make("abc0000001"))
    s.set_started("abc0000001", "ff" * 16, datetime(2026, 1, 1, tzinfo=UTC))
    done = Outcome(JobState.FAILED, "exit-code", 3, None, "exited with status 3", None)
    s.set_outcome("abc0000001", done)
    job, stop = s.get("abc0000001")
    assert job.spec == make("x").spec and job.outcome == done and stop is None
    assert job.invocation_id == "ff" * 16
    s.set_outcome("abc0000001", Outcome(JobState.RUNNING))  # never overwrites with non-final
    assert s.get("abc0000001")[0].outcome == done


def test_prefixes_and_owners(tmp_path: Path) -> None:
    s = Store(tmp_path).open()
    s.add(make("abc0000001", uid=1000))
    s.add(make("abd0000002", uid=1001))
    assert s.resolve("abc") == "abc0000001"
    with pytest.raises(AmbiguousJobId):
        s.resolve("ab")
    assert s.resolve("ab", owner_uid=1001) == "abd0000002"
    with pytest.raises(JobNotFound):
        s.resolve("abc", owner_uid=1001)  # another user's job is "not found"
    for bad in ("", "../x", "foo.service", "a\nb", "x" * 11, "abc%", "ab_"):
        with pytest.raises(InvalidArgument):
            s.resolve(bad)


def test_unwritable_state_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot open"):
        Store(blocker / "sub").open()


def test_record_from_0_1_0_still_loads(tmp_path: Path) -> None:
    """A row written by jobrun 0.1.0 (tests/data/job-0.1.0.json) loads unchanged."""
    row = json.loads((DATA / "job-0.1.0.json").read_text())
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    Store(tmp_path).open().close()
    db.execute(
        "INSERT INTO jobs (id, owner, uid, spec, created_at, invocation_id, started_at, "
        "stop_requested_at, outcome) VALUES (:id, :owner, :uid, :spec, :created_at, "
        ":invocation_id, :started_at, :stop_requested_at, :outcome)",
        row,
    )
    db.commit()
    job, stop = Store(tmp_path).open().get(row["id"])
    d = job_to_dict(job)
    assert d["command"] == ["sh", "-c", "exit 3"] and d["limits"]["memory_max"] == 268435456
    assert d["state"] == "failed" and d["exit_code"] == 3 and stop is None
    assert spec_from_json(row["spec"]) == job.spec
    assert outcome_from_json(row["outcome"]) == job.outcome


def _open_at_once(directory: Path, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        Store(directory).open().close()
        results.put("ok")
    except StateError as e:
        results.put(str(e))


def test_processes_creating_the_database_at_once_all_open_it(tmp_path: Path) -> None:
    # Switching a new database to WAL does not wait for another process creating it: before the
    # retry, 11-19 of 30 such rounds had an open fail with "database is locked".
    ctx = multiprocessing.get_context("fork")
    for round_ in range(10):
        directory = tmp_path / f"state{round_}"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [
            ctx.Process(target=_open_at_once, args=(directory, barrier, results)) for _ in range(6)
        ]
        for p in procs:
            p.start()
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert got == ["ok"] * 6, got
