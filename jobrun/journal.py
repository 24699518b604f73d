"""Reading one job's output back from the journal.

Every job unit runs with `LogNamespace=jobrun` and `LogExtraFields=JOBRUN_JOB=<id>`, stdout and
stderr going to journald as one stream. This module reads those records back:

- `JobOutput(job_id).records(...)`: an async iterator of `Record`s, from the first line (default),
  after a cursor, the last N, or since a time; with `follow=True` it goes on until the job has
  ended *and* journald has written everything the job wrote (see "The end" below). The caller
  says when the job's unit has stopped by setting an `asyncio.Event` (`ended=`).
- `JobOutput(job_id).open(...)`: the same as a blocking binary stream (`io.RawIOBase`).

What journald (systemd 252, src/journal/journald-stream.c) does to the bytes; the tests pin it:

- Lines are split at `\n`, at NUL and after `LineMax` (48K) bytes, and the record says which
  (`_LINE_BREAK`), so `Record.data` gives the job's bytes back: `message + b"\n"`, `message +
  b"\0"`, or `message` alone where the line goes on in the next record (line-max), where the
  job's last bytes had no newline (eof), or where another process of the job wrote to the same
  stream mid-line (pid-change). A 100 KB line comes back as three records that join to it.
- Bytes that are not UTF-8 are stored and returned as they are (`message` is always `bytes`).
- Lost on the way in, nothing a reader can undo: empty lines (also the empty piece between two
  NULs, and the newline right after a line of exactly LineMax bytes); trailing spaces, tabs and
  CRs of a line that has anything else; and, unless the unit sets `SyslogLevelPrefix=no`, a
  leading `<N>`, which journald takes for a syslog priority.

The end. A job's unit can be dead while its output still sits in the stdout socket, not yet read by
journald (systemd issue #28650; here `seq 1000000` exits after 0.1 s and journald needs seconds),
or while the connection itself still waits in the socket's accept queue (journald busy, or being
socket-activated). Reading the journal once the unit has ended therefore loses the tail.
`journalctl --sync` (root only) replies from a low-priority event, i.e. once no stream at all has
unread data: any busy job postpones that indefinitely. What journald offers instead: a state file
per stdout stream, `/run/systemd/journal.<ns>/streams/<dev>:<ino>`, written once the stream's
header has been read and naming its unit (`UNIT=`), removed after the stream hit EOF and its last
line was written to the journal. With the unit dead nobody writes to the stream any more, so "no
state file names the unit" means "all is written" -- provided journald has accepted the stream and
read its header. That gap is closed by a probe: we connect to the same socket and send a header of
our own. The accept queue is FIFO, and journald serves sources of equal priority oldest-pending
first (sd-event), so once our probe's state file exists, the job's stream has had its first read,
which holds its header. Then: wait until no state file names the unit, read to the end, stop.
The state files are root's (0600): other readers end after a quiet spell instead, which is not
exact.

Lost output. Journal files are deleted, oldest first, when the namespace journal reaches its size
limits. Every entry of the namespace has a sequence number, counted on across files, so the oldest
entry left tells whether anything was deleted (it is not number 1) and, compared with a cursor's
number, whether what was deleted came after it. For a read from the first line (or since a time)
the comparison is by time with the job's start, which only the caller knows (`started_at`;
without it the check cannot be made). While following, the reader checks whenever files come or
go that the oldest entry left follows right after what it had read. In each case it raises
`OutputLost` rather than starting later -- also when the deleted part may have held none of the
job's lines: the journal cannot tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import repeat
from pathlib import Path
from typing import Any, ClassVar

from . import _sigbus
from .errors import InvalidArgument, OutputLost, SystemdUnavailable
from .model import ID_ALPHABET, JOB_FIELD, LOG_NAMESPACE, unit_name

__all__ = [
    "JobOutput",
    "JobOutputFile",
    "JournalUnavailable",
    "LineBreak",
    "Record",
]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Records read in one go before control goes back to the event loop (~5-10 ms of work).
_BATCH = 1000
# While a followed job writes, re-check this soon after data (journald writes entries to the mmap'd
# file at once but announces them on inotify at most every 250 ms), doubling while nothing comes,
# until the inotify window is covered; then only inotify (or the end) wakes us.
_RECHECK_FIRST = 0.001
_RECHECK_LAST = 0.128
# Polling journald's stream state files at the end: first quickly, then at this pace.
_STREAMS_POLL_LAST = 0.05
# How long journald may take to accept our probe (it may be starting up); then we give up.
_PROBE_TIMEOUT = 30.0
# After the exact end, one more look this much later (journald's change-notification interval).
_SETTLE = 0.25
# Without an inotify instance to be had: wake followers this often, and try for one this often.
_POLL = 0.1
_POLL_RETRY = 5.0
# Without access to the state files: end after this long without a new record.
_QUIET_FALLBACK = 1.0
# Looks again at an entry whose MESSAGE sd-journal did not find (_Journal._message_again).
_MESSAGE_RETRIES = 3
# Where journald keeps journal files: volatile, persistent.
_JOURNAL_ROOTS = ("/run/log/journal", "/var/log/journal")


class JournalUnavailable(SystemdUnavailable):
    """The journal of jobrun's namespace cannot be opened, or its journald does not respond."""


