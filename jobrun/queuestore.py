"""jobrund's queue in the job database: waiting jobs, groups and the attempts of retried jobs.

A queued job is a job record (store.py) plus a `queue` row: it shows in `status` and `list` from
the moment it is submitted, and survives jobrund's restarts and the host's reboots (SQLite, one
transaction per step). The row stays while jobrund's dispatcher (dispatch.py) has started the job
(`started` = 1) and goes once the dispatcher saw the job end, in the same transaction that records
its next attempt: a job is never started twice, and a retry is never lost.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

from .errors import StateError

if TYPE_CHECKING:
    from .model import Job, Outcome
    from .store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY,          -- the job (jobs.id)
    owner TEXT NOT NULL,          -- the group's owner (jobs.owner)
    grp TEXT NOT NULL,            -- its group, '' for none
    priority INTEGER NOT NULL,
    seq INTEGER NOT NULL,         -- order of submission
    not_before REAL NOT NULL,     -- Unix time: a retry's delay
    caller TEXT NOT NULL,         -- JSON of the Caller who submitted it: whom it starts as
    slice_limits TEXT,            -- JSON of the owner's slice limits at admission (NULL: leave)
    started INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_order ON queue (started, owner, grp, priority DESC, seq);
CREATE INDEX IF NOT EXISTS queue_seq ON queue (seq);
CREATE TABLE IF NOT EXISTS groups (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    parallel INTEGER,             -- jobs at once; NULL: no limit
    paused INTEGER NOT NULL DEFAULT 0,
    limits TEXT NOT NULL DEFAULT '{}',  -- JSON: numeric settings of the group's slice
    PRIMARY KEY (owner, name)
);
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT PRIMARY KEY,          -- one attempt's job
    first TEXT NOT NULL,          -- the first attempt's job
    attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_first ON attempts (first, attempt);
"""

DEFAULT_PARALLEL = 1  # a group used before `group set`: one job at a time, as pueue's default


@dataclass(frozen=True)
class Group:
    owner: str
    name: str
    parallel: int | None = DEFAULT_PARALLEL
    paused: bool = False
    limits: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    running: int = 0  # started by the dispatcher, not yet seen ended


@dataclass(frozen=True)
class Entry:
    """A queue row."""

    id: str
    owner: str
    group: str
    priority: int
    not_before: float
    caller: dict[str, Any]
    slice_limits: dict[str, int] | None
    started: bool


_ENTRY = "id, owner, grp, priority, not_before, caller, slice_limits, started"


def _entry(row: tuple[Any, ...]) -> Entry:
    jid, owner, grp, priority, not_before, caller, limits, started = row
    return Entry(jid, owner, grp, priority, not_before, json.loads(caller),
                 json.loads(limits) if limits else None, bool(started))  # fmt: skip


