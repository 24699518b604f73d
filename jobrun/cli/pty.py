"""`jobrun run --pty`: COMMAND as a job with a terminal of its own, relayed to this one.

jobrun opens a pseudo-terminal pair, gives the slave to the job (jobrun/pty.py: its stdio and
controlling terminal) and relays: this terminal (in raw mode, restored however jobrun ends) to
the master, the master to stdout, and this terminal's size (at once and on each SIGWINCH). Keys
such as Ctrl-C and Ctrl-Z reach the job through its terminal's line discipline, as in a local
shell. jobrun keeps its copy of the slave open while the job runs (so the terminal is there
when systemd opens it): the job's end is what `wait` reports, not the master's EIO. Then jobrun
closes the slave, reads the master to its end (EIO: the job's last output, however late the
kernel passes it on) and exits with the job's status.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import termios
import tty
from typing import TYPE_CHECKING, Any

from ..model import JobState
from . import common
from .common import err, run_async

if TYPE_CHECKING:
    import asyncio

HELP = (
    "Give the job a terminal (a pseudo-terminal of yours) for its input and output, relayed to "
    "this one: an interactive shell or program in the job's sandbox, with window size, Ctrl-C "
    "and Ctrl-Z. Its output goes to the terminal, not to the journal (`logs` has none)."
)
_READ = 1 << 16
_DRAIN_WAIT = 1.0  # seconds
_EOF = b"\x04"  # Ctrl-D: the terminal's VEOF character (as stty sets it by default)
_ENDS = (signal.SIGTERM, signal.SIGHUP)  # jobrun's own end: the terminal restored first


def run_pty(command: list[str], name: str | None, options: dict[str, Any]) -> int:
    """Run it; the exit status for jobrun: the job's, or 128+N after signal N."""
    master, slave = os.openpty()
    slaves = [slave]  # closed by _start_and_relay once the job has ended
    local = _terminal(0)
    saved = termios.tcgetattr(0) if local else None
    try:
        if local:
            _copy_size(0, master)
        return run_async(lambda: _start_and_relay(command, name, options, master, slaves, local))
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        for fd in slaves:
            os.close(fd)
        os.close(master)


def _terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _copy_size(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


async def _start_and_relay(
    command: list[str], name: str | None, options: dict[str, Any], master: int,
    slaves: list[int], local: bool,
) -> int:  # fmt: skip
    import asyncio

    from .foreground import exit_status

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    b = await common.open_backend()
    relay: _Relay | None = None
    try:
        job = await b.start(command, name, options, tty=slaves[0])
        err(f"jobrun: job {job.id} started ({job.unit}) on its own terminal")
        for s in _ENDS:
            loop.add_signal_handler(s, lambda: main.cancel() if main else None)
        if local:
            tty.setraw(0, termios.TCSADRAIN)  # restored by run_pty
        relay = _Relay(loop, master, local)
        job = await b.wait(job.id)
        os.close(slaves.pop())
        relay.drain()
    finally:
        for s in _ENDS:
            loop.remove_signal_handler(s)
        if relay is not None:
            relay.close()
        await b.close()
    if job.state != JobState.SUCCEEDED:
        text = f"jobrun: job {job.id} {job.state}: {job.outcome.reason or job.outcome.result}"
        err(("\r\n" if local else "") + text)
    return exit_status(job)


class _Relay:
    """stdin → master, master → stdout, SIGWINCH → the master's size. Input waits in `pending`
    while the terminal's input buffer is full (a large paste, a job that does not read), and
    stdin is not read meanwhile; the master's output is relayed all the while."""

    def __init__(self, loop: asyncio.AbstractEventLoop, master: int, local: bool) -> None:
        self.loop, self.master, self.local = loop, master, local
        os.set_blocking(master, False)
        self.pending = b""
        self.reading = False  # stdin is watched (add_reader)
        self.pull = False  # stdin cannot be watched (a file, /dev/null): read it when there is room
        self.ended = False  # stdin has ended (or is closed)
        try:
            os.fstat(0)
            loop.add_reader(0, self._from_stdin)
            self.reading = True
        except PermissionError:  # epoll takes no regular file: it is always readable anyway
            self.pull = True
            loop.call_soon(self._from_stdin)
        except (OSError, ValueError):  # closed: nothing to relay
            self.ended = True
        loop.add_reader(master, self._from_master)
        if local:
            loop.add_signal_handler(signal.SIGWINCH, _copy_size, 0, master)

    def _from_stdin(self) -> None:
        if self.ended or self.pending:
            return
        try:
            data = os.read(0, _READ)
        except OSError:
            data = b""
        if not data:  # its end: with stdin not a terminal, the job reads an end of file (^D)
            self.ended = True
            self._stop_reading()
            data = b"" if self.local else _EOF
        self.pending = data
        self._to_master()

    def _to_master(self) -> None:
        try:
            while self.pending:
                self.pending = self.pending[os.write(self.master, self.pending) :]
        except BlockingIOError:
            self._stop_reading()
            self.loop.add_writer(self.master, self._to_master)
            return
        except OSError:  # the terminal is gone: nothing reads it any more
            self.pending, self.ended = b"", True
            self._stop_reading()
        self.loop.remove_writer(self.master)
        if self.ended:
            return
        if self.pull:
            self.loop.call_soon(self._from_stdin)
        elif not self.reading:
            self.loop.add_reader(0, self._from_stdin)
            self.reading = True

    def _stop_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(0)
            self.reading = False

    def _from_master(self) -> bool:
        try:
            data = os.read(self.master, _READ)
        except BlockingIOError:
            return False
        except OSError:  # EIO: no slave open (never while jobrun holds its own)
            self.loop.remove_reader(self.master)
            return False
        if not data:
            return False
        out = sys.stdout.buffer
        out.write(data)
        out.flush()
        return True

    def drain(self) -> None:
        """The job has ended and no slave is open: what it wrote last, up to the master's EIO
        (or a second of nothing: something the job left behind holds the terminal)."""
        import select

        while select.select([self.master], [], [], _DRAIN_WAIT)[0] and self._from_master():
            pass

    def close(self) -> None:
        self.ended = True
        self._stop_reading()
        self.loop.remove_reader(self.master)
        self.loop.remove_writer(self.master)
        if self.local:
            self.loop.remove_signal_handler(signal.SIGWINCH)
