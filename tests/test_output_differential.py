"""Differential tests of reading output: every reader's records against journalctl's.

A seeded generator makes schedules of readers (1-5 of them; joining at once, mid-stream or after
the end; reading as fast as they can, at a set pace, or pausing; following from the first line,
following after a cursor, following the last N, or reading once after the end) for jobs of
different shapes (floods, slow drips, lines longer than journald's LineMax, binary bytes, no
trailing newline, jobs that exit at once), and tells journald to start new journal files at
points of the stream. Each reader's records are then compared with
`journalctl --namespace=jobrun -o export` of the same job: the same messages, line breaks and
cursors, in the same order, once each.

In-process, the readers share one Manager (one feed per job, as in jobrund) whose buffer is
small, so that followers fall behind it at test sizes. Through jobrund (`daemon`), they are
`jobrun logs --json` processes as a user runs them, read at the schedule's pace (or library
clients, for a resume after a cursor), against jobrund's own buffer.

Size: reduced by default; `JOBRUN_RELIABILITY=full` runs more schedules with floods of 10^5 to
10^6 lines. `JOBRUN_DIFF_SEEDS=3,17` runs those seeds only (a failure names its seed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobrun.journal import JobOutput
from jobrun.journal.fanout import Feeds

from .helpers import wait_for_async
from .reliability.common import FULL

pytestmark = pytest.mark.integration

Entry = tuple[str, bytes, str]  # cursor, message, line break: what a reader must agree on
PYTHON = "/usr/bin/python3"  # the job's interpreter: the system's, visible to every job
BUFFER_RECORDS = 2_000  # the in-process feed's buffer (jobrund's is fanout.BUFFER_RECORDS)


# --- schedules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    argv: tuple[str, ...]
    approx: int  # about how many records it makes (join points, rotations)


@dataclass(frozen=True)
class ReaderPlan:
    mode: str  # follow | after_cursor | since | tail | read (once, after the job's end)
    join_at: int | None  # records in the journal when it joins (None: after the job's end)
    tail: int = 0
    rate: float | None = None  # records per second; None: as fast as it can
    pause_at: int | None = None  # after this many records of its own, a pause
    pause_for: float = 0.0
    # and once reader i has had n records: (i, n)
    after_reader: tuple[int, int] | None = None
    # False: through jobrund, a reader that prints no cursors (`jobrun logs` without --json, or
    # the library with cursors=False): jobrund sends one cursor per batch
    cursors: bool = True


@dataclass(frozen=True)
class Plan:
    seed: int | str
    shape: Shape
    readers: tuple[ReaderPlan, ...]
    rotate_at: tuple[int, ...] = ()  # records in the journal when journald is told to rotate
    # and then only once every reader that joined by then has had its first records
    rotate_after_joined: bool = False
    restart_jobrund_at: tuple[int, ...] = ()  # records in the journal: `systemctl restart jobrund`
    kill_jobrund: bool = False  # SIGKILL instead (systemd starts it again: Restart=on-failure)

    def __str__(self) -> str:
        how = "kills" if self.kill_jobrund else "restarts"
        restarts = f"jobrund {how} at {list(self.restart_jobrund_at)}, " * bool(
            self.restart_jobrund_at
        )
        return f"seed {self.seed}: {self.shape.name} ~{self.shape.approx} records, " + (
            f"rotations at {list(self.rotate_at)}, {restarts}readers {list(self.readers)}"
        )


def _python(code: str) -> tuple[str, ...]:
    return (PYTHON, "-c", code)


def shape(rng: random.Random, daemon: bool) -> Shape:
    kind = rng.choices(
        ["flood", "drip", "long", "binary", "no_newline", "instant"], [5, 1, 1, 1, 1, 1]
    )[0]
    seed = rng.randrange(1 << 30)
    if kind == "flood":
        if FULL:
            n = rng.choice([100_000, 300_000, 1_000_000])
        else:
            n = rng.choice([30_000, 60_000] if daemon else [5_000, 20_000])
        return Shape(f"flood of {n}", ("seq", "1", str(n)), n)
    if kind == "drip":
        n = 2_000 if FULL else 150
        script = f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo drip$i; sleep 0.003; done"
        return Shape(f"drip of {n}", ("/bin/sh", "-c", script), n)
    if kind == "long":
        n = 2_000 if FULL else 60
        code = (
            f"import random, sys\nr = random.Random({seed})\nout = sys.stdout.buffer\n"
            f"for i in range({n}):\n"
            "    size = r.choice([1, 100, 49151, 49152, 49153, 100000, 200000])\n"
            "    out.write(bytes([97 + i % 26]) * size + b'\\n')\n"
        )
        return Shape(f"{n} long lines", _python(code), n * 3)
    if kind == "binary":
        size = 20_000_000 if FULL else 300_000
        code = (
            f"import random, sys\nr = random.Random({seed})\n"
            f"sys.stdout.buffer.write(r.randbytes({size}))\n"
        )
        return Shape(f"{size} random bytes", _python(code), size // 128)
    if kind == "no_newline":
        return Shape("no trailing newline", ("printf", "one\\ntwo\\nthe last, unended"), 3)
    if rng.random() < 0.5:
        return Shape("instant exit, silent", ("true",), 0)
    return Shape("instant exit, one line", ("echo", "only"), 1)


def reader(rng: random.Random, approx: int) -> ReaderPlan:
    mode = rng.choices(["follow", "after_cursor", "since", "tail", "read"], [5, 2, 2, 2, 1])[0]
    if mode == "read":
        join_at = None
    else:
        join_at = rng.choice([0, 0, rng.randint(0, max(approx, 1)), None])
        if mode in ("after_cursor", "since"):
            join_at = max(join_at or 1, 1) if join_at is not None else None
    rate = rng.choice([None, None, rng.choice([2_000.0, 5_000.0, 20_000.0])])
    if FULL and rate is not None:
        rate *= 10
    pause_at = rng.randint(1, max(approx, 1)) if rng.random() < 0.3 else None
    return ReaderPlan(
        mode,
        join_at,
        tail=rng.choice([0, 1, 10, 3_000]),
        rate=rate,
        pause_at=pause_at,
        pause_for=rng.choice([0.2, 0.5, 1.5]),
        cursors=rng.random() < 0.5,
    )


def plan(seed: int, *, daemon: bool) -> Plan:
    rng = random.Random(seed * 2 + daemon)
    s = shape(rng, daemon)
    readers = tuple(reader(rng, s.approx) for _ in range(rng.randint(1, 5)))
    rotations: tuple[int, ...] = ()
    if s.approx >= 100 and rng.random() < 0.6:
        rotations = tuple(sorted(rng.sample(range(1, s.approx), rng.choice([1, 1, 2]))))
    return Plan(seed, s, readers, rotations)


# The case of the issue: followers of a flood that catch up from their own cursors through
# readers of their own, opened before journald starts a new journal file and still reading the
# old one when the job has ended (they pause). In-process with the feed's small buffer, and
# through jobrund (buffer 20,000 records) with two `jobrun logs -f` that join after jobrund's
# feed has dropped the first lines (the flood waits for them between two bursts).
TWO_FOLLOWERS = Plan(
    "two-followers",
    Shape(
        "two bursts of 10000",
        ("/bin/sh", "-c", "seq 1 10000; sleep 1; seq 10001 20000"),
        20_000,
    ),
    (
        ReaderPlan("follow", 0),
        ReaderPlan("follow", 3_000, pause_at=1, pause_for=3.0),
        ReaderPlan("follow", 3_000, rate=5_000.0, pause_at=1, pause_for=3.0),
    ),
    (10_000,),
    rotate_after_joined=True,
)
# Lines of 100 bytes: jobrund's write buffer and the pipes hold some 10,000 of them, so the
# paused followers' readers stop well before the end of the first burst.
WIDE = "%0100.0f"
TWO_FOLLOWERS_DAEMON = Plan(
    "two-followers-daemon",
    Shape(
        "two bursts of 25000 and 35000 100-byte lines",
        ("/bin/sh", "-c", f"seq -f {WIDE} 1 25000; sleep 2; seq -f {WIDE} 25001 60000"),
        60_000,
    ),
    (
        ReaderPlan("follow", 0),
        ReaderPlan("follow", 25_000, pause_at=1, pause_for=4.0, after_reader=(0, 22_000)),
        ReaderPlan(
            "follow", 25_000, rate=20_000.0, pause_at=1, pause_for=4.0, after_reader=(0, 22_000)
        ),
    ),
    (25_001,),
    rotate_after_joined=True,
)

# jobrund restarted twice while followers stream (`jobrun logs -f` and a `--since` reader through
# the client library): each asks again after the last cursor it got, no gap, no repeat.
JOBRUND_RESTARTS = Plan(
    "jobrund-restarts",
    Shape(
        "three bursts of 15000",
        ("/bin/sh", "-c", "seq 1 15000; sleep 1.5; seq 15001 30000; sleep 1.5; seq 30001 45000"),
        45_000,
    ),
    (
        ReaderPlan("follow", 0),
        ReaderPlan("follow", 0, rate=10_000.0),
        ReaderPlan("since", 5_000, rate=20_000.0),
        ReaderPlan("follow", 8_000, pause_at=1, pause_for=1.0),
        ReaderPlan("follow", 0, rate=10_000.0, cursors=False),
        ReaderPlan("since", 5_000, rate=20_000.0, cursors=False),
    ),
    restart_jobrund_at=(12_000, 29_000),
)


# jobrund killed while slow readers without cursors have full pipes: a reader gets part of a
# batch whose cursor never comes, and must ask again after the last cursor it had, not repeat.
JOBRUND_KILLED = Plan(
    "jobrund-killed",
    Shape(
        "two bursts of 20000 100-byte lines",
        ("/bin/sh", "-c", f"seq -f {WIDE} 1 20000; sleep 2; seq -f {WIDE} 20001 40000"),
        40_000,
    ),
    (
        ReaderPlan("follow", 0, rate=5_000.0, cursors=False),
        ReaderPlan("follow", 0, rate=2_000.0, pause_at=100, pause_for=1.5, cursors=False),
        ReaderPlan("since", 1_000, rate=5_000.0, cursors=False),
        ReaderPlan("after_cursor", 3_000, rate=2_000.0, pause_at=10, pause_for=1.5, cursors=False),
        ReaderPlan("follow", 0, rate=5_000.0),
    ),
    restart_jobrund_at=(10_000, 30_000),
    kill_jobrund=True,
)


def seeds(daemon: bool) -> list[int]:
    chosen = os.environ.get("JOBRUN_DIFF_SEEDS")
    if chosen:
        return [int(s) for s in chosen.split(",")]
    if FULL:
        return list(range(40 if not daemon else 20))
    return list(range(6 if not daemon else 3))


# --- the journal's own account -----------------------------------------------------------------


def parse_export(data: bytes) -> list[dict[str, bytes]]:
    """journalctl's export format: `NAME=value` lines, or for binary values the name, a
    little-endian 64-bit size and the bytes; a blank line after each entry."""
    entries: list[dict[str, bytes]] = []
    entry: dict[str, bytes] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if not line:
            if entry:
                entries.append(entry)
            entry = {}
            i = nl + 1
        elif b"=" in line:
            name, _, value = line.partition(b"=")
            entry[name.decode()] = value
            i = nl + 1
        else:
            size = int.from_bytes(data[nl + 1 : nl + 9], "little")
            entry[line.decode()] = data[nl + 9 : nl + 9 + size]
            i = nl + 9 + size + 1
    if entry:
        entries.append(entry)
    return entries


async def journal_entries(job_id: str) -> tuple[list[Entry], list[int]]:
    """The job's records as journalctl exports them, and their realtime timestamps (µs)."""
    proc = await asyncio.create_subprocess_exec(
        "journalctl", "--namespace=jobrun", "-o", "export", "--no-pager",
        f"JOBRUN_JOB={job_id}", "_TRANSPORT=stdout",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    exported = parse_export(out)
    entries = [
        (e["__CURSOR"].decode(), e["MESSAGE"], e.get("_LINE_BREAK", b"newline").decode())
        for e in exported
    ]
    return entries, [int(e["__REALTIME_TIMESTAMP"]) for e in exported]


async def rotate() -> None:
    proc = await asyncio.create_subprocess_exec(
        "journalctl", "--namespace=jobrun", "--quiet", "--rotate"
    )
    assert await proc.wait() == 0


# --- running a schedule ------------------------------------------------------------------------


class Monitor:
    """The job's records as a reader of its own sees them, to time joins and rotations."""

    def __init__(self, job_id: str, ended: asyncio.Event) -> None:
        self.entries: list[Entry] = []
        self.times: list[int] = []  # their realtime timestamps (µs)
        self.done = False
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(job_id, ended))

    async def _run(self, job_id: str, ended: asyncio.Event) -> None:
        try:
            batches = JobOutput(job_id).batches(follow=True, ended=ended)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    self.entries += [(r.cursor, r.message, r.line_break.value) for r in batch]
                    self.times += [r.usec for r in batch]
                    self._changed.set()
        finally:
            self.done = True
            self._changed.set()

    async def reached(self, n: int) -> None:
        while len(self.entries) < n and not self.done:
            self._changed.clear()
            await self._changed.wait()


