"""One journal reader per followed job, fanned out to all of that job's followers.

A reader costs sd_journal handles with their own mappings of the journal files and a re-check
timer, and each follower would need a watcher of the job's unit. So a job that is followed has one
`Feed`: one `JobOutput` reader from the first record, following until the job has ended and
journald has written all of it (the reader's exact end), and one watcher of the unit. Its records
go into a bounded buffer that every follower reads at its own pace.

Each follower gets the whole output it asked for (from the first record, or after a cursor, the
last N, since a time), in journal order, without a gap or a repeat:

- A follower from the first record that arrives while the buffer still holds the first record
  reads the buffer, then waits for more with everyone else: no journal handle of its own.
- Any other follower (a later start, a feed that has dropped records from its buffer, a resume
  after a cursor) first **catches up** with a non-following reader of its own (no inotify; at
  most `CATCH_UP_READERS` at once per process), from its own starting point, until its last
  record is one the feed holds; then it joins the feed right after that record.
- The feed never waits for a follower. When the buffer is over `BUFFER_RECORDS` records or
  `BUFFER_BYTES` bytes it drops its oldest records; a follower that had not read them yet falls
  back to catching up from its own last cursor, exactly as a late follower does. A slow
  follower therefore costs its own catch-up reads, never the others' latency, and memory stays
  bounded by the buffer (plus what each consumer holds).

Errors of the feed's reader (`OutputLost`, `JournalUnavailable`) reach every follower.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from datetime import datetime

from ..errors import OutputLost
from .output import JobOutput
from .reader import BATCH, JournalUnavailable
from .records import Record, cursor_after, to_usec

__all__ = ["BUFFER_BYTES", "BUFFER_RECORDS", "CATCH_UP_READERS", "Feed", "Feeds"]

BUFFER_RECORDS = 20_000
BUFFER_BYTES = 16 << 20
CATCH_UP_READERS = 32
_RECORD_OVERHEAD = 200  # bytes a buffered Record costs besides its message and cursor


class Feed:
    """The output of one followed job, read once and buffered for its followers."""

    def __init__(
        self,
        output: JobOutput,
        ended: asyncio.Event,
        catch_up: asyncio.Semaphore,
        *,
        buffer_records: int = BUFFER_RECORDS,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self.output = output
        self._ended = ended
        self._catch_up = catch_up
        self._max_records = buffer_records
        self._max_bytes = buffer_bytes
        self._buf: list[Record] = []
        self._bytes = 0
        self.base = 0  # sequence number of _buf[0]: how many records were dropped
        self._index: dict[str, int] = {}  # cursor → sequence number, for the buffered records
        self._dropped_last: Record | None = None
        # The feed reads from the first record, or (when those are gone) after this cursor.
        self._start_after: str | None = None
        self._start_known = False
        self._head_lost = False
        self._changed = asyncio.Event()
        self.done = False
        self.error: BaseException | None = None
        self.followers = 0
        self._task: asyncio.Task[None] | None = None
        self.watcher: asyncio.Task[object] | None = None  # sets `ended`; ours to cancel
        self.on_done: Callable[[Feed], None] | None = None
        self.stats: dict[str, int] = {"catch_ups": 0}  # shared by the feeds of a Feeds

    @property
    def end(self) -> int:
        return self.base + len(self._buf)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if not self.done:
            # Closed before the job's output was all read (its process is stopping): followers
            # must not take that for the end of the output.
            self.error = JournalUnavailable(
                f"stopped following the output of job {self.output.job_id}: jobrun is closing",
                f"follow again: jobrun logs -f {self.output.job_id}",
            )
        for task in (self._task, self.watcher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _run(self) -> None:
        try:
            output = self.output
            try:
                output.open_journal().close()
            except OutputLost:
                # The job's first records are gone (journal files deleted): no follower can have
                # them. Feed from the present on; followers that start after a cursor, a tail or
                # a time still get theirs, and those from the first record get OutputLost from
                # their own reader, as without a feed.
                self._start_after = self._last_cursor()
                self._head_lost = True
                output = JobOutput(output.job_id, namespace=output.namespace)  # no more checks
            self._start_known = True
            self._notify()
            batches = output.batches(after_cursor=self._start_after, follow=True, ended=self._ended)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    self._append(batch)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.error = e
        finally:
            self.done = True
            self._notify()
            if self.watcher is not None:
                self.watcher.cancel()
            if self.on_done is not None:
                self.on_done(self)

    def _from_first(self) -> bool:
        """Whether the buffer holds the job's records from the first on."""
        return self._start_known and not self._head_lost and self.base == 0

    def _last_cursor(self) -> str | None:
        j = self.output.open_journal(tail=0)
        try:
            return j.skipped
        finally:
            j.close()

    def _append(self, batch: list[Record]) -> None:
        seq = self.end
        for r in batch:
            self._index[r.cursor] = seq
            seq += 1
            self._bytes += len(r.message) + len(r.cursor) + _RECORD_OVERHEAD
        self._buf.extend(batch)
        if len(self._buf) > self._max_records or self._bytes > self._max_bytes:
            # Drop down to 3/4 of the bounds at once, so that trimming is not per batch.
            n = 0
            size = self._bytes
            while n < len(self._buf) and (
                len(self._buf) - n > self._max_records * 3 // 4 or size > self._max_bytes * 3 // 4
            ):
                r = self._buf[n]
                size -= len(r.message) + len(r.cursor) + _RECORD_OVERHEAD
                del self._index[r.cursor]
                n += 1
            self._dropped_last = self._buf[n - 1]
            del self._buf[:n]
            self._bytes = size
            self.base += n
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _slice(self, pos: int) -> list[Record]:
        i = pos - self.base
        return self._buf[i : i + BATCH]

    def _join_point(self, last: str | None, since: datetime | None) -> int | None:
        """Where a follower whose own reader is at its end continues in the buffer (None: not
        yet known). `last`: the cursor of its last record (None: its reader found none)."""
        if last is not None:
            if last == self._start_after and self.base == 0:
                return 0
            seq = self._index.get(last)
            return None if seq is None else seq + 1
        if since is not None:
            # No record at or after `since` was there for our reader: every buffered one is new,
            # unless the feed already dropped one of those.
            if self._dropped_last is not None and self._dropped_last.timestamp >= since:
                return None
            for i, r in enumerate(self._buf):
                if r.timestamp >= since:
                    return self.base + i
            return self.end
        # From the first record or a tail, and our reader found none: all of the feed is new.
        return 0 if self._from_first() else None

    async def follow(
        self,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
    ) -> AsyncGenerator[list[Record], None]:
        """One follower's batches (never empty), to the job's end. Close it (aclosing) when
        stopping early."""
        last = after_cursor
        pos: int | None = None
        while not self._start_known and not self.done:
            await self._changed.wait()
        if (after_cursor, tail, since) == (None, None, None) and self._from_first():
            pos = 0
        while True:
            if pos is None or pos < self.base:
                # Catching up through a reader of our own, from our own position.
                pos = None
                async with self._catch_up:
                    while pos is None:
                        self.stats["catch_ups"] += 1
                        # A handle knows the journal files there were when it was opened: one
                        # opened after the feed's end knows every file the feed read from.
                        complete = self.done
                        if last is not None:
                            j = self.output.open_journal(after_cursor=last)
                        else:
                            j = self.output.open_journal(
                                tail=tail, since_usec=None if since is None else to_usec(since)
                            )
                            last = j.skipped
                        try:
                            while batch := await j.read(BATCH):
                                last = batch[-1].cursor
                                yield batch
                                seq = self._index.get(last)
                                if seq is not None:
                                    pos = seq + 1
                                    break
                                await asyncio.sleep(0)
                        finally:
                            j.close()
                        if pos is not None:
                            break
                        pos = self._join_point(last, since)
                        if pos is not None:
                            break
                        if self.done:
                            if self.error is not None:
                                raise self.error
                            if not complete:
                                # Our handle may end where journald started a new file (rotation)
                                # that the feed went on reading: look again through a fresh one.
                                continue
                            # The feed has read all there is, and so have we: what is left is
                            # what the feed has after our last record.
                            pos = self._after(last)
                            break
                        # The feed has not read as far as we have: wait for it, then look again
                        # through a fresh handle (it sees files created meanwhile).
                        await self._changed.wait()
                continue
            if pos < self.end:
                batch = self._slice(pos)
                pos += len(batch)
                last = batch[-1].cursor
                yield batch
                continue
            if self.error is not None:
                raise self.error
            if self.done:
                return
            await self._changed.wait()

    def _after(self, last: str | None) -> int:
        """The first buffered record after the one with cursor `last`, by journal position."""
        if last is None:
            return self.base
        for i, r in enumerate(self._buf):
            if cursor_after(r.cursor, last):
                return self.base + i
        return self.end


