"""Issue 15, item 8: who a remote caller is must stay under the admin's control.

Revocation: jobrund reads `[remote] crl` and refuses a revoked client certificate in the TLS
handshake, serves the others, and reads the file again when it changes, without a restart; a
broken replacement leaves the last good list in force. A session resumed from before the
revocation, or a connection opened before it, does not get around it.

The CA: a system-wide trust bundle (or any file holding one of its CAs) as `[remote] ca` would make
anyone with a public certificate for an admin's name an admin; jobrund refuses to start with it.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobrun import certs, tls
from jobrun.errors import InvalidArgument, RemoteUnavailable, Unauthenticated

from ..helpers import systemctl_show, wait_for
from ..remote_helpers import (
    PKI,
    Remote,
    backend,
    call,
    client_ctx,
    free_port,
    jobs_running_command,
    make_pki,
    remote_jobrund,
    restart_jobrund,
    wait_listening,
    write_config,
)

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CRL = PKI / "revoked.crl"
EXTRA = f'crl = "{CRL}"\n'


def _crl(ca_dir: Path, *names: str, days: float = 1) -> bytes:
    """A CRL of ca_dir's CA revoking the certificates ca_dir/NAME.crt (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - timedelta(days=2))
        .next_update(now + timedelta(days=days))
    )
    for name in names:
        cert = x509.load_pem_x509_certificate((ca_dir / f"{name}.crt").read_bytes())
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - timedelta(minutes=1))
            .build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def _replace(path: Path, data: bytes) -> None:
    """As an admin should: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _handshake(
    remote: Remote, ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[bytes, ssl.SSLSession | None]:
    """What a raw TLS client reads first: jobrund's HTTP/2 preface (SETTINGS) if the handshake
    let it in, b"" if jobrund refused it; and the TLS session, to resume."""
    with socket.create_connection(("127.0.0.1", remote.port), timeout=30) as s:
        try:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1", session=session) as t:
                return t.recv(4096), t.session
        except (ssl.SSLError, ConnectionError):
            return b"", None


def _admitted(remote: Remote, name: str) -> bool:
    return _handshake(remote, client_ctx(remote, name))[0] != b""


def _journal_since(since: float) -> str:
    return subprocess.run(
        ["journalctl", "-u", "jobrund.service", "-o", "cat", "--no-pager",
         f"--since=@{int(since) - 1}"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def rev() -> Iterator[Remote]:
    """jobrund with `crl`: dave's certificate revoked, erin's not."""
    if not PKI.exists():
        make_pki(PKI)
    for name in ("dave", "erin"):
        if not (PKI / f"{name}.crt").exists():
            certs.issue(PKI, name)
    _replace(CRL, _crl(PKI, "dave"))
    with remote_jobrund(EXTRA) as r:
        yield r


@pytest.mark.integration
@pytest.mark.daemon
async def test_a_revoked_client_is_refused_in_the_handshake_and_the_others_are_served(
    rev: Remote,
) -> None:
    _replace(CRL, _crl(PKI, "dave"))
    assert not await asyncio.to_thread(
        _admitted, rev, "dave"
    )  # no HTTP/2 from jobrund: refused in TLS
    b = await backend(rev, "dave")
    try:
        with pytest.raises(RemoteUnavailable):
            await b.start(["echo", "revoked-dave-ran"], None, {})
    finally:
        await b.close()
    assert jobs_running_command("revoked-dave-ran") == []
    assert await asyncio.to_thread(_admitted, rev, "erin")
    job = await call(rev, "erin", "start", ["echo", "erin-ran"], None, {})
    assert job.owner == "remote:erin"


@pytest.mark.integration
@pytest.mark.daemon
async def test_a_replaced_crl_takes_effect_without_a_restart(rev: Remote) -> None:
    _replace(CRL, _crl(PKI, "dave"))
    pid = systemctl_show("jobrund.service", "MainPID")["MainPID"]
    erin_ctx = client_ctx(rev, "erin")
    preface, session = await asyncio.to_thread(_handshake, rev, erin_ctx)
    assert preface and session is not None
    erin = await backend(rev, "erin")  # a connection opened before erin is revoked
    try:
        assert isinstance(await erin.list(False), list)
        _replace(CRL, _crl(PKI, "erin"))  # now erin's is revoked, and dave's no longer
        assert not await asyncio.to_thread(_admitted, rev, "erin")
        # resuming the session from before would skip the certificate, and the CRL with it
        assert (await asyncio.to_thread(_handshake, rev, erin_ctx, session))[0] == b""
        with pytest.raises(Unauthenticated, match="revoked"):
            await erin.list(False)  # the open connection: refused at its next call
    finally:
        await erin.close()
    assert await asyncio.to_thread(_admitted, rev, "dave")
    assert isinstance(await call(rev, "dave", "list", False), list)
    assert systemctl_show("jobrund.service", "MainPID")["MainPID"] == pid  # no restart


@pytest.mark.integration
@pytest.mark.daemon
async def test_a_broken_crl_at_runtime_leaves_the_last_good_one_in_force_and_is_logged(
    rev: Remote,
) -> None:
    _replace(CRL, _crl(PKI, "dave"))
    assert not await asyncio.to_thread(_admitted, rev, "dave")
    since = time.time()
    try:
        for broken in (b"not a CRL\n", (PKI / "erin.crt").read_bytes(), b""):
            _replace(CRL, broken)
            assert not await asyncio.to_thread(_admitted, rev, "dave")
            assert await asyncio.to_thread(_admitted, rev, "erin")
        CRL.unlink()
        assert not await asyncio.to_thread(_admitted, rev, "dave")
        assert await asyncio.to_thread(_admitted, rev, "erin")
    finally:
        _replace(CRL, _crl(PKI, "dave"))
    wait_for(
        lambda: _journal_since(since).count("the revocation list read before stays in force") >= 4,
        timeout=30,
        what="jobrund's errors about the broken CRLs in its journal",
    )
    log = _journal_since(since)
    assert "must hold CRLs only" in log and "No such file" in log, log


def _public_root() -> bytes:
    """One CA certificate of the system's bundle (PEM): a CA anyone can buy certificates under."""
    if not SYSTEM_BUNDLE.exists():
        pytest.fail(f"{SYSTEM_BUNDLE} is missing: apt-get install ca-certificates", pytrace=False)
    m = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n",
                  SYSTEM_BUNDLE.read_bytes(), re.S)  # fmt: skip
    assert m
    return m[0]