@dataclass
class Outcome:
    plan: ReaderPlan
    entries: list[Entry] = field(default_factory=list)
    cursor_index: int = 0  # after_cursor: how many records came before its start
    since_usec: int = 0  # since: the time it asked for (that of a record it had seen)
    seen_before: int = 0  # records in the journal before it joined (a lower bound)
    seconds: float = 0.0
    raw: bytes | None = None  # `jobrun logs` without --json: its stdout
    started: asyncio.Event = field(default_factory=asyncio.Event)  # has records, or has ended
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Pace:
    """A reader's schedule: its rate and its one pause."""

    def __init__(self, p: ReaderPlan) -> None:
        self._p = p
        self._paused = False
        self._t0 = time.monotonic()

    async def took(self, total: int) -> None:
        p = self._p
        if p.rate is not None:
            ahead = self._t0 + total / p.rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        if p.pause_at is not None and not self._paused and total >= p.pause_at:
            self._paused = True
            await asyncio.sleep(p.pause_for)


Open = Callable[..., AsyncIterator[list[Any]]]


async def library_reader(open_batches: Open, job_id: str, out: Outcome, kw: dict[str, Any]) -> None:
    pace = Pace(out.plan)
    batches = open_batches(job_id, **kw)
    async with contextlib.aclosing(batches):  # type: ignore[type-var]
        async for batch in batches:
            out.entries += [(r.cursor, r.message, r.line_break.value) for r in batch]
            out.started.set()
            await pace.took(len(out.entries))


