"""Mutual TLS 1.3 for the remote API: the server's and the client's contexts, and who a peer is.

Python's `ssl` rather than grpcio's credentials: grpcio's Python API cannot set a minimum TLS
version (a TLS 1.2 client handshakes with it), `ssl.SSLContext.minimum_version` can, and grpclib
(the gRPC server and client jobrun uses) runs on it (docs/REMOTE.md).

What OpenSSL checks in the handshake: TLS 1.3 only, a client certificate is required and must
chain to the configured CA, be within its validity period and, with a `crl`, not be revoked. What
it does not: a certificate without any extended key usage passes (RFC 5280), so `PeerCheck` also
requires the clientAuth usage itself, and checks revocation again on each call (a connection
opened before the certificate was revoked stays open).

What OpenSSL is given to trust, jobrund checks first (trust.py): a CA of its own, never the
system's trust store, and CRLs only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .errors import InvalidArgument, Unauthenticated
from .trust import Revocations, Serial, read_client_ca, read_crl

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

    def credential(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Serial | None:
        """(issuer, serial) of the certificate `identity` accepted for this peer (schedules
        keep it, so that a revocation stops their firings too)."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = self._seen.get(hashlib.sha256(der).digest()) if der else None
        return seen[1] if seen is not None else None

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
