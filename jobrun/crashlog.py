"""Details of the CLI's internal errors (bugs), kept for `jobrun doctor` and bug reports.

A user sees one line and exit status 70; the traceback goes to a file of their own, so that it
is there whoever runs jobrun (root, a user without journal access) and needs no running journal.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from . import __version__

MAX_BYTES = 256 * 1024  # then the file becomes .old and a new one starts: two at most
ENTRY = "--- internal error "


def log_path() -> Path:
    """$XDG_STATE_HOME/jobrun/internal-errors.log (~/.local/state by default)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    state = Path(base) if base.startswith("/") else Path.home() / ".local" / "state"
    return state / "jobrun" / "internal-errors.log"


def save(exc: BaseException, verb: str, note: str = "") -> Path:
    """Append the traceback of `exc`; OSError (or RuntimeError: no home) if it cannot be saved.

    Only the verb is recorded, not the arguments: they may hold secrets (-E TOKEN=…).
    """
    path = log_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_size > MAX_BYTES:
            path.replace(path.with_name(path.name + ".old"))
    except FileNotFoundError:
        pass
    when = datetime.now(UTC).isoformat(timespec="seconds")
    text = (
        f"{ENTRY}{when} jobrun {__version__} `{verb}` pid {os.getpid()}\n"
        + (f"{note}\n" if note else "")
        + "".join(traceback.format_exception(exc))
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode(errors="backslashreplace"))
    finally:
        os.close(fd)
    return path


def last() -> tuple[int, str, str] | None:
    """How many internal errors the file holds, the last one's header and its final line."""
    try:
        path = log_path()
        text = path.read_text(errors="replace")
    except (OSError, RuntimeError):
        return None
    entries = text.split(ENTRY)[1:]
    if not entries:
        return None
    lines = entries[-1].strip().splitlines()
    return len(entries), lines[0], lines[-1]


class CliLogHandler(logging.Handler):
    """Log records of the libraries in the CLI: a warning is one line on stderr; a traceback
    (asyncio's "Future exception was never retrieved" after the bus hung up, say) goes to the
    file, as the user has already been told what went wrong."""

    def __init__(self, verb: str) -> None:
        super().__init__(logging.WARNING)
        self.verb = verb

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                save(record.exc_info[1], self.verb, f"{record.name}: {message}")
            else:
                sys.stderr.write(f"jobrun: {message}\n")
        except Exception:  # a record that cannot be written must not become a traceback
            pass
