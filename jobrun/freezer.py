"""Pausing a job: freezing every process of its unit, and thawing them.

Three ways, the first the host supports (measured on systemd 252 with hybrid cgroups):

1. `systemd`: FreezeUnit/ThawUnit. Needs the unified hierarchy (cgroup v2); on a hybrid host
   systemd 252 answers NotSupported ("does not support freezing"). `systemctl` shows
   FreezerState=frozen.
2. `cgroup2`: the kernel's cgroup v2 freezer (`cgroup.freeze`) of the unit's cgroup. On a hybrid
   host the controller-less cgroup2 mirror (/sys/fs/cgroup/unified) has it, and it freezes the
   whole cgroup atomically, new children included. systemd does not know: `systemctl` shows
   FreezerState=running; `cgroup.events` says `frozen 1`.
3. `sigstop`: SIGSTOP to every process of the unit (KillUnit, whom=all), SIGCONT to resume. A
   process forked between systemd's listing of the cgroup and the signal escapes the stop, and
   the job's processes can see (and undo) it (SIGCONT from a sibling): last resort only.

The cgroup v1 freezer hierarchy is not used: systemd 252 does not place units in it, and moving
a job's processes there one by one races with forks as the signals do.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
from typing import TYPE_CHECKING

from .cgroup import v2_dir
from .errors import SystemdError

if TYPE_CHECKING:
    from .systemd import Systemd

log = logging.getLogger(__name__)

NOT_SUPPORTED = "org.freedesktop.DBus.Error.NotSupported"
FROZEN_WAIT = 2.0  # seconds the kernel may take to report a cgroup frozen


class How(enum.StrEnum):
    SYSTEMD = "systemd"
    CGROUP2 = "cgroup2"
    SIGSTOP = "sigstop"


def kernel_frozen(control_group: str) -> bool | None:
    """Whether the kernel's cgroup v2 freezer holds the cgroup (None: no such file here)."""
    d = v2_dir(control_group)
    if d is None:
        return None
    try:
        return (d / "cgroup.freeze").read_text().strip() == "1"
    except OSError:
        return None


def _write_freeze(control_group: str, value: str) -> bool:
    d = v2_dir(control_group)
    if d is None:
        return False
    try:
        (d / "cgroup.freeze").write_text(value)
    except OSError as e:  # read-only (a sandboxed caller), no such cgroup, an old kernel
        log.debug("cgroup.freeze of %s: %s", control_group, e)
        return False
    return True


async def _frozen(control_group: str) -> None:
    """Until cgroup.events says the cgroup is frozen (at most FROZEN_WAIT)."""
    d = v2_dir(control_group)
    if d is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FROZEN_WAIT
    delay = 0.001
    while loop.time() < deadline:
        try:
            if "frozen 1" in (d / "cgroup.events").read_text():
                return
        except OSError:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def freeze(systemd: Systemd, unit: str, control_group: str) -> How:
    """Freeze every process of `unit` by the first way that works here; which one."""
    try:
        await systemd.freeze_unit(unit)
        return How.SYSTEMD
    except SystemdError as e:
        if e.dbus_error != NOT_SUPPORTED:
            raise
    if control_group and _write_freeze(control_group, "1"):
        await _frozen(control_group)
        return How.CGROUP2
    await systemd.kill_unit(unit, signal.SIGSTOP)
    return How.SIGSTOP


async def thaw(systemd: Systemd, unit: str, control_group: str, how: How | None) -> None:
    """Undo `freeze` (`how` None: not known, undo every way)."""
    if how in (How.SYSTEMD, None):
        try:
            await systemd.thaw_unit(unit)
        except SystemdError as e:
            if how is How.SYSTEMD or e.dbus_error != NOT_SUPPORTED:
                raise
    if how in (How.CGROUP2, None) and control_group:
        _write_freeze(control_group, "0")
    if how in (How.SIGSTOP, None):
        await systemd.kill_unit(unit, signal.SIGCONT)
