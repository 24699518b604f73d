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

from . import accounting as acct
from .errors import AmbiguousJobId, InvalidArgument, JobNotFound, StateError
from .model import Accounting, Job, JobSpec, JobState, Outcome, is_valid_id_prefix, kind_of

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
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (id) WHERE outcome IS NULL;
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
    _set_up_live(db)
    _set_up_scopes(db)
    _set_up_queue(db)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    _set_up_schedules(db)


_SCHEDULES_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    uid INTEGER NOT NULL,
    remote INTEGER NOT NULL DEFAULT 0,
    run_as TEXT,                 -- a remote owner's local user (NULL: DynamicUser=)
    credential TEXT,             -- a remote owner's certificate: ISSUER-DER-HEX:SERIAL
    spec TEXT NOT NULL,          -- JSON of JobSpec, as checked when the schedule was made
    calendar TEXT NOT NULL,      -- systemd's OnCalendar= expression of the timer
    once INTEGER NOT NULL,       -- --at/--in: a single firing
    catch_up INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_events (
    schedule_id TEXT NOT NULL,
    at TEXT NOT NULL,            -- ISO 8601, UTC
    kind TEXT NOT NULL,          -- run, skipped, missed, failed
    job_id TEXT,
    count INTEGER NOT NULL DEFAULT 1,
    until TEXT,                  -- missed: the last firing missed
    note TEXT
);
CREATE INDEX IF NOT EXISTS schedule_events_of ON schedule_events (schedule_id, at);
"""


def _set_up_schedules(db: sqlite3.Connection) -> None:
    """Schedules (schedule.py) and each job's link to the schedule that started it."""
    db.executescript(_SCHEDULES_SCHEMA)
    _add_column(db, "jobs", "schedule_id TEXT")


def _add_column(db: sqlite3.Connection, table: str, column: str) -> None:
    """`column` ("NAME TYPE") added to `table` of a database an older jobrun made."""
    name = column.split()[0]
    if name in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
        return
    try:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    except sqlite3.OperationalError as e:
        # Another process setting up the same new database added it first.
        if "duplicate column name" not in str(e):
            raise


def _set_up_live(db: sqlite3.Connection) -> None:
    """What `pause`, `set` and the accounting of a run add to a job (a table of its own, one row
    per job that has any): a database of an older jobrun gains it, and an older jobrun ignores
    it."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS job_live ("
        " id TEXT PRIMARY KEY,"
        " paused_at TEXT,"  # ISO 8601, UTC; NULL while not paused
        " paused_how TEXT,"  # freezer.How
        " paused_seconds REAL NOT NULL DEFAULT 0,"  # of pauses that ended
        " limits TEXT,"  # JSON: settings changed while it ran (`jobrun set`), by field
        " accounting TEXT"  # JSON of model.Accounting: the last reading of its cgroup
        ")"
    )
    # When jobrund's deadline keeper (deadline.py) stopped the job for its --timeout.
    _add_column(db, "job_live", "timed_out_at TEXT")


def _set_up_scopes(db: sqlite3.Connection) -> None:
    """Who reports the exit status of each scope job (`run --scope`): the client process, by
    PID and start time (processes.py). While it lives, a scope that has ended waits for its
    report; once it is gone, the job ends without one."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS scope_reporters ("
        "id TEXT PRIMARY KEY, "
        "pid INTEGER NOT NULL, start_time INTEGER NOT NULL)"
    )


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


_SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(JobSpec))


