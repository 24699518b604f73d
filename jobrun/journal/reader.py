"""The sd-journal handles on jobrun's namespace journal, and `JobJournal`, one job's records in it.

Reads are blocking calls into sd-journal on mmap'd files; the callers run them on the event loop a
batch (`BATCH` records) at a time, which bounds what one read holds the loop for.
"""

from __future__ import annotations

import asyncio
import os
from itertools import repeat
from pathlib import Path
from typing import Any

from .. import _sigbus
from ..errors import InvalidArgument, SystemdUnavailable
from ..model import JOB_FIELD
from .records import LineBreak, Pos, Record, cursor_pos, line_break, pos_after

__all__ = ["BATCH", "JobJournal", "JournalUnavailable", "NamespaceDirs", "open_reader"]

# Records read in one go before control goes back to the event loop (~5-10 ms of work).
BATCH = 1000
# Looks again at an entry whose MESSAGE sd-journal did not find (JobJournal.read), waiting a
# little longer each time: at most 30 ms in all, on the event loop's timer, not in a sleep.
_MESSAGE_RETRIES = 3
_MESSAGE_RETRY_DELAY = 0.005
# Where journald keeps journal files: volatile, persistent.
_JOURNAL_ROOTS = ("/run/log/journal", "/var/log/journal")


class JournalUnavailable(SystemdUnavailable):
    """The journal of jobrun's namespace cannot be opened, or its journald does not respond."""


def open_reader(namespace: str) -> Any:
    """A new sd-journal handle (systemd.journal.Reader) on the namespace's journal files."""
    from systemd import journal  # imported here: the CLI's start-up time matters

    _sigbus.install()  # journald truncates archived files under our mappings (see _sigbus.c)
    try:
        # python-systemd 235 has `namespace=` (sd_journal_open_namespace, systemd >= 245): only
        # that namespace's files, in /var/log/journal/<machine-id>.<ns> and /run/log/journal/….
        return journal.Reader(namespace=namespace)
    except OSError as e:
        raise JournalUnavailable(
            f"cannot open the journal of namespace {namespace!r}: {e}",
            hint="reading job output needs root or membership in group systemd-journal",
        ) from e


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NamespaceDirs:
    """Whether a namespace's journal directories appeared since this was made.

    sd-journal (252) ignores a namespace directory created after it was opened (its inotify
    handler only adds directories named by a bare machine ID), so a handle opened before the
    namespace's journald first ran would never see anything: it must be opened again.
    """

    def __init__(self, namespace: str) -> None:
        from systemd import id128

        machine = id128.get_machine().hex
        self._dirs = [Path(root, f"{machine}.{namespace}") for root in _JOURNAL_ROOTS]
        self._existed = self._exist()

    def _exist(self) -> bool:
        return any(d.is_dir() for d in self._dirs)

    def appeared(self) -> bool:
        return not self._existed and self._exist()

    def files(self) -> frozenset[tuple[str, int]]:
        """The namespace's journal files now, by name and inode (rotation renames the active
        file and creates a new one; vacuum deletes)."""
        found: set[tuple[str, int]] = set()
        for d in self._dirs:
            try:
                with os.scandir(d) as entries:
                    found.update(
                        (e.path, e.inode())
                        for e in entries
                        if e.name.endswith((".journal", ".journal~"))
                    )
            except OSError:
                continue
        return frozenset(found)


def _job_reader(namespace: str, job_id: str) -> Any:
    r = open_reader(namespace)
    r.data_threshold = 0  # whole fields, however long
    # The job's own stdout/stderr only: JOBRUN_JOB (LogExtraFields=) is added by journald from
    # the unit, and _TRANSPORT=stdout keeps out what the job sent by syslog or the native
    # protocol, where it could set JOBRUN_JOB=<another job> itself.
    r.add_match(f"{JOB_FIELD}={job_id}")
    r.add_match("_TRANSPORT=stdout")
    return r


class _BreakIndex:
    """The line breaks other than newline among a job's records, read in step with its reader.

    Asking each record for its _LINE_BREAK costs a scan of all its fields (and a KeyError for
    the ordinary line, which has none): a third of the time per record. A second handle that
    matches only records with a _LINE_BREAK finds the few that have one through the journal's
    field index. It reads after the main handle, so it has seen every record that one has."""

    def __init__(self, namespace: str, job_id: str) -> None:
        self._namespace = namespace
        self._job_id = job_id
        self._r: Any = None
        # The next record with a break not yet matched to one read: (cursor, break, position).
        self._next: tuple[str, LineBreak, Pos] | None = None

    def close(self) -> None:
        if self._r is not None:
            self._r.close()
        self._r = None
        self._next = None

    def between(self, first: str, last: str) -> dict[str, LineBreak]:
        """The breaks among the records from `first` to `last` (the ones just read), by cursor."""
        if self._r is None:
            r = _job_reader(self._namespace, self._job_id)
            # Every value there is (a newer journald may know more kinds of break).
            values = {v.value for v in LineBreak if v is not LineBreak.NEWLINE}
            values |= {_text(v) for v in r.query_unique("_LINE_BREAK")}
            for value in sorted(values):
                r.add_match(f"_LINE_BREAK={value}")
            r.seek_cursor(first)  # then _next(): the first record with a break at or after it
            self._r = r
        r = self._r
        end = cursor_pos(last)
        found: dict[str, LineBreak] = {}
        while True:
            if self._next is None:
                if not r._next():
                    break
                c = r._get_cursor()
                self._next = (c, line_break(r._get("_LINE_BREAK")), cursor_pos(c))
            c, brk, pos = self._next
            if pos_after(pos, end):
                break  # a record the main handle has not read yet
            found[c] = brk
            self._next = None
        return found


