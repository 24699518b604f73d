"""Reading one job's output back from the journal.

Every job unit runs with `LogNamespace=jobrun` and `LogExtraFields=JOBRUN_JOB=<id>`, stdout and
stderr going to journald as one stream. This module reads those records back:

- `JobOutput(job_id).records(...)`: an async iterator of `Record`s, from the first line (default),
  after a cursor, the last N, or since a time; with `follow=True` it keeps going until the job has
  ended *and* journald has written everything the job wrote (see "The end" below).
- `JobOutput(job_id).open(...)`: the same as a blocking, file-like byte stream (`io.RawIOBase`).

What journald does to the bytes (systemd 252, `src/journal/journald-stream.c`; see the tests):

- Lines are split at `\\n`, at NUL and after `LineMax` (48K) bytes; the record says which
  (`_LINE_BREAK`), so `Record.data` restores the job's bytes: `message + b"\\n"` (newline),
  `message + b"\\0"` (NUL), `message` alone (line-max: the line goes on in the next record; eof: the
  job's last bytes had no newline). A 100 KB line comes back as three records whose `data` joins to
  the line.
- Bytes that are not UTF-8 are stored and returned as they are (`message` is always `bytes`).
- Lossy, and nothing a reader can undo: empty lines are dropped (so are the empty pieces between
  consecutive NULs), trailing spaces, tabs and CRs of a line are stripped (a line of only
  whitespace is kept as it is), and unless the unit sets `SyslogLevelPrefix=no` a leading `<N>` is
  taken as a syslog priority and removed.

The end. A job's unit can be dead while its output still sits in the stdout socket, not yet read by
journald (systemd issue #28650: `seq 200000` exits in 50 ms, journald needs seconds to ingest it),
or while the connection itself still waits in the socket's accept queue (journald busy, or being
socket-activated). Checking the journal only after the unit ended therefore loses the tail.
`journalctl --sync` does not help in 252: it waits for journald's event loop to be idle, which a
single busy job can postpone forever, and (issue #32539) it does not look at streams at all.
What journald offers instead: a state file per stdout stream, `<runtime dir>/streams/<dev>:<ino>`,
written when the stream's header has been read and naming the unit (`UNIT=`), removed only after
the stream hit EOF and its last line was written to the journal. Once the unit is dead nobody can
write to the stream any more, so "no state file names our unit" means "all is written" -- provided
journald has accepted and started the stream. That last gap is closed with a probe: we connect to
the same socket and send a header of our own. The accept queue is FIFO and journald serves streams
of equal priority oldest-pending first, so by the time our probe's state file exists, the job's
stream has had its header read (it has a state file) or is already finished. Then: wait until no
state file names the unit, and read the journal to its end. The state files are private to root;
without root the reader falls back to waiting for a quiet period, which is not exact.

Lost output. Journal files are deleted when the namespace journal reaches its size limits. If the
caller tells us when the job started (`started_at`), the reader compares the requested range with
the journal's earliest entry and raises `OutputLost` instead of silently starting later.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import InvalidArgument, OutputLost, SystemdUnavailable
from .model import ID_ALPHABET, JOB_FIELD, LOG_NAMESPACE, unit_name

__all__ = [
    "JobOutput",
    "JobOutputFile",
    "JournalUnavailable",
    "LineBreak",
    "Record",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Records read in one go before control goes back to the event loop (~5-10 ms of work).
_BATCH = 1000
# While a followed job writes, re-check this soon after data (journald writes entries to the mmap'd
# file at once but announces them on inotify at most every 250 ms), doubling while nothing comes,
# until the inotify window is covered; then only inotify (or the end) wakes us.
_RECHECK_FIRST = 0.001
_RECHECK_LAST = 0.128
# Polling journald's stream state files at the end: first quickly, then at this pace.
_STREAMS_POLL_LAST = 0.05
# How long journald may take to accept our probe (it may be starting up); then we give up.
_PROBE_TIMEOUT = 30.0
# Without access to the state files: end after this long without a new record.
_QUIET_FALLBACK = 1.0


class JournalUnavailable(SystemdUnavailable):
    """The journal of jobrun's namespace cannot be opened, or its journald does not respond."""