class Feeds:
    """The feeds of one process (a Manager's), by job ID."""

    def __init__(
        self,
        *,
        buffer_records: int = BUFFER_RECORDS,
        buffer_bytes: int = BUFFER_BYTES,
        catch_up_readers: int = CATCH_UP_READERS,
    ) -> None:
        self._feeds: dict[str, Feed] = {}
        self._catch_up = asyncio.Semaphore(catch_up_readers)
        self._buffer_records = buffer_records
        self._buffer_bytes = buffer_bytes
        # How often a follower opened a reader of its own (late start, fell behind, resume).
        self.stats: dict[str, int] = {"catch_ups": 0}

    def __len__(self) -> int:
        return len(self._feeds)

    async def follow(
        self,
        output: JobOutput,
        watch: Callable[[asyncio.Event], asyncio.Task[object] | None],
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
    ) -> AsyncGenerator[list[Record], None]:
        """Follow `output` through its job's feed (created on first use). `watch(ended)` is
        called once per feed: it must set `ended` when the job's unit has stopped, and may return
        the task that does so (cancelled with the feed)."""
        feed = self._feeds.get(output.job_id)
        if feed is None:
            ended = asyncio.Event()
            feed = Feed(
                output,
                ended,
                self._catch_up,
                buffer_records=self._buffer_records,
                buffer_bytes=self._buffer_bytes,
            )
            feed.on_done = self._forget
            feed.stats = self.stats
            self._feeds[output.job_id] = feed
            feed.watcher = watch(ended)
            feed.start()
        feed.followers += 1
        try:
            batches = feed.follow(after_cursor=after_cursor, tail=tail, since=since)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    yield batch
        finally:
            feed.followers -= 1
            if feed.followers == 0 and not feed.done:
                self._forget(feed)
                await feed.close()

    def _forget(self, feed: Feed) -> None:
        if self._feeds.get(feed.output.job_id) is feed:
            del self._feeds[feed.output.job_id]

    async def close(self) -> None:
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            await feed.close()
