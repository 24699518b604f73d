"""The remote API: gRPC with mutual TLS 1.3, served by a real jobrund in the private systemd.

A test CA issues the server's certificate and the clients': alice and bob (plain users; alice's
jobs run as the local user alice, bob's with a DynamicUser per job), carol (admin), and the
certificates jobrund must refuse — another CA's, expired, not yet valid, without clientAuth. Each
refusal is checked to start nothing. The official grpcio client (C-core) talks to it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.encoding.base import CodecBase

from jobrun.client.remote import close_channel
from jobrun.errors import (
    InvalidArgument,
    JobNotFound,
    JobrunError,
    RemoteUnavailable,
    Unauthenticated,
)

from .helpers import as_user_cmd, systemctl_show, wait_for, wait_for_async
from .remote_helpers import (
    Remote,
    backend,
    call,
    client_ctx,
    free_port,
    jobs_running_command,
    output,
    remote_jobrund,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    with remote_jobrund() as r:
        yield r


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.daemon
def test_cli_over_remote_runs_follows_and_reports_like_the_host(remote: Remote) -> None:
    script = "for i in $(seq 1 3000); do echo line $i; done; echo err >&2; exit 7"
    proc = remote.cli("alice", "run", "--name", "e2e", "--memory-max", "64M", "--", "sh", "-c",
                      script)  # fmt: skip
    want = "".join(f"line {i}\n" for i in range(1, 3001)) + "err\n"
    assert proc.stdout == want
    assert proc.returncode == 7, proc.stderr
    job_id = proc.stderr.split("job ", 1)[1].split()[0]
    remote_json = json.loads(remote.cli("alice", "status", "--json", job_id).stdout)
    env = {**os.environ, "JOBRUN_MODE": "daemon"}
    local = subprocess.run([sys.executable, "-m", "jobrun", "status", "--json", job_id],
                           capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert remote_json == json.loads(local.stdout)  # the same job, the same JSON, field by field
    assert (
        remote_json["owner"] == "remote:alice" and remote_json["limits"]["memory_max"] == 64 << 20
    )
    assert remote_json["name"] == "e2e" and remote_json["exit_code"] == 7
    # the table output is the same as on the host, too
    table = remote.cli("alice", "status", job_id).stdout
    assert table == subprocess.run([sys.executable, "-m", "jobrun", "status", job_id],
                                   capture_output=True, text=True, env=env).stdout  # fmt: skip
    listed = json.loads(remote.cli("alice", "list", "--json").stdout)
    assert job_id in [j["id"] for j in listed]
    logs = remote.cli("alice", "logs", job_id)
    assert logs.stdout == want and logs.returncode == 0


@pytest.mark.integration
@pytest.mark.daemon
def test_remote_jobs_run_as_the_configured_user_or_a_dynamic_one_never_root(
    remote: Remote,
) -> None:
    alice = remote.cli("alice", "run", "--", "id", "-un")
    assert alice.returncode == 0 and alice.stdout == "alice\n", alice.stderr
    bob = remote.cli("bob", "run", "--", "id", "-u")
    assert bob.returncode == 0, bob.stderr
    assert int(bob.stdout) not in (0, 65534) and int(bob.stdout) >= 61184  # DynamicUser's range
    carol = remote.cli("carol", "run", "--profile", "relaxed", "--", "id", "-u")  # admin, relaxed
    assert carol.returncode == 0 and int(carol.stdout) != 0, carol.stderr


@pytest.mark.integration
@pytest.mark.daemon
def test_stop_over_remote(remote: Remote) -> None:
    job_id = remote.cli("alice", "start", "--", "sleep", "600").stdout.strip()
    stop = remote.cli("alice", "stop", job_id)
    assert stop.returncode == 0 and "stopped" in stop.stderr, stop.stderr
    assert json.loads(remote.cli("alice", "status", "--json", job_id).stdout)["state"] == "stopped"


@pytest.mark.integration
@pytest.mark.daemon
async def test_pause_resume_and_set_over_remote(remote: Remote) -> None:
    from jobrun.errors import WrongState

    job = await call(remote, "alice", "start", ["sleep", "600"], None, {})
    assert (await call(remote, "alice", "pause", job.id)).state == "paused"
    with pytest.raises(JobNotFound):
        await call(remote, "bob", "pause", job.id)
    with pytest.raises(JobNotFound):
        await call(remote, "bob", "set_limits", job.id, {"memory_max": "1G"})
    with pytest.raises(WrongState, match="paused already"):
        await call(remote, "alice", "pause", job.id)
    assert (await call(remote, "alice", "resume", job.id)).state == "running"
    changed = await call(remote, "alice", "set_limits", job.id, {"memory_max": "300M"})
    assert changed.live_limits == {"memory_max": 300 << 20}
    assert systemctl_show(changed.unit, "MemoryMax")["MemoryMax"] == str(300 << 20)
    with pytest.raises(InvalidArgument, match="cannot be changed while a job runs"):
        await call(remote, "alice", "set_limits", job.id, {"network": True})
    stopped, _ = await call(remote, "alice", "stop", job.id, None)
    assert stopped.state == "stopped"


@pytest.mark.integration
@pytest.mark.daemon
def test_groups_and_the_queue_over_remote(remote: Remote) -> None:
    out = remote.cli("alice", "group", "set", "rq", "--parallel", "1", "--tasks-max", "50",
                     "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (group,) = json.loads(out.stdout)
    assert group["owner"] == "remote:alice" and group["parallel"] == 1, group
    assert group["limits"] == {"tasks_max": 50}, group
    first = remote.cli("alice", "start", "--group", "rq", "--", "sleep", "2").stdout.strip()
    second = remote.cli("alice", "start", "--group", "rq", "--after", first, "--", "true")
    assert second.returncode == 0, second.stderr
    job = json.loads(remote.cli("alice", "status", "--json", second.stdout.strip()).stdout)
    assert job["state"] == "queued" and job["limits"]["after"] == [first], job
    listed = json.loads(remote.cli("alice", "group", "list", "--json").stdout)
    assert [g["name"] for g in listed] == ["rq"], listed
    # The remote identity's groups are not the local user's.
    local = subprocess.run(
        as_user_cmd("alice", sys.executable, "-m", "jobrun", "group", "list", "--json"),
        capture_output=True, text=True, env={**os.environ, "JOBRUN_MODE": "daemon"}, cwd="/",
    )  # fmt: skip
    assert local.returncode == 0 and "remote:alice" not in local.stdout, local.stderr
    # carol, a local admin, changes the remote identity's group by its name (--owner).
    carol = subprocess.run(
        as_user_cmd("carol", sys.executable, "-m", "jobrun", "group", "set", "rq", "--owner",
                    "remote:alice", "--parallel", "2", "--json"),
        capture_output=True, text=True, env={**os.environ, "JOBRUN_MODE": "daemon"}, cwd="/",
    )  # fmt: skip
    assert carol.returncode == 0, carol.stderr
    (group,) = json.loads(carol.stdout)
    assert (group["owner"], group["parallel"], group["limits"]) == (
        "remote:alice", 2, {"tasks_max": 50}
    )  # fmt: skip
    (seen,) = json.loads(remote.cli("alice", "group", "show", "rq", "--json").stdout)
    assert seen["parallel"] == 2, seen
    wait_for(
        lambda: (
            json.loads(remote.cli("alice", "status", "--json", second.stdout.strip()).stdout)[
                "state"
            ]
            == "succeeded"
        ),
        timeout=60,
        interval=0.2,
        what="the queued job to run",
    )


# -- who may do what -----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.daemon
async def test_a_user_cannot_see_stop_or_stream_anothers_job_and_an_admin_can(
    remote: Remote,
) -> None:
    job = await call(remote, "alice", "start", ["sh", "-c", "echo secret; sleep 600"], None, {})
    jid = job.id
    with pytest.raises(JobNotFound) as nothing:
        await call(remote, "bob", "status", "zzzzzzzzzz")
    for fn, args in (("status", (jid,)), ("stop", (jid, None)), ("status", (jid[:4],))):
        with pytest.raises(JobNotFound) as e:
            await call(remote, "bob", fn, *args)
        # word for word what a job that does not exist gets
        assert str(e.value) == str(nothing.value).replace("zzzzzzzzzz", args[0])
    with pytest.raises(JobNotFound):
        await output(remote, "bob", jid, follow=False)
    assert jid not in [j.id for j in await call(remote, "bob", "list", True)]
    assert (await call(remote, "alice", "status", jid)).state == "running"  # untouched
    # carol, an admin, sees, streams and stops it
    assert jid in [j.id for j in await call(remote, "carol", "list", True)]
    assert (await call(remote, "carol", "status", jid)).owner == "remote:alice"

    async def secret_shown() -> bool:
        return await output(remote, "carol", jid, follow=False) == b"secret\n"

    await wait_for_async(secret_shown, what="the job's output", timeout=30, interval=0.05)
    job, was_running = await call(remote, "carol", "stop", jid, None)
    assert was_running and job.state == "stopped"


@pytest.mark.integration
@pytest.mark.daemon
async def test_a_local_user_and_a_remote_one_of_the_same_name_do_not_share_jobs(
    remote: Remote,
) -> None:
    job = await call(remote, "alice", "start", ["true"], None, {})
    env = {k: v for k, v in os.environ.items() if k != "JOBRUN_STATE_DIR"}
    env["JOBRUN_MODE"] = "daemon"
    proc = await asyncio.create_subprocess_exec(
        "setpriv", "--reuid=bob", "--regid=bob", "--init-groups",
        sys.executable, "-m", "jobrun", "status", job.id,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd="/",
    )  # fmt: skip
    assert await proc.wait() == 3  # local bob: not found


@pytest.mark.integration
@pytest.mark.daemon
async def test_two_remote_followers_get_the_whole_output(remote: Remote) -> None:
    script = "seq 1 20000; sleep 0.5; seq 20001 40000"
    job = await call(remote, "bob", "start", ["sh", "-c", script], None, {})
    a, b = await asyncio.gather(output(remote, "bob", job.id), output(remote, "carol", job.id))
    want = "".join(f"{i}\n" for i in range(1, 40001)).encode()
    assert a == want and b == want


@pytest.mark.integration
@pytest.mark.daemon
async def test_a_remote_follower_resumes_without_gap_after_jobrund_is_killed(
    remote: Remote,
) -> None:
    # reliability F3 for the remote API: kill -9 of jobrund while a follower streams a job.
    n = 1500  # ~7 s of output: the kill and the restart fall inside it
    script = (
        f'i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo "r$i"; '
        "if [ $((i % 10)) = 0 ]; then sleep 0.05; fi; done"
    )
    b = await backend(remote, "alice")
    try:
        job = await b.start(["sh", "-c", script], None, {})
        got: list[bytes] = []
        streaming = asyncio.Event()

        async def follow() -> None:
            async for batch in b.log_batches(job.id, follow=True):
                got.extend(r.message for r in batch)
                streaming.set()

        task = asyncio.create_task(follow())
        async with asyncio.timeout(60):
            await streaming.wait()
        pid = systemctl_show("jobrund.service", "MainPID")["MainPID"]
        at_kill = len(got)
        os.kill(int(pid), signal.SIGKILL)

        def back() -> bool:
            now = systemctl_show("jobrund.service", "MainPID")["MainPID"]
            return now not in ("0", pid)

        await asyncio.to_thread(
            wait_for, back, timeout=60, interval=0.05, what="jobrund to be restarted"
        )
        async with asyncio.timeout(180):
            await task
        status = await b.status(job.id)
    finally:
        await b.close()
    assert 0 < at_kill < n  # the kill came mid-stream
    assert [m.decode() for m in got] == [f"r{i}" for i in range(1, n + 1)]
    assert status.state == "succeeded"


# -- what the TLS layer must refuse ---------------------------------------------------------------


REFUSED = {
    "no client certificate": (None, None),
    "another CA's certificate": ("alice", "other-ca"),
    "an expired certificate": ("expired", None),
    "a not yet valid certificate": ("future", None),
    "no extended key usage": ("noeku", None),
    "serverAuth only": ("serveronly", None),
    "a TLS 1.2 client": ("alice", "tls12"),
}


@pytest.mark.integration
@pytest.mark.daemon
@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_clients_get_an_error_and_start_nothing(remote: Remote, case: str) -> None:
    name, variant = REFUSED[case]
    if variant == "other-ca":
        ctx = client_ctx(remote, name, remote.pki / "other-ca")
    else:
        ctx = client_ctx(remote, name)
    if variant == "tls12":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    marker = f"refused-{case.replace(' ', '-')}"
    b = await backend(remote, "alice", ctx)
    try:
        with pytest.raises((RemoteUnavailable, Unauthenticated)) as e:
            await b.start(["echo", marker], None, {})
        with pytest.raises((RemoteUnavailable, Unauthenticated)):
            await b.list(True)
    finally:
        await b.close()
    assert str(e.value)  # a message a user can act on
    assert jobs_running_command(marker) == []
    # and the server still serves a good client
    assert isinstance(await call(remote, "alice", "list", False), list)


@pytest.mark.integration
@pytest.mark.daemon
def test_openssl_tls12_handshake_fails_and_tls13_succeeds(remote: Remote) -> None:
    def s_client(version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{remote.port}", version,
             "-cert", str(remote.pki / "alice.crt"), "-key", str(remote.pki / "alice.key"),
             "-CAfile", str(remote.pki / "ca.crt"), "-alpn", "h2", "-brief"],
            input="", capture_output=True, text=True, errors="replace", timeout=30,
        )  # fmt: skip

    tls12 = s_client("-tls1_2")
    assert tls12.returncode != 0
    assert "Protocol version" not in tls12.stderr  # -brief prints it once a handshake completes
    # jobrund's OpenSSL rejects the ClientHello and closes (asyncio sends no alert)
    assert "alert protocol version" in tls12.stderr or "unexpected eof" in tls12.stderr
    tls13 = s_client("-tls1_3")
    assert "Protocol version: TLSv1.3" in tls13.stderr, tls13.stderr


@pytest.mark.integration
@pytest.mark.daemon
def test_bad_remote_options_are_clear_errors_that_touch_nothing(remote: Remote) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUN_")}
    env["XDG_CONFIG_HOME"] = str(remote.pki / "no-config")

    def jobrun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jobrun", *args], capture_output=True,
                              text=True, env=env, timeout=60)  # fmt: skip

    no_cert = jobrun("--remote", f"127.0.0.1:{remote.port}", "list")
    assert no_cert.returncode == 2 and "--remote needs --cert" in no_cert.stderr
    bad = jobrun("--remote", "nohostport", "list")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    t = remote.target("alice")
    closed = jobrun("--remote", f"127.0.0.1:{free_port()}", "--cert", t.cert, "--key", t.key,
                    "--ca", t.ca, "list")  # fmt: skip
    assert closed.returncode == 69 and "connection to 127.0.0.1" in closed.stderr, closed.stderr
    missing = jobrun("--context", "nope", "list")
    assert missing.returncode == 2 and "no context 'nope'" in missing.stderr


@pytest.mark.integration
@pytest.mark.daemon
def test_a_named_context_in_the_users_config(remote: Remote, tmp_path: Path) -> None:
    t = remote.target("alice")
    (tmp_path / "jobrun").mkdir()
    (tmp_path / "jobrun" / "config.toml").write_text(
        'context = "lab"\n[contexts.lab]\n'
        f'remote = "127.0.0.1:{remote.port}"\ncert = "{t.cert}"\nkey = "{t.key}"\nca = "{t.ca}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUN_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "jobrun", "run", "--", "echo", "hi"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == "hi\n", proc.stderr
    job_id = proc.stderr.split("job ", 1)[1].split()[0]
    status = json.loads(remote.cli("alice", "status", "--json", job_id).stdout)
    assert status["owner"] == "remote:alice"


class _RawCodec(CodecBase):
    """Sends bytes as they are: for requests no well-behaved client would make."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


