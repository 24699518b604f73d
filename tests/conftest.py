"""Test tiers: `unit` tests need nothing; `integration` tests need a real systemd as PID 1.

Run everything with `tests/with-systemd .venv/bin/pytest`. The integration tier never skips
silently: without a reachable systemd every integration test fails with a message saying how to
get one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def systemd_problem() -> str | None:
    """Why the integration tier cannot run here, or None when a real systemd is reachable."""
    try:
        comm = Path("/proc/1/comm").read_text().strip()
    except OSError as e:
        return f"cannot read /proc/1/comm: {e}"
    if comm != "systemd":
        return f"PID 1 is {comm!r}, not systemd"
    if not Path("/run/systemd/system").is_dir():
        return "/run/systemd/system is missing: systemd is not the running system manager"
    bus = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
    if bus.startswith("unix:path=") and not Path(bus.removeprefix("unix:path=")).exists():
        return f"the system bus socket {bus.removeprefix('unix:path=')} does not exist"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.iter_markers("integration")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _require_systemd(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration") is None:
        return
    problem = systemd_problem()
    if problem:
        pytest.fail(
            f"integration test needs a real systemd: {problem}. "
            "Run the suite as `tests/with-systemd .venv/bin/pytest` (as root), "
            "or deselect this tier with `-m unit`.",
            pytrace=False,
        )
    from . import install

    if install.in_sandbox():
        install.install()
    elif (
        request.node.get_closest_marker("daemon") is not None
        and not Path("/usr/share/dbus-1/system-services/org.jobrun.Manager1.service").exists()
    ):
        pytest.fail(
            "jobrund tests need jobrun's system files: run them under tests/with-systemd "
            "(which installs them into its private systemd) or install the package",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _jobrun_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI in-process unless a test is about jobrund (marked `daemon`)."""
    if request.node.get_closest_marker("daemon") is None:
        monkeypatch.setenv("JOBRUN_MODE", "local")


@pytest.fixture(autouse=True)
def _run_from_root(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Integration tests run from /: a job runs in the CLI's current directory, and where the
    checkout lives (under /tmp, which a job's private /tmp hides; under a home closed to a
    dynamic UID) must not change what they test."""
    if request.node.get_closest_marker("integration") is not None:
        monkeypatch.chdir("/")


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private jobrun state directory for one test."""
    d = tmp_path / "state"
    d.mkdir()
    monkeypatch.setenv("JOBRUN_STATE_DIR", str(d))
    yield d