class LineBreak(StrEnum):
    """Why journald ended a record (its `_LINE_BREAK` field; absent means newline).

    The order is part of jobrund's output pipe (daemon.py and client.py send the index): append.
    """

    NEWLINE = "newline"
    NUL = "nul"
    LINE_MAX = "line-max"
    EOF = "eof"
    PID_CHANGE = "pid-change"


_TERMINATOR = {LineBreak.NEWLINE: b"\n", LineBreak.NUL: b"\0"}
_LINE_BREAKS = {b.value.encode(): b for b in LineBreak}


class Record:
    """One journal record of a job's output. Treat it as immutable.

    A plain class with slots rather than a frozen dataclass: a reader makes one per line, and a
    frozen dataclass's __init__ plus a datetime per record cost more than reading the record
    (P3 in docs/PERFORMANCE.md). The time is kept as journald's microseconds; `timestamp` makes
    the datetime when asked."""

    __slots__ = ("cursor", "line_break", "message", "usec")

    cursor: str  # where it is in the journal; pass to `after_cursor=` to resume after it
    message: bytes  # the line as journald stored it, without its terminator
    line_break: LineBreak
    usec: int  # when journald received it: µs since the epoch (realtime)

    def __init__(
        self,
        timestamp: datetime | int,
        cursor: str,
        message: bytes,
        line_break: LineBreak = LineBreak.NEWLINE,
    ) -> None:
        """`timestamp`: an aware datetime, or µs since the epoch."""
        self.usec = timestamp if type(timestamp) is int else _usec(timestamp)  # type: ignore[arg-type]
        self.cursor = cursor
        self.message = message
        self.line_break = line_break

    @property
    def timestamp(self) -> datetime:
        """When journald received it (realtime, UTC)."""
        return _EPOCH + timedelta(microseconds=self.usec)

    @property
    def data(self) -> bytes:
        """The job's bytes this record stands for: the message and the terminator journald cut."""
        return self.message + _TERMINATOR.get(self.line_break, b"")

    def _key(self) -> tuple[int, str, bytes, LineBreak]:
        return (self.usec, self.cursor, self.message, self.line_break)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Record({self.timestamp!r}, {self.cursor!r}, {self.message!r}, {self.line_break!r})"