def _entry(line: bytes) -> Entry:
    d = json.loads(line)
    message = (
        d["message"].encode() if d["message"] is not None else base64.b64decode(d["message_base64"])
    )
    return (d["cursor"], message, d["line_break"])


async def cli_reader(job_id: str, out: Outcome, kw: dict[str, Any]) -> None:
    """`jobrun logs --json` through jobrund, its stdout read at the schedule's pace; or, for a
    reader without cursors, `jobrun logs` and its bytes."""
    cursors = kw.get("cursors", True)
    args = ["logs", "--json"] if cursors else ["logs"]
    if kw.get("follow"):
        args.append("--follow")
    if kw.get("tail") is not None:
        args += ["--tail", str(kw["tail"])]
    env = {k: v for k, v in os.environ.items() if k != "JOBRUN_STATE_DIR"}
    env["JOBRUN_MODE"] = "daemon"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobrun", *args, job_id,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd="/",
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    pace = Pace(out.plan)
    rest = b""
    raw = bytearray()
    lines_seen = 0
    while chunk := await proc.stdout.read(1 << 16):
        if not cursors:
            raw += chunk
            lines_seen += chunk.count(b"\n")
            out.started.set()
            await pace.took(lines_seen)
            continue
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        out.entries += [_entry(line) for line in lines]
        if out.entries:
            out.started.set()
        await pace.took(len(out.entries))
    assert rest == b""
    if not cursors:
        out.raw = bytes(raw)
    err = await errors
    assert await proc.wait() == 0, err.decode()


