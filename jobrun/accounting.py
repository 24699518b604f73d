"""What a job's cgroup has used: the kernel's counters and high-water marks, read from its files.

`read_cgroup(control_group)` is the one reader (for `status`, the record a job leaves behind and
any live view): it takes systemd's `ControlGroup` of a unit and reads, per field, the first file
the host has:

- cpu_seconds: cpu.stat usage_usec (v2; on hybrid hosts the cgroup2 mirror's, which the kernel
  keeps counting though systemd 252 reports CPUUsageNSec as unset there);
- memory_peak_bytes: memory.peak (v2, kernel 5.19+); v1: memory.max_usage_in_bytes;
- io_read/write_bytes: io.stat rbytes/wbytes (v2); v1: blkio.throttle.io_service_bytes_recursive
  (absent on this project's hybrid hosts: None);
- tasks_peak: pids.peak (v2 and v1, kernel 6.1+).

All are exact kernel values as of the read. A cgroup is removed the moment its unit stops, so
what a job leaves behind is its last reading (jobrund reads every running job's cgroup each
SAMPLE_INTERVAL, and on every status): CPU and IO up to then, peaks up to then. systemd's own
figures (CPUUsageNSec, IOReadBytes…, MemoryPeak from systemd 254), where it has them, are exact
at the end and win (`merge`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from . import cgroup
from .model import Accounting

CGROUP = cgroup.ROOT  # tests point it elsewhere
SAMPLE_INTERVAL = 1.0  # seconds between jobrund's readings of running jobs
_UINT64_MAX = 2**64 - 1
_FIELDS = tuple(f.name for f in dataclasses.fields(Accounting))


def read_cgroup(control_group: str) -> Accounting:
    """The counters of a cgroup (systemd's ControlGroup, e.g. /jobrun.slice/…/jobrun-ID.service)
    now; fields the host does not have, or a cgroup that is gone, are None."""
    root = CGROUP
    rel = control_group.lstrip("/")
    cpu = None
    memory_peak = io_read = io_write = tasks_peak = None
    unified = cgroup.is_unified(root)
    v2 = cgroup.v2_dir(control_group, root)
    if v2 is not None:
        cpu = cgroup.cpu_seconds(cgroup.read(v2 / "cpu.stat"))
        memory_peak = cgroup.number(cgroup.read(v2 / "memory.peak"))
        tasks_peak = cgroup.number(cgroup.read(v2 / "pids.peak"))
        if unified:
            io_read, io_write = cgroup.io_v2(cgroup.read(v2 / "io.stat"))
    if rel and not unified:
        if memory_peak is None:
            memory_peak = cgroup.number(
                cgroup.read(root / "memory" / rel / "memory.max_usage_in_bytes")
            )
        if tasks_peak is None:
            tasks_peak = cgroup.number(cgroup.read(root / "pids" / rel / "pids.peak"))
        io_read, io_write = cgroup.io_v1(
            cgroup.read(root / "blkio" / rel / "blkio.throttle.io_service_bytes_recursive")
        )
    found = (cpu, memory_peak, io_read, io_write, tasks_peak)
    return Accounting(
        cpu, memory_peak, io_read, io_write, tasks_peak,
        sampled_at=datetime.now(UTC) if any(v is not None for v in found) else None,
    )  # fmt: skip


def _u64(value: Any) -> int | None:
    if value is None or value == _UINT64_MAX or isinstance(value, bool):
        return None
    return int(value)


def from_unit(props: Mapping[str, Any]) -> Accounting:
    """systemd's own figures of a loaded unit (None where it has none: on cgroup v1 it has no
    CPU nor IO; MemoryPeak exists from systemd 254)."""
    cpu_ns = _u64(props.get("CPUUsageNSec"))
    return Accounting(
        cpu_seconds=cpu_ns / 1e9 if cpu_ns is not None else None,
        memory_peak_bytes=_u64(props.get("MemoryPeak")),
        io_read_bytes=_u64(props.get("IOReadBytes")),
        io_write_bytes=_u64(props.get("IOWriteBytes")),
    )


def merge(old: Accounting | None, new: Accounting | None) -> Accounting | None:
    """One record of two readings of the same run: every field only grows (counters and
    high-water marks), so the larger wins; a field one of them lacks is the other's."""
    if old is None or new is None:
        return new or old
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Accounting):
        a, b = getattr(old, f.name), getattr(new, f.name)
        values[f.name] = a if b is None else b if a is None else max(a, b)
    return Accounting(**values)


def to_dict(acct: Accounting) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every value (a tenth of a `list` of many jobs).
    d = {name: getattr(acct, name) for name in _FIELDS}
    d["sampled_at"] = acct.sampled_at.isoformat() if acct.sampled_at else None
    return d


def from_dict(d: Mapping[str, Any]) -> Accounting:
    values = {k: v for k, v in d.items() if k in _FIELDS}
    at = values.get("sampled_at")
    values["sampled_at"] = datetime.fromisoformat(at) if at else None
    return Accounting(**values)
