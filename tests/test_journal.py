"""jobrun.journal: reading a job's output back from the journal, against a real systemd.

Jobs here are started with `systemd-run` and the properties every jobrun job gets for its output
(LogNamespace=jobrun, LogExtraFields=JOBRUN_JOB=<id>, output to the journal), so these tests need
no other part of jobrun. `systemd-run --wait` returns once the unit has stopped; that is the
"job ended" signal the reader is given.
"""

from __future__ import annotations

import asyncio
import errno
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobrun.errors import InvalidArgument, OutputLost
from jobrun.journal import JobOutput, LineBreak, Record
from jobrun.journal import watch as watch_module
from jobrun.model import new_job_id

from .helpers import inotify_instances, wait_for_async

ROOT = Path(__file__).resolve().parent.parent
JOURNALD_CONF = ROOT / "units" / "journald@jobrun.conf"
NAMESPACE_SERVICE = "systemd-journald@jobrun.service"
LINE_MAX = 48 * 1024  # journald's default LineMax=


# --- fixtures and helpers --------------------------------------------------------------------


@dataclass
class Job:
    id: str
    started_at: datetime
    ended: asyncio.Event
    process: asyncio.subprocess.Process
    _waiter: asyncio.Task[int] | None = None

    @property
    def unit(self) -> str:
        return f"jobrun-{self.id}.service"

    def output(self) -> JobOutput:
        return JobOutput(self.id, started_at=self.started_at)


async def start_job(*command: str, props: tuple[str, ...] = ()) -> Job:
    """Start `command` as a job unit the way jobrun does for its output; returns at once."""
    job_id = new_job_id()
    started_at = datetime.now(UTC)
    args = ["systemd-run", "--wait", "--quiet", "--collect", f"--unit=jobrun-{job_id}"]
    for prop in (
        "LogNamespace=jobrun",
        f"LogExtraFields=JOBRUN_JOB={job_id}",
        "StandardOutput=journal",
        "StandardError=journal",
        *props,
    ):
        args += ["-p", prop]
    proc = await asyncio.create_subprocess_exec(*args, "--", *command)
    job = Job(job_id, started_at, asyncio.Event(), proc)

    job._waiter = asyncio.create_task(proc.wait())
    job._waiter.add_done_callback(lambda _: job.ended.set())
    return job