def _usec(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise InvalidArgument(f"{dt!r} has no time zone", hint="pass an aware datetime (UTC)")
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _from_usec(usec: int) -> datetime:
    return _EPOCH + timedelta(microseconds=usec)


@dataclass(frozen=True, slots=True)
class _Pos:
    """A point in the namespace journal: everything of ours up to here is read (or not wanted)."""

    seqnum_id: str  # "" when only the time is known
    seqnum: int
    realtime: int  # µs


_CURSOR_FIELD = re.compile(r"(?:^|;)([sit])=([0-9a-f]+)")


def _cursor_pos(cursor: str) -> _Pos:
    fields = dict(_CURSOR_FIELD.findall(cursor))
    if fields.keys() != {"s", "i", "t"}:
        raise InvalidArgument(f"not a journal cursor: {cursor!r}", hint="pass a Record.cursor")
    return _Pos(fields["s"], int(fields["i"], 16), int(fields["t"], 16))


def _pos_after(a: _Pos, b: _Pos) -> bool:
    if a.seqnum_id == b.seqnum_id:
        return a.seqnum > b.seqnum
    return a.realtime > b.realtime


def _cursor_after(cursor: str, other: str) -> bool:
    """Whether the entry of `cursor` comes after that of `other` in the namespace journal."""
    return _pos_after(_cursor_pos(cursor), _cursor_pos(other))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _time_pos(usec: int) -> _Pos:
    return _Pos("", 0, usec)


def _gap(head: _Pos, pos: _Pos) -> bool:
    """Whether entries after `pos` may have been deleted, `head` being the oldest entry left."""
    if head.seqnum <= 1:
        return False  # the journal never lost an entry
    if head.seqnum_id == pos.seqnum_id:
        return head.seqnum > pos.seqnum + 1
    return head.realtime > pos.realtime


def _lost(what: str, head: _Pos) -> OutputLost:
    return OutputLost(
        f"{what} is no longer in the journal: its oldest entry is from "
        f"{_from_usec(head.realtime).isoformat()}",
        hint="journald deleted older journal files (size limits in journald@jobrun.conf)",
    )


# journald's own record of lines its rate limit dropped (sd-messages.h SD_MESSAGE_JOURNAL_DROPPED):
# "Suppressed N messages from UNIT", N_DROPPED=N, written by journald itself (_TRANSPORT=driver,
# which no client can forge) into the namespace's journal, right before the first line of UNIT it
# lets through again. journald 252 writes it only then: a unit that stops writing while its lines
# are being dropped leaves no such record (journald_conf.py keeps the limit off for that reason).
_DROPPED_ID = "a596d6fe7bfa4994828e72309e95d61e"


def _suppressed(namespace: str, unit: str, after: _Pos | None) -> int:
    """How many of `unit`'s lines journald's rate limit dropped after `after` (None: at all)."""
    r = _open_reader(namespace)
    try:
        r.data_threshold = 0
        r.add_match(f"MESSAGE_ID={_DROPPED_ID}")
        r.add_match("_TRANSPORT=driver")
        tail = f" messages from {unit}".encode()
        total = 0
        while r._next():
            try:
                message = r._get("MESSAGE")
                count = int(r._get("N_DROPPED"))
            except (KeyError, ValueError):
                continue
            if not message.endswith(tail):
                continue
            if after is not None and not _pos_after(_cursor_pos(r._get_cursor()), after):
                continue
            total += count
        return total
    finally:
        r.close()


def _suppressed_error(job_id: str, count: int) -> OutputLost:
    return OutputLost(
        f"journald dropped {count} lines of job {job_id}'s output (its rate limit): the output "
        "shown is incomplete",
        hint="set RateLimitIntervalSec=0 in /etc/systemd/journald@jobrun.conf, then "
        "systemctl restart systemd-journald@jobrun.service (jobrun's own file does both)",
    )


def _open_reader(namespace: str) -> Any:
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


class _NamespaceDirs:
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


class _Journal:
    """The blocking core: one sd_journal handle on the namespace, filtered to one job's stdout."""

    def __init__(self, job_id: str, namespace: str, *, follow: bool = False) -> None:
        """`follow`: the handle of `bounds()` is opened first, so that this one knows every
        journal file that one knows (what a follower needs to tell deleted from unread)."""
        self._namespace = namespace
        self._dirs = _NamespaceDirs(namespace)
        # Unfiltered, for bounds(); opened on first need, or before _j when following.
        self._all: Any = _open_reader(namespace) if follow else None
        try:
            self._j: Any = _open_reader(namespace)
        except BaseException:
            if self._all is not None:
                self._all.close()
            raise
        self._j.data_threshold = 0  # whole fields, however long
        # The job's own stdout/stderr only: JOBRUN_JOB (LogExtraFields=) is added by journald from
        # the unit, and _TRANSPORT=stdout keeps out what the job sent by syslog or the native
        # protocol, where it could set JOBRUN_JOB=<another job> itself.
        self._j.add_match(f"{JOB_FIELD}={job_id}")
        self._j.add_match("_TRANSPORT=stdout")
        self._job_id = job_id
        self._on_entry = False  # positioned on an entry not yet returned
        # Only the records that have a _LINE_BREAK, read in step with _j (see `_breaks`), and
        # the next of them not yet matched to one of _j's: (cursor, value, position).
        self._brk: Any = None
        self._brk_next: tuple[str, LineBreak, _Pos] | None = None
        # seek_tail(0): the cursor of the last record, which is skipped (None: there is none)
        self.skipped: str | None = None

    def stale(self) -> bool:
        """Whether the namespace's journal appeared only after this handle was opened."""
        return self._dirs.appeared()

    def close(self) -> None:
        self._j.close()
        if self._all is not None:
            self._all.close()
        self._drop_breaks()

    def _drop_breaks(self) -> None:
        if self._brk is not None:
            self._brk.close()
        self._brk = None
        self._brk_next = None

    def bounds(self) -> tuple[_Pos, _Pos] | None:
        """The oldest and the newest entry of the namespace journal (None: no entries)."""
        if self._all is None:
            self._all = _open_reader(self._namespace)
        a = self._all
        a.seek_head()
        if not a._next():
            return None
        first = _cursor_pos(a._get_cursor())
        a.seek_tail()
        a._previous()
        return first, _cursor_pos(a._get_cursor())

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

    def read(self, limit: int) -> list[Record]:
        """Up to `limit` records after the current position (fewer at the end of the journal)."""
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
            c = cursor()
            add_cursor(c)
            try:
                add_message(get("MESSAGE"))
            except KeyError:
                add_message(self._message_again(c))
        if not cursors:
            return []
        breaks = self._breaks(cursors[0], cursors[-1])
        if not breaks:
            return list(map(Record, times, cursors, messages, repeat(LineBreak.NEWLINE)))
        newline = LineBreak.NEWLINE
        return [
            Record(t, c, m, breaks.get(c, newline))
            for t, c, m in zip(times, cursors, messages, strict=True)
        ]

    def _message_again(self, cursor: str) -> bytes:
        """The MESSAGE of the entry at `cursor`, which the first look did not find.

        Every stdout entry has one, but sd-journal (252) skips a data object it finds bad and then
        reports the field as absent: seen once in CI, for one line of 200,000 read right after
        journald had written them. Look again from the cursor a few times; if it stays absent,
        fail with a clear error, never skip the line."""
        for attempt in range(_MESSAGE_RETRIES):
            time.sleep(0.005 * (attempt + 1))  # at most 30 ms of the caller's time, and rarely
            self._j.seek_cursor(cursor)
            if self._j._next() and self._j.test_cursor(cursor):
                with contextlib.suppress(KeyError):
                    message: bytes = self._j._get("MESSAGE")
                    return message
        raise JournalUnavailable(
            f"the journal entry {cursor} of job {self._job_id} has no MESSAGE field",
            "the journal file may be damaged: journalctl --namespace=jobrun --verify",
        )

    def _breaks(self, first: str, last: str) -> dict[str, LineBreak]:
        """The line breaks other than newline among the records from `first` to `last` (the
        ones just read), by cursor.

        Asking each record for its _LINE_BREAK costs a scan of all its fields (and a KeyError for
        the ordinary line, which has none): a third of the time per record. A second handle that
        matches only records with a _LINE_BREAK finds the few that have one through the journal's
        field index. It reads after _j, so it has seen every record _j has; rotated-in files
        reset it (`process`)."""
        if self._brk is None:
            b = _open_reader(self._namespace)
            b.data_threshold = 0
            b.add_match(f"{JOB_FIELD}={self._job_id}")
            b.add_match("_TRANSPORT=stdout")
            # Every value there is (a newer journald may know more kinds of break).
            values = {v.value for v in LineBreak if v is not LineBreak.NEWLINE}
            values |= {_text(v) for v in b.query_unique("_LINE_BREAK")}
            for value in sorted(values):
                b.add_match(f"_LINE_BREAK={value}")
            b.seek_cursor(first)  # then _next(): the first record with a break at or after it
            self._brk = b
        b = self._brk
        end = _cursor_pos(last)
        found: dict[str, LineBreak] = {}
        while True:
            if self._brk_next is None:
                if not b._next():
                    break
                c = b._get_cursor()
                # A kind of break newer than this code: no terminator is the safe guess.
                brk = _LINE_BREAKS.get(b._get("_LINE_BREAK"), LineBreak.PID_CHANGE)
                self._brk_next = (c, brk, _cursor_pos(c))
            c, brk, pos = self._brk_next
            if _pos_after(pos, end):
                break  # a record _j has not read yet
            found[c] = brk
            self._brk_next = None
        return found


def _watch_fd(reader: Any) -> int:
    """sd_journal_get_fd: an inotify instance watching the reader's directories and files."""
    fd: int = reader.fileno()
    return fd


class _Watch:
    """The one inotify instance of a namespace's journal for all followers on an event loop.

    A reader that watches the journal itself costs inotify instances (sd_journal_get_fd), of
    which root has 128 (`fs.inotify.max_user_instances`, shared by every root process of the
    host); jobrund following hundreds of jobs ran out. Followers' handles therefore have no
    inotify of their own: one unfiltered handle per namespace and event loop watches the files,
    wakes every follower when the journal changes, and counts the changes of the set of files
    (`generation`: rotation, vacuum), which a handle without inotify never notices itself. A
    follower that sees the count change opens its handles afresh after its last record.

    Where no inotify instance (or watch) is to be had at all, following must not fail: the watch
    then polls, waking the followers every `_POLL` seconds and comparing the namespace's journal
    files, and tries for an inotify instance again every `_POLL_RETRY` seconds.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _all: ClassVar[dict[tuple[asyncio.AbstractEventLoop, str], _Watch]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, namespace: str) -> None:
        self._loop = loop
        self._namespace = namespace
        self.generation = 0
        self._wakers: set[asyncio.Event] = set()  # one per follower: its users
        self._reader: Any = None
        self._fd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._dirs = _NamespaceDirs(namespace)
        if not self._watch():
            self._poller = loop.create_task(self._poll())

    @classmethod
    def acquire(cls, namespace: str, wake: asyncio.Event) -> _Watch:
        """The namespace's watch on the running loop (created on first use); `wake` is set
        whenever the journal changes, until `release`."""
        loop = asyncio.get_running_loop()
        with cls._lock:
            w = cls._all.get((loop, namespace))
            if w is None:
                w = cls._all[loop, namespace] = cls(loop, namespace)
            w._wakers.add(wake)
        return w

    def release(self, wake: asyncio.Event) -> None:
        with self._lock:
            self._wakers.discard(wake)
            if self._wakers:
                return
            del self._all[self._loop, self._namespace]
        self._unwatch()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    def _watch(self, *, quiet: bool = False) -> bool:
        """Watch with an inotify instance; False if none can be had (the reason logged)."""
        self._dirs = _NamespaceDirs(self._namespace)
        try:
            reader = _open_reader(self._namespace)
        except JournalUnavailable as e:
            if not quiet:
                log.warning("%s: following by polling every %.1f s", e.message, _POLL)
            return False
        try:
            fd = _watch_fd(reader)
        except OSError as e:
            reader.close()
            if not quiet:
                log.warning(
                    "cannot watch the journal (%s; fs.inotify.max_user_instances, "
                    "max_user_watches): following by polling every %.1f s",
                    e,
                    _POLL,
                )
            return False
        self._loop.add_reader(fd, self._changed)
        self._reader, self._fd = reader, fd
        return True

    def _unwatch(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _wake(self, files_changed: bool) -> None:
        if files_changed:
            self.generation += 1
        for wake in self._wakers:
            wake.set()

    def _changed(self) -> None:
        from systemd import journal

        try:
            files_changed = self._reader.process() == journal.INVALIDATE
        except OSError:
            files_changed = True
        if self._dirs.appeared():
            # The namespace's directory appeared: only a new handle watches it (_NamespaceDirs).
            self._unwatch()
            if not self._watch():
                self._poller = self._loop.create_task(self._poll())
            files_changed = True
        self._wake(files_changed)

    async def _poll(self) -> None:
        files = self._dirs.files()
        since_try = 0.0
        while True:
            await asyncio.sleep(_POLL)
            since_try += _POLL
            if since_try >= _POLL_RETRY:
                since_try = 0.0
                if self._watch(quiet=True):
                    log.warning("watching the journal again: polling ends")
                    self._poller = None
                    self._wake(True)  # files may have come or gone meanwhile
                    return
            now = self._dirs.files()
            changed, files = now != files, now
            if self._dirs.appeared():
                self._dirs = _NamespaceDirs(self._namespace)
                changed = True
            self._wake(changed)

    def timeout(self) -> float | None:
        """When sd_journal wants to be asked again even without an inotify event (network fs)."""
        if self._reader is None:
            return None  # polling: the poller wakes the followers
        ms: int = self._reader.get_timeout_ms()
        return None if ms < 0 else ms / 1000


class _Streams:
    """journald's stdout streams of a namespace: the probe and the per-stream state files."""

    def __init__(self, namespace: str) -> None:
        # RuntimeDirectory=systemd/journal.%i of systemd-journald@.service
        self.runtime_dir = Path("/run/systemd") / f"journal.{namespace}"

    def _state_files(self) -> Iterator[str]:
        """The stream state files' contents. They are root's (0600): PermissionError otherwise."""
        # os.path, not pathlib: pathlib interns every part of a path, and the name of each
        # stream is new. Under load (hundreds of streams, read while followers end) that grew
        # the interpreter's table of interned strings by 0.9 MiB for good.
        streams = os.path.join(self.runtime_dir, "streams")
        try:
            names = os.listdir(streams)
        except FileNotFoundError:
            return
        for name in names:
            try:
                with open(os.path.join(streams, name), errors="replace") as f:
                    yield f.read()
            except FileNotFoundError:
                continue  # that stream ended while we looked

    async def _probe(self) -> None:
        """Connect a stream of our own and return once journald has read its header."""
        loop = asyncio.get_running_loop()
        nonce = f"jobrun-probe-{secrets.token_hex(8)}"
        needle = f"\nIDENTIFIER={nonce}\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, str(self.runtime_dir / "stdout"))
            except (FileNotFoundError, ConnectionRefusedError):
                return  # nobody listens, so no connection can be waiting there either
            # The stream protocol's header: identifier, unit, priority, level prefix, forward to
            # syslog, kmsg, console. No line follows, so nothing is written to the journal.
            await loop.sock_sendall(sock, f"{nonce}\n\n6\n0\n0\n0\n0\n".encode())
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT):
                    delay = 0.0005
                    while True:
                        try:
                            if any(needle in text for text in self._state_files()):
                                return
                        except PermissionError:
                            # journald shuts its sending side down on accept: EOF means accepted.
                            await loop.sock_recv(sock, 1)
                            raise
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _STREAMS_POLL_LAST)
            except TimeoutError:
                raise JournalUnavailable(
                    f"the journald of {self.runtime_dir.name} did not take a stream "
                    f"within {_PROBE_TIMEOUT:.0f} s",
                    hint="systemctl status systemd-journald@jobrun.service",
                ) from None

    async def drained(self, unit: str) -> bool:
        """Wait until journald has written all output of `unit`, which must have stopped.

        True once that is certain; False (early) if the state files cannot be read (not root).
        """
        try:
            await self._probe()
            line = f"\nUNIT={unit}\n"
            delay = 0.0005
            while any(line in text for text in self._state_files()):
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STREAMS_POLL_LAST)
        except PermissionError:
            return False
        return True


