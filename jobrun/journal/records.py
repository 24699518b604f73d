"""A job's output records, and positions in the namespace journal (cursors, times in µs).

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from ..errors import InvalidArgument

__all__ = [
    "LineBreak",
    "Pos",
    "Record",
    "cursor_after",
    "cursor_pos",
    "from_usec",
    "line_break",
    "pos_after",
    "time_pos",
    "to_usec",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LineBreak(StrEnum):
    """Why journald ended a record (its `_LINE_BREAK` field; absent means newline).

    Its codes on the wire are those of `jobrun.wire.logs.LINE_BREAKS`.
    """

    NEWLINE = "newline"
    NUL = "nul"
    LINE_MAX = "line-max"
    EOF = "eof"
    PID_CHANGE = "pid-change"


_TERMINATOR = {LineBreak.NEWLINE: b"\n", LineBreak.NUL: b"\0"}
_LINE_BREAKS = {b.value.encode(): b for b in LineBreak}


def line_break(value: bytes) -> LineBreak:
    """The LineBreak of a `_LINE_BREAK` field's value."""
    # A kind of break newer than this code: no terminator is the safe guess.
    return _LINE_BREAKS.get(value, LineBreak.PID_CHANGE)


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
        self.usec = timestamp if type(timestamp) is int else to_usec(timestamp)  # type: ignore[arg-type]
        self.cursor = cursor
        self.message = message
        self.line_break = line_break

    @property
    def timestamp(self) -> datetime:
        """When journald received it (realtime, UTC)."""
        return EPOCH + timedelta(microseconds=self.usec)

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


def to_usec(dt: datetime) -> int:
    """An aware datetime as µs since the epoch (journald's realtime)."""
    if dt.tzinfo is None:
        raise InvalidArgument(f"{dt!r} has no time zone", hint="pass an aware datetime (UTC)")
    return (dt - EPOCH) // timedelta(microseconds=1)


def from_usec(usec: int) -> datetime:
    return EPOCH + timedelta(microseconds=usec)


@dataclass(frozen=True, slots=True)
class Pos:
    """A point in the namespace journal: everything of ours up to here is read (or not wanted)."""

    seqnum_id: str  # "" when only the time is known
    seqnum: int
    realtime: int  # µs


_CURSOR_FIELD = re.compile(r"(?:^|;)([sit])=([0-9a-f]+)")


def cursor_pos(cursor: str) -> Pos:
    """The position of a journal cursor (InvalidArgument if it is not one)."""
    fields = dict(_CURSOR_FIELD.findall(cursor))
    if fields.keys() != {"s", "i", "t"}:
        raise InvalidArgument(f"not a journal cursor: {cursor!r}", hint="pass a Record.cursor")
    return Pos(fields["s"], int(fields["i"], 16), int(fields["t"], 16))


def time_pos(usec: int) -> Pos:
    """A position known only by its time."""
    return Pos("", 0, usec)


def pos_after(a: Pos, b: Pos) -> bool:
    """Whether `a` comes after `b`: by sequence number within one sequence, else by time."""
    if a.seqnum_id == b.seqnum_id:
        return a.seqnum > b.seqnum
    return a.realtime > b.realtime


def cursor_after(cursor: str, other: str) -> bool:
    """Whether the entry of `cursor` comes after that of `other` in the namespace journal."""
    return pos_after(cursor_pos(cursor), cursor_pos(other))