async def run(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, f"{args} failed: {err.decode()}"


def sh(script: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", script)


def py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


async def collect(
    records: AsyncIterator[Record], timeout: float = 60, limit: int | None = None
) -> list[Record]:
    """All records (or the first `limit`), failing after `timeout` seconds."""
    out: list[Record] = []
    async with asyncio.timeout(timeout):
        async for r in records:
            out.append(r)
            if limit is not None and len(out) >= limit:
                break
    return out


async def follow_all(job: Job, timeout: float = 60) -> list[Record]:
    return await collect(job.output().records(follow=True, ended=job.ended), timeout)


def data(records: list[Record]) -> bytes:
    return b"".join(r.data for r in records)


def numbers(first: int, last: int) -> bytes:
    return b"".join(b"%d\n" % i for i in range(first, last + 1))


# --- unit tier: arguments and records --------------------------------------------------------


def test_record_data_restores_what_journald_cut() -> None:
    t = datetime.now(UTC)
    assert Record(t, "c", b"a").data == b"a\n"
    assert Record(t, "c", b"a", LineBreak.NUL).data == b"a\0"
    assert Record(t, "c", b"a", LineBreak.LINE_MAX).data == b"a"
    assert Record(t, "c", b"a", LineBreak.EOF).data == b"a"


def test_bad_job_ids_are_refused() -> None:
    for bad in ("", "ABC", "a/b", "a b", "x.service"):
        with pytest.raises(InvalidArgument):
            JobOutput(bad)


async def test_bad_arguments_are_refused_before_the_journal_is_opened() -> None:
    out = JobOutput("abc123")
    cases = [
        {"after_cursor": "s=1;i=1;t=1", "tail": 3},
        {"tail": 3, "since": datetime.now(UTC)},
        {"tail": -1},
        {"since": datetime(2026, 1, 1)},  # naive
        {"ended": asyncio.Event()},  # without follow
    ]
    for kwargs in cases:
        with pytest.raises(InvalidArgument):
            await collect(out.records(**kwargs))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        JobOutput("abc", started_at=datetime(2026, 1, 1))


# --- integration tier ------------------------------------------------------------------------

integration = pytest.mark.integration


@integration
async def test_a_million_lines_come_back_complete_and_in_order() -> None:
    n = 1_000_000
    t0 = time.monotonic()
    job = await start_job("seq", str(n))
    got = await follow_all(job, timeout=240)
    t_follow = time.monotonic() - t0
    assert len(got) == n
    assert data(got) == numbers(1, n)

    t0 = time.monotonic()
    again = await collect(job.output().records(), timeout=120)
    t_read = time.monotonic() - t0
    assert [r.cursor for r in again] == [r.cursor for r in got]
    print(
        f"\n1M lines: followed to the end in {t_follow:.1f} s (job ended after its writes, "
        f"journald ingesting); read back in {t_read:.2f} s = {n / t_read:,.0f} lines/s"
    )


@integration
async def test_two_followers_each_get_every_line() -> None:
    n = 1_000_000
    job = await start_job("seq", str(n))
    a, b = await asyncio.gather(follow_all(job, timeout=240), follow_all(job, timeout=240))
    expected = numbers(1, n)
    assert len(a) == len(b) == n
    assert data(a) == expected
    assert data(b) == expected


@integration
async def test_rate_limit_is_off_in_the_namespace() -> None:
    # journald's default would keep ~10,000 lines per 30 s of a unit writing this fast.
    job = await start_job(
        *py("import sys; sys.stdout.write(''.join(f'line {i}\\n' for i in range(200000)))")
    )
    got = await follow_all(job, timeout=120)
    assert len(got) == 200_000
    assert got[-1].message == b"line 199999"


@integration
async def test_follow_gets_everything_of_a_job_that_is_done_before_journald_is() -> None:
    # The unit is dead ~0.1 s after it starts; journald needs far longer for 300,000 lines. A
    # non-root job (DynamicUser) shows that its stream is still recognised as the unit's.
    job = await start_job("seq", "300000", props=("DynamicUser=yes",))
    await job.ended.wait()
    got = await collect(job.output().records(follow=True, ended=job.ended), timeout=120)
    assert len(got) == 300_000
    assert got[-1].message == b"300000"


@integration
async def test_follow_gets_everything_written_while_journald_was_not_running() -> None:
    # journald@jobrun is socket-activated: a job's connection can wait in the socket's queue
    # while journald starts, and the job can be dead before journald has accepted it. Only the
    # reader's probe (queued behind the job's connection) can tell when it has been taken. Here
    # journald takes 0.5 s to start; the pin keeps its sockets listening meanwhile, as jobrund's
    # unit should (they are StopWhenUnneeded=yes).
    slow = Path(f"/run/systemd/system/{NAMESPACE_SERVICE}.d/50-slow-start-test.conf")
    slow.parent.mkdir(parents=True, exist_ok=True)
    slow.write_text("[Service]\nExecStartPre=/bin/sleep 0.5\n")
    pin = f"jobrun-test-pin-{new_job_id()}"
    sockets = "systemd-journald@jobrun.socket systemd-journald-varlink@jobrun.socket"
    try:
        await run("systemctl", "daemon-reload")
        await run("systemd-run", "--quiet", f"--unit={pin}", "-p", f"Wants={sockets}",
                  "-p", f"After={sockets}", "sleep", "infinity")  # fmt: skip
        await run("systemctl", "stop", NAMESPACE_SERVICE)
        job = await start_job("seq", "50000")
        await job.ended.wait()
        got = await collect(job.output().records(follow=True, ended=job.ended))
        assert data(got) == numbers(1, 50000)
    finally:
        slow.unlink()
        await run("systemctl", "daemon-reload")
        await run("systemctl", "stop", pin)


@integration
async def test_lines_over_line_max_are_split_and_rejoin_byte_exact() -> None:
    long_line = bytes(range(33, 127)) * 1090  # 102,460 bytes
    code = "import sys; sys.stdout.buffer.write(bytes(range(33, 127)) * 1090 + b'\\nafter\\n')"
    job = await start_job(*py(code))
    got = await follow_all(job)
    assert [len(r.message) for r in got] == [LINE_MAX, LINE_MAX, len(long_line) - 2 * LINE_MAX, 5]
    assert [r.line_break for r in got] == [
        LineBreak.LINE_MAX,
        LineBreak.LINE_MAX,
        LineBreak.NEWLINE,
        LineBreak.NEWLINE,
    ]
    assert data(got) == long_line + b"\nafter\n"


@integration
async def test_a_nul_byte_ends_a_record_and_comes_back() -> None:
    job = await start_job("printf", "a\\0b\\n")
    got = await follow_all(job)
    assert [(r.message, r.line_break) for r in got] == [
        (b"a", LineBreak.NUL),
        (b"b", LineBreak.NEWLINE),
    ]
    assert data(got) == b"a\0b\n"


@integration
async def test_invalid_utf8_comes_back_byte_exact() -> None:
    job = await start_job("printf", "\\377\\376 \\303( ok\\nh\\303\\251llo\\n")
    got = await follow_all(job)
    assert [r.message for r in got] == [b"\xff\xfe \xc3( ok", "héllo".encode()]
    assert all(type(r.message) is bytes for r in got)


@integration
async def test_a_last_line_without_newline_is_marked_eof() -> None:
    job = await start_job("printf", "one\\nlast")
    got = await follow_all(job)
    assert [(r.message, r.line_break) for r in got] == [
        (b"one", LineBreak.NEWLINE),
        (b"last", LineBreak.EOF),
    ]
    assert data(got) == b"one\nlast"


@integration
async def test_what_journald_changes_is_what_the_module_documents() -> None:
    # Empty lines are dropped; trailing whitespace is stripped unless the line is nothing else;
    # consecutive NULs leave empty pieces, which are dropped; a line of exactly LineMax bytes
    # loses its newline (the newline is left as an empty line).
    code = (
        "import sys; sys.stdout.buffer.write("
        "b'a\\n\\nb  \\n\\t\\n c\\r\\nd\\0\\0e\\n' + b'y' * 49152 + b'\\nend\\n')"
    )
    job = await start_job(*py(code))
    got = await follow_all(job)
    assert [r.message for r in got] == [
        b"a",
        b"b",
        b"\t",
        b" c",
        b"d",
        b"e",
        b"y" * LINE_MAX,
        b"end",
    ]
    assert data(got) == b"a\nb\n\t\n c\nd\0e\n" + b"y" * LINE_MAX + b"end\n"


@integration
async def test_output_of_other_jobs_and_other_transports_is_not_included() -> None:
    other = await start_job("echo", "other job")
    job = await start_job(*sh("echo out; logger -t mine 'via syslog'; echo out2 >&2"))
    got = await follow_all(job)
    assert data(got) == b"out\nout2\n"
    assert data(await follow_all(other)) == b"other job\n"


@integration
async def test_resume_after_a_cursor_has_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = await start_job(
        *sh(f"seq 1 500; while [ ! -e {gate} ]; do sleep 0.01; done; seq 501 1000")
    )
    # A follower that stops half way while the job runs ...
    first = await collect(job.output().records(follow=True), limit=500)
    assert data(first) == numbers(1, 500)
    gate.touch()
    # ... and one that picks up after its last record and follows to the end.
    rest = await collect(
        job.output().records(after_cursor=first[-1].cursor, follow=True, ended=job.ended)
    )
    assert data(rest) == numbers(501, 1000)
    # Resuming once the job is done, without following.
    everything = await collect(job.output().records())
    tail_part = await collect(job.output().records(after_cursor=everything[299].cursor))
    assert data(tail_part) == numbers(301, 1000)
    assert await collect(job.output().records(after_cursor=everything[-1].cursor)) == []


@integration
async def test_tail_and_since(tmp_path: Path) -> None:
    job = await start_job("seq", "100")
    everything = await follow_all(job)
    assert len(everything) == 100
    out = job.output()
    assert data(await collect(out.records(tail=5))) == numbers(96, 100)
    assert await collect(out.records(tail=0)) == []
    assert data(await collect(out.records(tail=1000))) == numbers(1, 100)
    since = everything[49].timestamp
    got = await collect(out.records(since=since))
    assert got == [r for r in everything if r.timestamp >= since]
    assert got[0].timestamp >= since and len(got) >= 51
    assert await collect(out.records(since=datetime.now(UTC) + timedelta(hours=1))) == []

    # tail while following: the last two lines so far, then what follows.
    gate = tmp_path / "gate"
    job = await start_job(*sh(f"seq 1 5; while [ ! -e {gate} ]; do sleep 0.01; done; seq 6 8"))

    async def five() -> bool:
        return len(await collect(job.output().records())) == 5

    await wait_for_async(five, what="the first five lines", interval=0.01)
    # The follower's first two records before the job goes on: touched at once, the gate could
    # let lines 6-8 in before the follower had looked for its tail.
    records = job.output().records(tail=2, follow=True, ended=job.ended)
    first = [await anext(records), await anext(records)]
    gate.touch()
    assert data(first + [r async for r in records]) == numbers(4, 8)


@integration
async def test_follow_ends_when_the_job_ends() -> None:
    job = await start_job(*sh("echo a; sleep 0.3; echo b"))
    follower = asyncio.create_task(collect(job.output().records(follow=True, ended=job.ended)))
    await job.ended.wait()
    t_end = time.monotonic()
    got = await follower
    assert data(got) == b"a\nb\n"
    assert time.monotonic() - t_end < 5


@integration
async def test_follow_ends_when_the_job_is_stopped() -> None:
    job = await start_job(*sh("echo started; exec sleep 1000"))
    seen: list[Record] = []

    async def follow() -> None:
        async for r in job.output().records(follow=True, ended=job.ended):
            seen.append(r)

    async def started() -> bool:
        return bool(seen)

    follower = asyncio.create_task(follow())
    await wait_for_async(started, what="the job's first line", interval=0.01)
    stop = await asyncio.create_subprocess_exec("systemctl", "stop", job.unit)
    assert await stop.wait() == 0
    async with asyncio.timeout(10):
        await follower
    assert data(seen) == b"started\n"


@integration
async def test_follow_without_end_keeps_waiting_for_more() -> None:
    job = await start_job("echo", "x")
    records = job.output().records(follow=True)
    got = await collect(records, limit=1)
    assert data(got) == b"x\n"
    await job.ended.wait()
    nxt = asyncio.ensure_future(anext(records))
    done, _ = await asyncio.wait([nxt], timeout=0.5)
    assert not done, "a follower without an end signal stopped by itself"
    nxt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await nxt
    await records.aclose()


@integration
async def test_many_short_jobs_each_yield_exactly_their_line() -> None:
    runs, parallel = 200, 8
    sem = asyncio.Semaphore(parallel)
    results: list[bytes] = []

    async def one() -> None:
        async with sem:
            job = await start_job("echo", "x")
            results.append(data(await follow_all(job, timeout=60)))

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(runs)))
    bad = [r for r in results if r != b"x\n"]
    assert len(results) == runs and not bad, bad[:5]
    print(f"\n{runs} x echo x, {parallel} at a time: all exact, {time.monotonic() - t0:.1f} s")