def _start(command: list[str], **options: Any) -> Any:
    from jobrun.v1 import jobrun_pb2 as pb

    return pb.StartRequest(command=command, options=pb.JobOptions(**options))


BAD_GRPC = {
    "malformed protobuf": (b"\xff\xff\xff\xff", "InvalidArgument"),
    "wrong wire type": (b"\x0a\x05\x08\x01", "InvalidArgument"),  # command as a message
    "no command": (_start([]), "InvalidArgument"),
    "empty program": (_start([""]), "InvalidArgument"),
    "NUL in an argument": (_start(["echo", "a\0b"]), "InvalidArgument"),
    "a 1 MB argument": (_start(["echo", "x" * 1_000_000]), "InvalidArgument"),
    "cpu_weight 0": (_start(["true"], cpu_weight=0), "InvalidArgument"),
    "io_weight 10001": (_start(["true"], io_weight=10001), "InvalidArgument"),
    "memory_high above memory_max": (
        _start(["true"], memory_high=2 << 30, memory_max=1 << 30),
        "InvalidArgument",
    ),
    "unknown profile": (_start(["true"], profile="wide-open"), "InvalidArgument"),
    "relative workdir": (_start(["true"], workdir="../x"), "InvalidArgument"),
    "env without =": (_start(["true"], env=["NOEQUALS"]), "InvalidArgument"),
    "10,000 env vars": (_start(["true"], env=[f"V{i}=x" for i in range(10000)]), "InvalidArgument"),
    "CPU 8192 in affinity": (_start(["true"], cpu_affinity=[8192]), "InvalidArgument"),
    "stop_timeout -1": (_start(["true"], stop_timeout=-1.0), "InvalidArgument"),
}


