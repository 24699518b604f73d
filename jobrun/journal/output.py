"""`JobOutput`: one job's output read back from the journal, once or following."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta

from ..errors import InvalidArgument
from ..model import ID_ALPHABET, LOG_NAMESPACE, unit_name
from .follow import SETTLE, Follower
from .loss import check_suppressed, deleted, gap
from .reader import BATCH, JobJournal
from .records import Pos, Record, cursor_pos, pos_after, time_pos, to_usec

__all__ = ["JobOutput"]


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
        self._start_usec = None if started_at is None else to_usec(started_at)
        # `finished_at`: when the job ended, if it has; long enough ago, a follower's last look
        # after journald's notification interval is not needed.
        self.settled = finished_at is not None and (
            datetime.now(finished_at.tzinfo) - finished_at > timedelta(seconds=SETTLE * 8)
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

    async def _batches(
        self,
        *,
        after_cursor: str | None,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        ended: asyncio.Event | None,
    ) -> AsyncGenerator[list[Record], None]:
        """The engine under `records` and `batches`: lists of records, never empty."""
        if sum(x is not None for x in (after_cursor, tail, since)) > 1:
            raise InvalidArgument("after_cursor, tail and since exclude each other")
        if tail is not None and tail < 0:
            raise InvalidArgument(f"tail must not be negative, not {tail}")
        since_usec = None if since is None else to_usec(since)
        if ended is not None and not follow:
            raise InvalidArgument("ended= only makes sense with follow=True")
        if follow:
            follower = Follower(self, after_cursor=after_cursor, tail=tail, since_usec=since_usec)
            batches = follower.batches(ended)
        else:
            batches = self._read_once(after_cursor, tail, since_usec)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch

    async def _read_once(
        self, after_cursor: str | None, tail: int | None, since_usec: int | None
    ) -> AsyncGenerator[list[Record], None]:
        """To the current end of the journal."""
        j = self.open_journal(after_cursor=after_cursor, tail=tail, since_usec=since_usec)
        first: str | None = None
        try:
            while batch := await j.read(BATCH):
                if first is None:
                    first = batch[0].cursor
                yield batch
                await asyncio.sleep(0)
        finally:
            j.close()
        self.check_suppressed(after_cursor, tail, since_usec, first)

    def check_suppressed(
        self,
        after_cursor: str | None,
        tail: int | None,
        since_usec: int | None,
        first: str | None,
    ) -> None:
        """Raise OutputLost if journald's rate limit dropped lines of the range just read, which
        started as asked (`after_cursor`, `tail` or `since_usec`); `first`: the cursor of the
        first record read (None: none was)."""
        check_suppressed(
            self.job_id,
            self.unit,
            self.namespace,
            after_cursor=after_cursor,
            tail=tail,
            since_usec=since_usec,
            first=first,
        )

    def open_journal(
        self,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since_usec: int | None = None,
        follow: bool = False,
        read_to: Pos | None = None,
    ) -> JobJournal:
        """A journal handle on the job's records at the requested start (at most one of
        `after_cursor`, `tail`, `since_usec`; none: the first record). Raises OutputLost if
        entries the caller wants were deleted (as far as can be known). `follow`: see
        `JobJournal`. `read_to`: with `after_cursor`, the point up to which the caller has read
        every entry of the namespace journal (past its last record, which may be deleted since).
        The caller closes the handle."""
        j = JobJournal(self.job_id, self.namespace, follow=follow)
        try:
            start = None if self._start_usec is None else time_pos(self._start_usec)
            pos: Pos | None = None
            if after_cursor is not None:
                # If the cursor's own entry is still there, nothing before it can be missing.
                pos = cursor_pos(after_cursor)
                if read_to is not None and pos_after(read_to, pos):
                    pos = read_to
                if j.seek_after(after_cursor):
                    pos = None
            elif tail is not None:
                if j.seek_tail(tail) < tail:
                    pos = start  # fewer than asked for: all since the start it is
            elif since_usec is not None:
                j.seek_since(since_usec)
                since_pos = time_pos(since_usec)
                pos = since_pos if start is None or since_pos.realtime > start.realtime else start
            else:
                j.seek_head()
                pos = start
            bounds = None if pos is None else j.bounds()
            if pos is not None and bounds is not None and gap(bounds[0], pos):
                raise deleted(f"output of job {self.job_id}", bounds[0])
        except BaseException:
            j.close()
            raise
        return j
