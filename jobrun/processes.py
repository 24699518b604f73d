"""Whose process is it: the proof asked before a process is put in a scope (`run --scope`).

jobrund runs as root and moves the process a caller names into a scope that caller then
controls (limits, stop, kill). So it takes only a process that provably is the caller's own:
its UIDs are the caller's, its parent is the very process that asked, and it is the process the
caller means, not another that got its PID after it exited. The caller sends a pidfd of the
process (it names one process for good, and is alive exactly as long as that process, zombie
included) and the process's start time (/proc/PID/stat field 22); every /proc read is
confirmed by the pidfd still being alive afterwards: a PID cannot be reused while its process
exists, so what was read belonged to the process the pidfd names.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from .errors import InvalidArgument, PermissionDenied


@dataclass(frozen=True)
class Claim:
    """A process a caller asks to have put in a scope: its PID, its start time (clock ticks
    after boot, as /proc/PID/stat has it) and a pidfd of it (the caller's, or a copy)."""

    pid: int
    start_time: int
    pidfd: int


@dataclass(frozen=True)
class _Stat:
    state: str
    ppid: int
    start_time: int


def _stat(pid: int | str) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything, ")" and spaces too.
    rest = text[text.rindex(")") + 2 :].split()
    return _Stat(state=rest[0], ppid=int(rest[1]), start_time=int(rest[19]))


def start_time(pid: int | str = "self") -> int | None:
    """The process's start time (field 22 of /proc/PID/stat), or None if there is none."""
    stat = _stat(pid)
    return stat.start_time if stat else None


def _uids(pid: int) -> tuple[int, ...] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return tuple(int(u) for u in line.split()[1:])
    except OSError:
        return None
    return None


def pidfd_pid(pidfd: int) -> int | None:
    """The PID a pidfd names (-1 once its process is reaped); None if it is not a pidfd."""
    try:
        if os.readlink(f"/proc/self/fd/{pidfd}") != "anon_inode:[pidfd]":
            return None
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def pidfd_alive(pidfd: int) -> bool:
    """Whether the pidfd's process still exists (a zombie does: its PID is still held)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, and is not ours to signal
    return True


def check_child(claim: Claim, uid: int, parent: int) -> None:
    """That `claim` names a live process of user `uid` whose parent is the process `parent`
    (the caller on the bus), not PID 1, not this process; PermissionDenied otherwise."""
    pid = claim.pid
    if pid <= 1:
        raise PermissionDenied(f"PID {pid} cannot be put in a scope", "give the PID of your child")
    if pid == os.getpid():
        raise PermissionDenied("jobrund's own process cannot be put in a scope")
    named = pidfd_pid(claim.pidfd)
    if named is None:
        raise InvalidArgument("the descriptor sent with the call is not a pidfd")
    if named != pid:
        raise PermissionDenied(
            f"the pidfd sent does not name PID {pid} (the process exited, and the PID may "
            "have been reused)"
        )
    stat, uids = _stat(pid), _uids(pid)
    if stat is None or uids is None or stat.state in ("Z", "X"):
        raise PermissionDenied(f"process {pid} has exited")
    if stat.start_time != claim.start_time:
        raise PermissionDenied(
            f"PID {pid} is not the process you started: its start time differs (it exited, and "
            "its PID was reused)"
        )
    if any(u != uid for u in uids):
        raise PermissionDenied(f"process {pid} is not yours")
    if stat.ppid != parent:
        raise PermissionDenied(
            f"process {pid} is not a child of the process asking", "start it from that process"
        )
    # Last: everything above was read while the pidfd's process existed, so of that process.
    if not pidfd_alive(claim.pidfd):
        raise PermissionDenied(f"process {pid} has exited")


def still_there(claim: Claim) -> bool:
    """Whether the claimed process still exists (after systemd moved PID `claim.pid`)."""
    return pidfd_alive(claim.pidfd) and start_time(claim.pid) == claim.start_time


def alive(pid: int, started: int) -> bool:
    """Whether the process PID that started at `started` still exists (not a reuse of its
    PID, nor a zombie): the client that will report a scope's exit status."""
    stat = _stat(pid)
    return stat is not None and stat.start_time == started and stat.state not in ("Z", "X")
