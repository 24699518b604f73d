"""jobrun's own state: one small SQLite database of job records.

It holds only what systemd cannot answer once a unit is gone: who started the job, what was asked
(the spec) and when, the run's InvocationID, and whether jobrun asked it to stop. A job's outcome is
derived from systemd (D-Bus while the unit is loaded, PID 1's records in the journal after) and
cached here once final — a final outcome never changes in systemd either, so the cache cannot
drift; `Manager.status(…, fresh=True)` re-derives it and the tests compare the two.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import AmbiguousJobId, InvalidArgument, JobNotFound, StateError
from .model import Job, JobSpec, JobState, Outcome, is_valid_id_prefix

DEFAULT_STATE_DIR = "/var/lib/jobrun"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    uid INTEGER NOT NULL,
    spec TEXT NOT NULL,          -- JSON of JobSpec
    created_at TEXT NOT NULL,    -- ISO 8601, UTC
    invocation_id TEXT,
    started_at TEXT,
    stop_requested_at TEXT,
    outcome TEXT                 -- JSON of the final Outcome, NULL while not known to be final
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
"""


# How long a connection waits for another's lock (SQLite's busy handler), and how long opening
# retries what SQLite does not wait for (below).
_LOCK_TIMEOUT = 30.0


def _set_up(db: sqlite3.Connection) -> None:
    """WAL mode and the schema. Switching a new database to WAL does not wait for the lock of
    another process creating it at the same moment (SQLite's busy handler is not asked: "database
    is locked" at once; 11-19 of 30 rounds of 6 processes opening one new database failed): retry
    then, for as long as a lock is waited for elsewhere."""
    deadline = time.monotonic() + _LOCK_TIMEOUT
    delay = 0.002
    while True:
        try:
            (mode,) = db.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            busy = getattr(e, "sqlite_errorcode", 0) & 0xFF in (
                sqlite3.SQLITE_BUSY,
                sqlite3.SQLITE_LOCKED,
            )
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    _set_up_queue(db)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _set_up_queue(db: sqlite3.Connection) -> None:
    """jobrund's queue, groups and attempts (queuestore.py): tables of their own."""
    from .queuestore import SCHEMA

    db.executescript(SCHEMA)


def state_dir() -> Path:
    # $STATE_DIRECTORY is what systemd's StateDirectory= hands a service (jobrund).
    return Path(
        os.environ.get("JOBRUN_STATE_DIR") or os.environ.get("STATE_DIRECTORY") or DEFAULT_STATE_DIR
    )


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def spec_to_json(spec: JobSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


def spec_from_json(text: str) -> JobSpec:
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(JobSpec)}
    values: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known
    }
    return JobSpec(**values)


def outcome_to_json(o: Outcome) -> str:
    d = dataclasses.asdict(o)
    d["state"] = o.state.value
    d["finished_at"] = _iso(o.finished_at)
    return json.dumps(d, sort_keys=True)


def outcome_from_json(text: str) -> Outcome:
    d: dict[str, Any] = json.loads(text)
    d["state"] = JobState(d["state"])
    d["finished_at"] = _dt(d.get("finished_at"))
    return Outcome(**d)


