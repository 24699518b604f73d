"""Shared by the remote API's tests (tests/test_remote.py, tests/security): a test PKI, jobrund
serving the remote API from the private systemd, and clients of it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobrun import certs
from jobrun.client.remote import RemoteBackend
from jobrun.client.target import Remote as Target

from .helpers import wait_for

CONFIG = Path("/etc/jobrun/jobrund.toml")
PKI = Path("/etc/jobrun/test-pki")  # in the sandbox's /etc overlay: gone with it; jobrund sees it


@dataclass(frozen=True)
class Remote:
    port: int
    pki: Path

    def target(self, name: str) -> Target:
        return Target(
            "127.0.0.1",
            self.port,
            str(self.pki / f"{name}.crt"),
            str(self.pki / f"{name}.key"),
            str(self.pki / "ca.crt"),
        )

    def command(self, name: str, *args: str) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of `jobrun --remote …` as `name`."""
        t = self.target(name)
        cmd = [sys.executable, "-m", "jobrun", "--remote", f"{t.host}:{t.port}",
               "--cert", t.cert, "--key", t.key, "--ca", t.ca, *args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUN_")}
        env["XDG_CONFIG_HOME"] = str(self.pki / "no-config")
        return cmd, env

    def cli(
        self, name: str, *args: str, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd, env = self.command(name, *args)
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, input=input
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_pki(d: Path) -> None:
    now = datetime.now(UTC)
    certs.make_ca(d)
    certs.issue(d, "localhost", server=True, hosts=["localhost", "127.0.0.1"])
    for name in ("alice", "bob", "carol"):
        certs.issue(d, name)
    certs.issue(
        d, "expired", not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)
    )
    certs.issue(d, "future", not_before=now + timedelta(days=1), not_after=now + timedelta(days=10))
    certs.issue(d, "noeku", usages=[])
    certs.issue(d, "serveronly", usages=["serverAuth"])
    other = d / "other-ca"
    certs.make_ca(other, name="another CA")
    certs.issue(other, "alice", out_dir=other)


def write_config(port: int, extra: str = "", ca: Path = PKI / "ca.crt") -> None:
    """jobrund's config with the remote API on port; `extra`: more keys for [remote]."""
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(
        "[remote]\n"
        f'listen = "127.0.0.1:{port}"\n'
        f'certificate = "{PKI}/server.crt"\n'
        f'key = "{PKI}/server.key"\n'
        f'ca = "{ca}"\n'
        f"{extra}"
        'admins = ["carol"]\n'
        "[remote.users.alice]\n"
        'run_as = "alice"\n'
    )


def restart_jobrund(check: bool = True) -> subprocess.CompletedProcess[str]:
    # Other tests restart jobrund often: clear systemd's start rate limit before ours.
    subprocess.run(["systemctl", "reset-failed", "jobrund.service"], check=False)
    return subprocess.run(
        ["systemctl", "restart", "jobrund.service"], check=check, capture_output=True, text=True
    )


def wait_listening(port: int) -> None:
    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=90, what="jobrund listening on its remote port")


@contextlib.contextmanager
def remote_jobrund(extra: str = "") -> Iterator[Remote]:
    """jobrund, restarted with the remote API on a free port (the test PKI, carol admin, alice's
    jobs as the local alice, `extra` keys in [remote]); restarted without it afterwards."""
    from . import conftest, install

    problem = conftest.systemd_problem()
    if problem:
        pytest.fail(f"the remote API tests need a real systemd: {problem}", pytrace=False)
    if install.in_sandbox():
        install.install()
    if not PKI.exists():
        make_pki(PKI)
    port = free_port()
    write_config(port, extra)
    restart_jobrund()
    wait_listening(port)
    try:
        yield Remote(port, PKI)
    finally:
        CONFIG.unlink(missing_ok=True)
        restart_jobrund()


async def backend(remote: Remote, name: str, ctx: ssl.SSLContext | None = None) -> RemoteBackend:
    b = await RemoteBackend.open(remote.target(name))
    if ctx is not None:
        from grpclib.client import Channel

        b.channel.close()
        b.channel = Channel("127.0.0.1", remote.port, ssl=ctx)
    return b


async def call(remote: Remote, name: str, fn: str, *args: Any, **kw: Any) -> Any:
    b = await backend(remote, name)
    try:
        return await getattr(b, fn)(*args, **kw)
    finally:
        await b.close()


async def output(remote: Remote, name: str, job_id: str, follow: bool = True) -> bytes:
    b = await backend(remote, name)
    try:
        return b"".join([r.data async for r in b.logs(job_id, follow=follow)])
    finally:
        await b.close()


def jobs_running_command(marker: str) -> list[str]:
    """IDs of every job whose command mentions marker (as root, in-process: sees all)."""
    env = {**os.environ, "JOBRUN_MODE": "daemon"}
    out = subprocess.run([sys.executable, "-m", "jobrun", "list", "--all", "--json"],
                         capture_output=True, text=True, env=env, check=True).stdout  # fmt: skip
    return [j["id"] for j in json.loads(out) if marker in " ".join(j["command"])]


def client_ctx(remote: Remote, name: str | None, ca_dir: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(remote.pki / "ca.crt")
    ctx.set_alpn_protocols(["h2"])
    if name is not None:
        d = ca_dir or remote.pki
        ctx.load_cert_chain(d / f"{name}.crt", d / f"{name}.key")
    return ctx
