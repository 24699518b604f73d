"""The promises of tests/with-systemd, each checked by booting a fresh, nested sandbox.

These run inside the sandbox the suite itself runs in, so each boots its own private systemd with
WITH_SYSTEMD_BOOT=always and looks at it from outside: the caller's namespaces play the host.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent / "with-systemd"
CGROUP_ROOT = Path("/sys/fs/cgroup")
T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, what: str, timeout: float = 30.0) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.02)


def nested_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "WITH_SYSTEMD_BOOT": "always", **extra}


def run_nested(
    *cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *cmd],
        cwd=cwd,
        env=env if env is not None else nested_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "sh", *args]


# --- what the caller can see of a sandbox ---------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies this mount namespace has under /sys/fs/cgroup."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fstype = tail.split()[0]
        mountpoint = Path(fields.split()[4])
        if fstype in ("cgroup", "cgroup2") and mountpoint.parent == CGROUP_ROOT:
            found.append(mountpoint)
    return found


def cgroups_named(name: str) -> list[Path]:
    """Every cgroup directory called `name`, in any hierarchy, at any depth."""
    found = []
    for hierarchy in cgroup_hierarchies():
        for dirpath, dirnames, _ in os.walk(hierarchy):
            if os.path.basename(dirpath) == name:
                found.append(Path(dirpath))
                dirnames.clear()
    return found


def pids_below(cgroups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for top in cgroups:
        for dirpath, _, filenames in os.walk(top):
            if "cgroup.procs" in filenames:
                text = Path(dirpath, "cgroup.procs").read_text()
                pids.update(int(p) for p in text.split())
    return pids


def identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in ticks): unlike a bare PID, this never names a later process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return pid, int(stat.rpartition(")")[2].split()[19])


def alive(ident: tuple[int, int]) -> bool:
    return identity(ident[0]) == ident


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except (FileNotFoundError, ProcessLookupError):
        return None


def processes_in_pid_namespace(ns: str) -> list[int]:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [p for p in pids if pid_namespace(p) == ns]


def pids_with_cmdline(argv: list[str]) -> list[int]:
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if Path(f"/proc/{p}/cmdline").read_bytes() == wanted:
                found.append(int(p))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return found


def innermost_pid(pid: int) -> int:
    """The PID a process has in its own (innermost) pid namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for {pid}")


def mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


# --- a sandbox held open while the test looks at it -----------------------------------------------

# CMD for a held sandbox: report who it is, optionally leave a daemon behind, then block until the
# test writes to the release fifo (`timeout` ends it if the test never does).
HOLD = """
info=$1 release=$2 leak=$3
if [ -n "$leak" ]; then setsid sleep "$leak" </dev/null >/dev/null 2>&1 & fi
printf '%s\\n%s\\n%s\\n' "$WITH_SYSTEMD_NAME" "$WITH_SYSTEMD_STATE" \\
  "$(systemctl is-system-running 2>&1)" > "$info.tmp"
mv "$info.tmp" "$info"
exec timeout 60 head -c 1 "$release"
"""


@dataclass
class Held:
    proc: subprocess.Popen[bytes]
    info: Path
    fifo: Path
    log: Path
    name: str = ""
    state: Path = Path()
    system_state: str = ""

    def wait_booted(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"sandbox exited early ({self.proc.returncode}): {self.log.read_text()}"
                )
            return self.info.exists()

        wait_until(ready, what="the held sandbox to report in", timeout=60)
        self.name, state, self.system_state = self.info.read_text().splitlines()
        self.state = Path(state)

    def release(self) -> int:
        def open_writer() -> int | None:
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: CMD has not opened its end yet
                return None

        fd = wait_until(open_writer, what="CMD to open its release fifo")
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        return self.proc.wait(timeout=60)


def start_held(directory: Path, leak: str = "") -> Held:
    directory.mkdir(parents=True, exist_ok=True)
    info, fifo, log = directory / "info", directory / "release", directory / "log"
    os.mkfifo(fifo)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(SCRIPT), *sh(HOLD, str(info), str(fifo), leak)],
            env=nested_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Held(proc, info, fifo, log)


@contextmanagerless_guard := None  # placeholder removed below
