"""`jobrun --remote … run` as a foreground command: Ctrl-C reaches the job (the Kill RPC), with
the authorization of Stop."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrun.errors import InvalidArgument, JobNotFound

from .helpers import wait_for, wait_for_async
from .remote_helpers import Remote, call, jobs_running_command, remote_jobrund

ROOT = Path(__file__).resolve().parent.parent


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
    jid = job.id
    with pytest.raises(JobNotFound):
        await call(remote, "bob", "kill", jid, int(signal.SIGINT))  # another's: as if none
    for sig in (0, 99):
        with pytest.raises(InvalidArgument):
            await call(remote, "alice", "kill", jid, sig)
    assert (await call(remote, "alice", "status", jid)).state == "running"
    killed, was_running = await call(remote, "carol", "kill", jid, int(signal.SIGINT))  # admin
    assert was_running and killed.id == jid

    async def ended() -> bool:
        s = await call(remote, "alice", "status", jid)
        return bool(s.state == "failed" and s.outcome.signal == "SIGINT")

    await wait_for_async(ended, what="the job to end by SIGINT", timeout=30, interval=0.05)
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


# -- the Run stream from other clients, and malformed ------------------------------------------

_GRPCIO = """
import grpc, signal, sys
from jobrun.v1 import jobrun_pb2 as pb
from tests.helpers import wait_for
d = {pki!r}
creds = grpc.ssl_channel_credentials(open(d + "/ca.crt", "rb").read(),
    open(d + "/alice.key", "rb").read(), open(d + "/alice.crt", "rb").read())
ch = grpc.secure_channel("localhost:{port}", creds)
def method(kind, name, req, rep):
    return getattr(ch, kind)("/jobrun.v1.Jobs/" + name,
        request_serializer=req.SerializeToString if req else None,
        response_deserializer=rep.FromString if rep else None)
run = method("stream_stream", "Run", pb.RunRequest, pb.RunResponse)
raw_run = method("stream_stream", "Run", None, None)
kill = method("unary_unary", "Kill", pb.KillRequest, pb.KillResponse)
status = method("unary_unary", "Status", pb.StatusRequest, pb.StatusResponse)
logs = method("unary_stream", "Logs", pb.LogsRequest, pb.LogsResponse)
def output(job_id):
    return b"".join(r.message + b"\\n" for m in logs(pb.LogsRequest(id=job_id, follow=True),
                    timeout=60) for r in m.records)
def start(*command):
    return pb.StartRequest(command=list(command))
"""


def _grpcio(remote: Remote, body: str) -> None:
    code = _GRPCIO.format(pki=str(remote.pki), port=remote.port) + body + '\nprint("ok")\n'
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)  # fmt: skip
    assert proc.stdout.strip().endswith("ok"), proc.stderr


@pytest.mark.integration
@pytest.mark.daemon
def test_the_official_grpcio_client_runs_with_stdin_and_kills(remote: Remote) -> None:
    """grpcio (C-core) drives the bidirectional Run and Kill as jobrun's own client does."""
    _grpcio(
        remote,
        """
chunks = [b"a\\n", b"", "é ✓\\n".encode(), b"x" * 65536, b"\\n"]
replies = list(run(iter([pb.RunRequest(start=start("wc", "-lc"))]
                        + [pb.RunRequest(stdin=c) for c in chunks]), timeout=60))
assert len(replies) == 1 and replies[0].job.id, replies
job = replies[0].job.id
want = "3 %d" % sum(map(len, chunks))
assert output(job).split() == want.encode().split(), output(job)
# Kill: the job ends by the signal, and it is reported as such
job = list(run(iter([pb.RunRequest(start=start("sleep", "60"))]), timeout=60))[0].job.id
assert kill(pb.KillRequest(id=job, signal=int(signal.SIGINT)), timeout=60).was_running
wait_for(lambda: status(pb.StatusRequest(id=job), timeout=60).job.state == pb.JOB_STATE_FAILED,
         what="the job to end by SIGINT", timeout=30, interval=0.05)
""",
    )


# What a client can get wrong in a Run stream: each is InvalidArgument, starts at most the job
# the first message asked for, and jobrund goes on serving.
_BAD_RUN = {
    "no start first": ("[pb.RunRequest(stdin=b'x').SerializeToString()]", 0),
    "empty stream": ("[]", 0),
    "garbage first": ("[b'\\xff\\xff\\xff']", 0),
    "a second start": ("[pb.RunRequest(start=START).SerializeToString(),"
                       " pb.RunRequest(start=START).SerializeToString()]", 1),
    "garbage later": ("[pb.RunRequest(start=START).SerializeToString(), b'\\xff\\xff\\xff']", 1),
    "too much stdin": ("[pb.RunRequest(start=START).SerializeToString(),"
                       " pb.RunRequest(stdin=b'y' * (64 * 1024 + 1)).SerializeToString()]", 1),
}  # fmt: skip


@pytest.mark.integration
@pytest.mark.daemon
@pytest.mark.parametrize("case", list(_BAD_RUN))
def test_a_malformed_run_stream_is_refused_clearly(remote: Remote, case: str) -> None:
    messages, started = _BAD_RUN[case]
    marker = f"badrun{abs(hash(case)) % 10**8}"
    _grpcio(
        remote,
        f"""
START = start("sh", "-c", "cat >/dev/null; echo {marker}", "{marker}")
try:
    list(raw_run(iter({messages}), timeout=60))
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
    assert e.details(), "no message"
    meta = dict(e.trailing_metadata())
    assert meta["jobrun-error"] == "org.jobrun.Error.InvalidArgument", meta
else:
    sys.exit("no error")
""",
    )
    jobs = jobs_running_command(marker)
    assert len(jobs) == started, jobs
    for job in jobs:  # what was started gets its end of file, and ends

        def succeeded(j: str = job) -> bool:
            return (
                remote.cli("alice", "status", "--json", j).stdout.count('"state": "succeeded"') == 1
            )

        wait_for(succeeded, timeout=60, what=f"job {job} to end")
    assert remote.cli("alice", "list").returncode == 0  # still serving
