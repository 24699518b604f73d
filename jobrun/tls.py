"""Mutual TLS 1.3 for the remote API: the server's and the client's contexts, and who a peer is.

Python's `ssl` rather than grpcio's credentials: grpcio's Python API cannot set a minimum TLS
version (a TLS 1.2 client handshakes with it), `ssl.SSLContext.minimum_version` can, and grpclib
(the gRPC server and client jobrun uses) runs on it (docs/REMOTE.md).

What OpenSSL checks in the handshake: TLS 1.3 only, a client certificate is required and must
chain to the configured CA, be within its validity period and, with a `crl`, not be revoked. What
it does not: a certificate without any extended key usage passes (RFC 5280), so `PeerCheck` also
requires the clientAuth usage itself, and checks revocation again on each call (a connection
opened before the certificate was revoked stays open).

The CA file must be a CA of jobrund's own (`read_client_ca`): every certificate it trusts names a
user by its CN, so a public CA there would let anyone it certifies under an admin's name be admin.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import InvalidArgument, Unauthenticated

log = logging.getLogger("jobrund.remote")

ALPN = ["h2"]  # grpcio clients insist on it


def _context(
    purpose: int, cert: str, key: str, ca: str, cadata: str | None = None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(ALPN)
    try:
        ctx.load_cert_chain(cert, key)
        if cadata is None:
            ctx.load_verify_locations(ca)
        else:
            ctx.load_verify_locations(cadata=cadata)
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgument(
            f"cannot load the TLS certificate {cert}, key {key} or CA {ca}: {e}",
            "make them with `jobrun certs` (docs/REMOTE.md)",
        ) from e
    return ctx


# -- the server: a dedicated CA, and revocation -----------------------------------------------

# Where distributions keep the system-wide trust store (Debian/Ubuntu, Fedora/RHEL, SUSE, Arch,
# Alpine), besides what OpenSSL itself was built to use (ssl.get_default_verify_paths).
SYSTEM_TRUST_DIRS = (
    "/etc/ssl/certs",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    "/etc/ca-certificates",
    "/etc/pki",
    "/usr/share/pki",
    "/var/lib/ca-certificates",
)
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
# A CA of one's own is one certificate, two while it is being replaced, a few with intermediates;
# a public bundle holds well over a hundred (Debian 12: 144).
MAX_CA_CERTS = 8
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)
_OWN_CA = "give jobrund a CA of its own for client certificates: `jobrun certs ca DIR` makes one"


def _pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(m[1].decode(), m[0]) for m in _PEM.finditer(data)]


def _system_trust() -> tuple[list[str], list[str]]:
    """(directories, bundle files) of the system's trust store, symlinks resolved."""
    paths = ssl.get_default_verify_paths()
    dirs = [*SYSTEM_TRUST_DIRS, paths.capath, paths.openssl_capath]
    files = [*SYSTEM_BUNDLES, paths.cafile, paths.openssl_cafile]
    return (
        sorted({os.path.realpath(d) for d in dirs if d} | {d for d in dirs if d}),
        sorted({os.path.realpath(f) for f in files if f} | {f for f in files if f}),
    )


