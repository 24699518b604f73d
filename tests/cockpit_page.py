"""The Cockpit "Jobs" page worked in headless chromium, as a user would: log in through Cockpit's
login page, open the page, start a job, see its output arrive, stop it, and never see another
user's job. Standard library only (tests/webdriver.py), so that both tests/test_cockpit.py (the
page from this checkout) and packaging/test-deb (the installed cockpit-jobrun package) run it:

    python3 -m tests.cockpit_page USER PASSWORD OTHER_USERS_JOB_ID

(as root, where cockpit-ws, chromium and chromedriver are installed, jobrund runs, and USER has
PASSWORD). The caller checks a job's state with the CLI (`cli_state`).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .webdriver import Browser, chromium, free_port, wait_port

COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
PAGE_PATH = "/cockpit/@localhost/jobrun/index.html"
# The page's rows of the settings table, as the page shows them (label: the CLI's flag).
SETTINGS_JSON = "/usr/share/cockpit/jobrun/settings.json"


@contextmanager
def cockpit_ws() -> Iterator[int]:
    """cockpit-ws without TLS on a free local port; its port."""
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
    audit session ID pam_loginuid gave them. (A user's home field can only change back once none
    of the user's processes is left.)"""
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
    deadline = time.monotonic() + 30
    while left():
        if time.monotonic() > deadline:
            raise TimeoutError(f"cockpit's login sessions still run: {left()}")
        time.sleep(0.05)


def login(b: Browser, port: int, user: str, password: str) -> None:
    """Through Cockpit's login page, then straight to the Jobs page (not in the shell's iframe)."""
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
    b.go(f"http://127.0.0.1:{port}{PAGE_PATH}")
    b.wait_js("return document.body.dataset.ready === 'true'", timeout=60)
    assert b.text("#whoami").startswith(f"As {user}"), b.text("#whoami")


def start_error(b: Browser) -> str:
    value = b.wait_js(
        "var e = document.getElementById('start-error'); return !e.hidden && e.textContent;"
    )
    return str(value)


def check_form(b: Browser, table: list[dict[str, object]]) -> None:
    """One input per setting of the table, labelled with the CLI's flag."""
    for row in table:
        assert b.text(f"label[for='setting-{row['field']}']") == row["flag"], row


def check_bad_value(b: Browser) -> None:
    """jobrund's own check of a value, inline; the field marked; nothing started."""
    b.type("#start-command", "sh -c 'echo never'")
    b.type("#setting-memory_max", "lots")
    b.click("#start-button")
    b.wait_js("return document.getElementById('start-error').textContent.indexOf('lots') >= 0")
    assert "--memory-max" in b.text("#start-error"), b.text("#start-error")
    assert b.js("return document.querySelector('[data-field=memory_max]').className") == (
        "row has-error"
    )
    b.js("document.getElementById('setting-memory_max').value = '';")


def start_follow_stop(
    b: Browser, user: str, others_job: str, cli_state: Callable[[str, str], str]
) -> str:
    """Start a job from the form, see its output arrive and the list update (never with the
    other user's job), its status, limits and usage, then stop it; its ID.
    `cli_state(user, job_id)`: the job's state as the CLI tells it that user."""
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
    assert output == "hello from the page\nsecond line\n", output
    assert cli_state(user, job_id) == "running"

    # The list updates by itself: the user's job, never the other user's.
    b.wait_js(f"return !!document.querySelector('#jobs-body tr[data-id=\"{job_id}\"]')")
    rows = b.js(
        "return Array.from(document.querySelectorAll('#jobs-body tr')).map(r => r.dataset.id)"
    )
    assert job_id in rows and others_job not in rows, rows
    assert others_job not in b.text("body")

    # Status, limits and usage of the running job.
    b.wait_js("return document.getElementById('detail').dataset.state === 'running'")
    assert b.text("#detail-status dd[data-key=name]") == "web-job"
    assert b.text("#detail-status dd[data-key=owner]") == user
    b.wait_js("return !!document.querySelector('#detail-usage dd[data-key=tasks]')")

    # Stop: the job ends, the page says so, and the output stops following.
    b.click("#stop-button")
    b.wait_js("return document.getElementById('detail').dataset.state === 'stopped'")
    b.wait_js("return document.getElementById('output-state').textContent === '(ended)'")
    assert cli_state(user, job_id) == "stopped"
    return job_id


@contextmanager
def page_failure_shown(b: Browser) -> Iterator[None]:
    """The page's text on stderr if what runs inside fails."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            sys.stderr.write("the page at the failure:\n" + b.text("body") + "\n")
        raise


def _installed_cli_state(user: str, job_id: str) -> str:
    home = pwd.getpwnam(user).pw_dir
    out = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
         "env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", "LANG=C.UTF-8",
         "jobrun", "status", "--json", job_id],
        capture_output=True, text=True, check=True, cwd="/", timeout=60,
    ).stdout  # fmt: skip
    state: str = json.loads(out)["state"]
    return state


def main(argv: list[str]) -> int:
    user, password, others_job = argv
    table = json.loads(Path(SETTINGS_JSON).read_text())
    with cockpit_ws() as port, chromium() as b, page_failure_shown(b):
        login(b, port, user, password)
        check_form(b, table)
        check_bad_value(b)
        job_id = start_follow_stop(b, user, others_job, _installed_cli_state)
    print(f"the Jobs page as {user}: started, followed and stopped {job_id}; {others_job} unseen")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
