"""`doctor` and `certs`: the host's readiness, and certificates for trying the remote API."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import JobrunError
from .app import app
from .common import fail, run_async


@app.command()
def doctor() -> None:
    """Say which mode jobrun uses here and check the host: systemd, cgroups, journal, polkit."""
    from ..doctor import run_checks

    mode, checks = run_async(run_checks)
    print(f"mode: {mode}")
    for c in checks:
        mark = {True: "ok", False: "FAIL", None: "warn"}[c.ok]
        print(f"{mark:>4}  {c.name}: {c.detail}")
    if any(c.ok is False for c in checks) or mode.startswith("unavailable"):
        raise typer.Exit(1)


certs_app = typer.Typer(
    help="Make a CA, server and client certificates for trying the remote API.",
    no_args_is_help=True,
)
app.add_typer(certs_app, name="certs")


@certs_app.command("ca")
def certs_ca(
    directory: str = typer.Argument(..., metavar="DIR", help="Where ca.crt and ca.key go"),
    days: int = typer.Option(365, "--days", min=1, help="Validity"),
) -> None:
    """Make a CA: DIR/ca.crt (give it to jobrund and clients) and DIR/ca.key (keep it)."""
    from pathlib import Path

    from ..certs import make_ca

    try:
        print(make_ca(Path(directory), days=days))
    except JobrunError as e:
        fail(e)


@certs_app.command("server")
def certs_server(
    directory: str = typer.Argument(..., metavar="DIR", help="The CA's directory"),
    host: Optional[list[str]] = typer.Option(  # noqa: UP045, B008
        None, "--host", help="A DNS name or IP address clients dial (repeat)"
    ),
    days: int = typer.Option(365, "--days", min=1, help="Validity"),
) -> None:
    """Issue DIR/server.crt and DIR/server.key for jobrund, for each --host."""
    from pathlib import Path

    from ..certs import issue

    hosts = host or ["localhost", "127.0.0.1", "::1"]
    try:
        crt, key = issue(Path(directory), hosts[0], server=True, hosts=hosts, days=days)
    except JobrunError as e:
        fail(e)
    print(crt)
    print(key)


@certs_app.command("client")
def certs_client(
    directory: str = typer.Argument(..., metavar="DIR", help="The CA's directory"),
    name: str = typer.Argument(..., metavar="NAME", help="The user (the certificate's CN)"),
    days: int = typer.Option(365, "--days", min=1, help="Validity"),
) -> None:
    """Issue DIR/NAME.crt and DIR/NAME.key: a client certificate for user NAME."""
    from pathlib import Path

    from ..certs import issue

    try:
        crt, key = issue(Path(directory), name, days=days)
    except JobrunError as e:
        fail(e)
    print(crt)
    print(key)


@certs_app.command("revoke")
def certs_revoke(
    directory: str = typer.Argument(..., metavar="DIR", help="The CA's directory"),
    certificate: Optional[list[str]] = typer.Argument(  # noqa: UP045, B008
        None, metavar="[CERT]...", help="Certificates (PEM files) to revoke"
    ),
    days: int = typer.Option(365, "--days", min=1, help="Until the list must be renewed"),
) -> None:
    """Write DIR/ca.crl, jobrund's `crl`: the CA's revoked certificates, CERT... added (none:
    renew the list)."""
    from pathlib import Path

    from ..certs import revoke

    try:
        print(revoke(Path(directory), [Path(c) for c in certificate or []], days=days))
    except JobrunError as e:
        fail(e)