class JobJournal:
    """One sd_journal handle on the namespace, filtered to one job's stdout, with a second,
    unfiltered one for `bounds()`. Handles know the journal files there were when they were
    opened (new ones come only through a new `JobJournal`)."""

    def __init__(self, job_id: str, namespace: str, *, follow: bool = False) -> None:
        """`follow`: the handle of `bounds()` is opened first, so that this one knows every
        journal file that one knows (what a follower needs to tell deleted from unread)."""
        self._namespace = namespace
        self._dirs = NamespaceDirs(namespace)
        # Unfiltered, for bounds(); opened on first need, or before _j when following.
        self._all: Any = open_reader(namespace) if follow else None
        try:
            self._j: Any = _job_reader(namespace, job_id)
        except BaseException:
            if self._all is not None:
                self._all.close()
            raise
        self._job_id = job_id
        self._on_entry = False  # positioned on an entry not yet returned
        self._breaks = _BreakIndex(namespace, job_id)
        # An entry whose MESSAGE the last read did not find: (realtime, cursor), to look again.
        self._missing: tuple[int, str] | None = None
        # seek_tail(0): the cursor of the last record, which is skipped (None: there is none)
        self.skipped: str | None = None

    def stale(self) -> bool:
        """Whether the namespace's journal appeared only after this handle was opened."""
        return self._dirs.appeared()

    def close(self) -> None:
        self._j.close()
        if self._all is not None:
            self._all.close()
        self._breaks.close()

    def bounds(self) -> tuple[Pos, Pos] | None:
        """The oldest and the newest entry of the namespace journal (None: no entries)."""
        if self._all is None:
            self._all = open_reader(self._namespace)
        a = self._all
        a.seek_head()
        if not a._next():
            return None
        first = cursor_pos(a._get_cursor())
        a.seek_tail()
        a._previous()
        return first, cursor_pos(a._get_cursor())

    def seek_head(self) -> None:
        self._j.seek_head()

    def seek_since(self, usec: int) -> None:
        self._j.seek_realtime(usec)

    def seek_after(self, cursor: str) -> bool:
        """Position after `cursor`; True if its entry is still there (one of ours)."""
        try:
            self._j.seek_cursor(cursor)
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"not a journal cursor: {cursor!r}") from e
        # seek_cursor + next lands on the cursor's own entry if it is still there. If nothing
        # comes, the position stays at the cursor and the next entry after it comes later.
        if not self._j._next():
            return False
        if self._j.test_cursor(cursor):
            return True
        self._on_entry = True
        return False

    def seek_tail(self, n: int) -> int:
        """Position on the n-th last record; returns how many records there are to read (<= n)."""
        self._j.seek_tail()
        if n == 0:
            # seek_tail + next would return the last entry again (252): step onto it, as read.
            if self._j._previous():
                self.skipped = self._j._get_cursor()
            return 0
        moved: int = self._j._previous(n)
        self._on_entry = moved > 0
        return moved

    async def read(self, limit: int) -> list[Record]:
        """Up to `limit` records after the current position (fewer at the end of the journal)."""
        records = self._read(limit)
        while self._missing is not None:
            usec, cursor = self._missing
            self._missing = None
            message = await self._message_again(cursor)
            brk = self._breaks.between(cursor, cursor).get(cursor, LineBreak.NEWLINE)
            records.append(Record(usec, cursor, message, brk))
            if len(records) < limit:
                records += self._read(limit - len(records))
        return records

    def _read(self, limit: int) -> list[Record]:
        """`read` up to an entry whose MESSAGE is not found (left in `_missing`)."""
        j = self._j
        nxt, get, realtime, cursor = j._next, j._get, j._get_realtime, j._get_cursor
        times: list[int] = []
        cursors: list[str] = []
        messages: list[bytes] = []
        # The loop runs once per line: bound methods, no attribute look-ups (P3).
        add_time, add_cursor, add_message = times.append, cursors.append, messages.append
        on_entry, self._on_entry = self._on_entry, False
        for _ in range(limit):
            if on_entry:
                on_entry = False
            elif not nxt():
                break
            # _get (the C level under Reader.get_next) returns the raw field bytes; get_next would
            # decode every field and turn MESSAGE into str when it happens to be valid UTF-8.
            add_time(realtime())
            add_cursor(cursor())
            try:
                add_message(get("MESSAGE"))
            except KeyError:
                self._missing = (times.pop(), cursors.pop())
                break
        if not cursors:
            return []
        breaks = self._breaks.between(cursors[0], cursors[-1])
        if not breaks:
            return list(map(Record, times, cursors, messages, repeat(LineBreak.NEWLINE)))
        newline = LineBreak.NEWLINE
        return [
            Record(t, c, m, breaks.get(c, newline))
            for t, c, m in zip(times, cursors, messages, strict=True)
        ]

    async def _message_again(self, cursor: str) -> bytes:
        """The MESSAGE of the entry at `cursor`, which the first look did not find; leaves the
        handle on that entry.

        Every stdout entry has one, but sd-journal (252) skips a data object it finds bad and then
        reports the field as absent, which can happen to an entry read right after journald wrote
        it. Look again from the cursor a few times; if it stays absent, fail with a clear error,
        never skip the line."""
        for attempt in range(_MESSAGE_RETRIES):
            await asyncio.sleep(_MESSAGE_RETRY_DELAY * (attempt + 1))
            self._j.seek_cursor(cursor)
            if self._j._next() and self._j.test_cursor(cursor):
                try:
                    message: bytes = self._j._get("MESSAGE")
                except KeyError:
                    continue
                return message
        raise JournalUnavailable(
            f"the journal entry {cursor} of job {self._job_id} has no MESSAGE field",
            "the journal file may be damaged: journalctl --namespace=jobrun --verify",
        )
