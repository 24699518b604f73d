"""JobJournal.read when sd-journal does not find an entry's MESSAGE (a fake sd_journal handle).

sd-journal (252) skips a data object it finds bad and then reports the field as absent; once in
CI, one line of 200,000 read right after journald wrote them came back without MESSAGE, and the
read failed with an internal error. The entry is looked at again, waiting on the event loop's
timer (never in a sleep that blocks the loop); a line is never skipped.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from jobrun.journal import JournalUnavailable
from jobrun.journal.reader import JobJournal


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


class NoBreaks:
    def between(self, first: str, last: str) -> dict[str, object]:
        return {}


def reader(missing: dict[str, int]) -> JobJournal:
    j: Any = object.__new__(JobJournal)
    j._j = FakeReader([(f"c{i}", f"line {i}".encode()) for i in range(5)], missing)
    j._job_id = "abc"
    j._on_entry = False
    j._missing = None
    j._breaks = NoBreaks()
    result: JobJournal = j
    return result


async def test_a_message_missing_at_first_look_is_read_again() -> None:
    j = reader({"c2": 2})  # absent twice, then there
    records = await j.read(10)
    assert [r.message for r in records] == [f"line {i}".encode() for i in range(5)]
    assert [r.cursor for r in records] == [f"c{i}" for i in range(5)]
    assert await j.read(10) == []


async def test_a_batch_with_a_message_read_again_is_still_full() -> None:
    j = reader({"c1": 1})
    assert [r.cursor for r in await j.read(3)] == ["c0", "c1", "c2"]
    assert [r.cursor for r in await j.read(3)] == ["c3", "c4"]


async def test_a_message_that_stays_missing_is_a_clear_error_not_a_skipped_line() -> None:
    j = reader({"c3": 100})
    with pytest.raises(JournalUnavailable, match="journal entry c3 of job abc has no MESSAGE"):
        await j.read(10)


async def test_looking_again_does_not_block_the_event_loop() -> None:
    j = reader({"c3": 100})
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        t0 = time.monotonic()
        with pytest.raises(JournalUnavailable):
            await j.read(10)
        waited = time.monotonic() - t0
    finally:
        ticker.cancel()
    assert waited >= 0.025  # three looks, 5 + 10 + 15 ms apart
    assert len([t for t in ticks if t > t0]) >= 3  # the loop ran other tasks meanwhile
