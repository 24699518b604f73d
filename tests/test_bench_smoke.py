"""The benchmark still runs: `python -m bench --quick` produces a number for every measurement and
loses no line. No timing is asserted (the numbers of a tiny run on a busy machine mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

MEASUREMENTS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")


def test_quick_bench_produces_numbers_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["p"] for r in rows} == set(MEASUREMENTS), rows
    failed = [r["what"] for r in rows if r["what"].startswith("FAILED")]
    assert not failed, failed
    for p in MEASUREMENTS:
        assert any(r["value"] is not None for r in rows if r["p"] == p), p
    for r in rows:
        if r["unit"] in ("ms", "jobs/s", "lines/s") and r["p"] != "P4":
            # a rate may be 0 when every start failed (the row says why): still a number
            assert r["value"] is not None and r["value"] >= 0, r
            assert r["value"] > 0 or r["unit"] == "jobs/s", r
            if r["baseline_what"]:
                assert r["baseline"] is not None and r["baseline"] > 0, r
    (lost,) = [r for r in rows if r["p"] == "P5" and r["unit"] == "lines"]
    assert lost["value"] == 0 and lost["met"] is True, lost
    # every P4 follower count measured something through both paths
    p4 = [r for r in rows if r["p"] == "P4" and r["unit"] == "ms"]
    assert p4 and all(r["value"] is not None for r in p4), p4
    # the table the bench printed carries the same rows
    assert proc.stdout.count("\n| P") == len(rows), proc.stdout
    assert data["big_job"]["lines"] > 0
