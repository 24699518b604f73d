"""P4: follow latency, from the job writing a line to a follower having it, with 1, 100 and 1000
followers: the library's async iterator (all followers in this process) and jobrund's Logs pipes
(all read by this process); jobrund's memory (VmRSS) at each count.

The job writes 100 lines/s all along: "warm" lines until a file appears (created once every
follower has had its first line, so all are attached and reading), then the measured lines, each
its CLOCK_MONOTONIC time and a number. Writing without a pause matters: a reader that saw no data
for ~255 ms waits for journald's inotify notice (at most every 250 ms) again. The
latency of a line is the follower's CLOCK_MONOTONIC on receipt minus the time in the line. The
baseline is one `journalctl -f` on the same job at the same time (started before the followers,
so it has its inotify instance whatever happens to them). The jobrund followers are read with a
minimal frame parser (os.read on each pipe) rather than jobrun's client, so that this process,
which reads all of them, stays cheap; jobrund is restarted before each count, so its memory is
that of one count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import (
    BenchError,
    Config,
    Row,
    daemon_backend,
    memory_mb,
    percentile,
    restart_jobrund,
    wait_idle,
)

RATE = 100.0  # lines per second
GOAL_P99_MS = 50.0
GOAL_P99_AT = 100
GOAL_RSS_MB = 150.0
GOAL_RSS_AT = 1000
PYTHON3 = "/usr/bin/python3"  # the system's: the job's sandbox hides /root, /home (pyenv, venvs)

JOB = """\
import os, sys, time
go, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
limit = time.monotonic() + 300
while not os.path.exists(go):
    if time.monotonic() > limit:
        sys.exit(3)
    print("warm", flush=True)
    time.sleep(1 / rate)
t0 = time.monotonic()
for i in range(n):
    d = t0 + i / rate - time.monotonic()
    if d > 0:
        time.sleep(d)
    print(time.monotonic_ns(), i, flush=True)
