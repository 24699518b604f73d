"""`start` and `run`: a job in the background, or in the foreground as a command would run."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

import typer

from ..errors import InvalidArgument, JobrunError
from ..model import JobState
from . import common
from .app import app
from .common import err, run_async
from .pty import HELP as PTY_HELP
from .schedule import pop_when, start_scheduled, with_schedule_options
from .scope import HELP as SCOPE_HELP
from .settings import COMMAND_CONTEXT, parse, parse_spec, with_settings, with_settings_and

if TYPE_CHECKING:
    from ..client.backend import Backend
    from ..model import Job


@app.command(context_settings=COMMAND_CONTEXT)
@with_schedule_options
@with_settings
def start(**values: Any) -> None:
    """Start COMMAND as a job and print its ID (with --at, --in or --every: later, as a
    schedule, and print the schedule's ID)."""
    when = pop_when(values)
    command, name, options = parse(values)
    if when is not None:
        start_scheduled(command, name, options, when)
        return

    async def go() -> str:
        b = await common.open_backend()
        try:
            return (await b.start(command, name, options)).id
        finally:
            await b.close()

    print(run_async(go))


@app.command(context_settings=COMMAND_CONTEXT)
@with_settings_and(("scope", "--scope", SCOPE_HELP), ("pty", "--pty", PTY_HELP))
def run(**values: Any) -> None:
    """Start COMMAND as a job, stream its output, and exit with its exit code."""
    if values.pop("pty"):
        from .pty import run_pty

        if values.pop("scope"):
            common.fail(InvalidArgument("--pty and --scope cannot go together",
                                        "--scope runs it in this terminal already"))  # fmt: skip
        if not common.is_local():
            from ..client.remote import no_pty_error

            common.fail(no_pty_error())
        raise typer.Exit(run_pty(*parse(values)))
    if values.pop("scope"):
        from .scope import run_scope

        command, name, options, spec = parse_spec(values, scope=True)
        raise typer.Exit(run_scope(command, name, options, spec))
    command, name, options = parse(values)

    # Like a foreground command, the job reads what is piped or redirected to jobrun (as
    # `systemd-run --pipe`; over the remote API, streamed); a terminal is not passed: the job is
    # not in its session.
    stdin = _stdin_to_pass()

    async def go() -> int:
        interrupts = _Interrupts()
        b = await common.open_backend()
        try:
            job = await b.start(command, name, options, stdin=stdin)
            err(f"jobrun: job {job.id} started")
            interrupts.forward_to(b, job.id)
            out = sys.stdout.buffer
            # aclosing: the reader's own clean-up runs now, not after the bus is gone
            async with contextlib.aclosing(
                b.log_batches(job.id, follow=True, cursors=False)
            ) as batches:
                async for batch in batches:
                    out.write(b"".join([rec.data for rec in batch]))
                    if batch[-1].line_break != "line-max":
                        out.flush()
            out.flush()
            job = await b.wait(job.id)
        finally:
            await interrupts.close()
            await b.close()
        if job.state != JobState.SUCCEEDED:
            err(f"jobrun: job {job.id} {job.state}: {job.outcome.reason or job.outcome.result}")
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
                    err(f"jobrun: sending SIGINT to job {self.job_id} (Ctrl-C again to stop it)")
                    await backend.kill(self.job_id, signal.SIGINT)
                else:
                    err(f"jobrun: stopping job {self.job_id} (Ctrl-C again to leave it)")
                    await backend.stop(self.job_id, None)
            except JobrunError as e:
                err(f"jobrun: {e}")

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


def exit_status(job: Job) -> int:
    """A shell's exit status for the job: its own, 128+N for signal N, 127 if it could not run."""
    import signal

    o = job.outcome
    if o.exit_code is not None:
        return o.exit_code
    if o.signal:
        try:
            return 128 + int(signal.Signals[o.signal])
        except KeyError:
            return 1
    return 127 if (o.reason or "").startswith("command not found") else 1


# -- stop / status / list -----------------------------------------------------------------