class JobOutput:
    """The output of one job, as recorded in the journal. Opens nothing until read."""

    def __init__(
        self,
        job_id: str,
        *,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        namespace: str = LOG_NAMESPACE,
    ) -> None:
        """`started_at`: when the job's unit started (realtime); lets the reader notice output
        that journald has deleted (see `OutputLost`). Without it that check is skipped for reads
        from the first line and for short tails."""
        if not job_id or any(c not in ID_ALPHABET for c in job_id):
            raise InvalidArgument(f"not a job ID: {job_id!r}")
        self.job_id = job_id
        self.unit = unit_name(job_id)
        self.namespace = namespace
        self.started_at = started_at
        self._start_usec = None if started_at is None else _usec(started_at)
        # `finished_at`: when the job ended, if it has; long enough ago, the last look after
        # journald's notification interval (below) is not needed.
        self._settled = finished_at is not None and (
            datetime.now(finished_at.tzinfo) - finished_at > timedelta(seconds=_SETTLE * 8)
        )

    async def records(
        self,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        ended: asyncio.Event | None = None,
    ) -> AsyncGenerator[Record, None]:
        """The job's records in journal order.

        Where to start (at most one): the first record (default); `after_cursor`, the record
        after the one with that cursor (resume); `tail`, the last N records; `since`, records
        received at or after that time.

        `follow=False`: stop at the current end of the journal. `follow=True`: wait for more.
        `ended`: an event the caller sets once the job's unit has stopped (inactive, failed or
        gone: no process of the job is left). After it is set, the reader makes sure journald
        has written all of the job's output, reads it, and stops. Without `ended`, following
        goes on until the caller stops iterating.

        Raises `OutputLost` if records in the requested range were deleted from the journal.
        A consumer that stops early should close the iterator (`contextlib.aclosing`) to free
        the journal handle at once rather than when it is garbage-collected.
        """
        batches = self._batches(
            after_cursor=after_cursor, tail=tail, since=since, follow=follow, ended=ended
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for record in batch:
                    yield record

    def batches(
        self,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        ended: asyncio.Event | None = None,
    ) -> AsyncGenerator[list[Record], None]:
        """As `records`, in lists of records (never empty) as they were read: for consumers
        that write many records at once (no per-record await)."""
        return self._batches(
            after_cursor=after_cursor, tail=tail, since=since, follow=follow, ended=ended
        )

    def open(
        self,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        ended: threading.Event | None = None,
    ) -> JobOutputFile:
        """The job's output as a blocking binary stream (for code that is not async); the
        arguments are those of `records`, with a `threading.Event` for `ended`."""
        return JobOutputFile(
            self, after_cursor=after_cursor, tail=tail, since=since, follow=follow, ended=ended
        )

    async def _batches(
        self,
        *,
        after_cursor: str | None,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        ended: asyncio.Event | None,
    ) -> AsyncGenerator[list[Record], None]:
        """The engine under `records` and `JobOutputFile`: lists of records, never empty."""
        if sum(x is not None for x in (after_cursor, tail, since)) > 1:
            raise InvalidArgument("after_cursor, tail and since exclude each other")
        if tail is not None and tail < 0:
            raise InvalidArgument(f"tail must not be negative, not {tail}")
        since_usec = None if since is None else _usec(since)
        if ended is not None and not follow:
            raise InvalidArgument("ended= only makes sense with follow=True")

        if not follow:
            j = self._open(after_cursor, tail, since_usec)
            first: str | None = None
            try:
                while batch := j.read(_BATCH):
                    if first is None:
                        first = batch[0].cursor
                    yield batch
                    await asyncio.sleep(0)
            finally:
                j.close()
            self._check_suppressed(after_cursor, tail, since_usec, first)
            return

        wake = asyncio.Event()
        # The watch first: any change of the journal's files after it exists bumps its
        # generation, so no rotation can fall between our opening the files and watching them.
        watch = _Watch.acquire(self.namespace, wake)
        tasks: list[asyncio.Task[Any]] = []
        try:
            generation = watch.generation
            j = self._open(after_cursor, tail, since_usec, follow=True)
        except BaseException:
            watch.release(wake)
            raise
        # Where a new handle goes on from: after the last record read; with none read, from the
        # same start (a tail: after the record a tail of 0 skipped, or else all there is).
        last_cursor: str | None = None
        first_read: str | None = None  # the first record yielded
        first_cursor = after_cursor if tail is None else j.skipped

        def reopen(read_to: _Pos | None) -> _Journal:
            cursor = last_cursor or first_cursor
            if cursor is not None:
                return self._open(cursor, None, None, follow=True, read_to=read_to)
            since = since_usec if tail is None else None
            return self._open(None, None, since, follow=True, read_to=read_to)

        try:
            ended_task: asyncio.Task[Any] | None = None
            end_task: asyncio.Task[bool] | None = None
            if ended is not None:
                ended_task = asyncio.create_task(ended.wait())
                ended_task.add_done_callback(lambda _: wake.set())
                tasks.append(ended_task)
            delay: float | None = _RECHECK_FIRST
            last_data = time.monotonic()
            while True:
                if j.stale():
                    # Nothing can have been read yet: open again, from the same starting point.
                    j.close()
                    j = self._open(after_cursor, tail, since_usec, follow=True)
                    first_cursor = after_cursor if tail is None else j.skipped
                # Read to the end of the files we know. Entries appear in them as journald
                # writes them; files deleted since stay readable while we have them open.
                got = False
                while True:
                    bounds = j.bounds()
                    batch = j.read(_BATCH)
                    if batch:
                        got = True
                        first_read = first_read or batch[0].cursor
                        last_cursor = batch[-1].cursor
                        yield batch
                        await asyncio.sleep(0)
                    if len(batch) < _BATCH:
                        break
                if got:
                    last_data = time.monotonic()
                    delay = _RECHECK_FIRST
                elif delay is not None:
                    delay = None if delay >= _RECHECK_LAST else delay * 2
                # Now everything of ours up to bounds[1] is read. If files were added (rotation)
                # or deleted (vacuum), new handles go on from there (ours know only the files
                # they were opened with); if the oldest entry left is not the one right after
                # bounds[1], files we never opened were deleted, and our records may have been
                # in them: OutputLost.
                if watch.generation != generation:
                    generation = watch.generation
                    old, j = j, reopen(None if bounds is None else bounds[1])
                    old.close()
                    continue

                if end_task is not None and end_task.done():
                    if end_task.result():
                        # journald has written all and we have read it: the last read came after.
                        # A fresh handle sees every file, also one journald created (rotation)
                        # since the watch last told us; read once more through one.
                        # Then once more after journald's notification interval: a stream that
                        # journald could not tie to the unit (the job gone before journald read
                        # its header) has no state file naming the unit. Seen: 1 job in ~400.
                        for settle in (0.0,) if self._settled else (0.0, _SETTLE):
                            await asyncio.sleep(settle)
                            fresh = reopen(None if bounds is None else bounds[1])
                            try:
                                while batch := fresh.read(_BATCH):
                                    first_read = first_read or batch[0].cursor
                                    last_cursor = batch[-1].cursor
                                    yield batch
                                    await asyncio.sleep(0)
                            finally:
                                fresh.close()
                        self._check_suppressed(after_cursor, tail, since_usec, first_read)
                        return
                    # Not exact (no access to journald's state files): wait for a quiet spell.
                    if time.monotonic() - last_data >= _QUIET_FALLBACK:
                        self._check_suppressed(after_cursor, tail, since_usec, first_read)
                        return
                    delay = _QUIET_FALLBACK / 4
                elif end_task is None and ended_task is not None and ended_task.done():
                    end_task = asyncio.create_task(_Streams(self.namespace).drained(self.unit))
                    end_task.add_done_callback(lambda _: wake.set())
                    tasks.append(end_task)
                    continue

                timeout = delay
                sd_timeout = watch.timeout()
                if sd_timeout is not None:
                    timeout = sd_timeout if timeout is None else min(timeout, sd_timeout)
                wake.clear()
                if timeout is None:
                    await wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await wake.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            watch.release(wake)
            j.close()

    def _check_suppressed(
        self,
        after_cursor: str | None,
        tail: int | None,
        since_usec: int | None,
        first: str | None,
    ) -> None:
        """Raise OutputLost if journald's rate limit dropped lines of the range just read.

        journald notes the drop right before the next line it lets through, so the lines a note
        counts lie between the records before and after it: a note after the start of the range
        (after the cursor, at or after `since`, after the first record of a tail) counts."""
        after: _Pos | None = None
        if after_cursor is not None:
            after = _cursor_pos(after_cursor)
        elif tail is not None:
            if first is None:
                return  # nothing read: an empty tail holds no gap
            after = _cursor_pos(first)
        elif since_usec is not None:
            after = _time_pos(since_usec)
        count = _suppressed(self.namespace, self.unit, after)
        if count:
            raise _suppressed_error(self.job_id, count)

    def _open(
        self,
        after_cursor: str | None,
        tail: int | None,
        since_usec: int | None,
        *,
        follow: bool = False,
        read_to: _Pos | None = None,
    ) -> _Journal:
        """A journal handle at the requested start. Raises OutputLost if entries the caller
        wants were deleted (as far as can be known). `follow`: see `_Journal`. `read_to`: with
        `after_cursor`, the point up to which the caller has read every entry of the namespace
        journal (past its last record, which may be deleted since)."""
        j = _Journal(self.job_id, self.namespace, follow=follow)
        try:
            start = None if self._start_usec is None else _time_pos(self._start_usec)
            pos: _Pos | None = None
            if after_cursor is not None:
                # If the cursor's own entry is still there, nothing before it can be missing.
                pos = _cursor_pos(after_cursor)
                if read_to is not None and _pos_after(read_to, pos):
                    pos = read_to
                if j.seek_after(after_cursor):
                    pos = None
            elif tail is not None:
                if j.seek_tail(tail) < tail:
                    pos = start  # fewer than asked for: all since the start it is
            elif since_usec is not None:
                j.seek_since(since_usec)
                since_pos = _time_pos(since_usec)
                pos = since_pos if start is None or since_pos.realtime > start.realtime else start
            else:
                j.seek_head()
                pos = start
            bounds = None if pos is None else j.bounds()
            if pos is not None and bounds is not None and _gap(bounds[0], pos):
                raise _lost(f"output of job {self.job_id}", bounds[0])
        except BaseException:
            j.close()
            raise
        return j


class JobOutputFile(io.RawIOBase):
    """A job's output as a blocking, read-only binary stream, newlines (and NULs) restored.

    It drives `JobOutput`'s async engine on a private event loop, one batch of records per step,
    so it must not be used from inside a running event loop. `ended`: a `threading.Event` set
    once the job's unit has stopped (checked every 20 ms while waiting).
    """

    def __init__(
        self,
        output: JobOutput,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        ended: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self._loop = asyncio.new_event_loop()
        self._ended_sync = ended
        self._ended = asyncio.Event() if ended is not None else None
        self._batches = output._batches(
            after_cursor=after_cursor, tail=tail, since=since, follow=follow, ended=self._ended
        )
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        # Cursor of the last record whose bytes have been handed out in full: resume after it.
        self.cursor: str | None = None
        self._pending_cursor: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while self._pos >= len(self._buf) and not self._eof:
            self._fill()
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        if self._pos >= len(self._buf):
            self.cursor = self._pending_cursor
        return n

    def _fill(self) -> None:
        try:
            batch = self._loop.run_until_complete(self._next_batch())
        except StopAsyncIteration:
            self._eof = True
            return
        self._buf = bytearray(b"".join(r.data for r in batch))
        self._pos = 0
        self._pending_cursor = batch[-1].cursor

    async def _next_batch(self) -> list[Record]:
        if self._ended is None or self._ended_sync is None:
            return await anext(self._batches)

        async def watch(sync: threading.Event, event: asyncio.Event) -> None:
            # A threading.Event cannot be awaited; checking it while we wait anyway is cheap.
            while not sync.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            event.set()

        watcher = asyncio.create_task(watch(self._ended_sync, self._ended))
        try:
            return await anext(self._batches)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def close(self) -> None:
        if not self.closed:
            try:
                self._loop.run_until_complete(self._batches.aclose())
            finally:
                self._loop.close()
        super().close()