class LineBreak(StrEnum):
    """Why journald ended a record (its `_LINE_BREAK` field; absent means newline)."""

    NEWLINE = "newline"
    NUL = "nul"
    LINE_MAX = "line-max"
    EOF = "eof"
    PID_CHANGE = "pid-change"


_TERMINATOR = {LineBreak.NEWLINE: b"\n", LineBreak.NUL: b"\0"}
_LINE_BREAKS = {b.value.encode(): b for b in LineBreak}


@dataclass(frozen=True, slots=True)
class Record:
    """One journal record of a job's output."""

    timestamp: datetime  # when journald received it (realtime, UTC)
    cursor: str  # where it is in the journal; pass to `after_cursor=` to resume after it
    message: bytes  # the line as journald stored it, without its terminator
    line_break: LineBreak = LineBreak.NEWLINE

    @property
    def data(self) -> bytes:
        """The job's bytes this record stands for: the message and the terminator journald cut."""
        return self.message + _TERMINATOR.get(self.line_break, b"")


def _usec(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise InvalidArgument(f"{dt!r} has no time zone", hint="pass an aware datetime (UTC)")
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _from_usec(usec: int) -> datetime:
    return _EPOCH + timedelta(microseconds=usec)


def _cursor_usec(cursor: str) -> int:
    """The realtime a journal cursor points at (its `t=` part, hex microseconds)."""
    m = re.search(r"(?:^|;)t=([0-9a-f]+)(?:;|$)", cursor)
    if not m:
        raise InvalidArgument(f"not a journal cursor: {cursor!r}", hint="pass a Record.cursor")
    return int(m.group(1), 16)


def _lost(what: str, head: int) -> OutputLost:
    return OutputLost(
        f"{what} is no longer in the journal: its oldest entry is from "
        f"{_from_usec(head).isoformat()}",
        hint="journald deleted older journal files (size limits in journald@jobrun.conf)",
    )


class _Journal:
    """The blocking core: one sd_journal handle on the namespace, filtered to one job's stdout."""

    def __init__(self, job_id: str, namespace: str) -> None:
        from systemd import journal  # imported here: the CLI's start-up time matters

        try:
            # python-systemd 235 has `namespace=` (sd_journal_open_namespace, systemd >= 245): only
            # that namespace's files, in /var/log/journal/<machine-id>.<ns> and /run/log/journal/….
            self._j: Any = journal.Reader(namespace=namespace)
        except OSError as e:
            raise JournalUnavailable(
                f"cannot open the journal of namespace {namespace!r}: {e}",
                hint="reading job output needs root or membership in group systemd-journal",
            ) from e
        self._j.data_threshold = 0  # whole fields, however long
        # The job's own stdout/stderr only: JOBRUN_JOB (LogExtraFields=) is added by journald from
        # the unit, and _TRANSPORT=stdout keeps out what the job sent by syslog or the native
        # protocol, where it could set JOBRUN_JOB=<another job> itself.
        self._j.add_match(f"{JOB_FIELD}={job_id}")
        self._j.add_match("_TRANSPORT=stdout")
        self._on_entry = False  # positioned on an entry not yet returned

    def close(self) -> None:
        self._j.close()

    def fileno(self) -> int:
        fd: int = self._j.fileno()
        return fd

    def process(self) -> bool:
        """Consume the inotify events; True if journal files were added or removed."""
        from systemd import journal

        return bool(self._j.process() == journal.INVALIDATE)

    def timeout(self) -> float | None:
        """When sd_journal wants to be asked again even without an inotify event (network fs)."""
        ms: int = self._j.get_timeout_ms()
        return None if ms < 0 else ms / 1000

    def head(self) -> int | None:
        """Realtime (µs) of the oldest entry of the namespace journal, None if it has none."""
        try:
            start: int = self._j._get_start()
        except OSError:
            return None
        return start or None

    def seek_head(self) -> None:
        self._j.seek_head()

    def seek_since(self, usec: int) -> None:
        self._j.seek_realtime(usec)

    def seek_after(self, cursor: str) -> bool:
        """Position after `cursor`; False if the cursor's entry is not in the journal."""
        try:
            self._j.seek_cursor(cursor)
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"not a journal cursor: {cursor!r}") from e
        # seek_cursor + next lands on the cursor's own entry (if it is still there).
        if not self._j._next():
            return True  # nothing at or after it yet; the next entry will follow it
        if self._j.test_cursor(cursor):
            return True
        self._on_entry = True
        return False

    def seek_tail(self, n: int) -> int:
        """Position on the n-th last record; returns how many records there are to read (<= n)."""
        self._j.seek_tail()
        if n == 0:
            # seek_tail + next would return the last entry again (252): step onto it, as read.
            self._j._previous()
            return 0
        moved: int = self._j._previous(n)
        self._on_entry = moved > 0
        return moved

    def read(self, limit: int) -> list[Record]:
        """Up to `limit` records after the current position (fewer at the end of the journal)."""
        j = self._j
        nxt, get, realtime, cursor = j._next, j._get, j._get_realtime, j._get_cursor
        out: list[Record] = []
        append = out.append
        newline = LineBreak.NEWLINE
        while len(out) < limit:
            if self._on_entry:
                self._on_entry = False
            elif not nxt():
                break
            # _get (the C level under Reader.get_next) returns the raw field bytes; get_next would
            # decode every field and turn MESSAGE into str when it happens to be valid UTF-8.
            try:
                brk = _LINE_BREAKS.get(get("_LINE_BREAK"), LineBreak.PID_CHANGE)
            except KeyError:
                brk = newline
            append(
                Record(
                    _EPOCH + timedelta(microseconds=realtime()),
                    cursor(),
                    get("MESSAGE"),
                    brk,
                )
            )
        return out