"""


@dataclass
class Followers:
    """What a set of followers saw."""

    expected: int  # lines each follower should get
    latencies: list[float] = field(default_factory=list)  # ms, all followers together
    ready: int = 0  # followers that got their first line (or failed: they will not get one)
    complete: int = 0  # followers that got every line
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    everyone_ready: asyncio.Event = field(default_factory=asyncio.Event)
    count: int = 0

    def line(self, message: bytes, now_ns: int) -> bool:
        """Account for one line (a follower's first one is its set_ready); True for the last."""
        if message == b"warm":
            return False
        ts, _, i = message.partition(b" ")
        self.latencies.append((now_ns - int(ts)) / 1e6)
        return int(i) == self.expected - 1

    def set_ready(self) -> None:
        self.ready += 1
        if self.ready >= self.count:
            self.everyone_ready.set()

    def failed(self, e: BaseException | str, was_ready: bool) -> None:
        text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
        self.errors[text[:120]] += 1
        if not was_ready:
            self.set_ready()

    def error_text(self) -> str:
        return "; ".join(f"{n} × {text}" for text, n in self.errors.most_common(3))


def job_argv(go: Path, n: int) -> list[str]:
    if not Path(PYTHON3).exists():
        raise BenchError(f"{PYTHON3} is missing: the P4 job needs the system's Python")
    return [PYTHON3, "-c", JOB, str(go), str(n), str(RATE)]


async def journalctl_follower(job_id: str, seen: Followers) -> None:
    proc = await asyncio.create_subprocess_exec(
        "journalctl", "--namespace=jobrun", "-f", "-o", "cat", "--no-pager", f"JOBRUN_JOB={job_id}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        while line := await proc.stdout.readline():
            if not seen.ready:
                seen.set_ready()
            if seen.line(line.rstrip(b"\n"), time.monotonic_ns()):
                seen.complete += 1
                return
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await proc.wait()


async def library_follower(manager: Any, job_id: str, seen: Followers) -> None:
    ready = False
    try:
        async for rec in manager.logs(job_id, follow=True):
            if not ready:
                ready = True
                seen.set_ready()
            if seen.line(rec.message, time.monotonic_ns()):
                seen.complete += 1
    except Exception as e:
        seen.failed(e, ready)


async def daemon_follower(
    bus: Any, job_id: str, seen: Followers, opening: asyncio.Semaphore
) -> None:
    """One Logs pipe of jobrund, read with os.read and a frame parser. `opening` bounds the Logs
    calls waiting for their reply: dbus-daemon refuses more than max_replies_per_connection
    (128 on the system bus) on one connection, and all followers share this process's."""
    from dbus_fast import Message, MessageType, Variant

    from jobrun import dbus_api as api
    from jobrun.wire.logs import FRAME, FRAME_END, FRAME_ERROR

    async with opening:
        reply = await bus.call(
            Message(
                destination=api.BUS_NAME,
                path=api.PATH,
                interface=api.INTERFACE,
                member="Logs",
                signature="sa{sv}",
                body=[job_id, {"follow": Variant("b", True)}],
            )
        )
    if reply is None or reply.message_type == MessageType.ERROR:
        seen.failed(f"{reply and reply.error_name}: {reply and reply.body}", False)
        return
    fd = reply.unix_fds[reply.body[0]]
    for other in reply.unix_fds:
        if other != fd:
            os.close(other)
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    buf = bytearray()
    ready = False
    header = FRAME.size

    def readable() -> None:
        nonlocal ready
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        now = time.monotonic_ns()
        if not data:
            seen.failed("pipe closed before the end frame", ready)
            done.set_result(None)
            return
        buf.extend(data)
        while len(buf) >= header:
            kind, _, clen, mlen = FRAME.unpack_from(buf)
            if len(buf) < header + clen + mlen:
                break
            message = bytes(buf[header + clen : header + clen + mlen])
            del buf[: header + clen + mlen]
            if kind == FRAME_END:
                done.set_result(None)
                return
            if kind == FRAME_ERROR:
                seen.failed(message.decode(errors="replace").replace("\0", ": "), ready)
                done.set_result(None)
                return
            if not ready:
                ready = True
                seen.set_ready()
            if seen.line(message, now):
                seen.complete += 1

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@dataclass
class Result:
    count: int
    lines: int
    followers: Followers
    baseline: Followers
    idle: dict[str, float] = field(default_factory=dict)  # memory_mb before the followers
    peak: dict[str, float] = field(default_factory=dict)  # the highest of each while following


async def measure(
    cfg: Config,
    count: int,
    n: int,
    start_job: Callable[[list[str]], Awaitable[str]],
    follower: Callable[[str, Followers], Coroutine[Any, Any, None]],  # each one a task
    rss_of: Callable[[], int | None],
) -> Result:
    go = cfg.work / f"p4-go-{count}-{time.monotonic_ns()}"
    job_id = await start_job(job_argv(go, n))
    base = Followers(expected=n, count=1)
    seen = Followers(expected=n, count=count)
    pid = rss_of()
    result = Result(count, n, seen, base, idle=memory_mb(pid) if pid else {})
    sampling = True

    async def sample() -> None:
        while sampling and pid:
            for key, mb in memory_mb(pid).items():
                result.peak[key] = max(result.peak.get(key, 0.0), mb)
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    baseline = asyncio.create_task(journalctl_follower(job_id, base))
    tasks: list[asyncio.Task[None]] = []
    try:
        tasks += [asyncio.create_task(follower(job_id, seen)) for _ in range(count)]
        async with asyncio.timeout(30 + 0.05 * count):
            await base.everyone_ready.wait()
            await seen.everyone_ready.wait()
        go.touch()
        end = n / RATE + 30
        finished, _ = await asyncio.wait([baseline, *tasks], timeout=end)
        for t in finished:
            if t.exception() is not None:
                raise BenchError(f"a P4 follower failed: {t.exception()!r}")
    except TimeoutError:
        raise BenchError(
            f"P4: only {seen.ready} of {count} followers (and {base.ready} of 1 journalctl -f) "
            "attached within the time allowed"
        ) from None
    finally:
        sampling = False
        for t in (sampler, baseline, *tasks):
            t.cancel()
        await asyncio.gather(sampler, baseline, *tasks, return_exceptions=True)
        go.unlink(missing_ok=True)
    late = count - seen.complete - sum(seen.errors.values())
    if late > 0:
        seen.errors[f"not all {n} lines within {n / RATE + 30:.0f} s"] += late
    return result


async def library(cfg: Config, count: int, n: int) -> Result:
    from jobrun.manager import Manager
    from jobrun.properties import build_spec
    from jobrun.store import Store

    async with await Manager.open(Store(cfg.state)) as m:

        async def start(argv: list[str]) -> str:
            return (await m.start(build_spec(argv))).id

        return await measure(
            cfg,
            count,
            n,
            start,
            lambda job_id, seen: library_follower(m, job_id, seen),
            os.getpid,
        )


async def daemon(cfg: Config, count: int, n: int) -> Result:
    pid = await restart_jobrund()
    b = await daemon_backend()
    try:
        await b.list(False)  # jobrund is up and has answered once

        async def start(argv: list[str]) -> str:
            return str((await b.start(argv, None, {})).id)

        opening = asyncio.Semaphore(32)
        return await measure(
            cfg,
            count,
            n,
            start,
            lambda job_id, seen: daemon_follower(b.bus, job_id, seen, opening),
            lambda: pid,
        )
    finally:
        await b.close()


def rows_of(mode: str, r: Result) -> list[Row]:
    f, b = r.followers, r.baseline
    who = "library iterator" if mode == "library" else "jobrund Logs pipe"
    plural = "follower" if r.count == 1 else "followers"
    ok = f.complete == r.count
    note = f"{f.complete}/{r.count} complete" + (f"; {f.error_text()}" if f.errors else "")
    if f.latencies:
        note = f"p90 {percentile(f.latencies, 90):.1f} ms, max {max(f.latencies):.0f} ms; {note}"
    rows = []
    for stat, q in (("p50", 50), ("p99", 99)):
        value = percentile(f.latencies, q) if f.latencies else None
        base = percentile(b.latencies, q) if b.latencies else None
        goal = stat == "p99" and r.count == GOAL_P99_AT
        rows.append(
            Row(
                "P4",
                f"{who}, {r.count} {plural}, {stat} of {len(f.latencies):,} lines",
                value,
                "ms",
                base,
                f"one `journalctl -f` on the same job, {stat}",
                goal=f"≤ {GOAL_P99_MS:.0f} ms" if goal else "",
                met=(ok and value is not None and value <= GOAL_P99_MS) if goal else None,
                note=note,
            )
        )
    if r.peak:
        goal = mode == "daemon" and r.count == GOAL_RSS_AT
        peak = r.peak.get("VmRSS", 0.0)
        rows.append(
            Row(
                "P4",
                f"{'jobrund' if mode == 'daemon' else 'bench process'} VmRSS peak, "
                f"{r.count} {plural}",
                peak,
                "MB",
                r.idle.get("VmRSS"),
                "the same process before the followers",
                goal=f"≤ {GOAL_RSS_MB:.0f} MB, all served" if goal else "",
                met=(ok and peak <= GOAL_RSS_MB) if goal else None,
                note=f"peak RssAnon {r.peak.get('RssAnon', 0):.0f} MB, "
                f"RssFile {r.peak.get('RssFile', 0):.0f} MB"
                + ("" if ok else f"; {r.count - f.complete} followers not served"),
            )
        )
    return rows


async def namespace_journal(cfg: Config) -> None:
    """Make sure jobrun's namespace journal exists before `journalctl -f` opens it: sd-journal
    (252) never notices a namespace directory that appears after it was opened."""
    from jobrun.manager import Manager
    from jobrun.properties import build_spec
    from jobrun.store import Store

    async with await Manager.open(Store(cfg.state)) as m:
        job = await m.start(build_spec(["echo", "hello"]))
        async with asyncio.timeout(60):
            async for _ in m.logs(job.id, follow=True):
                pass


async def run(cfg: Config) -> list[Row]:
    counts = (1, 10) if cfg.quick else (1, 100, 1000)
    n = cfg.size(1000, 30)
    rows: list[Row] = []
    await namespace_journal(cfg)
    for mode, fn in (("library", library), ("daemon", daemon)):
        for count in counts:
            await asyncio.to_thread(wait_idle)
            rows += rows_of(mode, await fn(cfg, count, n))
    return rows
