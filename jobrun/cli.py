"""The `jobrun` command line: thin over the library; prints, and maps errors to exit codes.

Written in typer's default-value option style so that it also runs on Debian 12's typer 0.7.
The options of `start` and `run` are generated from the table in properties.py.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Optional, TypeVar

import typer

from . import __version__
from .errors import EXIT_INTERNAL, InvalidArgument, JobrunError
from .properties import SETTINGS, build_spec, check_paths

if TYPE_CHECKING:
    from .client import Backend

T = TypeVar("T")

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    help="Run commands as jobs: transient systemd services with limits, isolation and "
    "their output in the journal.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _err(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=False)


def fail(e: JobrunError) -> NoReturn:
    _err(f"jobrun: {e.message}")
    if e.hint:
        _err(f"  hint: {e.hint}")
    raise typer.Exit(e.exit_code)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    import asyncio  # here, not at the top: `--version` and `--help` need none of it

    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except JobrunError as e:
        fail(e)
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise typer.Exit(130) from None
    except (typer.Exit, SystemExit):
        raise
    except (EOFError, ConnectionResetError) as e:
        fail(bus_lost(e))
    except Exception as e:
        if os.environ.get("JOBRUN_DEBUG"):
            raise
        raise typer.Exit(internal_error(e)) from None


def bus_lost(e: BaseException) -> JobrunError:
    """dbus-fast's reader ends with EOFError or ConnectionResetError when the bus hangs up."""
    from .errors import SystemdUnavailable

    return SystemdUnavailable(
        f"lost the connection to the system bus ({type(e).__name__}"
        + (f": {e})" if str(e) else ")"),
        "is dbus running (`systemctl status dbus`)? `jobrun doctor` checks the host",
    )


def internal_error(e: BaseException) -> int:
    """A bug: one line for the user, the traceback in a file (crashlog) for `jobrun doctor`."""
    from . import crashlog

    what = " ".join(f"{type(e).__name__}: {e}".split())
    if len(what) > 200:
        what = what[:199] + "…"
    try:
        where = f"details in {crashlog.save(e, _verb())}"
    except (OSError, RuntimeError) as why:
        where = f"its details could not be saved ({why}); JOBRUN_DEBUG=1 shows them"
    _err(f"jobrun: internal error: {what}; {where} — please report it")
    return EXIT_INTERNAL


# Where to run: this host (jobrund or in-process), or a remote jobrund (main_options).
_remote: dict[str, str | None] = {}


def _is_local() -> bool:
    from .remote_client import resolve_target

    return resolve_target(**_remote) is None


async def open_backend() -> Backend:
    from .remote_client import resolve_target

    target = resolve_target(**_remote)
    if target is not None:
        from .remote_client import RemoteBackend

        return await RemoteBackend.open(target)
    from .client import open_backend

    return await open_backend()


# -- start / run: options generated from the settings table ------------------------------------


