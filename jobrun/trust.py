"""What jobrund trusts for client certificates: the CA file and the revocation lists of
`[remote]`, each read and checked before tls.py hands it to OpenSSL.

The CA file must be a CA of jobrund's own (`read_client_ca`): every certificate it trusts names a
user by its CN, so a public CA there would let anyone it certifies under an admin's name be admin.
A CRL file must hold CRLs only, signed by that CA and current (`read_crl`).
"""

from __future__ import annotations

import os
import re
import ssl
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

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
