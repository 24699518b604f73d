"""jobrun.journal.records and .loss on their own: records, cursor arithmetic, gaps (no journal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobrun.errors import InvalidArgument, OutputLost
from jobrun.journal import LineBreak, Record
from jobrun.journal.loss import deleted, gap
from jobrun.journal.records import (
    Pos,
    cursor_after,
    cursor_pos,
    from_usec,
    line_break,
    pos_after,
    time_pos,
    to_usec,
)

SEQ = "0123456789abcdef0123456789abcdef"


def cursor(seqnum: int, realtime: int, seqnum_id: str = SEQ) -> str:
    return f"s={seqnum_id};i={seqnum:x};b=00;m=1;t={realtime:x};x=ff"


def test_a_cursor_gives_its_sequence_number_and_time() -> None:
    assert cursor_pos(cursor(0x2A, 1_700_000_000_000_000)) == Pos(SEQ, 42, 1_700_000_000_000_000)


@pytest.mark.parametrize("text", ["", "s=1;i=2", "not a cursor", "t=1;i=2;x=3"])
def test_what_is_not_a_cursor_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="not a journal cursor"):
        cursor_pos(text)


def test_order_is_by_sequence_number_within_a_sequence_else_by_time() -> None:
    assert cursor_after(cursor(5, 100), cursor(4, 200))  # same sequence: the number decides
    assert not cursor_after(cursor(4, 200), cursor(5, 100))
    other = "f" * 32
    assert cursor_after(cursor(1, 300, other), cursor(9, 200))  # another sequence: the time
    assert not pos_after(time_pos(200), cursor_pos(cursor(9, 200)))


def test_times_are_microseconds_since_the_epoch_and_need_a_time_zone() -> None:
    dt = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert from_usec(to_usec(dt)) == dt
    assert to_usec(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1_000_000
    with pytest.raises(InvalidArgument, match="no time zone"):
        to_usec(datetime(2024, 5, 6))


def test_a_record_gives_back_the_bytes_journald_cut() -> None:
    r = Record(1_000_000, "c", b"line")
    assert r.data == b"line\n" and r.line_break is LineBreak.NEWLINE
    assert Record(1, "c", b"a", LineBreak.NUL).data == b"a\0"
    for brk in (LineBreak.LINE_MAX, LineBreak.EOF, LineBreak.PID_CHANGE):
        assert Record(1, "c", b"a", brk).data == b"a"
    assert r.timestamp == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert Record(r.timestamp, "c", b"line") == r
    assert hash(Record(1_000_000, "c", b"line")) == hash(r)


def test_an_unknown_line_break_adds_no_terminator() -> None:
    assert line_break(b"nul") is LineBreak.NUL
    assert line_break(b"something-newer") is LineBreak.PID_CHANGE


def test_a_gap_is_entries_deleted_after_what_was_read() -> None:
    read = Pos(SEQ, 10, 1000)
    assert not gap(Pos(SEQ, 1, 0), read)  # the journal never lost an entry
    assert not gap(Pos(SEQ, 11, 1100), read)  # the oldest left is the next one
    assert gap(Pos(SEQ, 12, 1200), read)  # number 11 is gone
    other = "f" * 32
    assert gap(Pos(other, 5, 1001), read)  # another sequence: by time
    assert not gap(Pos(other, 5, 999), read)


def test_deleted_output_names_the_oldest_entry_left() -> None:
    when = datetime(2024, 1, 2, tzinfo=UTC) + timedelta(microseconds=5)
    error = deleted("output of job abc", time_pos(to_usec(when)))
    assert isinstance(error, OutputLost)
    assert "output of job abc is no longer in the journal" in error.message
    assert when.isoformat() in error.message