class Store:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / "jobs.sqlite3"
        self._db: sqlite3.Connection | None = None

    def open(self) -> Store:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, timeout=_LOCK_TIMEOUT, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise self._unopenable(e) from e
        try:
            _set_up(db)
        except (OSError, sqlite3.Error) as e:
            db.close()
            raise self._unopenable(e) from e
        self._db = db
        return self

    def _unopenable(self, e: BaseException) -> StateError:
        return StateError(
            f"cannot open jobrun's job database {self.path}: {e}",
            "check that the directory exists and is writable (free disk space?)",
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.db:
                yield self.db
        except sqlite3.Error as e:
            raise StateError(
                f"cannot write jobrun's job database {self.path}: {e}",
                f"check the free space and permissions of {self.directory}",
            ) from e

    def add(self, job: Job) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs (id, owner, uid, spec, created_at) VALUES (?, ?, ?, ?, ?)",
                (job.id, job.owner, job.uid, spec_to_json(job.spec), _iso(job.created_at)),
            )

    def remove(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def set_started(
        self, job_id: str, invocation_id: str | None, started_at: datetime | None
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET invocation_id = ?, started_at = ? WHERE id = ?",
                (invocation_id, _iso(started_at), job_id),
            )

    def set_started_once(
        self, job_id: str, invocation_id: str | None, started_at: datetime | None
    ) -> None:
        """As set_started, for what is not recorded yet (what is, stays)."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET invocation_id = COALESCE(invocation_id, ?), "
                "started_at = COALESCE(started_at, ?) "
                "WHERE id = ? AND (invocation_id IS NULL OR started_at IS NULL)",
                (invocation_id, _iso(started_at), job_id),
            )

    def set_stop_requested(self, job_id: str, when: datetime) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET stop_requested_at = COALESCE(stop_requested_at, ?) WHERE id = ?",
                (_iso(when), job_id),
            )

    def set_outcome(self, job_id: str, outcome: Outcome) -> None:
        if not outcome.state.finished:
            return
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET outcome = ? WHERE id = ?", (outcome_to_json(outcome), job_id)
            )

    def _row_to_job(self, row: tuple[Any, ...]) -> tuple[Job, datetime | None]:
        (jid, owner, uid, spec, created, inv, started, stop_req, outcome) = row
        job = Job(
            id=jid,
            spec=spec_from_json(spec),
            owner=owner,
            uid=uid,
            created_at=_dt(created) or datetime.now(UTC),
            invocation_id=inv,
            started_at=_dt(started),
            outcome=outcome_from_json(outcome) if outcome else Outcome(JobState.RUNNING),
        )
        return job, _dt(stop_req)

    _COLUMNS = (
        "id, owner, uid, spec, created_at, invocation_id, started_at, stop_requested_at, outcome"
    )

    def get(self, job_id: str) -> tuple[Job, datetime | None]:
        """A job and when jobrun was asked to stop it (None if never); JobNotFound if unknown."""
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}", "see `jobrun list --all`")
        return self._row_to_job(row)

    @staticmethod
    def _owned(sql: str, args: list[Any], owner_uid: int | None, owner: str | None) -> str:
        if owner_uid is not None:
            sql += " AND uid = ?"
            args.append(owner_uid)
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        return sql

    def resolve(self, prefix: str, owner_uid: int | None = None, owner: str | None = None) -> str:
        """The full ID of the one job whose ID starts with `prefix` (of `owner_uid`/`owner`)."""
        prefix = prefix.strip().lower()
        if not is_valid_id_prefix(prefix):
            raise InvalidArgument(
                f"{prefix[:40]!r} is not a job ID: IDs are letters a–z and digits",
                "see `jobrun list --all`",
            )
        args: list[Any] = [prefix, prefix + "~"]
        sql = self._owned("SELECT id FROM jobs WHERE id >= ? AND id < ?", args, owner_uid, owner)
        ids = [r[0] for r in self.db.execute(sql + " LIMIT 5", args).fetchall()]
        if not ids:
            raise JobNotFound(f"no job {prefix}", "see `jobrun list --all`")
        if len(ids) > 1:
            raise AmbiguousJobId(
                f"job ID prefix {prefix} matches several jobs ({', '.join(ids)}…)",
                "give more characters of the ID",
            )
        return str(ids[0])

    def count_owned(
        self, job_ids: list[str], owner_uid: int | None = None, owner: str | None = None
    ) -> int:
        """How many of these jobs belong to `owner_uid` and/or `owner`."""
        count = 0
        for i in range(0, len(job_ids), 500):  # SQLite's limit on bound parameters
            chunk = job_ids[i : i + 500]
            args: list[Any] = list(chunk)
            marks = ",".join("?" * len(chunk))
            sql = self._owned(f"SELECT COUNT(*) FROM jobs WHERE id IN ({marks})", args,
                              owner_uid, owner)  # fmt: skip
            row = self.db.execute(sql, args).fetchone()
            count += int(row[0])
        return count

    def all(
        self, owner_uid: int | None = None, owner: str | None = None, since: datetime | None = None
    ) -> list[tuple[Job, datetime | None]]:
        args: list[Any] = []
        sql = self._owned(f"SELECT {self._COLUMNS} FROM jobs WHERE 1", args, owner_uid, owner)
        if since is not None:
            sql += " AND (outcome IS NULL OR created_at >= ?)"
            args.append(_iso(since))
        rows = self.db.execute(sql + " ORDER BY created_at", args).fetchall()
        return [self._row_to_job(r) for r in rows]