@pytest.mark.integration
@pytest.mark.daemon
@pytest.mark.parametrize("case", list(BAD_GRPC))
async def test_bad_grpc_requests_get_a_clear_error_and_start_nothing(
    remote: Remote, case: str
) -> None:
    from grpclib.client import Channel, UnaryUnaryMethod
    from grpclib.exceptions import GRPCError

    request, want = BAD_GRPC[case]
    data = request if isinstance(request, bytes) else request.SerializeToString()
    before = len(jobs_running_command(""))
    b = await backend(remote, "alice")
    channel = Channel("127.0.0.1", remote.port, ssl=b.channel._ssl, codec=_RawCodec())
    try:
        method: UnaryUnaryMethod[bytes, bytes] = UnaryUnaryMethod(
            channel, "/jobrun.v1.Jobs/Start", bytes, bytes
        )
        with pytest.raises(GRPCError) as e:
            async with method.open() as stream:
                try:
                    await stream.send_message(data, end=True)
                    await stream.recv_message()
                finally:
                    meta = stream.trailing_metadata
    finally:
        close_channel(channel)
        await b.close()
    assert e.value.status.name == "INVALID_ARGUMENT" and e.value.message
    assert meta is not None and meta["jobrun-error"] == f"org.jobrun.Error.{want}"
    assert len(jobs_running_command("")) == before  # nothing started
    assert isinstance(await call(remote, "alice", "list", False), list)  # still serving


