"""The lint and type gates run as tests."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "jobrun", "tests", "bench"],
        ["ruff", "format", "--check", "jobrun", "tests", "bench"],
        ["mypy", "--strict", "jobrun", "tests", "bench"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_linter(cmd: list[str]) -> None:
    paths = [p for p in cmd[2:] if not (ROOT / p).exists()]
    args = [a for a in cmd if a not in paths]
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
