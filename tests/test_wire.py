"""The Logs pipe's frames, both directions (wire/logs.py): what jobrund writes, the client reads
back, however the pipe splits it."""

from __future__ import annotations

import pytest

from jobrun.errors import Busy
from jobrun.journal import LineBreak, Record
from jobrun.wire.logs import FrameReader, pack_end, pack_error, pack_records

pytestmark = pytest.mark.unit

RECORDS = [
    Record(1_700_000_000_000_000 + i, f"s=abc;i={i}", f"line {i}".encode(), b)
    for i, b in enumerate([*LineBreak, LineBreak.NEWLINE])
]


def read_all(data: bytes, step: int) -> tuple[list[Record], FrameReader]:
    reader = FrameReader()
    got: list[Record] = []
    for at in range(0, len(data), step):
        got += reader.feed(data[at : at + step])
    return got, reader


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_records_come_back_whole_in_any_split(step: int) -> None:
    got, reader = read_all(pack_records(RECORDS) + pack_end(), step)

    def fields(rs: list[Record]) -> list[tuple[int, str, bytes, LineBreak]]:
        return [(r.usec, r.cursor, r.message, r.line_break) for r in rs]

    assert fields(got) == fields(RECORDS)
    assert reader.ended and reader.error is None


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_batch_cursors_hold_records_back_until_their_cursor(step: int) -> None:
    first, second = RECORDS[:3], RECORDS[3:]
    data = pack_records(first, batch_cursors=True) + pack_records(second, batch_cursors=True)
    got, reader = read_all(data, step)
    assert [r.message for r in got] == [r.message for r in RECORDS]
    assert [r.cursor for r in got] == ["", "", first[-1].cursor, "", "", second[-1].cursor]
    # A write cut short (jobrund gone): nothing after the last cursor is handed out.
    cut = pack_records(first, batch_cursors=True) + pack_records(second, batch_cursors=True)[:-3]
    got, reader = read_all(cut, step)
    assert got[-1].cursor == first[-1].cursor and not reader.ended


def test_an_error_frame_is_the_error_it_names() -> None:
    got, reader = read_all(pack_records(RECORDS[:2]) + pack_error(Busy("full", "later")), 5)
    assert len(got) == 2 and not reader.ended
    assert isinstance(reader.error, Busy)
    assert (reader.error.message, reader.error.hint) == ("full", "later")
