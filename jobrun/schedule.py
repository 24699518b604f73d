"""Schedules: a job's spec that a systemd timer runs later (`--at`, `--in`) or again and again
(`--every`, systemd's OnCalendar= syntax). Each firing is a job of its own, linked to its schedule.

This module holds the values, the checks of what a caller gives (the time, the calendar) and the
schedules' part of jobrun's database (store.py creates the tables). The timers themselves are
jobrund's (daemon/schedules.py).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import AmbiguousJobId, InvalidArgument, JobNotFound, StateError
from .model import JobSpec, is_valid_id_prefix
from .store import Store, spec_from_json, spec_to_json

SCHEDULE_PREFIX = "jobrun-s-"  # of a schedule's timer and of the service the timer activates

# What an OnCalendar= expression is made of ("Mon..Fri *-*-* 10:00:00 Europe/Berlin",
# "*:*:0/2", "2026-12-06 05:00:00 UTC"). systemd parses it; this only keeps out what could change
# the meaning of the transient unit file systemd writes it into (line breaks, quotes, escapes).
_CALENDAR = re.compile(r"[A-Za-z0-9 *:.,/~+_-]{1,200}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w)?")
_UNITS = {None: 1, "ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
          "w": 7 * 86400}  # fmt: skip
MAX_AHEAD = timedelta(days=366 * 10)
# Each schedule is two units in PID 1: a user's schedules are bounded (admins' are not).
MAX_PER_USER = 256
KEEP_DONE = timedelta(days=7)  # how long a one-shot schedule that has fired stays listed


def timer_name(schedule_id: str) -> str:
    return f"{SCHEDULE_PREFIX}{schedule_id}.timer"


def service_name(schedule_id: str) -> str:
    return f"{SCHEDULE_PREFIX}{schedule_id}.service"


def check_calendar(text: Any) -> str:
    """An OnCalendar= expression as the caller gave it, if it can be handed to systemd (which
    decides whether it is valid); InvalidArgument otherwise."""
    if not isinstance(text, str) or not _CALENDAR.fullmatch(text.strip()):
        shown = repr(text)[:60]
        raise InvalidArgument(
            f"{shown} is not a calendar expression",
            "use systemd's OnCalendar= syntax, e.g. 'hourly', '*-*-* 02:00:00', 'Mon *-*-* 9:00' "
            "(see systemd.time(7); `systemd-analyze calendar EXPR` tries one)",
        )
    return " ".join(text.split())


def parse_in(text: Any) -> float:
    """`--in`: seconds from now, given as 90, 90s, 10m, 2h, 1d or 1h30m."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str) and len(text) <= 40 and text.strip():
        seconds, pos, s = 0.0, 0, text.strip().lower()
        while pos < len(s):
            m = _DURATION.match(s, pos)
            if m is None or m.end() == pos:
                raise _bad_duration(text)
            seconds += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
            while pos < len(s) and s[pos] == " ":
                pos += 1
    else:
        raise _bad_duration(text)
    if not 0 < seconds <= MAX_AHEAD.total_seconds():
        raise InvalidArgument(f"--in must be from 1s to {MAX_AHEAD.days} days, not {text!r}")
    return seconds


def _bad_duration(text: Any) -> InvalidArgument:
    return InvalidArgument(f"{repr(text)[:40]} is not a duration", "e.g. 90s, 10m, 2h, 1d or 1h30m")


def parse_at(text: Any, now: datetime | None = None) -> datetime:
    """`--at`: an absolute time (ISO 8601, local time unless it says its zone, e.g.
    2026-12-24T18:00 or '2026-12-24 18:00:00+01:00'), or HH:MM[:SS], the next such time."""
    now = now or datetime.now(UTC)
    if not isinstance(text, str) or not 0 < len(text) <= 64:
        raise _bad_time(text)
    s = text.strip()
    try:
        if re.fullmatch(r"\d{1,2}:\d\d(:\d\d)?", s):
            local = now.astimezone()
            parts = [int(p) for p in s.split(":")] + [0]
            when = local.replace(hour=parts[0], minute=parts[1], second=parts[2], microsecond=0)
            if when <= local:
                when += timedelta(days=1)
        else:
            when = datetime.fromisoformat(s)
            if when.tzinfo is None:
                when = when.astimezone()  # the local time zone
    except ValueError:
        raise _bad_time(text) from None
    when = when.astimezone(UTC)
    check_future(when, now)
    return when


