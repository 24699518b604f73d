"""Mutual TLS 1.3 for the remote API: the server's and the client's contexts, and who a peer is.

Python's `ssl` rather than grpcio's credentials: grpcio's Python API cannot set a minimum TLS
version (a TLS 1.2 client handshakes with it), `ssl.SSLContext.minimum_version` can, and grpclib
(the gRPC server and client jobrun uses) runs on it (docs/REMOTE.md).

What OpenSSL checks in the handshake: TLS 1.3 only, a client certificate is required and must
chain to the configured CA, and be within its validity period. What it does not: a certificate
without any extended key usage passes (RFC 5280), so `client_identity` also requires the clientAuth
usage itself.
"""

from __future__ import annotations

import hashlib
import ssl
from collections import OrderedDict
from typing import Any

from .errors import InvalidArgument, Unauthenticated

ALPN = ["h2"]  # grpcio clients insist on it


def _context(purpose: int, cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(ALPN)
    try:
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
    except (OSError, ssl.SSLError) as e:
        raise InvalidArgument(
            f"cannot load the TLS certificate {cert}, key {key} or CA {ca}: {e}",
            "make them with `jobrun certs` (docs/REMOTE.md)",
        ) from e
    return ctx


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    return _context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)


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
    """Identity of verified peers, with the clientAuth check, remembered per certificate."""

    def __init__(self, size: int = 1024) -> None:
        self._seen: OrderedDict[bytes, str] = OrderedDict()
        self._size = size

    def identity(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
        """The CN of a peer's certificate (verified by the handshake); Unauthenticated if it
        has none, no CN, or no clientAuth usage."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            raise Unauthenticated("no client certificate", "connect with --cert and --key")
        digest = hashlib.sha256(der).digest()
        name = self._seen.get(digest)
        if name is not None:
            self._seen.move_to_end(digest)
            return name
        if not has_client_auth(der):
            raise Unauthenticated(
                "the client certificate is not for client authentication (no clientAuth usage)",
                "issue one with `jobrun certs client`",
            )
        assert ssl_object is not None
        name = common_name(ssl_object.getpeercert() or {})
        if not name:
            raise Unauthenticated("the client certificate has no subject CN to name its user")
        self._seen[digest] = name
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return name


def has_client_auth(der: bytes) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert = x509.load_der_x509_certificate(der)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku
