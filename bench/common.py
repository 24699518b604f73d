"""What the benchmarks share: the run's settings, a real systemd to run against, timing helpers,
statistics and the result rows."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
JOBRUND = "jobrund.service"
ALICE = "alice"  # a plain user that tests/install.py creates inside the sandbox


class BenchError(Exception):
    """A benchmark could not run (not a slow result: those are reported, never raised)."""


@dataclass
class Config:
    quick: bool
    work: Path  # scratch directory: the local-mode job store, files, the P4 start signal
    shared: dict[str, Any] = field(default_factory=dict)  # results one P hands another

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def state(self) -> Path:
        """The job store of the in-process (JOBRUN_MODE=local) runs."""
        return self.work / "state"

    def env(self, mode: str, state: Path | None = None) -> dict[str, str]:
        """The environment of a `jobrun` child process in `mode` (local or daemon)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUN_")}
        env["JOBRUN_MODE"] = mode
        if mode == "local":
            env["JOBRUN_STATE_DIR"] = str(state or self.state)
        return env


@dataclass
class Row:
    """One line of the result table. `ratio` is value / baseline; `met` None means no goal."""

    p: str
    what: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_what: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)  # raw numbers, JSON only

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    xs = sorted(values)
    if not xs:
        raise BenchError("no samples")
    k = max(0, min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1))
    return xs[k]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# -- processes --------------------------------------------------------------------------------


def jobrun_argv(*args: str) -> list[str]:
    """The `jobrun` command as a user runs it: the console script beside this interpreter."""
    script = Path(PYTHON).parent / "jobrun"
    return [str(script), *args] if script.exists() else [PYTHON, "-m", "jobrun", *args]


def as_user(user: str, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]


def wall(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 120, cwd: str = "/"
) -> tuple[float, str]:
    """Run argv to completion, output discarded but for stdout's first line: (seconds, line)."""
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=timeout)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return elapsed, proc.stdout.decode(errors="replace").partition("\n")[0]


def wall_devnull(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> float:
    """Seconds to run argv with stdout to /dev/null (as `CMD > /dev/null` in a shell)."""
    t = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout
    )
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}"
        )
    return elapsed


def count_lines(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> int:
    """How many lines argv prints (to check that a fast reader did read everything)."""
    n = 0
    with subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while chunk := proc.stdout.read(1 << 20):
            n += chunk.count(b"\n")
            if time.monotonic() > deadline:
                proc.kill()
                raise BenchError(f"{' '.join(argv)} took over {timeout:.0f} s")
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode}")
    return n


