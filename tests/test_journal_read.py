"""_Journal.read when sd-journal does not find an entry's MESSAGE (a fake sd_journal handle).

sd-journal (252) skips a data object it finds bad and then reports the field as absent; once in
CI, one line of 200,000 read right after journald wrote them came back without MESSAGE, and the
read failed with an internal error. The entry is looked at again; a line is never skipped.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from jobrun.journal import JournalUnavailable, _Journal


class FakeReader:
    """Entries (cursor, message); `missing[c]`: how many looks at c's MESSAGE find none."""

    def __init__(self, entries: list[tuple[str, bytes]], missing: dict[str, int]) -> None:
        self.entries = entries
        self.missing = dict(missing)
        self.pos = -1

    def _next(self) -> bool:
        if self.pos + 1 < len(self.entries):
            self.pos += 1
            return True
        return False

    def _get(self, field: str) -> bytes:
        cursor, message = self.entries[self.pos]
        if self.missing.get(cursor, 0) > 0:
            self.missing[cursor] -= 1
            raise KeyError(field)
        return message

    def _get_realtime(self) -> int:
        return 1_700_000_000_000_000 + self.pos

    def _get_cursor(self) -> str:
        return self.entries[self.pos][0]

    def seek_cursor(self, cursor: str) -> None:
        self.pos = [c for c, _ in self.entries].index(cursor) - 1

    def test_cursor(self, cursor: str) -> bool:
        return self.entries[self.pos][0] == cursor


def reader(missing: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> _Journal:
    j: Any = object.__new__(_Journal)
    j._j = FakeReader([(f"c{i}", f"line {i}".encode()) for i in range(5)], missing)
    j._job_id = "abc"
    j._on_entry = False
    monkeypatch.setattr(j, "_breaks", lambda first, last: {})
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the module the reader's retries sleep in
    result: _Journal = j
    return result


def test_a_message_missing_at_first_look_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    j = reader({"c2": 2}, monkeypatch)  # absent twice, then there
    records = j.read(10)
    assert [r.message for r in records] == [f"line {i}".encode() for i in range(5)]
    assert [r.cursor for r in records] == [f"c{i}" for i in range(5)]
    assert j.read(10) == []


def test_a_message_that_stays_missing_is_a_clear_error_not_a_skipped_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    j = reader({"c3": 100}, monkeypatch)
    with pytest.raises(JournalUnavailable, match="journal entry c3 of job abc has no MESSAGE"):
        j.read(10)