@integration
async def test_follow_latency_while_a_job_writes() -> None:
    code = (
        "import time\n"
        "for i in range(300):\n"
        "    print(time.time(), flush=True)\n"
        "    time.sleep(0.01)\n"
    )
    job = await start_job(*py(code))
    delays: list[float] = []
    async for r in job.output().records(follow=True, ended=job.ended):
        delays.append(time.time() - float(r.message))
    assert len(delays) == 300
    delays.sort()
    p50, p99 = statistics.median(delays), delays[int(len(delays) * 0.99) - 1]
    print(f"\nfollow latency, 300 lines at 100/s: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    # inotify alone would give ~125 ms p50 (journald announces at most every 250 ms).
    assert p50 < 0.05


@integration
async def test_without_root_follow_still_ends() -> None:
    # journald's stream state files are root's: a reader in group systemd-journal reads the
    # journal but ends after a quiet spell instead of exactly.
    import systemd

    job = await start_job("seq", "1000")
    await follow_all(job)  # all of it is in the journal now
    code = (
        "import asyncio\n"
        "from jobrun.journal import JobOutput\n"
        "async def main():\n"
        "    ended = asyncio.Event(); ended.set()\n"
        f"    out = JobOutput({job.id!r})\n"
        "    recs = [r async for r in out.records(follow=True, ended=ended)]\n"
        "    print(len(recs), recs[-1].message.decode())\n"
        "asyncio.run(main())\n"
    )
    site = Path(systemd.__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        "setpriv", "--reuid=65534", "--regid=systemd-journal", "--clear-groups",
        "/usr/bin/python3", "-c", code,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PYTHONPATH": f"{ROOT}:{site}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["1000", "1000"]


@integration
async def test_output_deleted_by_vacuum_is_reported(tmp_path: Path) -> None:
    old = await start_job("seq", "10")
    old_records = await follow_all(old)
    assert data(old_records) == numbers(1, 10)

    await journalctl("--rotate")
    new = await start_job("echo", "after the rotation")
    assert data(await follow_all(new)) == b"after the rotation\n"
    await journalctl("--vacuum-size=1")  # every archived file goes

    with pytest.raises(OutputLost):
        await collect(old.output().records())
    with pytest.raises(OutputLost):
        await collect(old.output().records(follow=True, ended=old.ended))
    with pytest.raises(OutputLost):
        await collect(old.output().records(after_cursor=old_records[4].cursor))
    with pytest.raises(OutputLost):
        await collect(old.output().records(tail=3))
    # Without the start time there is nothing to compare with: the reader cannot tell.
    assert await collect(JobOutput(old.id).records()) == []
    # What is still there reads as before.
    assert data(await collect(new.output().records())) == b"after the rotation\n"
    assert data(await collect(new.output().records(tail=1))) == b"after the rotation\n"


async def journalctl(*args: str) -> None:
    await run("journalctl", "--namespace=jobrun", "--quiet", *args)


async def job_lines(job: Job) -> list[bytes]:
    return [r.message async for r in job.output().records()]


@integration
async def test_a_follower_that_kept_up_is_not_bothered_by_vacuum(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = await start_job(*sh(f"echo one; while [ ! -e {gate} ]; do sleep 0.01; done; echo two"))
    records = job.output().records(follow=True, ended=job.ended)
    assert data(await collect(records, limit=1)) == b"one\n"
    await journalctl("--rotate")
    other = await start_job("echo", "other")
    await follow_all(other)
    await journalctl("--vacuum-size=1")
    gate.touch()
    assert data(await collect(records)) == b"two\n"


@integration
async def test_a_follower_notices_when_unread_output_was_deleted(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = await start_job(*sh(f"echo one; while [ ! -e {gate} ]; do sleep 0.01; done; echo two"))
    records = job.output().records(follow=True, ended=job.ended)
    assert data(await collect(records, limit=1)) == b"one\n"
    # The consumer pauses; meanwhile "two" goes into a new file, which is deleted unread.
    await journalctl("--rotate")
    gate.touch()

    async def two_written() -> bool:
        return b"two" in await job_lines(job)

    await wait_for_async(two_written, what="the second line", interval=0.01)
    await journalctl("--rotate")
    other = await start_job("echo", "other")
    await follow_all(other)
    await journalctl("--vacuum-size=1")
    with pytest.raises(OutputLost):
        await collect(records)


@integration
async def test_followers_of_many_jobs_share_one_inotify_instance(tmp_path: Path) -> None:
    # root has 128 inotify instances in all (fs.inotify.max_user_instances, shared with every
    # root process of the host): a watch per followed job ran out at about 60 jobs.
    gate = tmp_path / "gate"
    before = inotify_instances()
    script = f"echo start; while [ ! -e {gate} ]; do sleep 0.05; done; seq 1 50"
    jobs = [await start_job(*sh(script)) for _ in range(100)]
    attached = 0
    everyone = asyncio.Event()

    async def follow(job: Job) -> bytes:
        nonlocal attached
        out = bytearray()
        async for record in job.output().records(follow=True, ended=job.ended):
            if not out:
                attached += 1
                if attached == len(jobs):
                    everyone.set()
            out += record.data
        return bytes(out)

    tasks = [asyncio.create_task(follow(job)) for job in jobs]
    try:
        async with asyncio.timeout(120):
            await everyone.wait()
        assert inotify_instances() - before <= 1  # 100 followers, 100 jobs: one watch
    finally:
        gate.touch()
    async with asyncio.timeout(180):
        results = await asyncio.gather(*tasks)
    assert results == [b"start\n" + numbers(1, 50)] * len(jobs)
    assert inotify_instances() == before  # the watch went with the last follower


@integration
async def test_without_inotify_following_polls_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_inotify(reader: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(watch_module, "_watch_fd", no_inotify)
    gate = tmp_path / "gate"
    job = await start_job(
        *sh(f"seq 1 100; while [ ! -e {gate} ]; do sleep 0.01; done; seq 101 200")
    )
    records = job.output().records(follow=True, ended=job.ended)
    first = await collect(records, limit=100)
    assert data(first) == numbers(1, 100)
    assert "following by polling every 0.1 s" in caplog.text
    # A new journal file: found by comparing the files, as no inotify tells.
    await journalctl("--rotate")
    gate.touch()
    rest = await collect(records, timeout=60)
    assert data(first + rest) == numbers(1, 200)
