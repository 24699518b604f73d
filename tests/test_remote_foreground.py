"""`jobrun --remote … run` as a foreground command: Ctrl-C reaches the job (the Kill RPC), with
the authorization of Stop."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrun.errors import InvalidArgument, JobNotFound

from .helpers import wait_for
from .remote_helpers import Remote, call, remote_jobrund


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    with remote_jobrund() as r:
        yield r


def _started(stderr: str) -> str:
    m = re.search(r"jobrun: job (\w+) started", stderr)
    assert m, stderr
    return m.group(1)


@pytest.mark.integration
@pytest.mark.daemon
def test_ctrl_c_over_remote_sends_sigint_and_run_exits_130(remote: Remote, tmp_path: Path) -> None:
    cmd, env = remote.command("alice", "run", "--", "sh", "-c", "echo ready; exec sleep 30")
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: "ready" in out.read_text(), timeout=60, what="the job's first line")
        job = _started(err.read_text())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err.read_text()
    assert "sending SIGINT" in err.read_text()
    done = remote.cli("alice", "status", "--json", job)
    assert '"signal": "SIGINT"' in done.stdout and '"state": "failed"' in done.stdout, done


@pytest.mark.integration
@pytest.mark.daemon
async def test_remote_kill_is_authorized_as_stop_is(remote: Remote) -> None:
    job = await call(remote, "alice", "start", ["sleep", "30"], None, {})
    jid = job["id"]
    with pytest.raises(JobNotFound):
        await call(remote, "bob", "kill", jid, int(signal.SIGINT))  # another's: as if none
    for sig in (0, 99):
        with pytest.raises(InvalidArgument):
            await call(remote, "alice", "kill", jid, sig)
    assert (await call(remote, "alice", "status", jid))["state"] == "running"
    killed, was_running = await call(remote, "carol", "kill", jid, int(signal.SIGINT))  # admin
    assert was_running and killed["id"] == jid

    async def ended() -> bool:
        s = await call(remote, "alice", "status", jid)
        return bool(s["state"] == "failed" and s["signal"] == "SIGINT")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await ended():
        assert loop.time() < deadline, "the job did not end by SIGINT"
        await asyncio.sleep(0.05)
    # a finished job: nothing to signal
    _, was_running = await call(remote, "alice", "kill", jid, int(signal.SIGINT))
    assert not was_running


# -- stdin ---------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.daemon
def test_piped_stdin_reaches_a_remote_job(remote: Remote) -> None:
    proc = remote.cli("alice", "run", "--", "wc", "-l", input="a\nb\n")
    assert (proc.returncode, proc.stdout.strip()) == (0, "2"), proc.stderr
    # more than the pipe and the flow-control window hold at once, every byte in order
    data = "".join(f"{i}\n" for i in range(200_000))
    proc = remote.cli("bob", "run", "--", "md5sum", input=data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == hashlib.md5(data.encode()).hexdigest()
    # a job that reads nothing ends, and so does jobrun, however much is piped
    cmd, env = remote.command("alice", "run", "--", "true")
    yes = subprocess.Popen(["yes"], stdout=subprocess.PIPE)
    try:
        done = subprocess.run(cmd, stdin=yes.stdout, capture_output=True, env=env, timeout=60)
    finally:
        yes.kill()
        yes.wait()
        assert yes.stdout is not None
        yes.stdout.close()
    assert done.returncode == 0, done.stderr


@pytest.mark.integration
@pytest.mark.daemon
def test_non_ascii_everywhere_over_the_remote_api(remote: Remote) -> None:
    # Issue 17, item 3, over gRPC: argv, -E, --name go in and come back exactly.
    from .test_text import NAME, SCRIPT, TEXT, VALUE, check_shown_back, started_id

    command = ["sh", "-c", SCRIPT, "sh", TEXT]
    proc = remote.cli("alice", "run", "--name", NAME, "-E", f"K={VALUE}", "--", *command)
    expected = f"{TEXT}|{VALUE}|/\n"  # no default working directory over the remote API
    assert (proc.returncode, proc.stdout) == (0, expected), proc.stderr
    assert "Traceback" not in proc.stderr
    check_shown_back(started_id(proc.stderr), command, expected, lambda *a: remote.cli("alice", *a))
