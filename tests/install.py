"""Install jobrun's system files into the private systemd of tests/with-systemd.

The sandbox shares the host's filesystem, so nothing may be written to the host's /etc or /usr.
Inside the sandbox's own mount namespace, /etc and /usr get an overlay whose upper layer lives in
the sandbox's private /run: the files below (units, D-Bus and polkit files, the journal namespace
config, test users) exist for this sandbox only and vanish with it. On any other host (a real
systemd as PID 1) this refuses: install the package there instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = Path("/run/jobrun-test/installed")

# test users: alice and bob are plain users, carol is a jobrun admin
USERS = {"alice": [], "bob": [], "carol": ["jobrun-admin"]}

FILES = {
    "units/jobrun.slice": "/etc/systemd/system/jobrun.slice",
    "units/jobrund.service": "/etc/systemd/system/jobrund.service",
    "units/journald@jobrun.conf": "/etc/systemd/journald@jobrun.conf",
    "units/org.jobrun.Manager1.service": "/usr/share/dbus-1/system-services/",
    "units/org.jobrun.Manager1.conf": "/usr/share/dbus-1/system.d/",
    "polkit/org.jobrun.policy": "/usr/share/polkit-1/actions/org.jobrun.policy",
    "polkit/50-jobrun.rules": "/usr/share/polkit-1/rules.d/50-jobrun.rules",
}  # fmt: skip


def _dropin() -> str:
    """jobrund from this checkout and interpreter instead of /usr/bin/jobrund.

    The packaged unit hides /home, /root and /tmp from jobrund (ProtectHome=, PrivateTmp=). A
    checkout, venv or interpreter may live there (pyenv under /root; CI may clone under /tmp), so
    for the tests only, and only where one of them does, those directories stay visible,
    read-only for the homes."""
    needed = {Path(p).resolve() for p in (ROOT, sys.prefix, sys.base_prefix, sys.executable)}
    lines = ["[Service]", "ExecStart=", f"ExecStart={sys.executable} -m jobrun.daemon"]
    if any(p.is_relative_to(h) for p in needed for h in ("/home", "/root")):
        lines.append("ProtectHome=read-only")
    if any(p.is_relative_to(t) for p in needed for t in ("/tmp", "/var/tmp")):
        lines.append("PrivateTmp=no")
    return "\n".join(lines) + "\n"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def in_sandbox() -> bool:
    try:
        return Path("/run/systemd/container").read_text().strip() == "with-systemd"
    except OSError:
        return False


def install() -> None:
    if MARK.exists():
        return
    if not in_sandbox():
        raise RuntimeError(
            "refusing to install jobrun's system files outside tests/with-systemd's sandbox"
        )
    for top in ("etc", "usr"):
        upper, work = MARK.parent / top / "upper", MARK.parent / top / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir=/{top},upperdir={upper},workdir={work}", f"/{top}")  # fmt: skip
    for src, dst in FILES.items():
        if (ROOT / src).exists():
            target = Path(dst) / Path(src).name if dst.endswith("/") else Path(dst)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / src, target)
    dropin = Path("/etc/systemd/system/jobrund.service.d/test.conf")
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(_dropin())
    _run("groupadd", "--system", "jobrun-admin")
    for user, groups in USERS.items():
        _run(
            "useradd",
            "--no-create-home",
            "--user-group",
            *(["-G", *groups] if groups else []),
            user,
        )
    _run("systemctl", "daemon-reload")
    _run("busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
         "org.freedesktop.DBus", "ReloadConfig")  # fmt: skip
    _run("systemctl", "try-restart", "polkit.service", "systemd-journald@jobrun.service")
    MARK.write_text("")