def systemctl(*args: str) -> str:
    return subprocess.run(
        ["systemctl", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


# -- the system under test ------------------------------------------------------------------


def prepare(installed: bool = False) -> None:
    """Make sure a real systemd with jobrun's system files is there (installing them into
    tests/with-systemd's private systemd, which forgets them at teardown). `installed`: measure
    the jobrun that apt installed (its /usr/bin/jobrun and jobrund, as ../shared/tools'
    try-installed sets one up), run by that Python (/usr/bin/python3 -m bench --installed)."""
    try:
        pid1 = Path("/proc/1/comm").read_text().strip()
    except OSError:
        pid1 = "?"
    if pid1 != "systemd":
        raise BenchError(
            f"PID 1 is {pid1!r}, not systemd: run the benchmark as "
            "`tests/with-systemd .venv/bin/python -m bench` (as root)"
        )
    if os.geteuid() != 0:
        raise BenchError("the benchmark runs jobs in-process and as other users: run it as root")
    if installed:
        if Path(jobrun_argv()[0]) != Path("/usr/bin/jobrun"):
            raise BenchError("--installed: run the benchmark with /usr/bin/python3, beside it")
        if not Path("/usr/share/dbus-1/system-services/org.jobrun.Manager1.service").exists():
            raise BenchError("--installed: jobrun's package is not installed here")
        return  # its bytecode is dh_python3's
    sys.path.insert(0, str(ROOT))
    from tests import install

    if install.in_sandbox():
        install.install()
    elif not Path("/usr/share/dbus-1/system-services/org.jobrun.Manager1.service").exists():
        raise BenchError("jobrund is not installed here: install jobrun's package first")
    # jobrun's bytecode, as an installed package has it (dh_python3 and pip compile it): with
    # PYTHONDONTWRITEBYTECODE set, every CLI run would compile its modules again (~20 ms).
    import compileall

    compileall.compile_dir(str(ROOT / "jobrun"), quiet=1)
    # Many followers mean many descriptors in this process (pipes, journal files).
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def active_jobs() -> list[str]:
    out = systemctl(
        "list-units", "--no-legend", "--plain", "--all",
        "--state=activating,active,deactivating,reloading", "jobrun-*.service",
    )  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def wait_idle(timeout: float = 120) -> None:
    """Wait until no job unit is running, so that one measurement does not pay for another's."""
    deadline = time.monotonic() + timeout
    while active := active_jobs():
        if time.monotonic() > deadline:
            raise BenchError(f"{len(active)} job units still running after {timeout:.0f} s")
        time.sleep(0.1)


def jobrund_pid() -> int:
    return int(systemctl("show", "-P", "MainPID", JOBRUND) or 0)


def jobrund_state_dir() -> Path:
    """Where jobrund keeps its job store (StateDirectory= of its unit)."""
    return Path("/var/lib") / (systemctl("show", "-P", "StateDirectory", JOBRUND) or "jobrun")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of a process in MB (10^6 bytes), from /proc/PID/status.

    RssFile is mapped files: for a journal reader mostly journal files, which the page cache
    holds once however many readers map them (but each mapping counts in VmRSS)."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024 / 1e6
    except OSError:
        pass
    return out


async def restart_jobrund() -> int:
    """A fresh jobrund (its memory from an earlier run must not count), up and answering."""
    await asyncio.to_thread(systemctl, "restart", JOBRUND)
    deadline = time.monotonic() + 30
    while (pid := jobrund_pid()) == 0:
        if time.monotonic() > deadline:
            raise BenchError("jobrund did not come back after a restart")
        await asyncio.sleep(0.05)
    return pid


async def daemon_backend() -> Any:
    """jobrun's own client of jobrund (the CLI's JOBRUN_MODE=daemon backend), as this user."""
    from jobrun.bus import connect_system_bus
    from jobrun.client.dbus import DaemonBackend

    return DaemonBackend(await connect_system_bus())


async def wait_finished(backend: Any, job_id: str, timeout: float = 600) -> Any:
    """The job (a jobrun.model.Job) once it has ended."""
    async with asyncio.timeout(timeout):
        return await backend.wait(job_id)


# -- machine ----------------------------------------------------------------------------------


def _first(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    except OSError:
        return "?"


def cgroup_mode() -> str:
    fs = _first(["stat", "-fc", "%T", "/sys/fs/cgroup"])
    if fs == "cgroup2fs":
        return "unified (cgroup v2)"
    if Path("/sys/fs/cgroup/unified").is_dir():
        return "hybrid (cgroup v1 controllers, v2 without controllers)"
    return "legacy (cgroup v1)"


def machine() -> dict[str, str]:
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    from importlib.metadata import version

    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": f"{os.cpu_count()} ({cpu})",
        "memory": mem,
        "kernel": os.uname().release,
        "systemd": _first(["systemctl", "--version"]),
        "cgroups": cgroup_mode(),
        "python": sys.version.split()[0],
        "dbus-fast": version("dbus-fast"),
        "file systems": f"journal {_first(['stat', '-fc', '%T', '/var/log/journal'])}, "
        f"scratch (P5's plain file) {_first(['stat', '-fc', '%T', str(scratch_dir())])}",
        "load average at start": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "pid 1": "private systemd of tests/with-systemd"
        if Path("/run/systemd/container").exists()
        else "the host's systemd",
    }


def scratch_dir() -> Path:
    """A private scratch directory: under /run inside the sandbox (its /run is its own)."""
    base = Path("/run/jobrun-bench")
    base.mkdir(mode=0o755, exist_ok=True)
    return base


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the scratch base, once no other run uses it