def _setting_parameters() -> list[inspect.Parameter]:
    params = []
    for s in SETTINGS:
        if s.signature == "b":
            option = typer.Option(None, s.flags, help=s.help, show_default=False)
            annotation: Any = Optional[bool]  # noqa: UP045 - typer 0.7 needs typing.Optional
        elif s.repeat:
            option = typer.Option(None, *s.flags.split("/"), help=s.help, metavar=s.metavar)
            annotation = Optional[list[str]]  # noqa: UP045
        else:
            option = typer.Option(None, *s.flags.split("/"), help=s.help, metavar=s.metavar)
            annotation = Optional[str]  # noqa: UP045
        params.append(
            inspect.Parameter(
                s.field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    params.append(
        inspect.Parameter(
            "name",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--name", help="A label shown in list and status"),
            annotation=Optional[str],  # noqa: UP045
        )
    )
    params.append(
        inspect.Parameter(
            "command",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Argument(None, help="The command and its arguments (after --)"),
            annotation=Optional[list[str]],  # noqa: UP045
        )
    )
    return params


def _with_settings(fn: Callable[..., None]) -> Callable[..., None]:
    fn.__signature__ = inspect.Signature(_setting_parameters())  # type: ignore[attr-defined]
    return fn


_COMMAND_CONTEXT = {"allow_interspersed_args": False}


def _parse(values: dict[str, Any]) -> tuple[list[str], str | None, dict[str, Any]]:
    """Validate here, before anything is started; the backend gets the user's own values."""
    command = list(values.pop("command") or [])
    name = values.pop("name")
    if command and "/" in command[0] and not command[0].startswith("/"):
        command[0] = os.path.abspath(command[0])  # ./build.sh, bin/tool: as a shell finds them
    local = _is_local()
    try:
        if local and values.get("workdir") is None:
            # The job runs where the caller is, as a command in a shell would. (A remote host's
            # jobrund has no use for this host's current directory: there the default stays.)
            values["workdir"] = _current_directory()
        spec = build_spec(command, name=name, **values)
        if local:
            # As the caller, where the caller is: jobrund (root) does not look (security model).
            check_paths(spec, as_root=os.geteuid() == 0)
    except JobrunError as e:
        fail(e)
    return command, name, {k: v for k, v in values.items() if v is not None and v != []}


def _current_directory() -> str:
    try:
        return os.getcwd()
    except OSError as e:
        raise InvalidArgument(
            f"the current directory is gone ({e.strerror})", "cd to a directory, or give -C DIR"
        ) from None


@app.command(context_settings=_COMMAND_CONTEXT)
@_with_settings
def start(**values: Any) -> None:
    """Start COMMAND as a job and print its ID."""
    command, name, options = _parse(values)

    async def go() -> str:
        b = await open_backend()
        try:
            return str((await b.start(command, name, options))["id"])
        finally:
            await b.close()

    print(run_async(go))


@app.command(context_settings=_COMMAND_CONTEXT)
@_with_settings
def run(**values: Any) -> None:
    """Start COMMAND as a job, stream its output, and exit with its exit code."""
    command, name, options = _parse(values)

    # Like a foreground command, the job reads what is piped or redirected to jobrun (as
    # `systemd-run --pipe`; over the remote API, streamed); a terminal is not passed: the job is
    # not in its session.
    stdin = _stdin_to_pass()

    async def go() -> int:
        interrupts = _Interrupts()
        b = await open_backend()
        try:
            job = await b.start(command, name, options, stdin=stdin)
            _err(f"jobrun: job {job['id']} started")
            interrupts.forward_to(b, job["id"])
            out = sys.stdout.buffer
            # aclosing: the reader's own clean-up runs now, not after the bus is gone
            async with contextlib.aclosing(
                b.log_batches(job["id"], follow=True, cursors=False)
            ) as batches:
                async for batch in batches:
                    out.write(b"".join([rec.data for rec in batch]))
                    if batch[-1].line_break != "line-max":
                        out.flush()
            out.flush()
            job = await b.wait(job["id"])
        finally:
            await interrupts.close()
            await b.close()
        if job["state"] != "succeeded":
            _err(f"jobrun: job {job['id']} {job['state']}: {job['reason'] or job['result']}")
        return exit_status(job)

    raise typer.Exit(run_async(go))


def _stdin_to_pass() -> int | None:
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None  # closed, or not a real descriptor (a test's runner)
    return None if os.isatty(fd) else fd


class _Interrupts:
    """Ctrl-C in `jobrun run`, as for a foreground command: the first sends SIGINT to the job's
    processes, the second stops the job, a third leaves it to systemd and exits. jobrun itself
    ends when the job has ended, with its status (130 after a SIGINT death)."""

    def __init__(self) -> None:
        import asyncio
        import signal

        self.count = 0
        self.loop = asyncio.get_running_loop()
        self.main = asyncio.current_task()
        self.tasks: set[asyncio.Task[None]] = set()
        self.backend: Backend | None = None
        self.job_id = ""
        self.loop.add_signal_handler(signal.SIGINT, self._on_sigint)

    def forward_to(self, backend: Backend, job_id: str) -> None:
        """The job is known: act on the interrupts so far (pressed while it was starting)."""
        self.backend, self.job_id = backend, job_id
        for n in range(1, min(self.count, 2) + 1):
            self._act(n)

    def _on_sigint(self) -> None:
        self.count += 1
        if self.count >= 3 or (self.backend is None and self.count >= 2):
            if self.main is not None:
                self.main.cancel()  # run_async turns it into exit 130
        elif self.backend is not None:
            self._act(self.count)

    def _act(self, n: int) -> None:
        import signal

        async def act(backend: Backend) -> None:
            try:
                if n == 1:
                    _err(f"jobrun: sending SIGINT to job {self.job_id} (Ctrl-C again to stop it)")
                    await backend.kill(self.job_id, signal.SIGINT)
                else:
                    _err(f"jobrun: stopping job {self.job_id} (Ctrl-C again to leave it)")
                    await backend.stop(self.job_id, None)
            except JobrunError as e:
                _err(f"jobrun: {e}")

        assert self.backend is not None
        task = self.loop.create_task(act(self.backend))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        import asyncio
        import signal

        self.loop.remove_signal_handler(signal.SIGINT)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def exit_status(job: dict[str, Any]) -> int:
    """A shell's exit status for the job: its own, 128+N for signal N, 127 if it could not run."""
    import signal

    if job["exit_code"] is not None:
        return int(job["exit_code"])
    if job["signal"]:
        try:
            return 128 + int(signal.Signals[job["signal"]])
        except KeyError:
            return 1
    return 127 if (job["reason"] or "").startswith("command not found") else 1


# -- stop / status / list -----------------------------------------------------------------


def complete_job_id(incomplete: str) -> list[str]:
    """Bash completion of a job ID: the caller's jobs of the last day (as `list` shows them),
    running ones first. Nothing at all when jobrun cannot ask (completion must never print)."""
    import asyncio

    async def ids() -> list[str]:
        b = await open_backend()
        try:
            jobs = await b.list(False)
        finally:
            await b.close()
        jobs.sort(key=lambda j: (j["state"] != "running", j["created_at"] or ""), reverse=False)
        return [j["id"] for j in jobs if j["id"].startswith(incomplete)]

    try:
        return asyncio.run(asyncio.wait_for(ids(), 5))
    except Exception:
        return []


def _id_argument() -> Any:
    return typer.Argument(
        ..., metavar="ID", help="Job ID or a unique prefix of it", autocompletion=complete_job_id
    )


_WIDE_HELP = "Everything in full (default: fit the terminal, shortening the command with …)"


@app.command()
def stop(
    job_id: str = _id_argument(),
    timeout: Optional[float] = typer.Option(  # noqa: UP045
        None, "--timeout", "-t", help="Seconds to wait after SIGTERM before SIGKILL"
    ),
) -> None:
    """Stop a job: SIGTERM to all its processes, SIGKILL after the grace period."""

    async def go() -> None:
        b = await open_backend()
        try:
            job, was_running = await b.stop(job_id, timeout)
        finally:
            await b.close()
        if was_running:
            _err(f"jobrun: job {job['id']} {job['state']}")
        else:
            _err(f"jobrun: job {job['id']} had already finished ({job['state']})")

    run_async(go)


WAIT_TIMEOUT_EXIT = 124  # as timeout(1): the jobs were still running when --timeout ran out


@app.command()
def wait(
    job_ids: list[str] = typer.Argument(  # noqa: B008
        ...,
        metavar="ID...",
        help="Job IDs or unique prefixes of them",
        autocompletion=complete_job_id,
    ),
    timeout: Optional[float] = typer.Option(  # noqa: UP045
        None, "--timeout", "-t", min=0, help="Give up after SECONDS (exit status 124)"
    ),
) -> None:
    """Wait until the jobs have ended; exit with the first failing one's status (0: all
    succeeded)."""
    import asyncio

    async def go() -> int:
        b = await open_backend()
        try:
            # Every ID is checked before waiting: a typo is an error now, not after the others.
            jobs = [await b.status(job_id) for job_id in job_ids]
            pending = [j["id"] for j in jobs]

            async def all_of_them() -> None:
                for i, job in enumerate(jobs):
                    if job["state"] == "running":
                        jobs[i] = await b.wait(job["id"])
                    pending.remove(job["id"])

            try:
                await asyncio.wait_for(all_of_them(), timeout)
            except TimeoutError:
                _err(f"jobrun: still running after {timeout:g}s: {' '.join(pending)}")
                return WAIT_TIMEOUT_EXIT
        finally:
            await b.close()
        status = 0
        for job in jobs:
            if job["state"] != "succeeded":
                _err(f"jobrun: job {job['id']} {job['state']}: {job['reason'] or job['result']}")
                status = status or exit_status(job) or 1
        return status

    raise typer.Exit(run_async(go))


@app.command()
def status(
    job_id: str = _id_argument(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
    wide: bool = typer.Option(False, "--wide", "-w", help=_WIDE_HELP),
) -> None:
    """Show a job's state, exit code, limits and resource use."""

    async def go() -> dict[str, Any]:
        b = await open_backend()
        try:
            return await b.status(job_id)
        finally:
            await b.close()

    data = run_async(go)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    from .render import status_table

    status_table(data, wide=wide)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
    all_: bool = typer.Option(False, "--all", "-a", help="Include jobs older than a day"),
    wide: bool = typer.Option(False, "--wide", "-w", help=_WIDE_HELP),
) -> None:
    """List running and recent jobs."""

    async def go() -> list[dict[str, Any]]:
        b = await open_backend()
        try:
            return await b.list(all_)
        finally:
            await b.close()

    rows = run_async(go)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from .render import list_table

    list_table(rows, wide=wide)


def parse_since(text: str) -> datetime:
    """ISO 8601 ('2026-11-24T10:00', a date, with or without zone: local time if none), or a
    time ago: '90s', '5min', '2h', '1d' (also with ' ago')."""
    t = text.strip().removesuffix("ago").strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)", t)
    if m:
        factor = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[m.group(2)]
        return datetime.now(UTC) - timedelta(seconds=float(m.group(1)) * factor)
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise InvalidArgument(
            f"--since takes a time like 2026-11-24T10:00:00 or 5min, not {text!r}"
        ) from None
    return dt if dt.tzinfo else dt.astimezone()


@app.command()
def logs(
    job_id: str = _id_argument(),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends"),
    tail: Optional[int] = typer.Option(  # noqa: UP045
        None, "--tail", "-n", min=0, help="Only the last N lines"
    ),
    since: Optional[str] = typer.Option(  # noqa: UP045
        None, "--since", help="Only output since TIME (ISO 8601, or e.g. 5min ago)"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per journal record (timestamp, cursor, message)"
    ),
) -> None:
    """Print a job's output (stdout and stderr, as written) from its first byte."""
    if tail is not None and since is not None:
        fail(InvalidArgument("--tail and --since exclude each other"))
    try:
        since_dt = parse_since(since) if since is not None else None
    except JobrunError as e:
        fail(e)

    async def go() -> None:
        b = await open_backend()
        out = sys.stdout.buffer
        try:
            batches = b.log_batches(
                job_id, follow=follow, tail=tail, since=since_dt, cursors=as_json
            )
            async with contextlib.aclosing(batches):  # clean up before the bus goes
                async for batch in batches:
                    # One write per batch of records: the per-line cost is the journal's.
                    if as_json:
                        out.write(
                            "".join([json.dumps(record_to_dict(r)) + "\n" for r in batch]).encode()
                        )
                    else:
                        out.write(b"".join([r.data for r in batch]))
                    if follow and batch[-1].line_break != "line-max":
                        out.flush()
        except BrokenPipeError:
            # `jobrun logs ID | head`: the reader is gone. Point stdout at /dev/null so the
            # interpreter's own flush at exit does not complain about the pipe again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        finally:
            with contextlib.suppress(BrokenPipeError):
                out.flush()
            await b.close()

    run_async(go)


def record_to_dict(rec: Any) -> dict[str, Any]:
    """A journal record for `--json`: text when it is UTF-8, base64 of the bytes when not."""
    d: dict[str, Any] = {
        "timestamp": rec.timestamp.isoformat(),
        "cursor": rec.cursor,
        "line_break": str(rec.line_break),
    }
    try:
        d["message"] = rec.message.decode()
    except UnicodeDecodeError:
        d["message"] = None
        d["message_base64"] = base64.b64encode(rec.message).decode()
    return d


@app.command()
def doctor() -> None:
    """Say which mode jobrun uses here and check the host: systemd, cgroups, journal, polkit."""
    from .doctor import run_checks

    mode, checks = run_async(run_checks)
    print(f"mode: {mode}")
    for c in checks:
        mark = {True: "ok", False: "FAIL", None: "warn"}[c.ok]
        print(f"{mark:>4}  {c.name}: {c.detail}")
    if any(c.ok is False for c in checks) or mode.startswith("unavailable"):
        raise typer.Exit(1)


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
    _remote.update(remote=remote, context=context, cert=cert, key=key, ca=ca)


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

    from .certs import make_ca

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

    from .certs import issue

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

    from .certs import issue

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

    from .certs import revoke

    try:
        print(revoke(Path(directory), [Path(c) for c in certificate or []], days=days))
    except JobrunError as e:
        fail(e)


def _verb() -> str:
    return next((a for a in sys.argv[1:] if not a.startswith("-")), "")


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
    """The `jobrun` command. No Python traceback reaches a user: a bug is one line, exit 70."""
    problem = argv_problem(sys.argv[1:])
    if problem:
        _err(f"jobrun: {problem}")
        _err("  hint: convert it, e.g. with iconv -f latin1 -t utf-8")
        sys.exit(InvalidArgument.exit_code)
    import logging

    from .crashlog import CliLogHandler

    logging.getLogger().addHandler(CliLogHandler(_verb()))
    try:
        app(prog_name="jobrun")
    except JobrunError as e:  # raised outside a command's own handling
        _err(f"jobrun: {e.message}")
        if e.hint:
            _err(f"  hint: {e.hint}")
        sys.exit(e.exit_code)
    except Exception as e:
        if os.environ.get("JOBRUN_DEBUG"):
            raise
        sys.exit(internal_error(e))


if __name__ == "__main__":
    main()
