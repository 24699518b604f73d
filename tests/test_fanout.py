"""jobrun.journal.fanout: one journal reader per followed job, fanned out to all of its followers.

Jobs are started as in test_journal.py (systemd-run with jobrun's output properties); the feed's
"job ended" event is systemd-run --wait returning.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path

import pytest

from jobrun.journal import Record
from jobrun.journal.fanout import Feeds

from .helpers import inotify_instances, wait_for_async
from .test_journal import Job, collect, data, journalctl, numbers, sh, start_job

pytestmark = pytest.mark.integration


def watch_job(job: Job) -> object:
    def watch(ended: asyncio.Event) -> asyncio.Task[object]:
        async def wait() -> object:
            await job.ended.wait()
            ended.set()
            return None

        return asyncio.create_task(wait())

    return watch


async def records_of(
    feeds: Feeds,
    job: Job,
    *,
    after_cursor: str | None = None,
    tail: int | None = None,
    since: datetime | None = None,
    delay: float = 0.0,
) -> AsyncGenerator[Record, None]:
    batches = feeds.follow(
        job.output(),
        watch_job(job),  # type: ignore[arg-type]
        after_cursor=after_cursor,
        tail=tail,
        since=since,
    )
    try:
        async for batch in batches:
            for r in batch:
                yield r
            if delay:
                await asyncio.sleep(delay)  # a slow consumer: the behaviour under test
    finally:
        await batches.aclose()


async def test_many_followers_share_one_reader_and_each_get_every_line(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    n = 20_000
    job = await start_job(
        *sh(f"seq 1 100; while [ ! -e {gate} ]; do sleep 0.01; done; seq 101 {n}")
    )
    feeds = Feeds()
    before = inotify_instances()
    followers = 300
    tasks = [
        asyncio.create_task(collect(records_of(feeds, job), timeout=180)) for _ in range(followers)
    ]

    async def attached() -> bool:
        return len(feeds) == 1 and inotify_instances() > before

    await wait_for_async(attached, what="the feed watching the journal", interval=0.01)
    # One reader for all of them, woken by the one watch of the journal (journal.watch.Watch).
    assert inotify_instances() - before <= 1
    gate.touch()
    results = await asyncio.gather(*tasks)
    expected = numbers(1, n)
    for got in results:
        assert data(got) == expected
    assert len({tuple(r.cursor for r in got) for got in results}) == 1
    assert feeds.stats["catch_ups"] == 0  # all of them read the feed's buffer
    await wait_for_async(lambda: len(feeds) == 0, what="the feed to go away", interval=0.01)
    assert inotify_instances() == before
    await feeds.close()


async def test_a_slow_follower_catches_up_from_its_cursor_without_holding_up_others() -> None:
    n = 30_000
    job = await start_job("seq", str(n))
    # A small buffer: the feed drops records the slow follower has not read yet.
    feeds = Feeds(buffer_records=500)
    fast = asyncio.create_task(collect(records_of(feeds, job), timeout=180))
    slow = asyncio.create_task(collect(records_of(feeds, job, delay=0.01), timeout=180))
    got_fast = await fast
    assert data(got_fast) == numbers(1, n)
    got_slow = await slow
    assert data(got_slow) == numbers(1, n)
    assert [r.cursor for r in got_slow] == [r.cursor for r in got_fast]
    assert feeds.stats["catch_ups"] >= 1  # the slow one fell behind and read on its own
    await feeds.close()


async def test_followers_that_start_later_or_elsewhere_get_exactly_their_part(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    job = await start_job(
        *sh(f"seq 1 300; while [ ! -e {gate} ]; do sleep 0.01; done; seq 301 600")
    )

    async def three_hundred() -> bool:
        return len(await collect(job.output().records())) == 300

    await wait_for_async(three_hundred, what="the first 300 lines", interval=0.01)
    first = await collect(job.output().records())
    feeds = Feeds(buffer_records=100)
    head = asyncio.create_task(collect(records_of(feeds, job), timeout=60))
    resume = asyncio.create_task(
        collect(records_of(feeds, job, after_cursor=first[149].cursor), timeout=60)
    )
    tail = asyncio.create_task(collect(records_of(feeds, job, tail=2), timeout=60))
    tail0 = asyncio.create_task(collect(records_of(feeds, job, tail=0), timeout=60))
    since = asyncio.create_task(
        collect(records_of(feeds, job, since=first[199].timestamp), timeout=60)
    )

    async def attached() -> bool:
        return len(feeds) == 1

    await wait_for_async(attached, what="the feed", interval=0.01)
    gate.touch()
    assert data(await head) == numbers(1, 600)
    assert data(await resume) == numbers(151, 600)
    assert data(await tail) == numbers(299, 600)
    assert data(await tail0) == numbers(301, 600)
    got_since = await since
    everything = await collect(job.output().records())
    assert got_since == [r for r in everything if r.timestamp >= first[199].timestamp]
    await feeds.close()


async def test_a_follower_after_the_feed_ended_gets_everything() -> None:
    job = await start_job(*sh("seq 1 50"))
    feeds = Feeds()
    first = await collect(records_of(feeds, job), timeout=60)
    second = await collect(records_of(feeds, job), timeout=60)
    assert data(first) == data(second) == numbers(1, 50)
    await feeds.close()


class Reader:
    """A follower whose consumer the test pauses: it stops taking batches once it has
    `pause_at` records, until `go` is set."""

    def __init__(self, feeds: Feeds, job: Job, *, pause_at: int | None = None) -> None:
        self.got: list[Record] = []
        self.go = asyncio.Event()
        if pause_at is None:
            self.go.set()
        self._pause_at = pause_at
        self.task = asyncio.create_task(self._run(feeds, job))

    async def _run(self, feeds: Feeds, job: Job) -> list[Record]:
        batches = feeds.follow(job.output(), watch_job(job))  # type: ignore[arg-type]
        async with asyncio.timeout(120), contextlib.aclosing(batches):
            async for batch in batches:
                self.got += batch
                if self._pause_at is not None and len(self.got) >= self._pause_at:
                    await self.go.wait()
        return self.got


async def test_followers_catching_up_across_a_journal_rotation_get_every_line(
    tmp_path: Path,
) -> None:
    # Two followers through jobrund of a 200,000-line flood lost the same range of lines: they
    # had fallen behind the buffer, were catching up through readers of their own when journald
    # started a new journal file, and reached the end of the old file after the feed had ended.
    gate = tmp_path / "gate"
    first, n = 3000, 6000
    job = await start_job(
        *sh(f"seq 1 {first}; while [ ! -e {gate} ]; do sleep 0.01; done; seq {first + 1} {n}")
    )
    feeds = Feeds(buffer_records=1000)
    fast = Reader(feeds, job)

    async def first_part_read() -> bool:
        return len(fast.got) == first

    await wait_for_async(first_part_read, timeout=60, what="the first part", interval=0.01)
    # These two start from the first line after the feed dropped it: each catches up through a
    # reader of its own, opened now, and pauses after its first batch.
    slow = [Reader(feeds, job, pause_at=1) for _ in range(2)]

    async def paused() -> bool:
        return all(r.got for r in slow)

    await wait_for_async(paused, what="the slow followers' first batches", interval=0.01)
    await journalctl("--rotate")
    gate.touch()
    assert data(await fast.task) == numbers(1, n)
    await wait_for_async(lambda: len(feeds) == 0, what="the feed to end", interval=0.01)
    for r in slow:
        r.go.set()
    for r in slow:
        got = await r.task
        assert len(got) == n and data(got) == numbers(1, n)
    await feeds.close()
