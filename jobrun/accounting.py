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
from pathlib import Path
from typing import Any

from .model import Accounting

CGROUP = Path("/sys/fs/cgroup")
UNIFIED_MIRROR = CGROUP / "unified"  # hybrid hosts: cgroup2 without controllers
SAMPLE_INTERVAL = 1.0  # seconds between jobrund's readings of running jobs
_UINT64_MAX = 2**64 - 1


def is_unified() -> bool:
    """Whether /sys/fs/cgroup is cgroup v2 itself (else v1 controllers, maybe with a mirror)."""
    return (CGROUP / "cgroup.controllers").exists()


def v2_dir(control_group: str) -> Path | None:
    """The unit's directory in the cgroup2 hierarchy: /sys/fs/cgroup on a v2 host, the
    controller-less mirror on a hybrid one; None where there is none (pure v1)."""
    rel = control_group.lstrip("/")
    if not rel:
        return None
    if is_unified():
        return CGROUP / rel
    if (UNIFIED_MIRROR / "cgroup.procs").exists():
        return UNIFIED_MIRROR / rel
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else None


def _keyed(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def read_cgroup(control_group: str) -> Accounting:
    """The counters of a cgroup (systemd's ControlGroup, e.g. /jobrun.slice/…/jobrun-ID.service)
    now; fields the host does not have, or a cgroup that is gone, are None."""
    rel = control_group.lstrip("/")
    cpu = memory_peak = io_read = io_write = tasks_peak = None
    v2 = v2_dir(control_group)
    if v2 is not None:
        usec = _keyed(_read(v2 / "cpu.stat"), "usage_usec")
        cpu = usec / 1e6 if usec is not None else None
        memory_peak = _int(_read(v2 / "memory.peak"))
        tasks_peak = _int(_read(v2 / "pids.peak"))
        io = _read(v2 / "io.stat")
        if io is not None and is_unified():
            io_read = io_write = 0
            for line in io.splitlines():
                for item in line.split()[1:]:
                    key, _, value = item.partition("=")
                    if key == "rbytes":
                        io_read += int(value)
                    elif key == "wbytes":
                        io_write += int(value)
    if rel and not is_unified():
        if memory_peak is None:
            memory_peak = _int(_read(CGROUP / "memory" / rel / "memory.max_usage_in_bytes"))
        if tasks_peak is None:
            tasks_peak = _int(_read(CGROUP / "pids" / rel / "pids.peak"))
        text = _read(CGROUP / "blkio" / rel / "blkio.throttle.io_service_bytes_recursive")
        if text is not None:
            io_read = io_write = 0
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] == "Read":
                    io_read += int(parts[2])
                elif len(parts) == 3 and parts[1] == "Write":
                    io_write += int(parts[2])
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
    d = dataclasses.asdict(acct)
    d["sampled_at"] = acct.sampled_at.isoformat() if acct.sampled_at else None
    return d


def from_dict(d: Mapping[str, Any]) -> Accounting:
    known = {f.name for f in dataclasses.fields(Accounting)}
    values = {k: v for k, v in d.items() if k in known}
    at = values.get("sampled_at")
    values["sampled_at"] = datetime.fromisoformat(at) if at else None
    return Accounting(**values)
