"""`jobrun doctor`: which mode the CLI is in, and whether this host has what jobrun needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import JobrunError

POLKIT_POLICY = "/usr/share/polkit-1/actions/org.jobrun.policy"
DBUS_SERVICE = "/usr/share/dbus-1/system-services/org.jobrun.Manager1.service"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: a warning, not a failure
    detail: str


def cgroup_check() -> Check:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        ctrl = (root / "cgroup.controllers").read_text().split()
        return Check("cgroups", True, f"v2 (unified), controllers: {' '.join(ctrl)}")
    v1 = sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name not in ("unified", "systemd")
    )
    if (root / "unified").is_dir():
        return Check(
            "cgroups",
            None,
            f"hybrid (v1 controllers: {' '.join(v1)}); MemoryHigh and IOWeight are accepted but "
            "not enforced, CPU usage comes from the cgroup2 mirror, OOM kills from the kernel log",
        )
    return Check("cgroups", None, f"v1 only ({' '.join(v1)})")


def journal_check() -> Check:
    from .journald_conf import MAIN_CONF, effective

    limit = effective()
    if limit.off:
        return Check("journal namespace", True, f"rate limit off: {limit.describe()}")
    if limit.set_by is None and not MAIN_CONF.exists():
        return Check(
            "journal namespace",
            None if os.geteuid() == 0 else False,
            f"no {MAIN_CONF}: journald's default rate limit would drop lines of chatty jobs; "
            "jobrun installs its own file before it starts a job in-process as root "
            "(or install the package)",
        )
    return Check(
        "journal namespace",
        False,
        f"rate limit on ({limit.describe()}): journald drops lines of chatty jobs, and jobrun "
        "refuses to start jobs in-process; set RateLimitIntervalSec=0 there",
    )


def internal_errors_check() -> Check:
    from . import crashlog

    found = crashlog.last()
    if found is None:
        return Check("internal errors", True, "none recorded")
    count, header, final = found
    return Check(
        "internal errors",
        None,
        f"{count} recorded in {crashlog.log_path()}, the last at {header}: {final} "
        "(please report it with that file)",
    )


async def run_checks() -> tuple[str, list[Check]]:
    from .bus import connect_system_bus
    from .client import target
    from .systemd import Systemd

    checks: list[Check] = []
    pid1 = Path("/proc/1/comm").read_text().strip() if Path("/proc/1/comm").exists() else "?"
    checks.append(Check("PID 1", pid1 == "systemd", pid1))
    mode = "unavailable"
    try:
        bus = await connect_system_bus()
    except JobrunError as e:
        checks.append(Check("system bus", False, str(e)))
    else:
        checks.append(
            Check("system bus", True, os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or "default")
        )
        try:
            sd = Systemd(bus)
            checks.append(Check("systemd", True, f"version {await sd.version()}"))
        except JobrunError as e:
            checks.append(Check("systemd", False, str(e)))
        reachable = await target.daemon_reachable(bus)
        checks.append(
            Check(
                "jobrund",
                reachable or None,
                "reachable (running or bus-activatable)" if reachable else "not installed",
            )
        )
        if target.through_daemon(target.mode(), reachable):
            mode = "jobrund"
        else:
            mode = (
                "in-process (root)" if os.geteuid() == 0 else "unavailable (not root, no jobrund)"
            )
        bus.disconnect()
    checks.append(cgroup_check())
    checks.append(journal_check())
    checks.append(
        Check(
            "polkit policy",
            Path(POLKIT_POLICY).exists() or None,
            POLKIT_POLICY if Path(POLKIT_POLICY).exists() else "not installed (jobrund needs it)",
        )
    )
    checks.append(internal_errors_check())
    return mode, checks