class _Streams:
    """journald's view of its stdout streams: the probe and the per-stream state files."""

    def __init__(self, namespace: str) -> None:
        # RuntimeDirectory=systemd/journal.%i in systemd-journald@.service
        self.runtime_dir = Path("/run/systemd") / f"journal.{namespace}"

    def _state_files(self) -> Iterator[str]:
        """Contents of the stream state files; PermissionError without root."""
        try:
            names = os.listdir(self.runtime_dir / "streams")
        except FileNotFoundError:
            return
        for name in names:
            try:
                yield (self.runtime_dir / "streams" / name).read_text(errors="replace")
            except FileNotFoundError:
                continue  # the stream ended while we looked

    def unit_has_stream(self, unit: str) -> bool:
        line = f"\nUNIT={unit}\n"
        return any(line in text for text in self._state_files())

    def readable(self) -> bool:
        try:
            for _ in self._state_files():
                break
            next(iter(os.scandir(self.runtime_dir / "streams")), None)
            for entry in os.scandir(self.runtime_dir / "streams"):
                (self.runtime_dir / "streams" / entry.name).read_bytes()
                break
        except FileNotFoundError:
            pass
        except PermissionError:
            return False
        return True

    async def probe(self) -> bool:
        """Connect a stream of our own and wait until journald has read its header.

        Returns False if nobody listens on the socket (then no connection waits there either) or
        if the state files cannot be read (not root): then it only waited for the accept.
        """
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        nonce = f"jobrun-probe-{secrets.token_hex(8)}"
        try:
            try:
                await loop.sock_connect(sock, str(self.runtime_dir / "stdout"))
            except (FileNotFoundError, ConnectionRefusedError):
                return False
            # The stream protocol's header: identifier, unit, priority, level prefix, forward to
            # syslog, kmsg, console. No line follows, so nothing is written to the journal.
            await loop.sock_sendall(sock, f"{nonce}\n\n6\n0\n0\n0\n0\n".encode())
            needle = f"\nIDENTIFIER={nonce}\n"
            async with asyncio.timeout(_PROBE_TIMEOUT):
                if not self.readable():
                    # journald shuts down its write side when it accepts: EOF means accepted.
                    await loop.sock_recv(sock, 1)
                    return False
                delay = 0.0005
                while not any(needle in text for text in self._state_files()):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _STREAMS_POLL_LAST)
            return True
        except TimeoutError:
            raise JournalUnavailable(
                f"journald of namespace {self.runtime_dir.name} did not take a stream "
                f"within {_PROBE_TIMEOUT:.0f} s",
                hint="systemctl status systemd-journald@jobrun.service",
            ) from None
        finally:
            sock.close()

    async def drained(self, unit: str) -> bool:
        """Wait until journald has written all output of `unit`, which must have stopped.

        True when that is known exactly; False when we could only guess (see the module doc).
        """
        if not await self.probe():
            return False
        delay = 0.0005
        while self.unit_has_stream(unit):
            await asyncio.sleep(delay)
            delay = min(delay * 2, _STREAMS_POLL_LAST)
        return True


