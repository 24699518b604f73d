"""Issue: unit-file injection over the remote API, with a non-admin client certificate.

The same rule as on D-Bus (properties.build_spec, called by the gRPC server before anything
else): the requests here go out raw, so no client-side check stands in for jobrund's own.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from jobrun.client.remote import close_channel
from jobrun.model import unit_name

from ..helpers import systemctl_show
from ..remote_helpers import Remote, backend, call, jobs_running_command, remote_jobrund
from ..test_remote import _RawCodec, _start
from .test_unit_injection import MARK, PAYLOAD

pytestmark = [pytest.mark.integration, pytest.mark.daemon]


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    with remote_jobrund() as r:
        yield r


async def _raw_start(remote: Remote, request: Any) -> tuple[str, bytes | None]:
    """(gRPC status name, reply bytes) of a Start sent as alice without any client-side check."""
    from grpclib.client import Channel, UnaryUnaryMethod
    from grpclib.exceptions import GRPCError

    b = await backend(remote, "alice")
    channel = Channel("127.0.0.1", remote.port, ssl=b.channel._ssl, codec=_RawCodec())
    try:
        method: UnaryUnaryMethod[bytes, bytes] = UnaryUnaryMethod(
            channel, "/jobrun.v1.Jobs/Start", bytes, bytes
        )
        try:
            return "OK", await method(request.SerializeToString())
        except GRPCError as e:
            return e.status.name, None
    finally:
        close_channel(channel)
        await b.close()


@pytest.mark.parametrize(
    "options",
    [
        {"name": f"x{PAYLOAD}"},
        {"name": "x\ry"},
        {"workdir": f"/tmp{PAYLOAD}"},
        {"writable": [f"/srv\r{PAYLOAD}"]},
        {"writable": ['/srv/a"b']},
        {"env": ["A=x\ry"]},
    ],
)
async def test_strings_a_unit_file_would_not_hold_are_refused(
    remote: Remote, options: dict[str, Any]
) -> None:
    from jobrun.v1 import jobrun_pb2 as pb

    before = len(jobs_running_command(""))
    name = options.pop("name", None)
    request = pb.StartRequest(command=["/bin/true"], name=name, options=pb.JobOptions(**options))
    status, _ = await _raw_start(remote, request)
    assert status == "INVALID_ARGUMENT"
    assert len(jobs_running_command("")) == before


async def test_an_executable_with_a_unit_file_prefix_is_refused(remote: Remote) -> None:
    status, _ = await _raw_start(remote, _start(["+touch", str(MARK)]))
    assert status == "INVALID_ARGUMENT"


async def test_the_reported_attack_over_grpc_runs_nothing_as_root(remote: Remote) -> None:
    from jobrun.v1 import jobrun_pb2 as pb

    MARK.unlink(missing_ok=True)
    status, data = await _raw_start(remote, _start(["/bin/sh", "-c", "sleep 6", PAYLOAD]))
    assert status == "OK" and data is not None
    job = pb.StartResponse.FromString(data).job.id
    assert job
    await asyncio.to_thread(subprocess.run, ["systemctl", "daemon-reload"], check=True)
    show = await asyncio.to_thread(systemctl_show, unit_name(job), "ExecStopPost", "Description")
    assert show.get("ExecStopPost", "") == "" and show["Description"] == f"jobrun job {job}"
    await call(remote, "alice", "stop", job, None)
    assert not MARK.exists()
