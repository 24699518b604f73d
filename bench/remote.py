"""The remote API's variants: the same CLI commands over gRPC with mutual TLS 1.3 (loopback).

Inside tests/with-systemd's sandbox the benchmark makes a test CA (jobrun.certs) and turns on
jobrund's [remote] section on a free loopback port, as an admin identity so that it can read the
jobs the other variants started. Elsewhere (a host's own jobrund and config) the remote rows are
left out: the benchmark does not rewrite an admin's config.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .common import BenchError, jobrun_argv, systemctl

PKI = Path("/etc/jobrun/bench-pki")  # in the sandbox's /etc overlay: gone with it
CONFIG = Path("/etc/jobrun/jobrund.toml")
IDENTITY = "bench-admin"
_prefix: list[str] | None = None


def available() -> bool:
    """In the sandbox, and with grpclib (not packaged in Debian 12: a run on Debian's own
    libraries has no remote API to measure)."""
    import importlib.util

    from tests import install

    return install.in_sandbox() and importlib.util.find_spec("grpclib") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup() -> list[str]:
    from jobrun import certs

    if not PKI.exists():
        certs.make_ca(PKI)
        certs.issue(PKI, "localhost", server=True, hosts=["127.0.0.1"])
        certs.issue(PKI, IDENTITY)
    port = _free_port()
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(
        f'[remote]\nlisten = "127.0.0.1:{port}"\ncertificate = "{PKI}/server.crt"\n'
        f'key = "{PKI}/server.key"\nca = "{PKI}/ca.crt"\nadmins = ["{IDENTITY}"]\n'
    )
    systemctl("restart", "jobrund.service")
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            raise BenchError("jobrund does not listen on its remote port")
        time.sleep(0.05)
    return ["--remote", f"127.0.0.1:{port}", "--cert", f"{PKI}/{IDENTITY}.crt",
            "--key", f"{PKI}/{IDENTITY}.key", "--ca", f"{PKI}/ca.crt"]  # fmt: skip


def argv(*args: str) -> list[str]:
    """`jobrun --remote … ARGS` against this host's jobrund (set up on first use)."""
    global _prefix
    if _prefix is None:
        _prefix = _setup()
    return jobrun_argv(*_prefix, *args)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBRUN_")}
