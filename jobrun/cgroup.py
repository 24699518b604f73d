"""The kernel's cgroup files: which hierarchy this host has, and the parsers of the counters.

One place for what `status` (outcome.usage), the record a job leaves behind (accounting.py) and
`top` and the metrics (usage.py) read. Files are read as bytes with one read(2) each: `top`
reads some 200 jobs' files a second (bench P7).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
UNIFIED_MIRROR = ROOT / "unified"  # hybrid hosts: the cgroup2 tree without controllers


def read(path: str | Path) -> bytes | None:
    """The file's bytes (at most 64 KiB), or None if it cannot be read (e.g. the cgroup is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def number(data: bytes | None) -> int | None:
    """A file holding one number; None for none, or for v2's "max"."""
    if data is None:
        return None
    try:
        return int(data)
    except ValueError:
        return None


def cpu_seconds(data: bytes | None) -> float | None:
    """CPU time from cpu.stat (cgroup v2, or a hybrid host's mirror): its usage_usec."""
    for line in (data or b"").splitlines():
        if line.startswith(b"usage_usec "):
            usec = number(line[11:])
            return None if usec is None else usec / 1e6
    return None


def io_v2(data: bytes | None) -> tuple[int | None, int | None]:
    """Bytes read and written, summed over devices, from cgroup v2's io.stat."""
    if data is None:
        return None, None
    read_bytes = write_bytes = 0
    for line in data.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition(b"=")
            if key == b"rbytes":
                read_bytes += int(value)
            elif key == b"wbytes":
                write_bytes += int(value)
    return read_bytes, write_bytes


def io_v1(data: bytes | None) -> tuple[int | None, int | None]:
    """Bytes read and written from v1's blkio.throttle.io_service_bytes_recursive."""
    if data is None:
        return None, None
    read_bytes = write_bytes = 0
    for line in data.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == b"Read":
            read_bytes += int(parts[2])
        elif len(parts) == 3 and parts[1] == b"Write":
            write_bytes += int(parts[2])
    return read_bytes, write_bytes


def is_unified(root: Path = ROOT) -> bool:
    """Whether the cgroup root is cgroup v2 itself (else v1 controllers, maybe with a mirror)."""
    return (root / "cgroup.controllers").exists()


def v2_dir(control_group: str, root: Path = ROOT) -> Path | None:
    """A unit's directory (systemd's ControlGroup) in the cgroup2 hierarchy: the root on a v2
    host, the controller-less mirror on a hybrid one; None where there is none (pure v1)."""
    rel = control_group.lstrip("/")
    if not rel:
        return None
    if is_unified(root):
        return root / rel
    if (root / "unified" / "cgroup.procs").exists():
        return root / "unified" / rel
    return None
