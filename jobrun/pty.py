"""`jobrun run --pty`: a service job whose stdin, stdout and stderr are its caller's terminal.

The CLI opens a pseudo-terminal pair, keeps the master and sends the slave's descriptor with
Start (D-Bus unix fd passing; in process for root). Here, before anything is recorded, the
descriptor must prove to be a pseudo-terminal of the caller's own: a user must not attach a job
to someone else's terminal. systemd then opens it by path (TTYPath=) in the job's process and
makes it the job's controlling terminal (StandardInput=tty): the job is its session's leader,
so the terminal's line discipline sends Ctrl-C and Ctrl-Z to it. The caller's descriptor, held
open until systemd has accepted the start, keeps the terminal's number from being reused.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from .errors import InvalidArgument, PermissionDenied

if TYPE_CHECKING:
    from dbus_fast import Variant

PTS_DIR = "/dev/pts"
PTS_MAJORS = range(136, 144)  # UNIX98_PTY_SLAVE_MAJOR and the 7 after it (devices.txt)
STDIO = ("StandardInput", "StandardInputFileDescriptor", "StandardOutput", "StandardError")


def terminal_path(fd: int, uid: int) -> str:
    """/dev/pts/N of the pseudo-terminal open as `fd`, which `uid` must own (root: any);
    InvalidArgument for anything else (a pipe, a file, another terminal), PermissionDenied for
    another user's."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise InvalidArgument(f"--pty: cannot look at the terminal's descriptor: {e}") from e
    major = os.major(st.st_rdev)
    if not stat.S_ISCHR(st.st_mode) or major not in PTS_MAJORS:
        raise InvalidArgument(
            "--pty needs a pseudo-terminal's descriptor (the slave side, as /dev/pts/N)"
        )
    if uid != 0 and st.st_uid != uid:
        raise PermissionDenied("--pty: that pseudo-terminal is not yours")
    minor = os.minor(st.st_rdev)
    # The kernel numbers /dev/pts/N as 136:N (N up to 2^20); the old split over 8 majors too.
    for n in dict.fromkeys((minor + (major - PTS_MAJORS[0]) * 256, minor)):
        path = f"{PTS_DIR}/{n}"
        try:
            there = os.stat(path)
        except OSError:
            continue
        if there.st_rdev == st.st_rdev and there.st_dev == st.st_dev:
            return path
    raise InvalidArgument(f"--pty: the terminal is not one of {PTS_DIR} here")


def unit_properties(path: str) -> list[tuple[str, Variant]]:
    """The job's stdio on the terminal at `path` (instead of /dev/null and the journal).

    StandardInput=tty makes it the controlling terminal (waiting, not stealing, if another
    session has it). Neither TTYReset= (the CLI sets the modes and the size before the start)
    nor TTYVHangup= (the CLI's own descriptor would hang up too, losing the job's last output)."""
    from dbus_fast import Variant

    return [
        ("TTYPath", Variant("s", path)),
        ("StandardInput", Variant("s", "tty")),
        ("StandardOutput", Variant("s", "tty")),
        ("StandardError", Variant("s", "tty")),
    ]
