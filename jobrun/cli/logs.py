"""`logs`: a job's output, as it wrote it or as JSON records."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Optional

import typer

from ..errors import InvalidArgument, JobrunError
from . import common
from .app import app
from .common import fail, run_async
from .jobs import id_argument


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
    job_id: str = id_argument(),
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
        from ..wire.logs import json_lines

        b = await common.open_backend()
        out = sys.stdout.buffer
        try:
            batches = b.log_batches(
                job_id, follow=follow, tail=tail, since=since_dt, cursors=as_json
            )
            async with contextlib.aclosing(batches):  # clean up before the bus goes
                async for batch in batches:
                    # One write per batch of records: the per-line cost is the journal's.
                    if as_json:
                        out.write(json_lines(batch))
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