async def run_plan(p: Plan, backend: Any, *, daemon: bool) -> None:
    job = await backend.start(list(p.shape.argv), None, {"profile": "relaxed"})
    job_id = job.id
    ended = asyncio.Event()
    waiter = asyncio.create_task(backend.wait(job_id))
    waiter.add_done_callback(lambda _: ended.set())
    monitor = Monitor(job_id, ended)
    outcomes = [Outcome(rp) for rp in p.readers]

    async def rotations() -> None:
        for n in p.rotate_at:
            await monitor.reached(n)
            if monitor.done:
                return
            if p.rotate_after_joined:
                for o in outcomes:
                    if o.plan.join_at is not None and o.plan.join_at <= n:
                        await o.started.wait()
            await rotate()

    async def restarts() -> None:
        for n in p.restart_jobrund_at:
            await monitor.reached(n)
            if monitor.done:
                return
            for o in outcomes:  # every follower that joined by then is streaming
                if o.plan.join_at is not None and o.plan.join_at <= n:
                    await o.started.wait()
            args: tuple[str, ...]
            if p.kill_jobrund:
                args = ("kill", "-s", "KILL", "jobrund.service")
            else:
                args = ("restart", "jobrund.service")
            proc = await asyncio.create_subprocess_exec("systemctl", *args)
            assert await proc.wait() == 0

    timeout = 600 if FULL else 120

    async def one(out: Outcome) -> None:
        rp = out.plan
        if rp.join_at is None or rp.mode == "read":
            await monitor.task
        else:
            await monitor.reached(rp.join_at)
        if rp.after_reader is not None:
            other, n = outcomes[rp.after_reader[0]], rp.after_reader[1]
            await wait_for_async(
                lambda: len(other.entries) >= n or other.done.is_set(),
                what=f"reader {rp.after_reader[0]} to have {n} lines",
                timeout=timeout,
                interval=0.01,
            )
        out.seen_before = len(monitor.entries)
        kw: dict[str, Any] = {"follow": rp.mode != "read"}
        if rp.mode == "after_cursor":
            out.cursor_index = min(rp.join_at or 1, len(monitor.entries))
            if out.cursor_index == 0:
                kw["follow"] = True  # nothing to resume after: from the first line
            else:
                kw["after_cursor"] = monitor.entries[out.cursor_index - 1][0]
        elif rp.mode == "since":
            # The time of a record already there: from it on (and any of the same microsecond).
            index = min(rp.join_at or 1, len(monitor.times)) - 1
            if index < 0:
                kw["follow"] = True  # nothing there yet: from the first line
            else:
                out.since_usec = monitor.times[index]
                kw["since"] = datetime.fromtimestamp(0, UTC) + timedelta(
                    microseconds=out.since_usec
                )
        elif rp.mode == "tail":
            kw["tail"] = rp.tail
        if daemon and not rp.cursors:
            kw["cursors"] = False
        t0 = time.monotonic()
        if daemon and rp.mode not in ("after_cursor", "since"):
            await cli_reader(job_id, out, kw)
        else:
            await library_reader(backend.log_batches, job_id, out, kw)
        out.seconds = time.monotonic() - t0
        out.started.set()
        out.done.set()

    async with asyncio.timeout(timeout):
        await asyncio.gather(rotations(), restarts(), *(one(o) for o in outcomes))
        await monitor.task
        await waiter
    truth, times = await journal_entries(job_id)
    check(p, truth, monitor.entries, outcomes, times)