class Queue:
    """The queue's SQL, on the store's connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def db(self) -> sqlite3.Connection:
        return self.store.db

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: the store's connection is in autocommit mode (each of its writes is
        one), so several statements that must hold together get an explicit one here."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StateError(
                f"cannot write jobrun's job database {self.store.path}: {e}",
                f"check the free space and permissions of {self.store.directory}",
            ) from e

    # -- entries ------------------------------------------------------------------------------

    @staticmethod
    def add_job(db: sqlite3.Connection, job: Job, entry: Entry) -> None:
        """A job's record and its queue entry (within a transaction of `write`)."""
        from .store import spec_to_json

        db.execute(
            "INSERT INTO jobs (id, owner, uid, spec, created_at) VALUES (?, ?, ?, ?, ?)",
            (job.id, job.owner, job.uid, spec_to_json(job.spec),
             job.created_at.astimezone(UTC).isoformat()),
        )  # fmt: skip
        Queue.add(db, entry)

    @staticmethod
    def set_outcome(db: sqlite3.Connection, job_id: str, outcome: Outcome) -> None:
        from .store import outcome_to_json

        db.execute("UPDATE jobs SET outcome = ? WHERE id = ?", (outcome_to_json(outcome), job_id))

    @staticmethod
    def add(db: sqlite3.Connection, entry: Entry) -> None:
        """Within a transaction of `write` (with the job's record)."""
        (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM queue").fetchone()
        db.execute(
            f"INSERT INTO queue ({_ENTRY}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.id, entry.owner, entry.group, entry.priority, entry.not_before,
             json.dumps(entry.caller), None if entry.slice_limits is None
             else json.dumps(entry.slice_limits), int(entry.started), seq),
        )  # fmt: skip

    def get(self, job_id: str) -> Entry | None:
        row = self.db.execute(f"SELECT {_ENTRY} FROM queue WHERE id = ?", (job_id,)).fetchone()
        return _entry(row) if row else None

    def waiting_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM queue WHERE started = 0")}

    def started(self) -> list[Entry]:
        rows = self.db.execute(f"SELECT {_ENTRY} FROM queue WHERE started = 1").fetchall()
        return [_entry(r) for r in rows]

    def waiting_groups(self) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT DISTINCT owner, grp FROM queue WHERE started = 0")
        return [(r[0], r[1]) for r in rows]

    def running_in(self, owner: str, group: str) -> int:
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM queue WHERE started = 1 AND owner = ? AND grp = ?",
            (owner, group),
        ).fetchone()
        return int(n)

    def waiting_in(self, owner: str, group: str, after: tuple[int, int] | None,
                   limit: int) -> list[tuple[Entry, int, int]]:  # fmt: skip
        """Waiting entries of a group in queue order (priority, then submission), after the
        (priority, seq) `after`: each with its (priority, seq)."""
        sql = f"SELECT {_ENTRY}, seq FROM queue WHERE started = 0 AND owner = ? AND grp = ?"
        args: list[Any] = [owner, group]
        if after is not None:
            sql += " AND (priority < ? OR (priority = ? AND seq > ?))"
            args += [after[0], after[0], after[1]]
        rows = self.db.execute(sql + " ORDER BY priority DESC, seq LIMIT ?", [*args, limit])
        return [(_entry(r[:-1]), r[3], r[-1]) for r in rows.fetchall()]

    def claim(self, job_id: str) -> bool:
        """Mark a waiting job started; False if it is not waiting any more (cancelled)."""
        with self.write() as db:
            return (
                db.execute(
                    "UPDATE queue SET started = 1 WHERE id = ? AND started = 0", (job_id,)
                ).rowcount
                == 1
            )

    def cancel(self, job_id: str) -> bool:
        """Take a waiting job out of the queue; False if it is not waiting (started, or none)."""
        with self.write() as db:
            return (
                db.execute("DELETE FROM queue WHERE id = ? AND started = 0", (job_id,)).rowcount
                == 1
            )

    # -- attempts -----------------------------------------------------------------------------

    def attempts(self, job_id: str) -> tuple[int, tuple[str, ...]]:
        """(which attempt the job is, the IDs of all attempts once retried, else ())."""
        return self.attempts_of([job_id]).get(job_id, (1, ()))

    def attempts_of(self, job_ids: list[str]) -> dict[str, tuple[int, tuple[str, ...]]]:
        """`attempts` of each of these jobs that was retried or is a retry (others: absent), in
        one query per 500 jobs rather than one or two per job (`list`)."""
        found: dict[str, tuple[int, list[str]]] = {}
        for i in range(0, len(job_ids), 500):  # SQLite's limit on bound parameters
            chunk = job_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT a.id, a.attempt, b.id FROM attempts a JOIN attempts b ON b.first = a.first "
                f"WHERE a.id IN ({marks}) ORDER BY a.id, b.attempt",
                chunk,
            )
            for jid, attempt, other in rows:
                found.setdefault(jid, (int(attempt), []))[1].append(other)
        return {jid: (attempt, tuple(ids)) for jid, (attempt, ids) in found.items()}

    def last_attempt(self, job_id: str) -> str:
        """The latest attempt of the job `job_id` is an attempt of (itself if never retried)."""
        row = self.db.execute(
            "SELECT b.id FROM attempts a JOIN attempts b ON b.first = a.first WHERE a.id = ? "
            "ORDER BY b.attempt DESC LIMIT 1",
            (job_id,),
        ).fetchone()
        return str(row[0]) if row else job_id

    @staticmethod
    def add_attempt(db: sqlite3.Connection, previous: str, job_id: str) -> int:
        """Record `job_id` as the attempt after `previous` (within a transaction): its number."""
        row = db.execute("SELECT first, attempt FROM attempts WHERE id = ?",
                         (previous,)).fetchone()  # fmt: skip
        if row is None:
            db.execute("INSERT INTO attempts (id, first, attempt) VALUES (?, ?, 1)",
                       (previous, previous))  # fmt: skip
            row = (previous, 1)
        db.execute("INSERT INTO attempts (id, first, attempt) VALUES (?, ?, ?)",
                   (job_id, row[0], row[1] + 1))  # fmt: skip
        return int(row[1]) + 1

    # -- groups -------------------------------------------------------------------------------

    def group(self, owner: str, name: str) -> Group:
        row = self.db.execute(
            "SELECT parallel, paused, limits FROM groups WHERE owner = ? AND name = ?",
            (owner, name),
        ).fetchone()
        base = Group(owner, name)
        if row is not None:
            base = Group(owner, name, row[0], bool(row[1]), json.loads(row[2]))
        (queued,) = self.db.execute(
            "SELECT COUNT(*) FROM queue WHERE started = 0 AND owner = ? AND grp = ?",
            (owner, name),
        ).fetchone()
        return Group(base.owner, base.name, base.parallel, base.paused, base.limits,
                     int(queued), self.running_in(owner, name))  # fmt: skip

    def groups(self, owner: str | None) -> list[Group]:
        """The groups of `owner` (None: everyone's) that were set or have jobs in the queue."""
        sql = "SELECT owner, name FROM groups UNION SELECT owner, grp FROM queue WHERE grp != ''"
        names = sorted(set(self.db.execute(sql).fetchall()))
        return [self.group(o, n) for o, n in names if owner is None or o == owner]

    def save_group(self, group: Group) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO groups (owner, name, parallel, paused, limits) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (owner, name) DO UPDATE SET parallel = excluded.parallel, "
                "paused = excluded.paused, limits = excluded.limits",
                (group.owner, group.name, group.parallel, int(group.paused),
                 json.dumps(group.limits, sort_keys=True)),
            )  # fmt: skip


def now() -> float:
    return time.time()


def waiting_reason(queue: Queue, job: Job, entry: Entry) -> str:
    """What a queued job waits for, for people (status, list)."""
    from datetime import datetime

    if entry.not_before > now():
        at = datetime.fromtimestamp(entry.not_before).astimezone().strftime("%H:%M:%S")
        return f"waiting for its retry at {at}"
    if job.spec.after:
        return (
            "waiting for job"
            + ("s " if len(job.spec.after) > 1 else " ")
            + ", ".join(job.spec.after)
        )
    if entry.group:
        group = queue.group(entry.owner, entry.group)
        if group.paused:
            return f"group {entry.group} is paused"
        limit = "no limit" if group.parallel is None else f"{group.parallel}"
        return f"waiting for a slot in group {entry.group} ({group.running} running of {limit})"
    return "waiting to be started by jobrund"