def _ca_with_public_root(ca_dir: Path) -> Path:
    f = ca_dir / "ca-and-a-public-root.crt"
    f.write_bytes((ca_dir / "ca.crt").read_bytes() + _public_root())
    return f


@pytest.mark.integration
@pytest.mark.daemon
@pytest.mark.parametrize("case", ["the system bundle", "a file with a public root"])
def test_jobrund_refuses_to_start_with_a_system_trust_bundle_as_ca(rev: Remote, case: str) -> None:
    ca = SYSTEM_BUNDLE if case == "the system bundle" else _ca_with_public_root(PKI)
    port = free_port()
    since = time.time()
    write_config(port, EXTRA, ca=ca)
    try:
        started = restart_jobrund(check=False)
        assert started.returncode != 0, "jobrund started"
        log = wait_for(
            lambda: (j := _journal_since(since)) and f"ca = {ca}" in j and j,
            timeout=30,
            what="jobrund's reason in its journal",
        )
        assert "CA of its own" in log and "admin" in log, log
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens
    finally:
        write_config(rev.port, EXTRA)
        restart_jobrund()
        wait_listening(rev.port)


# -- without systemd: the rules themselves --------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    certs.make_ca(d)
    certs.issue(d, "localhost", server=True, hosts=["127.0.0.1"])
    certs.issue(d, "alice")
    return d


def _other_ca(tmp_path: Path) -> Path:
    d = tmp_path / "other"
    certs.make_ca(d, name="the next CA")
    return d