def _in_dir(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _spki(der: bytes) -> bytes | None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        with warnings.catch_warnings():  # old public roots break RFC 5280 (a serial of 0…)
            warnings.simplefilter("ignore")
            key = x509.load_der_x509_certificate(der).public_key()
        return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except ValueError:  # a key type or encoding this cryptography does not read
        return None


def _system_roots(bundles: list[str]) -> tuple[set[bytes], set[bytes]]:
    """The DER and the public keys (SubjectPublicKeyInfo) of every certificate in the system's
    bundles that exist here."""
    ders: set[bytes] = set()
    for bundle in bundles:
        try:
            data = Path(bundle).read_bytes()
        except OSError:
            continue
        for kind, block in _pem_blocks(data):
            if kind in ("CERTIFICATE", "TRUSTED CERTIFICATE"):
                ders.add(ssl.PEM_cert_to_DER_cert(block.decode().replace(kind, "CERTIFICATE")))
    return ders, {k for k in map(_spki, ders) if k is not None}


def read_client_ca(path: str) -> str:
    """The PEM text of `[remote] ca`, checked to be a CA of jobrund's own: InvalidArgument if it
    is (or resolves to) a file of the system's trust store, holds more than MAX_CA_CERTS
    certificates, or any certificate (or public key) that is also in a system bundle. jobrund
    loads exactly the text checked here, never the file again."""
    risk = (
        "anyone holding a certificate from such a CA with the name of a remote user as its CN "
        "would be that user (an admin's name: admin)"
    )
    dirs, bundles = _system_trust()
    real = os.path.realpath(path)
    for p in dict.fromkeys((path, real)):
        if p in bundles or any(_in_dir(p, d) for d in dirs):
            via = f" (via symlinks: {real})" if p != path else ""
            raise InvalidArgument(
                f"[remote] ca = {path}{via} is part of the system's trust store: {risk}", _OWN_CA
            )
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read [remote] ca {path}: {e}", _OWN_CA) from e
    blocks = [block for kind, block in _pem_blocks(data) if kind == "CERTIFICATE"]
    if not blocks:
        raise InvalidArgument(f"[remote] ca = {path} holds no PEM certificate", _OWN_CA)
    if len(blocks) > MAX_CA_CERTS:
        raise InvalidArgument(
            f"[remote] ca = {path} holds {len(blocks)} certificates, more than a CA of jobrund's "
            f"own would ({MAX_CA_CERTS} at most): it looks like a public trust bundle, and {risk}",
            _OWN_CA,
        )
    ders, keys = _system_roots(bundles)
    for block in blocks:
        der = ssl.PEM_cert_to_DER_cert(block.decode())
        if der in ders or _spki(der) in keys:
            raise InvalidArgument(
                f"[remote] ca = {path} holds {_subject(der)}, a CA the system trusts "
                f"(it is in {' or '.join(b for b in bundles if os.path.exists(b))}): {risk}",
                _OWN_CA,
            )
    return "\n".join(block.decode() for block in blocks)


def _subject(der: bytes) -> str:
    from cryptography import x509

    return str(x509.load_der_x509_certificate(der).subject.rfc4514_string())


def utc_time(obj: Any, attr: str) -> datetime | None:
    """obj.<attr>_utc (cryptography ≥ 42, which deprecates the naive one) or obj.<attr> as UTC
    (Debian 12's cryptography 38)."""
    if hasattr(obj, f"{attr}_utc"):
        return getattr(obj, f"{attr}_utc")  # type: ignore[no-any-return]
    value: datetime | None = getattr(obj, attr)
    return value.replace(tzinfo=UTC) if value is not None else None


Serial = tuple[bytes, int]  # a certificate's issuer (DER of its Name) and serial number


@dataclass(frozen=True)
class Revocations:
    pem: bytes  # the CRLs only, as read
    revoked: frozenset[Serial]


def read_crl(path: str, ca_pem: str) -> Revocations:
    """The CRLs in `[remote] crl` (PEM, one or more), each checked to be signed by a CA of
    `ca_pem` and not expired, and one for every CA there (OpenSSL refuses a client whose CA has
    none). Anything but CRLs is refused: OpenSSL would trust a certificate found in this file."""
    from cryptography import x509

    hint = "make one with `jobrun certs revoke DIR` (docs/REMOTE.md)"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"cannot read [remote] crl {path}: {e}", hint) from e
    blocks = _pem_blocks(data)
    others = sorted({kind for kind, _ in blocks if kind != "X509 CRL"})
    if others:
        raise InvalidArgument(
            f"[remote] crl = {path} holds {', '.join(others)}: it must hold CRLs only "
            "(OpenSSL would take a certificate there as one more CA)",
            hint,
        )
    if not blocks:
        raise InvalidArgument(f"[remote] crl = {path} holds no PEM CRL", hint)
    cas = [x509.load_pem_x509_certificate(b) for _, b in _pem_blocks(ca_pem.encode())]
    now = datetime.now(UTC)
    revoked: set[Serial] = set()
    covered: set[bytes] = set()
    for _, block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError as e:
            raise InvalidArgument(f"[remote] crl = {path}: unreadable CRL: {e}", hint) from e
        issuer = crl.issuer.rfc4514_string()
        keys: list[Any] = [ca.public_key() for ca in cas if ca.subject == crl.issuer]
        if not any(crl.is_signature_valid(key) for key in keys):
            raise InvalidArgument(
                f"[remote] crl = {path}: the CRL of {issuer} is not signed by a CA of [remote] ca",
                hint,
            )
        next_update = utc_time(crl, "next_update")
        if next_update is not None and next_update < now:
            raise InvalidArgument(
                f"[remote] crl = {path}: the CRL of {issuer} expired at "
                f"{next_update:%Y-%m-%d %H:%M} UTC, and OpenSSL would refuse every client "
                "certificate with it",
                f"issue a new one ({hint})",
            )
        name = crl.issuer.public_bytes()
        covered.add(name)
        try:
            revoked.update((name, entry.serial_number) for entry in crl)
        except ValueError as e:  # cryptography parses the entries only now
            raise InvalidArgument(f"[remote] crl = {path}: unreadable CRL: {e}", hint) from e
    for ca in cas:
        if ca.subject.public_bytes() not in covered:
            raise InvalidArgument(
                f"[remote] crl = {path} has no CRL of {ca.subject.rfc4514_string()}, and OpenSSL "
                "would refuse every client certificate it issued",
                hint,
            )
    return Revocations(b"\n".join(b for _, b in blocks), frozenset(revoked))


