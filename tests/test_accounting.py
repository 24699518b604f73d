"""The accounting reader and merge (accounting.py), on made-up cgroup trees: fast, no systemd."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobrun import accounting as acct
from jobrun.model import Accounting


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CG = "/jobrun.slice/jobrun-u1000.slice/jobrun-abc.service"


def test_hybrid_host_reads_the_mirror_and_the_v1_controllers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path, {
        "unified/cgroup.procs": "",
        f"unified{CG}/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\n",
        f"memory{CG}/memory.max_usage_in_bytes": "73400320\n",
        f"pids{CG}/pids.peak": "4\n",
        f"blkio{CG}/blkio.throttle.io_service_bytes_recursive":
            "8:0 Read 4096\n8:0 Write 8192\n8:16 Read 4096\nTotal 16384\n",
    })  # fmt: skip
    monkeypatch.setattr(acct, "CGROUP", tmp_path)
    a = acct.read_cgroup(CG)
    assert (a.cpu_seconds, a.memory_peak_bytes, a.tasks_peak) == (2.5, 73400320, 4)
    assert (a.io_read_bytes, a.io_write_bytes) == (8192, 8192)
    assert a.sampled_at is not None


def test_v2_host_and_a_cgroup_that_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, {
        "cgroup.controllers": "cpu memory pids io\n",
        f"{CG[1:]}/cpu.stat": "usage_usec 1000\n",
        f"{CG[1:]}/memory.peak": "1048576\n",
        f"{CG[1:]}/pids.peak": "2\n",
        f"{CG[1:]}/io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
    })  # fmt: skip
    monkeypatch.setattr(acct, "CGROUP", tmp_path)
    a = acct.read_cgroup(CG)
    assert a == Accounting(0.001, 1048576, 101, 202, 2, a.sampled_at)
    assert acct.read_cgroup("/jobrun.slice/gone.service") == Accounting()


def test_merge_keeps_the_largest_of_each_and_what_one_lacks() -> None:
    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    old = Accounting(1.0, 100, None, 5, 3, t1)
    new = Accounting(2.0, 50, 7, None, None, t2)
    assert acct.merge(old, new) == Accounting(2.0, 100, 7, 5, 3, t2)
    assert acct.merge(None, new) == new and acct.merge(old, None) == old
    assert acct.from_dict(acct.to_dict(old)) == old


def test_systemds_unset_values_are_none() -> None:
    unset = 2**64 - 1
    assert acct.from_unit({"CPUUsageNSec": unset, "IOReadBytes": unset}) == Accounting()
    assert acct.from_unit({"CPUUsageNSec": 1_500_000_000}).cpu_seconds == 1.5