def check_future(when: datetime, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    if when <= now:
        raise InvalidArgument(
            f"{when.isoformat()} is in the past", "give a time to come (or `--in`)"
        )
    if when - now > MAX_AHEAD:
        raise InvalidArgument(f"{when.isoformat()} is more than {MAX_AHEAD.days} days ahead")
    return when


def _bad_time(text: Any) -> InvalidArgument:
    return InvalidArgument(
        f"{repr(text)[:70]} is not a time",
        "give an ISO 8601 time (2026-12-24T18:00, local unless it says +HH:MM) or HH:MM",
    )


def at_calendar(when: datetime) -> str:
    """The OnCalendar= expression of a single firing at `when` (whole seconds, rounded up)."""
    when = when.astimezone(UTC)
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def credential_text(credential: tuple[bytes, int]) -> str:
    """A certificate's (issuer, serial) as the database keeps it."""
    issuer, serial = credential
    return f"{issuer.hex()}:{serial}"


def credential_of(text: str) -> tuple[bytes, int]:
    issuer, _, serial = text.partition(":")
    return bytes.fromhex(issuer), int(serial)


def new_schedule_id() -> str:
    from .model import new_job_id

    return new_job_id()


@dataclass(frozen=True)
class Event:
    """Something that happened to a schedule: a firing that made a run (`job`), one skipped
    because the last run was still running, one that failed (`note` says why), or firings missed
    while the host was down (`count` of them, from `at` to `until`)."""

    at: datetime
    kind: str  # run, skipped, failed, missed
    job: str | None = None
    count: int = 1
    until: datetime | None = None
    note: str | None = None


@dataclass(frozen=True)
class Schedule:
    id: str
    spec: JobSpec
    owner: str
    uid: int
    calendar: str  # the timer's OnCalendar= expression
    once: bool  # --at/--in: one firing
    catch_up: bool  # run one missed firing when jobrund finds the timer gone (a reboot)
    created_at: datetime
    remote: bool = False
    run_as: str | None = None
    credential: str | None = None  # a remote owner's certificate (credential_text)
    next_run: datetime | None = None  # systemd's answer; None: no firing to come
    last_run: Event | None = None
    events: tuple[Event, ...] = field(default=())  # newest last

    @property
    def timer(self) -> str:
        return timer_name(self.id)

    @property
    def done(self) -> bool:
        """A one-shot schedule that has fired (or missed its time)."""
        return self.once and any(e.kind != "skipped" for e in self.events)


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


MAX_EVENTS = 200  # kept per schedule (the oldest are dropped)


class Schedules:
    """The schedules' tables in jobrun's database (Store's connection)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self.store.db
        try:
            with db:
                yield db
        except sqlite3.Error as e:
            raise StateError(
                f"cannot write jobrun's job database {self.store.path}: {e}",
                f"check the free space and permissions of {self.store.directory}",
            ) from e

    def add(self, s: Schedule) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO schedules (id, owner, uid, remote, run_as, spec, calendar, once, "
                "catch_up, created_at, credential) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (s.id, s.owner, s.uid, int(s.remote), s.run_as, spec_to_json(s.spec), s.calendar,
                 int(s.once), int(s.catch_up), _iso(s.created_at), s.credential),
            )  # fmt: skip

    def remove(self, schedule_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))
            db.execute("DELETE FROM schedule_events WHERE schedule_id = ?", (schedule_id,))

    def add_event(self, schedule_id: str, e: Event) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO schedule_events (schedule_id, at, kind, job_id, count, until, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (schedule_id, _iso(e.at), e.kind, e.job, e.count, _iso(e.until), e.note),
            )
            db.execute(
                "DELETE FROM schedule_events WHERE schedule_id = ? AND rowid NOT IN (SELECT rowid "
                "FROM schedule_events WHERE schedule_id = ? ORDER BY at DESC LIMIT ?)",
                (schedule_id, schedule_id, MAX_EVENTS),
            )

    _COLUMNS = (
        "id, owner, uid, remote, run_as, spec, calendar, once, catch_up, created_at, credential"
    )

    def _events(self, schedule_id: str) -> tuple[Event, ...]:
        rows = self.store.db.execute(
            "SELECT at, kind, job_id, count, until, note FROM schedule_events "
            "WHERE schedule_id = ? ORDER BY at, rowid",
            (schedule_id,),
        ).fetchall()
        return tuple(
            Event(_dt(at) or datetime.now(UTC), kind, job, count, _dt(until), note)
            for at, kind, job, count, until, note in rows
        )

    def _row(self, row: tuple[Any, ...]) -> Schedule:
        sid, owner, uid, remote, run_as, spec, calendar, once, catch_up, created, cred = row
        events = self._events(sid)
        runs = [e for e in events if e.kind == "run"]
        return Schedule(
            id=sid,
            spec=spec_from_json(spec),
            owner=owner,
            uid=uid,
            calendar=calendar,
            once=bool(once),
            catch_up=bool(catch_up),
            created_at=_dt(created) or datetime.now(UTC),
            remote=bool(remote),
            run_as=run_as,
            credential=cred,
            last_run=runs[-1] if runs else None,
            events=events,
        )

    def get(self, schedule_id: str) -> Schedule:
        row = self.store.db.execute(
            f"SELECT {self._COLUMNS} FROM schedules WHERE id = ?", (schedule_id,)
        ).fetchone()
        if row is None:
            raise JobNotFound(f"no schedule {schedule_id}", "see `jobrun schedule list`")
        return self._row(row)

    def resolve(self, prefix: str, owner_uid: int | None, owner: str | None) -> str:
        """The full ID of the caller's one schedule whose ID starts with `prefix` (as
        Store.resolve: another user's schedule is not found)."""
        prefix = prefix.strip().lower() if isinstance(prefix, str) else ""
        if not is_valid_id_prefix(prefix):
            raise InvalidArgument(
                f"{prefix[:40]!r} is not a schedule ID: IDs are letters a–z and digits",
                "see `jobrun schedule list`",
            )
        args: list[Any] = [prefix, prefix + "~"]
        sql = "SELECT id FROM schedules WHERE id >= ? AND id < ?"
        if owner_uid is not None:
            sql += " AND uid = ? AND remote = 0"
            args.append(owner_uid)
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        ids = [r[0] for r in self.store.db.execute(sql + " LIMIT 5", args).fetchall()]
        if not ids:
            raise JobNotFound(f"no schedule {prefix}", "see `jobrun schedule list`")
        if len(ids) > 1:
            raise AmbiguousJobId(
                f"schedule ID prefix {prefix} matches several schedules ({', '.join(ids)}…)",
                "give more characters of the ID",
            )
        return str(ids[0])

    _DONE = (  # one-shot schedules that have fired (or missed their time)
        "SELECT schedule_id FROM schedule_events GROUP BY schedule_id "
        "HAVING SUM(kind != 'skipped') > 0"
    )

    def count(self, owner_uid: int, owner: str) -> int:
        """The owner's schedules still to fire."""
        row = self.store.db.execute(
            "SELECT COUNT(*) FROM schedules WHERE uid = ? AND owner = ? AND "
            f"(once = 0 OR id NOT IN ({self._DONE}))",
            (owner_uid, owner),
        ).fetchone()
        return int(row[0])

    def prune(self, before: datetime) -> None:
        """Forget one-shot schedules done before `before` (their runs stay)."""
        with self._write() as db:
            ids = [r[0] for r in db.execute(
                f"SELECT id FROM schedules WHERE once = 1 AND id IN ({self._DONE} "
                "AND MAX(at) < ?)", (_iso(before),)).fetchall()]  # fmt: skip
            for sid in ids:
                db.execute("DELETE FROM schedules WHERE id = ?", (sid,))
                db.execute("DELETE FROM schedule_events WHERE schedule_id = ?", (sid,))

    def all(self, owner_uid: int | None = None, owner: str | None = None) -> list[Schedule]:
        args: list[Any] = []
        sql = f"SELECT {self._COLUMNS} FROM schedules WHERE 1"
        if owner_uid is not None:
            sql += " AND uid = ? AND remote = 0"
            args.append(owner_uid)
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        rows = self.store.db.execute(sql + " ORDER BY created_at", args).fetchall()
        return [self._row(r) for r in rows]