# -- interop ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.daemon
def test_the_official_grpcio_client_talks_to_jobrund(remote: Remote) -> None:
    """grpcio (C-core) with the same certificates: unary and server-streaming calls."""
    code = f"""
import grpc, sys
from jobrun.v1 import jobrun_pb2 as pb
d = {str(remote.pki)!r}
creds = grpc.ssl_channel_credentials(open(d + "/ca.crt", "rb").read(),
    open(d + "/carol.key", "rb").read(), open(d + "/carol.crt", "rb").read())
ch = grpc.secure_channel("localhost:{remote.port}", creds)
start = ch.unary_unary("/jobrun.v1.Jobs/Start",
    request_serializer=pb.StartRequest.SerializeToString,
    response_deserializer=pb.StartResponse.FromString)
logs = ch.unary_stream("/jobrun.v1.Jobs/Logs",
    request_serializer=pb.LogsRequest.SerializeToString,
    response_deserializer=pb.LogsResponse.FromString)
status = ch.unary_unary("/jobrun.v1.Jobs/Status",
    request_serializer=pb.StatusRequest.SerializeToString,
    response_deserializer=pb.StatusResponse.FromString)
job = start(pb.StartRequest(command=["seq", "1", "5000"]), timeout=60).job
lines = [r.message for m in logs(pb.LogsRequest(id=job.id, follow=True), timeout=60)
         for r in m.records]
assert lines == [str(i).encode() for i in range(1, 5001)], len(lines)
final = status(pb.StatusRequest(id=job.id), timeout=60).job
assert final.state == pb.JOB_STATE_SUCCEEDED and final.exit_code == 0, final
try:
    status(pb.StatusRequest(id="zzzzzzzzzz"), timeout=60)
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
    assert dict(e.trailing_metadata())["jobrun-error"] == "org.jobrun.Error.NotFound"
else:
    sys.exit("no error for a job that does not exist")
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.stdout.strip() == "ok", proc.stderr


# -- without systemd -------------------------------------------------------------------------------


def test_job_options_have_one_field_per_setting_of_the_table() -> None:
    from jobrun.properties import SETTINGS
    from jobrun.v1 import jobrun_pb2 as pb

    assert [f.name for f in pb.JobOptions.DESCRIPTOR.fields] == [s.field for s in SETTINGS]


def test_a_job_dict_survives_the_wire_exactly() -> None:
    from jobrun.wire.jobs import job_from_dict, job_to_dict
    from jobrun.wire.proto import job_from_proto, job_to_proto

    job: dict[str, Any] = {
        "id": "abc0000001", "name": "n", "unit": "jobrun-abc0000001.service", "kind": "service",
        "terminal": False, "state": "failed", "exit_code": 3, "signal": None, "result": "exit-code",
        "reason": "exited with 3", "reported_by": None,
        "command": ["sh", "-c", "exit 3"], "owner": "remote:alice", "uid": -1,
        "created_at": "2026-11-29T07:00:00.123456+00:00", "started_at": None,
        "finished_at": "2026-11-29T07:00:01+00:00", "invocation_id": "ab" * 16,
        "limits": {"cpu_weight": 50, "memory_max": 1 << 30, "cpu_affinity": [0, 1],
                   "network": False, "env": ["A=1"], "stop_timeout": 2.5, "profile": "strict",
                   "group": "build", "after": ["abc0000000"], "retry": 2},
        "usage": None, "live_limits": {}, "accounting": None, "schedule": "s000000001",
        "attempt": 2,
        "attempts": ["abc0000000", "abc0000001", "abc0000002"],
    }  # fmt: skip
    running = {**job, "state": "running", "exit_code": None, "result": None, "reason": None,
               "finished_at": None,
               "usage": {"cpu_seconds": 0.5, "memory_bytes": None, "tasks": 2, "io_read_bytes": 0,
                         "io_write_bytes": None}}  # fmt: skip
    paused = {**running, "state": "paused",
              "live_limits": {"memory_max": 2 << 30, "cpu_quota": 150}}  # fmt: skip
    # What a run used is shown once it ended (while it runs: its usage).
    ended = {
        **job,
        "accounting": {
            "cpu_seconds": None,
            "memory_peak_bytes": 1 << 20,
            "io_read_bytes": 0,
            "io_write_bytes": None,
            "tasks_peak": 3,
            "sampled_at": "2026-11-29T07:00:02.500000+00:00",
        },
    }
    scope = {**job, "unit": "jobrun-abc0000001.scope", "kind": "scope", "reported_by": "client"}
    pty = {**job, "terminal": True}
    for d in (job, running, paused, ended, scope, pty):  # usage is shown only while a job runs
        assert job_to_dict(job_from_dict(d)) == d
        back = job_to_dict(job_from_proto(job_to_proto(job_from_dict(d))))
        assert back == d
        assert list(back) == list(d)  # same key order: same --json


def test_committed_protobuf_code_is_what_gen_proto_makes(tmp_path: Path) -> None:
    if subprocess.run(["sh", "-c", "command -v protoc"], capture_output=True).returncode:
        pytest.fail("protoc is missing: apt-get install protobuf-compiler libprotobuf-dev")
    subprocess.run([ROOT / "packaging" / "gen-proto", tmp_path], check=True)
    for name in ("jobrun_pb2.py", "jobrun_pb2.pyi"):
        fresh = (tmp_path / "jobrun" / "v1" / name).read_text()
        assert fresh == (ROOT / "jobrun" / "v1" / name).read_text(), "rerun packaging/gen-proto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listen = "7443"', "HOST:PORT"),
        ('listen = "0.0.0.0:99999"', "HOST:PORT"),
        ('run_as = "root"', "never run as root"),
        ('run_as = "no-such-user-here"', "no user"),
        ('certificate = "relative.crt"', "absolute path"),
        ("admins = 3", "list of names"),
        ("surprise = 1", "unknown key"),
    ],
)
def test_bad_remote_config_is_refused_with_a_clear_error(
    tmp_path: Path, text: str, message: str
) -> None:
    from jobrun.config import Config

    base = {"listen": '"0.0.0.0:7443"', "certificate": '"/c"', "key": '"/k"', "ca": '"/a"'}
    key = text.split(" =")[0]
    base[key] = text.split("= ", 1)[1]
    path = tmp_path / "jobrund.toml"
    path.write_text("[remote]\n" + "".join(f"{k} = {v}\n" for k, v in base.items()))
    with pytest.raises(InvalidArgument, match=message):
        Config.load(path)


def test_certs_cli_makes_a_ca_server_and_client_with_private_keys_0600(tmp_path: Path) -> None:
    def jobrun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jobrun", "certs", *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    d = tmp_path / "pki"
    assert jobrun("ca", str(d)).returncode == 0
    assert jobrun("server", str(d), "--host", "jobs.example", "--host", "10.0.0.1").returncode == 0
    assert jobrun("client", str(d), "alice").returncode == 0
    again = jobrun("client", str(d), "alice")
    assert again.returncode == 2 and "exists already" in again.stderr  # never overwrites a key
    for key in ("ca.key", "server.key", "alice.key"):
        assert (d / key).stat().st_mode & 0o777 == 0o600
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from jobrun.tls import has_client_auth

    server = x509.load_pem_x509_certificate((d / "server.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["jobs.example"]
    client = x509.load_pem_x509_certificate((d / "alice.crt").read_bytes())
    assert client.subject.rfc4514_string() == "CN=alice"
    assert has_client_auth(client.public_bytes(Encoding.DER))
    assert not has_client_auth(server.public_bytes(Encoding.DER))


def test_errors_map_to_grpc_statuses_once() -> None:
    from grpclib.const import Status

    from jobrun.errors import error_classes

    for cls in error_classes().values():
        assert Status[cls.grpc_status]  # every class names a real status
    assert JobrunError.grpc_status == "INTERNAL"
