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
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from jobrun import web_settings

from . import install
from .helpers import as_user, start_as, status_as, wait_for
from .homes import scratch_homes
from .webdriver import CHROMEDRIVER, CHROMIUM, Browser, chromium, free_port, wait_port

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
    CLI), in the sandbox's /usr overlay; alice's password in its /etc."""
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
    subprocess.run(["chpasswd"], input=f"alice:{PASSWORD}\n", text=True, check=True)
    try:
        yield
    finally:
        shutil.rmtree(INSTALLED)
        shutil.rmtree(CLI_COPY)
        WRAPPER.unlink()


@contextmanager
def _cockpit_ws() -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        ws = subprocess.Popen(
            [COCKPIT_WS, "--no-tls", "--port", str(port), "--address", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_port(port)
            yield port
        except BaseException:
            log.seek(0)
            sys.stderr.write("cockpit-ws's log:\n" + log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            _end(ws)


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [p for c in children for p in (int(c), *_descendants(int(c)))]


def _session_id(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/sessionid").read_text().strip()
    except OSError:
        return None


def _end(ws: subprocess.Popen[bytes]) -> None:
    """cockpit-ws and the login sessions it opened: cockpit-session, the user's bridge, what
    that spawned, and what PAM's session daemonized (pam_ssh_add's ssh-agent), found by the
    audit session ID pam_loginuid gave them. alice's home field can only change back once none
    of her processes is left."""
    ours = _session_id(os.getpid())
    sessions = {_session_id(p) for p in _descendants(ws.pid)} - {ours, None}
    ws.terminate()
    ws.wait(timeout=30)

    def left() -> list[int]:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        return [p for p in pids if _session_id(p) in sessions]

    for pid in left():
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not left(), what="cockpit's login sessions to end", timeout=30)


def _login(b: Browser, port: int, user: str, password: str) -> None:
    b.go(f"http://127.0.0.1:{port}/")
    b.wait_js("return !!document.getElementById('login-user-input')")
    b.type("#login-user-input", user)
    b.type("#login-password-input", password)
    b.click("#login-button")
    # The login page reloads into Cockpit's shell once the session is up.
    b.wait_js(
        "return document.readyState === 'complete' && !document.getElementById('login-user-input')",
        timeout=60,
    )


def _start_error(b: Browser) -> str:
    value = b.wait_js(
        "var e = document.getElementById('start-error'); return !e.hidden && e.textContent;"
    )
    return str(value)


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
        scratch_homes("alice", "bob"),
        _page_installed(),
        _config('[limits]\nmemory_max = "512M"\n'),
    ):
        bobs = start_as("bob", "--name", "bobs-job", "--", "sleep", "300")
        try:
            with _cockpit_ws() as port, chromium() as b:
                _login(b, port, "alice", PASSWORD)
                b.go(f"http://127.0.0.1:{port}/cockpit/@localhost/jobrun/index.html")
                b.wait_js("return document.body.dataset.ready === 'true'", timeout=60)
                assert b.text("#whoami") == "As alice"
                try:
                    _work_the_page(b, bobs)
                except BaseException:
                    sys.stderr.write("the page at the failure:\n" + b.text("body") + "\n")
                    raise
        finally:
            as_user("bob", "stop", bobs)


def _work_the_page(b: Browser, bobs: str) -> None:
    # The form has one input per setting of the table, labelled with the CLI's flag.
    for row in web_settings.table():
        label = b.text(f"label[for='setting-{row['field']}']")
        assert label == row["flag"]

    # A cap of jobrund's config: its D-Bus error, inline, and the field marked; nothing started.
    b.type("#start-command", "sh -c 'echo never'")
    b.type("#setting-memory_max", "1G")
    b.click("#start-button")
    message = _start_error(b)
    assert "--memory-max" in message and "most allowed for alice" in message, message
    assert b.js("return document.querySelector('[data-field=memory_max]').className") == (
        "row has-error"
    )
    # A bad value: jobrund's own check, shown the same way.
    b.type("#setting-memory_max", "lots")
    b.click("#start-button")
    b.wait_js("return document.getElementById('start-error').textContent.indexOf('lots') >= 0")
    assert json.loads(as_user("alice", "list", "--json").stdout) == []

    # A job starts; its output arrives while it runs.
    b.js("document.getElementById('setting-memory_max').value = '';")
    b.type("#start-name", "web-job")
    b.type("#start-command", "sh -c 'echo hello from the page; echo \"second line\"; sleep 300'")
    b.click("#start-button")
    started = str(b.wait_js("return document.getElementById('start-ok').textContent"))
    match = re.fullmatch(r"started (\S+)", started)
    assert match, started
    job_id = match.group(1)
    assert b.js("return document.getElementById('start-error').hidden") is True
    output = b.wait_js(
        "var t = document.getElementById('output').textContent;"
        "return t.indexOf('second line') >= 0 && t;"
    )
    assert output == "hello from the page\nsecond line\n"
    assert status_as("alice", job_id)["state"] == "running"

    # The list updates by itself: alice's job, never bob's.
    b.wait_js(f"return !!document.querySelector('#jobs-body tr[data-id=\"{job_id}\"]')")
    rows = b.js(
        "return Array.from(document.querySelectorAll('#jobs-body tr')).map(r => r.dataset.id)"
    )
    assert rows == [job_id]
    assert bobs not in b.text("body") and "bobs-job" not in b.text("body")

    # Status, limits (the cap applied) and usage of the running job.
    b.wait_js("return document.getElementById('detail').dataset.state === 'running'")
    assert "512M" in b.text("#detail-limits") or "536870912" in b.text("#detail-limits")
    b.wait_js("return !!document.querySelector('#detail-usage dd[data-key=tasks]')")
    assert b.text("#detail-status dd[data-key=name]") == "web-job"

    # Stop: the job ends, the page says so, and the output stops following.
    b.click("#stop-button")
    b.wait_js("return document.getElementById('detail').dataset.state === 'stopped'")
    b.wait_js("return document.getElementById('output-state').textContent === '(ended)'")
    assert status_as("alice", job_id)["state"] == "stopped"
    assert status_as("bob", bobs)["state"] == "running"
    assert os.path.isdir(INSTALLED)