class JobOutput:
    """The output of one job, as recorded in the journal. Opens nothing until read."""

    def __init__(
        self,
        job_id: str,
        *,
        started_at: datetime | None = None,
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
        self._start_usec = None if started_at is None else _usec(started_at)

    async def records(
        self,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        ended: asyncio.Event | None = None,
    ) -> AsyncIterator[Record]:
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
        """
        async for batch in self._batches(
            after_cursor=after_cursor, tail=tail, since=since, follow=follow, ended=ended
        ):
            for record in batch:
                yield record

    def open(
        self,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        ended: threading.Event | None = None,
    ) -> JobOutputFile:
        """The job's output as a blocking binary stream (for code that is not async); the
        arguments are those of `records`, with a `threading.Event` for `ended`."""
        return JobOutputFile(
            self, after_cursor=after_cursor, tail=tail, since=since, follow=follow, ended=ended
        )

    async def _batches(
        self,
        *,
        after_cursor: str | None,
        tail: int | None,
        since: datetime | None,
        follow: bool,
        ended: asyncio.Event | None,
    ) -> AsyncIterator[list[Record]]:
        """The engine under `records` and `JobOutputFile`: lists of records, never empty."""
        if sum(x is not None for x in (after_cursor, tail, since)) > 1:
            raise InvalidArgument("after_cursor, tail and since exclude each other")
        if tail is not None and tail < 0:
            raise InvalidArgument(f"tail must not be negative, not {tail}")
        since_usec = None if since is None else _usec(since)
        if ended is not None and not follow:
            raise InvalidArgument("ended= only makes sense with follow=True")

        j = _Journal(self.job_id, self.namespace)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        reading = False
        try:
            # `low`: the realtime from which on the caller expects every record; None: unknown.
            low: int | None
            head = j.head()
            if after_cursor is not None:
                low = _cursor_usec(after_cursor)
                if not j.seek_after(after_cursor) and head is not None and head > low:
                    raise _lost("output after the given cursor", head)
            elif tail is not None:
                found = j.seek_tail(tail)
                low = None if found == tail else self._start_usec
            elif since_usec is not None:
                j.seek_since(since_usec)
                low = since_usec if self._start_usec is None else max(since_usec, self._start_usec)
            else:
                j.seek_head()
                low = self._start_usec
            if low is not None and head is not None and head > low:
                raise _lost(f"output of job {self.job_id}", head)

            if not follow:
                while batch := j.read(_BATCH):
                    yield batch
                    await asyncio.sleep(0)
                return

            loop.add_reader(j.fileno(), wake.set)
            reading = True
            end_task: asyncio.Task[bool] | None = None
            exact = True
            ended_task: asyncio.Task[Any] | None = None
            if ended is not None:
                ended_task = asyncio.create_task(ended.wait())
                ended_task.add_done_callback(lambda _: wake.set())
                tasks.append(ended_task)
            delay: float | None = None
            last_data = time.monotonic()
            last_usec = low
            while True:
                if j.process():
                    # Files were added (rotation) or deleted (vacuum). If the oldest entry left is
                    # newer than what we read last, unread records may have gone with a file.
                    head = j.head()
                    if last_usec is not None and head is not None and head > last_usec:
                        raise _lost(f"output of job {self.job_id} not read yet", head)
                got = False
                while batch := j.read(_BATCH):
                    got = True
                    last_usec = _usec(batch[-1].timestamp)
                    yield batch
                    await asyncio.sleep(0)
                if got:
                    last_data = time.monotonic()
                    delay = _RECHECK_FIRST
                elif delay is not None:
                    delay = None if delay >= _RECHECK_LAST else delay * 2

                if end_task is not None and end_task.done():
                    exact = end_task.result()
                    if exact:
                        # journald has written everything; what we just read was the rest. One
                        # more pass in case a rotation hid the last entries in a new file.
                        if j.process():
                            continue
                        return
                    if time.monotonic() - last_data >= _QUIET_FALLBACK:
                        return
                    delay = _QUIET_FALLBACK / 4 if delay is None else delay
                if ended_task is not None and ended_task.done() and end_task is None:
                    end_task = asyncio.create_task(_Streams(self.namespace).drained(self.unit))
                    end_task.add_done_callback(lambda _: wake.set())
                    tasks.append(end_task)
                    continue

                timeout = delay
                sd_timeout = j.timeout()
                if sd_timeout is not None:
                    timeout = sd_timeout if timeout is None else min(timeout, sd_timeout)
                wake.clear()
                if timeout is None:
                    await wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):
                            await wake.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if reading:
                loop.remove_reader(j.fileno())
            j.close()


class JobOutputFile(io.RawIOBase):
    """A job's output as a blocking, read-only binary stream, newlines (and NULs) restored.

    It drives `JobOutput`'s async engine on a private event loop, one batch of records per step,
    so it must not be used from inside a running event loop. `ended`: a `threading.Event` set
    once the job's unit has stopped (checked every 20 ms while waiting).
    """

    def __init__(
        self,
        output: JobOutput,
        *,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        follow: bool = False,
        ended: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self._loop = asyncio.new_event_loop()
        self._ended_sync = ended
        self._ended = asyncio.Event() if ended is not None else None
        self._batches = output._batches(
            after_cursor=after_cursor, tail=tail, since=since, follow=follow, ended=self._ended
        )
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self.cursor: str | None = None  # of the last record read into the buffer

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while self._pos >= len(self._buf) and not self._eof:
            self._fill()
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def _fill(self) -> None:
        try:
            batch = self._loop.run_until_complete(self._next_batch())
        except StopAsyncIteration:
            self._eof = True
            return
        self._buf = bytearray(b"".join(r.data for r in batch))
        self._pos = 0
        self.cursor = batch[-1].cursor

    async def _next_batch(self) -> list[Record]:
        if self._ended is None or self._ended_sync is None:
            return await anext(self._batches)

        async def watch(sync: threading.Event, event: asyncio.Event) -> None:
            while not sync.is_set():
                await asyncio.sleep(0.02)
            event.set()

        watcher = asyncio.create_task(watch(self._ended_sync, self._ended))
        try:
            return await anext(self._batches)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def close(self) -> None:
        if not self.closed:
            try:
                self._loop.run_until_complete(self._batches.aclose())
            finally:
                self._loop.close()
        super().close()