def _first_difference(a: list[Entry], b: list[Entry]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"first difference at record {i}: {x[1][:40]!r} vs journal {y[1][:40]!r}"
    return f"{len(a)} records vs the journal's {len(b)}"


def _suffix_of(truth: list[Entry], raw: bytes) -> list[Entry] | None:
    """The last records of the journal whose bytes are raw, if there are such."""
    from jobrun.journal import LineBreak, Record

    size = 0
    for start in range(len(truth), -1, -1):
        if size == len(raw):
            data = b"".join(Record(0, c, m, LineBreak(b)).data for c, m, b in truth[start:])
            return truth[start:] if data == raw else None
        if size > len(raw) or start == 0:
            return None
        c, m, b = truth[start - 1]
        size += len(Record(0, c, m, LineBreak(b)).data)
    return None


def _padded(want: list[Entry]) -> Iterator[Entry | None]:
    yield from want
    while True:
        yield None


def check(
    p: Plan, truth: list[Entry], monitor: list[Entry], outcomes: list[Outcome], times: list[int]
) -> None:
    problems = []
    if monitor != truth:
        problems.append(f"the monitor: {_first_difference(monitor, truth)}")
    for i, out in enumerate(outcomes):
        rp, got = out.plan, out.entries
        if out.raw is not None:
            suffix = _suffix_of(truth, out.raw)
            if suffix is None:
                problems.append(f"reader {i} ({rp}): its {len(out.raw)} bytes are not the job's")
                continue
            got = suffix
        if rp.mode == "after_cursor":
            want = truth[out.cursor_index :]
        elif rp.mode == "since" and out.since_usec:
            want = [e for e, t in zip(truth, times, strict=True) if t >= out.since_usec]
        elif rp.mode == "tail":
            # The last N when it joined, then all that came after: a suffix of the journal's,
            # starting no earlier than N before what was there before it joined.
            start = len(truth) - len(got)
            want = truth[start:]
            low = max(0, out.seen_before - rp.tail)
            if start < low:
                problems.append(f"reader {i} ({rp}): starts at {start}, before {low}")
            if rp.join_at is None and start != max(0, len(truth) - rp.tail):
                problems.append(f"reader {i} ({rp}): {len(got)} records, not the last {rp.tail}")
        else:
            want = truth
        if not rp.cursors:  # records without a cursor take the journal's, the rest must match it
            pairs = zip(got, _padded(want), strict=False)
            got = [(c or (w[0] if w else ""), m, b) for (c, m, b), w in pairs]
        if got != want:
            problems.append(
                f"reader {i} ({rp}): {len(got)} of {len(want)} records; "
                + _first_difference(got, want)
            )
    print(f"{p}\n  journal {len(truth)} records; readers got", [len(o.entries) for o in outcomes])
    assert not problems, f"{p}\n" + "\n".join(problems)


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture
async def local_backend(state_dir: Path) -> AsyncIterator[Any]:
    from jobrun.client.local import LocalBackend
    from jobrun.manager import Manager
    from jobrun.store import Store

    manager = await Manager.open(Store())
    manager.feeds = Feeds(buffer_records=BUFFER_RECORDS)
    try:
        yield LocalBackend(manager)
    finally:
        await manager.close()


@pytest.mark.parametrize("p", [TWO_FOLLOWERS], ids=lambda p: str(p.seed))
async def test_regression_in_process(p: Plan, local_backend: Any) -> None:
    await run_plan(p, local_backend, daemon=False)


@pytest.mark.parametrize("seed", seeds(daemon=False))
async def test_schedules_in_process(seed: int, local_backend: Any) -> None:
    await run_plan(plan(seed, daemon=False), local_backend, daemon=False)


@pytest.fixture
async def daemon_backend() -> AsyncIterator[Any]:
    from jobrun.bus import connect_system_bus
    from jobrun.client.dbus import DaemonBackend

    b = DaemonBackend(await connect_system_bus())
    try:
        yield b
    finally:
        await b.close()


@pytest.mark.daemon
@pytest.mark.parametrize("p", [TWO_FOLLOWERS_DAEMON], ids=lambda p: str(p.seed))
async def test_regression_through_jobrund(p: Plan, daemon_backend: Any) -> None:
    await run_plan(p, daemon_backend, daemon=True)


@pytest.mark.daemon
@pytest.mark.parametrize("p", [JOBRUND_RESTARTS, JOBRUND_KILLED], ids=lambda p: str(p.seed))
async def test_followers_resume_across_jobrund_restarts(p: Plan, daemon_backend: Any) -> None:
    await run_plan(p, daemon_backend, daemon=True)


@pytest.mark.daemon
@pytest.mark.parametrize("seed", seeds(daemon=True))
async def test_schedules_through_jobrund(seed: int, daemon_backend: Any) -> None:
    await run_plan(plan(seed, daemon=True), daemon_backend, daemon=True)


# Over the remote API: the same schedules through gRPC (an admin's client reading a job it
# started), and followers resuming across jobrund restarts.
@pytest.fixture(scope="module")
def remote_api() -> Iterator[Any]:
    from .remote_helpers import remote_jobrund

    with remote_jobrund() as r:
        yield r


@pytest.fixture
async def remote_backend(remote_api: Any) -> AsyncIterator[Any]:
    from .remote_helpers import backend

    b = await backend(remote_api, "carol")
    try:
        yield b
    finally:
        await b.close()


@pytest.mark.daemon
@pytest.mark.parametrize("seed", seeds(daemon=True))
async def test_schedules_over_the_remote_api(seed: int, remote_backend: Any) -> None:
    await run_plan(plan(seed, daemon=True), remote_backend, daemon=False)


@pytest.mark.daemon
@pytest.mark.parametrize("p", [TWO_FOLLOWERS_DAEMON, JOBRUND_RESTARTS], ids=lambda p: str(p.seed))
async def test_followers_over_the_remote_api(p: Plan, remote_backend: Any) -> None:
    await run_plan(p, remote_backend, daemon=False)
