"""`jobrun logs` and `jobrun run` over the journal reader, end to end through the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobrun.manager import Manager
from jobrun.properties import build_spec
from jobrun.store import Store

from .helpers import jobrun, start, status, wait_finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("state_dir")]


def numbers(lo: int, hi: int) -> bytes:
    return "".join(f"{i}\n" for i in range(lo, hi + 1)).encode()


async def cli(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobrun", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_a_million_lines_with_two_followers_and_a_reader_after() -> None:
    job = start("--", "seq", "1000000")
    # Two followers attach while the job writes (it is still being ingested for seconds).
    (rc1, a, _), (rc2, b, _) = await asyncio.gather(cli("logs", "-f", job), cli("logs", "-f", job))
    want = hashlib.sha256(numbers(1, 1_000_000)).hexdigest()
    assert (rc1, rc2) == (0, 0)
    assert hashlib.sha256(a).hexdigest() == want, len(a.splitlines())
    assert hashlib.sha256(b).hexdigest() == want, len(b.splitlines())
    rc, after, _ = await cli("logs", job)
    assert rc == 0 and hashlib.sha256(after).hexdigest() == want


async def test_history_meets_live_output_without_gap_or_duplicate() -> None:
    job = start("--", "sh", "-c", "seq 1 3000; sleep 1; seq 3001 6000; sleep 0.5; seq 6001 9000")
    await asyncio.sleep(0)  # no wait: the follower attaches while history is being written
    rc, out, err = await cli("logs", "--follow", job)
    assert rc == 0, err
    assert out == numbers(1, 9000)


def test_follow_ends_when_the_job_is_stopped() -> None:
    job = start("--", "sh", "-c", "echo started; exec sleep 600")
    follower = subprocess.Popen(
        [sys.executable, "-m", "jobrun", "logs", "-f", job], stdout=subprocess.PIPE
    )
    assert follower.stdout is not None
    assert follower.stdout.readline() == b"started\n"
    jobrun("stop", job, check=True)
    out = follower.stdout.read()  # not communicate(): it would skip what readline() buffered
    follower.stdout.close()
    assert follower.wait(timeout=30) == 0 and out == b""


def test_logs_of_a_finished_job_prints_everything_and_exits() -> None:
    job = start("--", "sh", "-c", "printf 'a\\n<3>not a priority\\nno newline'")
    wait_finished(job)
    proc = subprocess.run([sys.executable, "-m", "jobrun", "logs", job], capture_output=True)
    assert proc.returncode == 0
    assert proc.stdout == b"a\n<3>not a priority\nno newline"
    proc = subprocess.run([sys.executable, "-m", "jobrun", "logs", "-f", job], capture_output=True)
    assert proc.stdout == b"a\n<3>not a priority\nno newline"


def test_bytes_come_back_exact_long_lines_nul_invalid_utf8() -> None:
    script = (
        "import sys; w = sys.stdout.buffer.write; "
        "w(b'x' * 100_000 + b'\\n'); w(b'a\\0b\\n'); w(b'\\xff\\xfe bad utf8\\n'); w(b'tail')"
    )
    job = start("--", "python3", "-c", script)
    wait_finished(job)
    out = subprocess.run([sys.executable, "-m", "jobrun", "logs", job], capture_output=True).stdout
    assert out == b"x" * 100_000 + b"\n" + b"a\0b\n" + b"\xff\xfe bad utf8\n" + b"tail"


def test_tail_since_and_json() -> None:
    job = start("--", "sh", "-c", "seq 10; printf '\\377\\n'")
    wait_finished(job)

    def logs(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "jobrun", "logs", *args, job],
                              capture_output=True)  # fmt: skip

    assert logs("--tail", "3").stdout == b"9\n10\n\xff\n"
    assert logs("--since", "1h ago").stdout == numbers(1, 10) + b"\xff\n"
    assert logs("--since", "2099-01-01T00:00:00").stdout == b""
    records = [json.loads(line) for line in logs("--json").stdout.splitlines()]
    assert [r["message"] for r in records[:10]] == [str(i) for i in range(1, 11)]
    assert records[-1]["message"] is None and records[-1]["message_base64"] == "/w=="
    assert all(r["cursor"] and r["timestamp"] for r in records)
    bad = logs("--tail", "1", "--since", "1h ago")
    assert bad.returncode == 2 and b"exclude" in bad.stderr
    assert logs("--since", "yesterday-ish").returncode == 2


def test_run_streams_the_output_and_exits_with_the_status() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jobrun", "run", "--", "sh", "-c", "seq 3; echo err >&2; exit 6"],
        capture_output=True,
    )
    assert proc.returncode == 6
    assert proc.stdout == b"1\n2\n3\nerr\n"  # stdout and stderr: one stream, in order


def test_two_runs_with_the_same_name_never_mix(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobrun",
                "run",
                "--name",
                "same",
                "--",
                "sh",
                "-c",
                f"for i in $(seq 200); do echo {tag}$i; done",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("A", "B")
    ]
    results = [p.communicate(timeout=60) for p in procs]
    for p, tag, (out, err) in zip(procs, ("A", "B"), results, strict=True):
        # On failure, say how the run ended: its exit status and what it wrote to stderr.
        how = f"run {tag}: exit {p.returncode}, stderr {err.decode(errors='replace')!r}"
        assert out.decode().split() == [f"{tag}{i}" for i in range(1, 201)], how
        assert p.returncode == 0, how


async def test_two_hundred_instant_exits_each_give_their_line(state_dir: Path) -> None:
    async with await Manager.open(Store(state_dir)) as m:
        # A few at a time: each follower holds inotify instances, of which root has 128 in all.
        sem = asyncio.Semaphore(4)

        async def one() -> bytes:
            async with sem:
                job = await m.start(build_spec(["echo", "x"]))
                return b"".join([r.data async for r in m.logs(job.id, follow=True)])

        results = await asyncio.gather(*(one() for _ in range(200)))
    assert results == [b"x\n"] * 200


def test_lost_output_is_reported_not_skipped() -> None:
    old = start("--", "seq", "10")
    wait_for(lambda: jobrun("logs", old).stdout == numbers(1, 10).decode(), what="old output")
    subprocess.run(["journalctl", "--namespace=jobrun", "--quiet", "--rotate"], check=True)
    new = start("--", "echo", "after")
    wait_finished(new)
    subprocess.run(["journalctl", "--namespace=jobrun", "--quiet", "--vacuum-size=1"], check=True)
    proc = jobrun("logs", old)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "is no longer in the journal" in proc.stderr, proc.stderr
    assert status(old)["state"] == "succeeded"


def test_logs_into_a_closed_pipe_is_quiet() -> None:
    job = start("--", "sh", "-c", "seq 100000; sleep 1; seq 10")
    proc = subprocess.run(
        f"{sys.executable} -m jobrun logs --follow {job} | head -n 1",
        shell=True, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.stdout == "1\n"
    assert "BrokenPipe" not in proc.stderr and "Exception" not in proc.stderr, proc.stderr


def test_logs_of_a_job_that_just_finished_wait_for_journald_to_write_it_all() -> None:
    """journald ingests a chatty job's output for a while after the job has exited: a read that
    stops at the journal's current end would print part of it, with exit status 0. Regression:
    200,000 lines, read at once after the job finished, gave 174,710."""
    for _ in range(2):
        job = start("--", "seq", "200000")
        wait_finished(job, timeout=120)
        proc = subprocess.run([sys.executable, "-m", "jobrun", "logs", job], capture_output=True)
        assert proc.returncode == 0
        lines = proc.stdout.count(b"\n")
        assert proc.stdout == numbers(1, 200000), f"{lines} lines"


async def test_a_settled_jobs_output_is_read_exactly_through_one_handle(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that ended a while ago, whose streams journald has closed: `logs` reads it once,
    without watching the journal's files (output.py), and still gets all of it, from any start;
    one that has just ended is read as a follower reads (the watch is taken)."""
    from datetime import UTC, datetime

    from jobrun.journal.follow import SETTLE
    from jobrun.journal.watch import Watch

    watched: list[str] = []
    acquire = Watch.acquire

    def counting(namespace: str, wake: asyncio.Event) -> Watch:
        watched.append(namespace)
        return acquire(namespace, wake)

    monkeypatch.setattr(Watch, "acquire", counting)
    async with await Manager.open(Store(state_dir)) as m:
        job = await m.start(build_spec(["seq", "50000"]))
        done = await m.wait(job.id)
        assert done.outcome.finished_at is not None
        fresh = b"".join([r.data async for r in m.logs(job.id)])
        assert fresh == numbers(1, 50000) and watched, "just ended: read as a follower"
        ago = (datetime.now(UTC) - done.outcome.finished_at).total_seconds()
        await asyncio.sleep(max(0.0, SETTLE * 8 - ago) + 0.05)  # until it counts as settled
        watched.clear()
        assert b"".join([r.data async for r in m.logs(job.id)]) == numbers(1, 50000)
        tail = [r async for r in m.logs(job.id, tail=3)]
        assert b"".join(r.data for r in tail) == numbers(49998, 50000)
        after = b"".join([r.data async for r in m.logs(job.id, after_cursor=tail[0].cursor)])
        assert after == numbers(49999, 50000)
        assert watched == [], "a settled job's output needs no watch"
