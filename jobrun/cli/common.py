"""What every `jobrun` command shares: errors as messages and exit codes, the event loop, and
where the jobs are (this host or a remote jobrund, from the global options)."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

from ..errors import EXIT_INTERNAL, JobrunError

if TYPE_CHECKING:
    from ..client.backend import Backend

T = TypeVar("T")


def err(text: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=False)


def fail(e: JobrunError) -> NoReturn:
    err(f"jobrun: {e.message}")
    if e.hint:
        err(f"  hint: {e.hint}")
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
    from ..errors import SystemdUnavailable

    return SystemdUnavailable(
        f"lost the connection to the system bus ({type(e).__name__}"
        + (f": {e})" if str(e) else ")"),
        "is dbus running (`systemctl status dbus`)? `jobrun doctor` checks the host",
    )


def internal_error(e: BaseException) -> int:
    """A bug: one line for the user, the traceback in a file (crashlog) for `jobrun doctor`."""
    from .. import crashlog

    what = " ".join(f"{type(e).__name__}: {e}".split())
    if len(what) > 200:
        what = what[:199] + "…"
    try:
        where = f"details in {crashlog.save(e, verb())}"
    except (OSError, RuntimeError) as why:
        where = f"its details could not be saved ({why}); JOBRUN_DEBUG=1 shows them"
    err(f"jobrun: internal error: {what}; {where} — please report it")
    return EXIT_INTERNAL


def verb() -> str:
    return next((a for a in sys.argv[1:] if not a.startswith("-")), "")


# Where to run: this host (jobrund or in-process), or a remote jobrund (the global options).
remote_options: dict[str, str | None] = {}


def is_local() -> bool:
    from ..client.target import resolve_remote

    return resolve_remote(**remote_options) is None


async def open_backend() -> Backend:
    from ..client import target

    return await target.connect(target.resolve_remote(**remote_options))
