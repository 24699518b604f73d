"""`jobrun run --scope`: COMMAND in the foreground as the caller's own child, in a scope job.

The CLI forks the child, which waits on a pipe before it execs; jobrund (or the library, for
root) puts it in a new transient scope with the limits (processes.py: the proof that it is the
caller's child); then the child execs COMMAND in the caller's terminal, session and process
group, with the caller's environment (and -E, -C, --cpu-affinity, applied here). The CLI waits
for it and reports how it ended: systemd keeps no exit status of a scope.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import JobrunError
from ..model import JobState
from ..properties import SCOPE_CLIENT, SCOPE_NO, SCOPE_UNIT, SETTINGS
from . import common
from .common import err, run_async

if TYPE_CHECKING:
    from ..model import JobSpec

GO = b"x"  # what the child waits for: it is in its scope
EXIT_NOT_FOUND, EXIT_CANNOT_EXEC = 127, 126  # as a shell's
# What the terminal sends a whole foreground process group: the child's to act on (the CLI
# only waits for it, as a shell does for `time CMD`, and lives to report how it ended; also
# after a hangup, which the kernel sends the child too).
_CHILDS_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
# Python ignores SIGPIPE and SIGXFSZ; an exec'd command gets the defaults back.
_DEFAULTS = (*_CHILDS_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTSTP, signal.SIGTTOU,
             signal.SIGTTIN)  # fmt: skip


def _flags(kind: str) -> str:
    return ", ".join(s.flags.split("/")[0] for s in SETTINGS if s.scope == kind)


HELP = (
    "Run COMMAND in the foreground as your own process (this terminal, its job control and "
    "environment), in a transient scope of its own (jobrun-ID.scope) with the limits a scope "
    f"takes ({_flags(SCOPE_UNIT)}); jobrun applies {_flags(SCOPE_CLIENT)} to the process itself. "
    f"The sandbox ({_flags(SCOPE_NO)}) does not apply to a scope and is refused. Its output "
    "goes to the terminal, not to the journal."
)


def run_scope(command: list[str], name: str | None, options: dict[str, Any],
              spec: JobSpec) -> int:  # fmt: skip
    """Run it; the exit status for jobrun: the command's, or 128+N after signal N."""
    r, w = os.pipe()  # close-on-exec, both
    pid = os.fork()
    if pid == 0:
        _child(r, w, spec)
    os.close(r)
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in _CHILDS_SIGNALS}
    pidfd = -1
    write_end = [w]  # open while the child waits: closing it unstarted makes it exit

    def release(go: bool) -> None:
        if write_end:
            if go:
                # A child killed while it waited (a hangup, Ctrl-C) has closed its end: how it
                # died is what waitpid then reports.
                with contextlib.suppress(BrokenPipeError):
                    os.write(write_end[0], GO)
            os.close(write_end.pop())

    try:
        pidfd = os.pidfd_open(pid)
        status = run_async(lambda: _start_and_wait(command, name, options, pid, pidfd, release))
    finally:
        release(False)
        if pidfd >= 0:
            os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # not started (an error): it exits at the pipe's end
        for s, handler in ignored.items():
            signal.signal(s, handler)
    return status


async def _start_and_wait(
    command: list[str],
    name: str | None,
    options: dict[str, Any],
    pid: int,
    pidfd: int,
    release: Callable[[bool], None],
) -> int:
    from ..processes import Claim, start_time

    b = await common.open_backend()
    try:
        claim = Claim(pid, start_time(pid) or 0, pidfd)
        job = await b.start_scope(command, name, options, claim)
        err(f"jobrun: job {job.id} started ({job.unit})")
        release(True)
        await _exited(pidfd)
        _, wait_status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - it has exited
        code = os.waitstatus_to_exitcode(wait_status)
        try:
            exit_code, signum = (code, None) if code >= 0 else (None, -code)
            job = await b.report_exit(job.id, exit_code, signum)
        except JobrunError as e:
            err(f"jobrun: cannot report how job {job.id} ended: {e.message}")
        else:
            if job.state != JobState.SUCCEEDED:
                err(f"jobrun: job {job.id} {job.state}: {job.outcome.reason}")
        return code if code >= 0 else 128 - code
    finally:
        await b.close()


async def _exited(pidfd: int) -> None:
    """Until the process of `pidfd` has ended (a pidfd is readable then)."""
    import asyncio

    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)


def _child(r: int, w: int, spec: JobSpec) -> NoReturn:
    """The forked child: wait until it is in its scope, then become COMMAND."""
    try:
        for s in _DEFAULTS:
            signal.signal(s, signal.SIG_DFL)
        os.close(w)
        if os.read(r, 1) != GO:
            os._exit(EXIT_CANNOT_EXEC)  # not started: the CLI says why
        os.close(r)
        if spec.workdir is not None:
            os.chdir(spec.workdir)
        if spec.cpu_affinity:
            os.sched_setaffinity(0, spec.cpu_affinity)
        env = dict(os.environ)
        env.update(e.partition("=")[::2] for e in spec.env)
        os.execvpe(spec.command[0], list(spec.command), env)
    except FileNotFoundError:
        _die(f"jobrun: {spec.command[0]}: command not found\n", EXIT_NOT_FOUND)
    except BaseException as e:
        _die(f"jobrun: cannot run {spec.command[0]}: {e}\n", EXIT_CANNOT_EXEC)


def _die(text: str, code: int) -> NoReturn:
    try:
        os.write(2, text.encode(errors="replace"))
    finally:
        os._exit(code)
