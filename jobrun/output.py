"""A job's output for `logs`: its journal records in batches, read up to the job's end or
followed until it has ended (followers of one job share one reader, journal/fanout.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .model import Job

if TYPE_CHECKING:
    from .journal import JobOutput, Record
    from .journal.fanout import Feeds


def job_batches(
    feeds: Feeds,
    job: Job,
    wait: Callable[[], Coroutine[Any, Any, object]],
    *,
    follow: bool,
    after_cursor: str | None,
    tail: int | None,
    since: datetime | None,
) -> AsyncGenerator[list[Record], None]:
    """The batches of `job`'s output (never empty); with `follow`, until `wait` (the job's end,
    awaited once for all of its followers) has returned and all of its output has been read."""
    from .journal import JobOutput

    output = JobOutput(job.id, started_at=job.started_at, finished_at=job.outcome.finished_at)
    if not follow and job.state.finished:
        return _finished_batches(output, after_cursor=after_cursor, tail=tail, since=since)
    if not follow:
        return output.batches(after_cursor=after_cursor, tail=tail, since=since)

    def watch(ended: asyncio.Event) -> asyncio.Task[object] | None:
        if job.state.finished:
            ended.set()
            return None
        watcher: asyncio.Task[object] = asyncio.create_task(wait())
        watcher.add_done_callback(lambda _: ended.set())
        return watcher

    return feeds.follow(output, watch, after_cursor=after_cursor, tail=tail, since=since)


async def _finished_batches(
    output: JobOutput, *, after_cursor: str | None, tail: int | None, since: datetime | None
) -> AsyncGenerator[list[Record], None]:
    """A finished job's output, to its exact end. journald may still be writing what a finished
    job wrote (a chatty job's output lags behind by seconds): unless it has certainly written
    all (the job ended a while ago and no stream of its unit is left: Streams.drained), read as
    a follower does, up to the exact end, not up to the journal's current end. Once it has, one
    handle reads all: every file that can hold the job's records exists when it is opened (no
    watch of the journal's files, no second handle: ~8 ms less per `logs` of a finished job)."""
    from .journal.streams import Streams

    kwargs: dict[str, Any] = {"after_cursor": after_cursor, "tail": tail, "since": since}
    if output.settled and await Streams(output.namespace).drained(output.unit):
        batches = output.batches(**kwargs)
    else:
        done = asyncio.Event()
        done.set()
        batches = output.batches(**kwargs, follow=True, ended=done)
    async with contextlib.aclosing(batches):
        async for batch in batches:
            yield batch
