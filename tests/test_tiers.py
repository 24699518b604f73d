"""The integration tier fails loudly, never skips, when it cannot reach a systemd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_integration_tier_fails_without_a_system_bus(tmp_path: Path) -> None:
    probe = ROOT / "tests" / "test_lifecycle.py"
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{probe}::test_unknown_id_is_an_error"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    # failed in the test or in its fixtures ("error"): either way not passed, and not skipped
    assert ("1 failed" in proc.stdout or "1 error" in proc.stdout) and "skipped" not in proc.stdout
    assert "integration test needs a real systemd" in proc.stdout
    assert "tests/with-systemd" in proc.stdout