def _same_key_as_a_public_root(tmp_path: Path) -> bytes:
    """A certificate of our making that carries a public root's public key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = x509.load_pem_x509_certificate(_public_root())
    signer = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(root.subject)
        .issuer_name(root.subject)
        .public_key(root.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


CA_CASES = {
    # name: (what the ca file is, accepted?)
    "a CA of its own": ("own", True),
    "two CAs of its own (while replacing one)": ("own+next", True),
    "the system bundle": ("bundle", False),
    "a symlink to the system bundle": ("symlink", False),
    "a file in /etc/ssl/certs": ("certs-dir", False),
    "a copy of the system bundle": ("copy", False),
    "its own CA and a public root": ("own+public", False),
    "a public root's key in another certificate": ("public-key", False),
}


@pytest.mark.parametrize("case", list(CA_CASES))
def test_the_ca_must_be_a_ca_of_jobrunds_own(pki: Path, tmp_path: Path, case: str) -> None:
    kind, accepted = CA_CASES[case]
    own = (pki / "ca.crt").read_bytes()
    ca = tmp_path / "ca.pem"
    if kind == "own":
        ca = pki / "ca.crt"
    elif kind == "own+next":
        ca.write_bytes(own + (_other_ca(tmp_path) / "ca.crt").read_bytes())
    elif kind == "bundle":
        _public_root()  # fails clearly without the bundle
        ca = SYSTEM_BUNDLE
    elif kind == "symlink":
        ca.symlink_to(SYSTEM_BUNDLE)
    elif kind == "certs-dir":
        ca = next(p for p in Path("/etc/ssl/certs").iterdir() if p.suffix == ".pem")
    elif kind == "copy":
        ca.write_bytes(SYSTEM_BUNDLE.read_bytes())
    elif kind == "own+public":
        ca = _ca_with_public_root(pki)
    elif kind == "public-key":
        ca.write_bytes(own + _same_key_as_a_public_root(tmp_path))

    def make() -> tls.ServerTLS:
        return tls.ServerTLS(str(pki / "server.crt"), str(pki / "server.key"), str(ca))

    if accepted:
        assert make().context.verify_mode == ssl.CERT_REQUIRED
    else:
        with pytest.raises(InvalidArgument) as e:
            make()
        assert "CA of its own" in str(e.value) and "`jobrun certs ca DIR`" in str(e.value)


CRL_CASES: dict[str, tuple[Callable[[Path], bytes | None], str]] = {
    "a missing file": (lambda d: None, "cannot read"),
    "not a CRL": (lambda d: b"garbage\n", "no PEM CRL"),
    "a certificate in it": (
        lambda d: _crl(d) + (d / "alice.crt").read_bytes(),
        "CRLs only",
    ),
    "another CA's CRL": (lambda d: _crl(d.parent / "other"), "not signed by a CA"),
    "an expired CRL": (lambda d: _crl(d, days=-1), "expired"),
}


@pytest.mark.parametrize("case", list(CRL_CASES))
def test_jobrund_refuses_a_crl_it_cannot_use(pki: Path, tmp_path: Path, case: str) -> None:
    make, message = CRL_CASES[case]
    _other_ca(tmp_path)
    crl = tmp_path / "ca.crl"
    data = make(pki)
    if data is not None:
        crl.write_bytes(data)
    with pytest.raises(InvalidArgument, match=message):
        tls.ServerTLS(str(pki / "server.crt"), str(pki / "server.key"), str(pki / "ca.crt"),
                      str(crl))  # fmt: skip


def test_certs_revoke_adds_to_the_crl_and_jobrund_reads_it(pki: Path, tmp_path: Path) -> None:
    from cryptography import x509

    def jobrun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jobrun", "certs", *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    certs.issue(pki, "bob")
    assert jobrun("revoke", str(pki)).returncode == 0  # a list revoking nothing
    assert jobrun("revoke", str(pki), str(pki / "alice.crt")).returncode == 0
    assert jobrun("revoke", str(pki), str(pki / "bob.crt")).returncode == 0
    other = _other_ca(tmp_path)
    certs.issue(other, "mallory")
    wrong = jobrun("revoke", str(pki), str(other / "mallory.crt"))
    assert wrong.returncode == 2 and "not by" in wrong.stderr
    crl = x509.load_pem_x509_crl((pki / "ca.crl").read_bytes())
    serials = {
        x509.load_pem_x509_certificate((pki / f"{n}.crt").read_bytes()).serial_number
        for n in ("alice", "bob")
    }
    assert {e.serial_number for e in crl} == serials
    server = tls.ServerTLS(str(pki / "server.crt"), str(pki / "server.key"),
                           str(pki / "ca.crt"), str(pki / "ca.crl"))  # fmt: skip
    assert {serial for _, serial in server.revoked} == serials
    assert server.context.num_tickets == 0
    assert server.context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
