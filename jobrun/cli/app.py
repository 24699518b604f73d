"""The `jobrun` command: its global options, and its entry point."""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from .. import __version__
from ..errors import InvalidArgument, JobrunError
from .common import err, internal_error, remote_options, verb

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    help="Run commands as jobs: transient systemd services with limits, isolation and "
    "their output in the journal.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_callback(value: bool) -> None:
    if value:
        print(f"jobrun {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Show the version"
    ),
    remote: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--remote",
        envvar="JOBRUN_REMOTE",
        metavar="HOST:PORT",
        help="Manage jobs of the jobrund at HOST:PORT (gRPC, mutual TLS 1.3)",
    ),
    context: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--context",
        envvar="JOBRUN_CONTEXT",
        metavar="NAME",
        help="A remote named in ~/.config/jobrun/config.toml",
    ),
    cert: Optional[str] = typer.Option(  # noqa: UP045
        None, "--cert", envvar="JOBRUN_CERT", metavar="FILE", help="Client certificate (PEM)"
    ),
    key: Optional[str] = typer.Option(  # noqa: UP045
        None, "--key", envvar="JOBRUN_KEY", metavar="FILE", help="Its private key (PEM)"
    ),
    ca: Optional[str] = typer.Option(  # noqa: UP045
        None, "--ca", envvar="JOBRUN_CA", metavar="FILE", help="CA of the server's certificate"
    ),
) -> None:
    remote_options.update(remote=remote, context=context, cert=cert, key=key, ca=ca)


def argv_problem(args: list[str]) -> str | None:
    """Python decodes argv bytes that are not UTF-8 to lone surrogates; nothing jobrun passes
    them to (D-Bus, systemd, the job record) can carry them."""
    for i, arg in enumerate(args, 1):
        try:
            arg.encode()
        except UnicodeEncodeError:
            raw = os.fsencode(arg)
            shown = repr(raw if len(raw) <= 80 else raw[:80] + b"...")
            return (
                f"argument {i} ({shown}) is not valid UTF-8 text; jobrun passes only UTF-8 "
                "(systemd's D-Bus API carries nothing else)"
            )
    return None


def main() -> None:
    """The `jobrun` command (its commands registered: the package's import does that). No
    Python traceback reaches a user: a bug is one line, exit 70."""
    problem = argv_problem(sys.argv[1:])
    if problem:
        err(f"jobrun: {problem}")
        err("  hint: convert it, e.g. with iconv -f latin1 -t utf-8")
        sys.exit(InvalidArgument.exit_code)
    import logging

    from ..crashlog import CliLogHandler

    logging.getLogger().addHandler(CliLogHandler(verb()))
    try:
        app(prog_name="jobrun")
    except JobrunError as e:  # raised outside a command's own handling
        err(f"jobrun: {e.message}")
        if e.hint:
            err(f"  hint: {e.hint}")
        sys.exit(e.exit_code)
    except Exception as e:
        if os.environ.get("JOBRUN_DEBUG"):
            raise
        sys.exit(internal_error(e))