def _stamp(path: str) -> tuple[int, ...]:
    """What changes when the file is rewritten or replaced (a stat: 1.2 µs measured)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return (-1, e.errno or 0)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ServerTLS:
    """jobrund's TLS: the context the server listens with and, with a CRL, the revocations,
    read again when the CRL file changes.

    asyncio wraps every connection with the one context it was given, so a new CRL goes into a
    new context that each handshake switches to from the first one's server-name callback (which
    OpenSSL calls for every ClientHello, with SNI or without, before it looks at the client's
    certificate); the first context's verify flags carry on, and are the same. TLS 1.3 session
    tickets are off: resuming a session skips the certificate, and with it the revocation check.
    A file that cannot be used at start is an error; later, the last good one stays in force and
    the error is logged (docs/REMOTE.md).
    """

    def __init__(self, cert: str, key: str, ca: str, crl: str | None = None) -> None:
        self._cert, self._key, self._ca, self._crl = cert, key, ca, crl
        self._ca_pem = read_client_ca(ca)
        self.revoked: frozenset[Serial] = frozenset()
        if crl is None:
            self.context = self._build(None)
        else:
            self._stamp = _stamp(crl)
            revocations = read_crl(crl, self._ca_pem)
            self.context = self._build(revocations)
            self.revoked = revocations.revoked
            self.context.sni_callback = self._on_hello
        self._current = self.context

    def _build(self, revocations: Revocations | None) -> ssl.SSLContext:
        ctx = _context(ssl.PROTOCOL_TLS_SERVER, self._cert, self._key, self._ca, self._ca_pem)
        ctx.num_tickets = 0
        if revocations is not None:
            # OpenSSL reads CRLs only from a file: give it the very bytes checked.
            fd = os.memfd_create("jobrun-crl", os.MFD_CLOEXEC)
            try:
                with os.fdopen(os.dup(fd), "wb") as f:
                    f.write(revocations.pem)
                ctx.load_verify_locations(cafile=f"/proc/self/fd/{fd}")
            except (OSError, ssl.SSLError) as e:
                raise InvalidArgument(f"cannot load [remote] crl {self._crl}: {e}") from e
            finally:
                os.close(fd)
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx

    def _on_hello(self, ssl_object: ssl.SSLObject, server_name: str | None, ctx: Any) -> None:
        try:
            self.refresh()
        except Exception:  # an exception here would only fail this handshake, unlogged
            log.exception("reading [remote] crl %s again failed", self._crl)
        if self._current is not ctx:
            ssl_object.context = self._current

    def refresh(self) -> bool:
        """Read the CRL again if its file changed; whether the new one is now in force."""
        if self._crl is None:
            return False
        stamp = _stamp(self._crl)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            revocations = read_crl(self._crl, self._ca_pem)
            ctx = self._build(revocations)
        except InvalidArgument as e:
            log.error("%s; the revocation list read before stays in force", e)
            return False
        self._current, self.revoked = ctx, revocations.revoked
        log.info(
            "read [remote] crl %s again: %d revoked certificate(s)",
            self._crl,
            len(revocations.revoked),
        )
        return True


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca)
    ctx.check_hostname = True  # the server's certificate must name the host we dial
    return ctx


def common_name(cert: dict[str, Any]) -> str | None:
    """The subject's CN from `ssl.SSLObject.getpeercert()`'s dict form."""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class PeerCheck:
    """Identity of verified peers, with the clientAuth check, remembered per certificate; and
    whether the certificate is revoked now, on every call."""

    def __init__(
        self, size: int = 1024, revoked: Callable[[], frozenset[Serial]] = frozenset
    ) -> None:
        self._seen: OrderedDict[bytes, tuple[str, Serial]] = OrderedDict()
        self._size = size
        self._revoked = revoked

    def identity(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
        """The CN of a peer's certificate (verified by the handshake); Unauthenticated if it
        has none, no CN, no clientAuth usage, or was revoked since the connection was opened."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise Unauthenticated("no client certificate", "connect with --cert and --key")
        digest = hashlib.sha256(der).digest()
        seen = self._seen.get(digest)
        if seen is not None:
            self._seen.move_to_end(digest)
        else:
            seen = self._check(der, ssl_object)
            self._seen[digest] = seen
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        name, serial = seen
        if serial in self._revoked():
            raise Unauthenticated(
                "the client certificate was revoked", "ask the server's admin for a new one"
            )
        return name

    @staticmethod
    def _check(der: bytes, ssl_object: Any) -> tuple[str, Serial]:
        from cryptography import x509

        if not has_client_auth(der):
            raise Unauthenticated(
                "the client certificate is not for client authentication (no clientAuth usage)",
                "issue one with `jobrun certs client`",
            )
        name = common_name(ssl_object.getpeercert() or {})
        if not name:
            raise Unauthenticated("the client certificate has no subject CN to name its user")
        cert = x509.load_der_x509_certificate(der)
        return name, (cert.issuer.public_bytes(), cert.serial_number)


def has_client_auth(der: bytes) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert = x509.load_der_x509_certificate(der)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku
