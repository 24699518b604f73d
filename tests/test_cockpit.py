"""The Cockpit "Jobs" page (cockpit/, package cockpit-jobrun) in a real browser.

cockpit-ws serves the page inside the private systemd of tests/with-systemd; Debian's headless
chromium, driven through chromedriver (tests/webdriver.py), logs in as alice (a password set in
the sandbox's /etc) and works the page: the start form (built from settings.json) shows jobrund's
cap errors inline, a job starts, its output arrives, it stops, and bob's job never shows.
The page's files and a `jobrun` command for cockpit's bridge go into the sandbox's /usr overlay
(tests/install.py), never the host's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from jobrun import web_settings

from . import install
from .cockpit_page import (
    check_bad_value,
    check_form,
    cockpit_ws,
    login,
    page_failure_shown,
    start_error,
    start_follow_stop,
)
from .helpers import as_user, start_as, status_as
from .homes import scratch_homes
from .webdriver import CHROMEDRIVER, CHROMIUM, Browser, chromium

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "cockpit"
PAGE_FILES = ("manifest.json", "index.html", "jobs.js", "jobs.css", "settings.json")
COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
INSTALLED = Path("/usr/share/cockpit/jobrun")
WRAPPER = Path("/usr/local/bin/jobrun")
CLI_COPY = Path("/usr/local/lib/jobrun-cockpit-test")
CONFIG = Path("/etc/jobrun/jobrund.toml")
PASSWORD = "Jobs-page-test-1"


def test_settings_json_is_the_settings_table() -> None:
    """cockpit/settings.json is what packaging/gen-cockpit-settings writes from the table now."""
    assert (PAGE / "settings.json").read_text() == web_settings.text(), (
        "cockpit/settings.json is stale: run packaging/gen-cockpit-settings"
    )
    fields = [row["field"] for row in json.loads((PAGE / "settings.json").read_text())]
    from jobrun.properties import SETTINGS

    assert fields == [s.field for s in SETTINGS]


def test_page_files_are_the_packaged_ones() -> None:
    """What packaging/cockpit/ installs is exactly the page's files."""
    listed = (ROOT / "packaging/cockpit/debian/install").read_text().split()
    assert sorted(p for p in listed if p.startswith("cockpit/")) == sorted(
        f"cockpit/{f}" for f in PAGE_FILES
    )
    assert sorted(p.name for p in PAGE.iterdir()) == sorted(PAGE_FILES)
    manifest = json.loads((PAGE / "manifest.json").read_text())
    assert manifest["menu"]["index"]["label"] == "Jobs"


def test_cockpit_package_version_and_depends_are_jobruns() -> None:
    """cockpit-jobrun's version is jobrun's, and it needs that jobrun and a Cockpit bridge."""
    import jobrun

    changelog = (ROOT / "packaging/cockpit/debian/changelog").read_text()
    assert changelog.startswith(f"cockpit-jobrun ({jobrun.__version__}) ")
    control = (ROOT / "packaging/cockpit/debian/control").read_text()
    assert f"jobrun (>= {jobrun.__version__})" in control
    assert "cockpit-bridge (>= 287)" in control
    assert "Architecture: all" in control


def _missing() -> list[str]:
    return [p for p in (COCKPIT_WS, CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]


@contextmanager
def _config(text: str) -> Iterator[None]:
    CONFIG.parent.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(text)
    subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)
    try:
        yield
    finally:
        CONFIG.unlink(missing_ok=True)
        subprocess.run(["systemctl", "restart", "jobrund.service"], check=True)


@contextmanager
def _page_installed() -> Iterator[None]:
    """The page where the package puts it, and `jobrun` on the bridge's PATH (this checkout's
    CLI), in the sandbox's /usr overlay; alice's and carol's passwords in its /etc."""
    install.install()  # the overlays; refuses outside the sandbox
    INSTALLED.mkdir(parents=True)
    for name in PAGE_FILES:
        shutil.copyfile(PAGE / name, INSTALLED / name)
    # The bridge runs `jobrun` as alice, who may not be able to reach this interpreter (pyenv's
    # lives under /root): the CLI from a copy of this checkout's package, on Debian's python3
    # and python3-* libraries, as the package runs it.
    shutil.copytree(
        ROOT / "jobrun", CLI_COPY / "jobrun", ignore=shutil.ignore_patterns("__pycache__")
    )
    WRAPPER.parent.mkdir(parents=True, exist_ok=True)
    WRAPPER.write_text(f'#!/bin/sh\nPYTHONPATH={CLI_COPY} exec /usr/bin/python3 -m jobrun "$@"\n')
    WRAPPER.chmod(0o755)
    subprocess.run(
        ["chpasswd"], input=f"alice:{PASSWORD}\ncarol:{PASSWORD}\n", text=True, check=True
    )
    try:
        yield
    finally:
        shutil.rmtree(INSTALLED)
        shutil.rmtree(CLI_COPY)
        WRAPPER.unlink()


@pytest.mark.integration
@pytest.mark.daemon
def test_jobs_page_in_chromium_as_alice() -> None:
    missing = _missing()
    if missing:
        pytest.fail(
            f"the Cockpit page's browser test needs {', '.join(missing)}: apt-get install "
            "--no-install-recommends cockpit-ws cockpit-bridge chromium chromium-driver",
            pytrace=False,
        )
    with (
        scratch_homes("alice", "bob", "carol"),
        _page_installed(),
        _config('[limits]\nmemory_max = "512M"\n'),
    ):
        bobs = start_as("bob", "--name", "bobs-job", "--", "sleep", "300")
        # alice's jobs of earlier tests (the page lists the last day's, as `jobrun list` does)
        before = {j["id"] for j in json.loads(as_user("alice", "list", "--json").stdout)}
        try:
            with cockpit_ws() as port, chromium() as b, page_failure_shown(b):
                login(b, port, "alice", PASSWORD)
                assert b.text("#whoami") == "As alice"  # not an admin
                check_form(b, web_settings.table())
                _check_cap(b)
                check_bad_value(b)
                # The refused starts recorded nothing.
                after = {j["id"] for j in json.loads(as_user("alice", "list", "--json").stdout)}
                assert after == before
                job_id = start_follow_stop(b, "alice", bobs, _cli_state)
                # The cap of jobrund's config is the limit of a job that asked for none.
                limits = b.text("#detail-limits")
                assert "536870912" in limits or "512M" in limits, limits
                rows = b.js(
                    "return Array.from(document.querySelectorAll('#jobs-body tr'))"
                    ".map(r => r.dataset.id)"
                )
                assert set(rows) - before == {job_id} and bobs not in rows, rows
                assert "bobs-job" not in b.text("body")
                # A job started elsewhere (the CLI) shows up by itself.
                other = start_as("alice", "--name", "from-the-cli", "--", "sleep", "300")
                b.wait_js(f"return !!document.querySelector('#jobs-body tr[data-id=\"{other}\"]')")
                as_user("alice", "stop", other)
            # An admin (carol, in jobrun-admin) sees everyone's jobs: bob's and alice's.
            with cockpit_ws() as port, chromium() as b, page_failure_shown(b):
                login(b, port, "carol", PASSWORD)
                assert "manages every job" in b.text("#whoami")
                b.wait_js(f"return !!document.querySelector('#jobs-body tr[data-id=\"{bobs}\"]')")
                b.wait_js(f"return !!document.querySelector('#jobs-body tr[data-id=\"{job_id}\"]')")
        finally:
            as_user("bob", "stop", bobs)
        assert status_as("bob", bobs)["state"] == "stopped"


def _cli_state(user: str, job_id: str) -> str:
    state: str = status_as(user, job_id)["state"]
    return state


def _check_cap(b: Browser) -> None:
    """A cap of jobrund's config: its D-Bus error, inline, and the field marked."""
    b.type("#start-command", "sh -c 'echo never'")
    b.type("#setting-memory_max", "1G")
    b.click("#start-button")
    message = start_error(b)
    assert "--memory-max" in message and "most allowed for alice" in message, message
    assert b.js("return document.querySelector('[data-field=memory_max]').className") == (
        "row has-error"
    )
