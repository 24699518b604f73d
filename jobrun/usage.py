"""Resource use of running jobs, read from their cgroups: one pass over jobrun.slice per sample.

`top` and the metrics exporter ask for every running job of a caller once a second (or every
few seconds). Asking systemd costs a D-Bus round trip per unit (GetAll of its Service interface,
~200 properties marshalled by PID 1 and parsed here); reading the kernel's counters costs a few
small file reads per job and no other process's time (docs/DESIGN.md, "Usage"). systemd reads
the same files itself: MemoryCurrent is memory.current (v2) or memory.usage_in_bytes (v1).

What each kind of host can show (measured on systemd 252):
- cgroup v2: CPU (cpu.stat), memory and its limit, tasks, IO bytes (io.stat), frozen.
- hybrid (v1 controllers, a v2 tree without them): CPU from the v2 mirror's cpu.stat (systemd's
  CPUUsageNSec is "not set": cpu and cpuacct are separate hierarchies), memory and its limit
  and tasks from the v1 memory and pids controllers; **no IO**: systemd reports IOReadBytes as
  unavailable, and blkio's throttle counters stayed at 0 for 50 MB of O_DIRECT writes and reads.
- legacy v1: as hybrid, CPU from cpuacct.usage where the unit has a cpuacct group.

Only IDs the store knows (and the caller may see) are read: a directory name is never trusted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cgroup
from .cgroup import cpu_seconds, io_v2, number, read
from .model import SLICE, UNIT_PREFIX, is_valid_id_prefix

CGROUP_ROOT = cgroup.ROOT
_V1_UNLIMITED = 1 << 62  # memory.limit_in_bytes reads 9223372036854771712 when unlimited
_MAX_DEPTH = 4  # slices below jobrun.slice (a user's slice today; groups may nest deeper)
_UNITS = (".service", ".scope")  # a job's unit: a service, or a scope (`run --scope`)


@dataclass(frozen=True, slots=True)
class Sample:
    """A running job's counters at one moment. None: this host cannot tell (see the module's
    doc). `at` is the reading host's CLOCK_MONOTONIC in seconds: only differences between two
    samples of one host mean anything (rates)."""

    id: str
    user: str  # the job's owner
    state: str  # "running", or "paused" while its cgroup is frozen
    at: float
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    memory_max: int | None = None
    tasks: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    group: str = ""  # the slice the job runs in (its owner's today): the metrics' grouping


@dataclass(frozen=True, slots=True)
class Rates:
    """What changed between two samples of a job, per second (None: not known)."""

    cpu_percent: float | None = None  # of one CPU
    io_read_rate: float | None = None  # bytes/s
    io_write_rate: float | None = None


def rates(before: Sample | None, now: Sample) -> Rates:
    if before is None or now.at <= before.at:
        return Rates()
    dt = now.at - before.at

    def per_s(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, (b - a) / dt)

    cpu = per_s(before.cpu_seconds, now.cpu_seconds)
    return Rates(
        cpu_percent=None if cpu is None else cpu * 100,
        io_read_rate=per_s(before.io_read_bytes, now.io_read_bytes),
        io_write_rate=per_s(before.io_write_bytes, now.io_write_bytes),
    )


class Layout:
    """Where this host keeps each counter: cgroup v2, or v1 controllers (hybrid or legacy)."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        r = str(root)
        self.v2 = (root / "cgroup.controllers").exists()
        if self.v2:
            mirror: str | None = r
        else:
            mirror = f"{r}/unified" if (root / "unified" / "cgroup.procs").exists() else None
        # Where the units' directories are listed: every unit has one in the v2 tree (or its
        # hybrid mirror), and in name=systemd on a legacy host.
        self.tree = mirror or f"{r}/systemd"
        self.cpu_v2 = mirror
        self.cpuacct = f"{r}/cpuacct"
        self.memory = r if self.v2 else f"{r}/memory"
        self.pids = r if self.v2 else f"{r}/pids"
        self.freezer_v1_root = None if self.v2 else f"{r}/freezer"
        self.freezer_v1_jobs = f"{r}/freezer/{SLICE}"
        self.freezer_v1: str | None = None  # the v1 freezer, where jobs have groups in it

    def job_dirs(self) -> dict[str, str]:
        """job ID → its cgroup's path below the root, for every job unit that has a cgroup."""
        out: dict[str, str] = {}
        self._walk(SLICE, 0, out)
        return out

    def _walk(self, rel: str, depth: int, out: dict[str, str]) -> None:
        try:
            entries = os.scandir(f"{self.tree}/{rel}")
        except OSError:
            return
        with entries:
            for e in entries:
                name = e.name
                if name.endswith(".slice") and depth < _MAX_DEPTH:
                    if e.is_dir(follow_symlinks=False):
                        self._walk(f"{rel}/{name}", depth + 1, out)
                elif name.startswith(UNIT_PREFIX) and name.endswith(_UNITS):
                    job_id = name[len(UNIT_PREFIX) :].rsplit(".", 1)[0]
                    if is_valid_id_prefix(job_id):
                        out[job_id] = f"{rel}/{name}"

    def sample(self, job_id: str, user: str, at: float, rel: str) -> Sample:
        """The counters of one cgroup (a job's, or a slice's with `job_id` its name). Some 20 µs
        of file reads, the rest kept small: 200 jobs a second is what `top` asks (bench P7)."""
        if self.cpu_v2 is not None:
            v2 = f"{self.cpu_v2}/{rel}/"
            cpu = cpu_seconds(read(v2 + "cpu.stat"))
            # The v2 freezer works on a hybrid host's mirror too.
            events = read(v2 + "cgroup.events")
            frozen = events is not None and b"frozen 1" in events
        else:
            usage = number(read(f"{self.cpuacct}/{rel}/cpuacct.usage"))
            cpu = None if usage is None else usage / 1e9
            frozen = False
        memory = f"{self.memory}/{rel}/"
        io_read = io_write = None
        if self.v2:
            used = number(read(memory + "memory.current"))
            limit = number(read(memory + "memory.max"))  # "max": None
            io_read, io_write = io_v2(read(memory + "io.stat"))
        else:
            used = number(read(memory + "memory.usage_in_bytes"))
            limit = number(read(memory + "memory.limit_in_bytes"))
            if limit is not None and limit >= _V1_UNLIMITED:
                limit = None
            if not frozen and self.freezer_v1 is not None:
                state = read(f"{self.freezer_v1}/{rel}/freezer.state")
                frozen = state is not None and state.startswith(b"FROZEN")
        tasks = number(read(f"{self.pids}/{rel}/pids.current"))
        group = rel[: rel.rfind("/")]
        return Sample(
            job_id,
            user,
            "paused" if frozen else "running",
            at,
            cpu,
            used,
            limit,
            tasks,
            io_read,
            io_write,
            group[group.rfind("/") + 1 :],
        )


_layout: Layout | None = None


def layout() -> Layout:
    global _layout
    if _layout is None:
        _layout = Layout()
    return _layout


def samples(
    visible: Callable[[list[str]], dict[str, str]], where: Layout | None = None
) -> list[Sample]:
    """A sample of every running job that `visible` (job IDs → {ID: owner} of those the caller
    may see, e.g. Store.owners_of) keeps, ordered by ID; only those jobs' files are read."""
    where = where or layout()
    dirs = where.job_dirs()
    # systemd makes no v1 freezer groups for jobs: look for them only where some exist.
    where.freezer_v1 = where.freezer_v1_root if os.path.isdir(where.freezer_v1_jobs) else None
    owners = visible(sorted(dirs)) if dirs else {}
    at = time.monotonic()
    return [where.sample(job_id, owners[job_id], at, dirs[job_id]) for job_id in sorted(owners)]
