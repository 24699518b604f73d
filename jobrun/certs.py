"""A small certificate authority for trying the remote API: `jobrun certs ca|server|client|revoke`.

    jobrun certs ca DIR                               DIR/ca.crt, DIR/ca.key
    jobrun certs server DIR --host jobs.example.com   DIR/server.crt, DIR/server.key
    jobrun certs client DIR alice                     DIR/alice.crt, DIR/alice.key (CN=alice)
    jobrun certs revoke DIR DIR/alice.crt             DIR/ca.crl (jobrund's `crl`), alice added

EC P-256 keys, written 0600. Server certificates carry serverAuth and a subjectAltName per
--host (DNS name or IP address); client certificates carry clientAuth and the user's name as the
subject CN, which is who the remote jobrund takes the caller to be. For production, use your own
PKI: jobrund only needs a CA file, and client certificates with a CN and the clientAuth usage.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import InvalidArgument
from .trust import utc_time

DAYS = 365


def _modules() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as e:
        raise InvalidArgument(
            "`jobrun certs` needs the cryptography package",
            "apt-get install python3-cryptography, or pip install 'jobrun[remote]'",
        ) from e
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _check_free(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            raise InvalidArgument(f"{p} exists already", "remove it, or use another directory")


def make_ca(directory: Path, name: str = "jobrun test CA", days: int = DAYS) -> Path:
    x509, hashes, serialization, ec, _, NameOID = _modules()
    directory.mkdir(parents=True, exist_ok=True)
    crt, key_path = directory / "ca.crt", directory / "ca.key"
    _check_free(crt, key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key, serialization), private=True)
    _write(crt, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return crt


def _load_ca(ca_dir: Path) -> tuple[Any, Any]:
    """The CA's private key and certificate, from a directory `make_ca` wrote."""
    x509, _, serialization, _, _, _ = _modules()
    try:
        ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    except (OSError, ValueError) as e:
        raise InvalidArgument(
            f"cannot read the CA in {ca_dir}: {e}", f"make one with `jobrun certs ca {ca_dir}`"
        ) from e
    return ca_key, ca_cert


def _key_pem(key: Any, serialization: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def issue(
    ca_dir: Path,
    name: str,
    *,
    server: bool = False,
    hosts: Sequence[str] = (),
    days: int = DAYS,
    out_dir: Path | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    usages: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """A certificate and key signed by ca_dir's CA: OUT/NAME.crt and OUT/NAME.key (OUT=ca_dir).

    `usages` overrides the extended key usages ("clientAuth", "serverAuth"; [] for none) — for
    tests of what jobrund must refuse; so do `not_before`/`not_after`."""
    x509, hashes, serialization, ec, EKU, NameOID = _modules()
    if not name or "/" in name or name.startswith("."):
        raise InvalidArgument(f"{name!r} is not a usable certificate name")
    out_dir = out_dir or ca_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    file = "server" if server else name
    crt, key_path = out_dir / f"{file}.crt", out_dir / f"{file}.key"
    _check_free(crt, key_path)
    ca_key, ca_cert = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    if usages is None:
        usages = ["serverAuth"] if server else ["clientAuth"]
    oids = {"clientAuth": EKU.CLIENT_AUTH, "serverAuth": EKU.SERVER_AUTH}
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=5))
        .not_valid_after(not_after or now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if usages:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([oids[u] for u in usages]), critical=False
        )
    if server:
        alt: list[Any] = []
        for h in hosts or [name]:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                alt.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, _key_pem(key, serialization), private=True)
    _write(crt, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return crt, key_path


def revoke(ca_dir: Path, certificates: Sequence[Path] = (), days: int = DAYS) -> Path:
    """Write ca_dir/ca.crl: the CA's revocation list, with the serials of `certificates` added to
    those of the ca.crl already there (none: a fresh list, to renew it or to start one).

    Replaced atomically (a new file renamed over the old one), so that jobrund, which re-reads it
    when it changes, never sees half of it. It expires after `days`: jobrund refuses every client
    once its CRL is past its nextUpdate (OpenSSL's rule), so run this again before then."""
    x509, hashes, serialization, _, _, _ = _modules()
    ca_key, ca_cert = _load_ca(ca_dir)
    out = ca_dir / "ca.crl"
    now = datetime.now(UTC)
    revoked: dict[int, datetime] = {}
    if out.exists():
        try:
            old = x509.load_pem_x509_crl(out.read_bytes())
        except ValueError as e:
            raise InvalidArgument(f"{out} is not a PEM CRL: {e}", "move it away first") from e
        if old.issuer != ca_cert.subject or not old.is_signature_valid(ca_cert.public_key()):
            raise InvalidArgument(f"{out} was not issued by {ca_dir}/ca.crt", "move it away first")
        for entry in old:
            revoked[entry.serial_number] = utc_time(entry, "revocation_date") or now
    for path in certificates:
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"cannot read the certificate {path}: {e}") from e
        if not _issued_by(cert, ca_cert):
            raise InvalidArgument(
                f"{path} was issued by {cert.issuer.rfc4514_string()}, not by {ca_dir}/ca.crt"
            )
        revoked.setdefault(cert.serial_number, now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + timedelta(days=days))
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    tmp = ca_dir / f".ca.crl.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    _write(tmp, crl.public_bytes(serialization.Encoding.PEM), private=False)
    os.replace(tmp, out)
    return out


def _issued_by(cert: Any, ca: Any) -> bool:
    """Whether ca signed cert; by name only where cryptography cannot check the signature (< 40),
    though every `jobrun certs ca` has the same name by default."""
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except AttributeError:
        return True
    except Exception:  # InvalidSignature, or a key of a type it does not verify
        return False
    return True
