"""`Follower`: reading a job's output as journald writes it, to the exact end of the job's output.

A follower reads to the end of the journal files its handle knows, then waits: for the shared
`Watch` (journald announced a change, or files came or went), for its own re-check timer (journald
writes entries at once but announces them at most every 250 ms), or for the job's end. Once the
caller says the job's unit has stopped, `Streams.drained` tells when journald has written all of
it; the follower then reads through fresh handles and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from .reader import BATCH, JobJournal
from .records import Pos, Record
from .streams import Streams
from .watch import Watch

if TYPE_CHECKING:
    from .output import JobOutput

__all__ = ["SETTLE", "Follower"]

# While a followed job writes, re-check this soon after data (journald writes entries to the mmap'd
# file at once but announces them on inotify at most every 250 ms), doubling while nothing comes,
# until the inotify window is covered; then only inotify (or the end) wakes us.
_RECHECK_FIRST = 0.001
_RECHECK_LAST = 0.128
# After the exact end, one more look this much later (journald's change-notification interval).
SETTLE = 0.25
# Without access to the state files: end after this long without a new record.
_QUIET_FALLBACK = 1.0


class Follower:
    """One follower of a job's output: its handle, how far it has read, and when to look again."""

    def __init__(
        self,
        output: JobOutput,
        *,
        after_cursor: str | None,
        tail: int | None,
        since_usec: int | None,
    ) -> None:
        self._output = output
        self._after_cursor = after_cursor
        self._tail = tail
        self._since_usec = since_usec
        self._j: JobJournal | None = None
        # Where a new handle goes on from: after the last record read; with none read, from the
        # same start (a tail: after the record a tail of 0 skipped, or else all there is).
        self._last_cursor: str | None = None
        self._first_cursor: str | None = None
        self._first_read: str | None = None  # the first record yielded
        # The namespace journal's oldest and newest entry before the last read (None: empty).
        self._bounds: tuple[Pos, Pos] | None = None
        self._delay: float | None = _RECHECK_FIRST  # the re-check timer (None: off)
        self._last_data = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._ended_task: asyncio.Task[Any] | None = None  # waits for the caller's `ended`
        self._end_task: asyncio.Task[bool] | None = None  # Streams.drained

    async def batches(self, ended: asyncio.Event | None) -> AsyncGenerator[list[Record], None]:
        """The records, in lists (never empty), until the end of the job's output once `ended`
        is set (without it: until the caller stops)."""
        wake = asyncio.Event()
        # The watch first: any change of the journal's files after it exists bumps its
        # generation, so no rotation can fall between our opening the files and watching them.
        watch = Watch.acquire(self._output.namespace, wake)
        try:
            generation = watch.generation
            self._open_start()
        except BaseException:
            watch.release(wake)
            raise
        try:
            if ended is not None:
                self._ended_task = asyncio.create_task(ended.wait())
                self._ended_task.add_done_callback(lambda _: wake.set())
                self._tasks.append(self._ended_task)
            self._last_data = time.monotonic()
            while True:
                if self._handle().stale():
                    # Nothing can have been read yet: open again, from the same starting point.
                    self._handle().close()
                    self._open_start()
                async with contextlib.aclosing(self._read_to_end()) as batches:
                    async for batch in batches:
                        yield batch
                # Everything of ours up to bounds[1] is read. If files were added (rotation) or
                # deleted (vacuum), new handles go on from there (ours know only the files they
                # were opened with); if the oldest entry left is not the one right after
                # bounds[1], files we never opened were deleted, and our records may have been
                # in them: OutputLost.
                if watch.generation != generation:
                    generation = watch.generation
                    old, self._j = self._handle(), self._reopen()
                    old.close()
                    continue
                if self._end_task is not None and self._end_task.done():
                    if self._end_task.result():
                        async with contextlib.aclosing(self._read_settled()) as batches:
                            async for batch in batches:
                                yield batch
                        self._check_suppressed()
                        return
                    # Not exact (no access to journald's state files): wait for a quiet spell.
                    if time.monotonic() - self._last_data >= _QUIET_FALLBACK:
                        self._check_suppressed()
                        return
                    self._delay = _QUIET_FALLBACK / 4
                elif self._end_task is None and self._job_stopped():
                    # The unit has stopped: find out when journald has written all of it.
                    self._end_task = asyncio.create_task(
                        Streams(self._output.namespace).drained(self._output.unit)
                    )
                    self._end_task.add_done_callback(lambda _: wake.set())
                    self._tasks.append(self._end_task)
                    continue
                await self._wait(watch, wake)
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            watch.release(wake)
            self._handle().close()

    def _handle(self) -> JobJournal:
        assert self._j is not None
        return self._j

    def _open_start(self) -> None:
        """A handle at the requested start."""
        self._j = self._output.open_journal(
            after_cursor=self._after_cursor,
            tail=self._tail,
            since_usec=self._since_usec,
            follow=True,
        )
        self._first_cursor = self._after_cursor if self._tail is None else self._j.skipped

    def _reopen(self) -> JobJournal:
        """A new handle after the last record read (which sees every journal file there is)."""
        read_to = None if self._bounds is None else self._bounds[1]
        cursor = self._last_cursor or self._first_cursor
        if cursor is not None:
            return self._output.open_journal(after_cursor=cursor, follow=True, read_to=read_to)
        since = self._since_usec if self._tail is None else None
        return self._output.open_journal(since_usec=since, follow=True, read_to=read_to)

    def _job_stopped(self) -> bool:
        return self._ended_task is not None and self._ended_task.done()

    def _took(self, batch: list[Record]) -> None:
        self._first_read = self._first_read or batch[0].cursor
        self._last_cursor = batch[-1].cursor

    async def _read_to_end(self) -> AsyncGenerator[list[Record], None]:
        """Read to the end of the files the handle knows, then set the re-check timer. Entries
        appear in them as journald writes them; files deleted since stay readable while we have
        them open."""
        j = self._handle()
        got = False
        while True:
            self._bounds = j.bounds()
            batch = await j.read(BATCH)
            if batch:
                got = True
                self._took(batch)
                yield batch
                await asyncio.sleep(0)
            if len(batch) < BATCH:
                break
        if got:
            self._last_data = time.monotonic()
            self._delay = _RECHECK_FIRST
        elif self._delay is not None:
            self._delay = None if self._delay >= _RECHECK_LAST else self._delay * 2

    async def _read_settled(self) -> AsyncGenerator[list[Record], None]:
        """The last reads, once journald has written all and we have read it.

        A fresh handle sees every file, also one journald created (rotation) since the watch last
        told us; read once more through one. Then once more after journald's notification
        interval, unless the job ended long ago: a stream that journald could not tie to the unit
        (the job gone before journald read its header) has no state file naming the unit, and
        its lines can still be on their way (rare: about one job in 400)."""
        for settle in (0.0,) if self._output.settled else (0.0, SETTLE):
            await asyncio.sleep(settle)
            fresh = self._reopen()
            try:
                while batch := await fresh.read(BATCH):
                    self._took(batch)
                    yield batch
                    await asyncio.sleep(0)
            finally:
                fresh.close()

    def _check_suppressed(self) -> None:
        self._output.check_suppressed(
            self._after_cursor, self._tail, self._since_usec, self._first_read
        )

    async def _wait(self, watch: Watch, wake: asyncio.Event) -> None:
        """Until the watch, the re-check timer, sd-journal's own timeout or the end wakes us."""
        timeout = self._delay
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