def spec_from_json(text: str) -> JobSpec:
    data = json.loads(text)
    values: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in _SPEC_FIELDS
    }
    if "kind" in values:
        values["kind"] = kind_of(values["kind"])
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
                "INSERT INTO jobs (id, owner, uid, spec, created_at, schedule_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.owner,
                    job.uid,
                    spec_to_json(job.spec),
                    _iso(job.created_at),
                    job.schedule,
                ),
            )

    def remove(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            db.execute("DELETE FROM job_live WHERE id = ?", (job_id,))
            db.execute("DELETE FROM scope_reporters WHERE id = ?", (job_id,))

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

    def set_outcome_once(self, job_id: str, outcome: Outcome) -> bool:
        """Record a final outcome unless one is recorded already; whether it was."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET outcome = ? WHERE id = ? AND outcome IS NULL",
                (outcome_to_json(outcome), job_id),
            )
            return cur.rowcount == 1

    def set_reporter(self, job_id: str, pid: int, start_time: int) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO scope_reporters (id, pid, start_time) VALUES (?, ?, ?)",
                (job_id, pid, start_time),
            )

    def reporter(self, job_id: str) -> tuple[int, int] | None:
        """(PID, start time) of the process that reports the scope job's exit status."""
        row = self.db.execute(
            "SELECT pid, start_time FROM scope_reporters WHERE id = ?", (job_id,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def _row_to_job(self, row: tuple[Any, ...]) -> tuple[Job, datetime | None]:
        (jid, owner, uid, spec, created, inv, started, stop_req, outcome, schedule) = row
        job = Job(
            id=jid,
            spec=spec_from_json(spec),
            owner=owner,
            uid=uid,
            created_at=_dt(created) or datetime.now(UTC),
            invocation_id=inv,
            started_at=_dt(started),
            outcome=outcome_from_json(outcome) if outcome else Outcome(JobState.RUNNING),
            schedule=schedule,
        )
        return job, _dt(stop_req)

    _COLUMNS = (
        "id, owner, uid, spec, created_at, invocation_id, started_at, stop_requested_at, outcome, "
        "schedule_id"
    )

    def get(self, job_id: str) -> tuple[Job, datetime | None]:
        """A job and when jobrun was asked to stop it (None if never); JobNotFound if unknown."""
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}", "see `jobrun list --all`")
        job, stop_requested = self._row_to_job(row)
        return self._with_live([job])[0], stop_requested

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

    def count_unfinished(self, owner_uid: int | None = None, owner: str | None = None) -> int:
        """How many jobs of `owner_uid` and/or `owner` have no final outcome recorded: at least
        as many as run now (a running job has none; some without one have ended unseen)."""
        args: list[Any] = []
        sql = self._owned("SELECT COUNT(*) FROM jobs WHERE outcome IS NULL", args, owner_uid, owner)
        return int(self.db.execute(sql, args).fetchone()[0])

    def all(
        self, owner_uid: int | None = None, owner: str | None = None, since: datetime | None = None
    ) -> list[tuple[Job, datetime | None]]:
        args: list[Any] = []
        sql = self._owned(f"SELECT {self._COLUMNS} FROM jobs WHERE 1", args, owner_uid, owner)
        if since is not None:
            sql += " AND (outcome IS NULL OR created_at >= ?)"
            args.append(_iso(since))
        rows = self.db.execute(sql + " ORDER BY created_at", args).fetchall()
        jobs = [self._row_to_job(r) for r in rows]
        with_live = self._with_live([j for j, _ in jobs])
        return [(j, stop) for j, (_, stop) in zip(with_live, jobs, strict=True)]

    def owners_of(
        self, job_ids: list[str], owner_uid: int | None = None, owner: str | None = None
    ) -> dict[str, str]:
        """{ID: owner} of those of these jobs that belong to `owner_uid` and/or `owner` (all
        of them if both are None): the jobs `top` may show a caller (usage.py)."""
        out: dict[str, str] = {}
        for i in range(0, len(job_ids), 500):  # SQLite's limit on bound parameters
            chunk = job_ids[i : i + 500]
            args: list[Any] = list(chunk)
            marks = ",".join("?" * len(chunk))
            sql = self._owned(f"SELECT id, owner FROM jobs WHERE id IN ({marks})", args,
                              owner_uid, owner)  # fmt: skip
            out.update((str(r[0]), str(r[1])) for r in self.db.execute(sql, args))
        return out

    def count_by_state(self) -> dict[str, int]:
        """How many jobs the store holds by their recorded outcome's state ("" for those
        without one: running, or ended and not yet asked about)."""
        rows = self.db.execute(
            "SELECT json_extract(outcome, '$.state'), COUNT(*) FROM jobs GROUP BY 1"
        ).fetchall()
        return {str(state or ""): int(n) for state, n in rows}

    # -- pause, live limits and accounting (job_live) ---------------------------------------

    def _with_live(self, jobs: list[Job]) -> list[Job]:
        """The jobs with their live limits and accounting."""
        found: dict[str, tuple[str | None, str | None]] = {}
        ids = [j.id for j in jobs]
        for i in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for jid, limits_text, acct_text in self.db.execute(
                f"SELECT id, limits, accounting FROM job_live WHERE id IN ({marks})", chunk
            ):
                found[jid] = (limits_text, acct_text)
        out = []
        for job in jobs:
            limits_text, acct_text = found.get(job.id, (None, None))
            if limits_text or acct_text:
                job = dataclasses.replace(
                    job,
                    live_limits=json.loads(limits_text) if limits_text else {},
                    accounting=acct.from_dict(json.loads(acct_text)) if acct_text else None,
                )
            out.append(job)
        return out

    def _live_row(self, db: sqlite3.Connection, job_id: str) -> None:
        """The job's row in job_live, made if the job has none (and only for a known job)."""
        db.execute(
            "INSERT OR IGNORE INTO job_live (id) SELECT id FROM jobs WHERE id = ?", (job_id,)
        )

    def accounting(self, job_id: str) -> Accounting | None:
        row = self.db.execute("SELECT accounting FROM job_live WHERE id = ?", (job_id,)).fetchone()
        return acct.from_dict(json.loads(row[0])) if row is not None and row[0] else None

    def pause_info(self, job_id: str) -> tuple[datetime | None, str | None, float]:
        """(since when the job is paused or None, how (freezer.How), seconds of ended pauses)."""
        row = self.db.execute(
            "SELECT paused_at, paused_how, paused_seconds FROM job_live WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            return None, None, 0.0
        return _dt(row[0]), row[1], float(row[2] or 0)

    def set_paused(self, job_id: str, when: datetime, how: str) -> None:
        with self._write() as db:
            self._live_row(db, job_id)
            db.execute(
                "UPDATE job_live SET paused_at = ?, paused_how = ? WHERE id = ?",
                (_iso(when), how, job_id),
            )

    def set_resumed(self, job_id: str, paused_for: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE job_live SET paused_at = NULL, paused_how = NULL, "
                "paused_seconds = paused_seconds + ? WHERE id = ?",
                (max(paused_for, 0.0), job_id),
            )

    def deadline_candidates(self) -> list[tuple[str, float, datetime | None, bool, float]]:
        """Unfinished service jobs with a --timeout that jobrund has not ended for it yet:
        (ID, timeout in seconds, started at, paused now, seconds of ended pauses)."""
        rows = self.db.execute(
            "SELECT j.id, json_extract(j.spec, '$.timeout'), j.started_at, l.paused_at, "
            "l.paused_seconds FROM jobs j LEFT JOIN job_live l ON l.id = j.id "
            "WHERE j.outcome IS NULL AND j.stop_requested_at IS NULL "
            "AND json_extract(j.spec, '$.timeout') IS NOT NULL AND l.timed_out_at IS NULL"
        ).fetchall()
        return [
            (jid, float(timeout), _dt(started), paused is not None, float(paused_s or 0))
            for jid, timeout, started, paused, paused_s in rows
        ]

    def set_timed_out(self, job_id: str, when: datetime | None) -> None:
        """Mark (or, with None, unmark) the job as ended by jobrund for its --timeout."""
        with self._write() as db:
            self._live_row(db, job_id)
            db.execute("UPDATE job_live SET timed_out_at = ? WHERE id = ?", (_iso(when), job_id))

    def timed_out(self, job_id: str) -> bool:
        row = self.db.execute(
            "SELECT timed_out_at FROM job_live WHERE id = ?", (job_id,)
        ).fetchone()
        return row is not None and row[0] is not None

    def set_live_limits(self, job_id: str, limits: dict[str, Any]) -> None:
        with self._write() as db:
            self._live_row(db, job_id)
            db.execute(
                "UPDATE job_live SET limits = ? WHERE id = ?",
                (json.dumps(limits, sort_keys=True), job_id),
            )

    def set_accounting(self, job_id: str, accounting: Accounting) -> None:
        self.set_accountings([(job_id, accounting)])

    def set_accountings(self, items: list[tuple[str, Accounting]]) -> None:
        """Accounting records of several jobs, in one transaction (jobrund's readings)."""
        with self._write() as db:
            for job_id, accounting in items:
                self._live_row(db, job_id)
                db.execute(
                    "UPDATE job_live SET accounting = ? WHERE id = ?",
                    (json.dumps(acct.to_dict(accounting), sort_keys=True), job_id),
                )
