"""journald's rate limit never drops job output silently.

In-process as root, jobrun makes sure the namespace's journald has no rate limit before it starts
a job (journald_conf.py), and readers report the lines journald says it suppressed
(`jobrun.journal.loss.suppressed`). The integration tests change the sandbox's
/etc/systemd/journald@jobrun.conf (an overlay of the sandbox's own) and put it back afterwards,
journald restarted both times.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrun import journald_conf
from jobrun.errors import PermissionDenied

from .helpers import jobrun, start, wait_finished

ROOT = Path(__file__).resolve().parent.parent
CONF = journald_conf.MAIN_CONF
SERVICE = journald_conf.SERVICE


# -- unit: which configuration journald will read, and what ensure() does about it ----------


@pytest.fixture
def conf_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """journald_conf's paths under tmp_path, and a fresh once-per-process flag."""
    etc = tmp_path / "etc" / "systemd"
    etc.mkdir(parents=True)
    monkeypatch.setattr(journald_conf, "MAIN_CONF", etc / "journald@jobrun.conf")
    monkeypatch.setattr(
        journald_conf,
        "DROPIN_DIRS",
        tuple(tmp_path / d / "journald@jobrun.conf.d" for d in ("etc", "run", "usr")),
    )
    monkeypatch.setattr(journald_conf, "_checked", False)
    return tmp_path


@pytest.mark.unit
def test_the_packaged_file_is_the_one_in_units() -> None:
    assert journald_conf.packaged_text() == (ROOT / "units" / "journald@jobrun.conf").read_text()


@pytest.mark.unit
def test_effective_rate_limit(conf_dirs: Path) -> None:
    assert not journald_conf.effective().off  # no file: journald's defaults
    main = journald_conf.MAIN_CONF
    main.write_text(journald_conf.packaged_text())
    assert journald_conf.effective().off
    main.write_text("[Journal]\nRateLimitIntervalSec=10s\nRateLimitBurst=0\n")
    assert journald_conf.effective().off  # either 0 turns it off
    main.write_text("[Journal]\nRateLimitInterval=0s\n")
    assert journald_conf.effective().off
    main.write_text("[Journal]\nStorage=persistent\n# RateLimitIntervalSec=0\n")
    assert not journald_conf.effective().off
    main.write_text("[Other]\nRateLimitIntervalSec=0\n")
    assert not journald_conf.effective().off
    main.write_text(journald_conf.packaged_text())
    dropins = journald_conf.DROPIN_DIRS
    dropins[2].mkdir(parents=True)
    (dropins[2] / "50-limit.conf").write_text(
        "[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst=1000\n"
    )
    limit = journald_conf.effective()
    assert not limit.off and limit.set_by == dropins[2] / "50-limit.conf"
    dropins[0].mkdir(parents=True)
    (dropins[0] / "50-limit.conf").write_text("[Journal]\n")  # hides the one further down
    assert journald_conf.effective().off


@pytest.mark.unit
def test_ensure_refuses_where_it_cannot_or_must_not_write(
    conf_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = journald_conf.MAIN_CONF
    # Someone else's file with a limit: never rewritten.
    main.write_text("[Journal]\nRateLimitBurst=500\n")
    with pytest.raises(PermissionDenied, match="does not rewrite") as e:
        journald_conf.ensure()
    assert str(main) in e.value.hint and main.read_text() == "[Journal]\nRateLimitBurst=500\n"
    main.unlink()
    # Not root.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionDenied, match="rate limit") as e:
        journald_conf.ensure()
    assert "RateLimitIntervalSec=0" in e.value.hint and not main.exists()
    # Root, but /etc read-only (here: not a directory that can be written).
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    main.parent.chmod(0o555)
    try:
        if os.access(main.parent, os.W_OK):  # root ignores the mode: make the parent a file
            main.parent.chmod(0o755)
            monkeypatch.setattr(journald_conf, "MAIN_CONF", conf_dirs / "afile" / main.name)
            (conf_dirs / "afile").write_text("")
        with pytest.raises(PermissionDenied, match="cannot write") as e:
            journald_conf.ensure()
        assert "RateLimitIntervalSec=0" in e.value.hint
    finally:
        main.parent.chmod(0o755)


@pytest.mark.unit
def test_ensure_installs_the_file_restarts_journald_and_says_so(
    conf_dirs: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", run)
    assert journald_conf.ensure() == journald_conf.MAIN_CONF
    assert journald_conf.MAIN_CONF.read_text() == journald_conf.packaged_text()
    assert ran == [["systemctl", "try-restart", SERVICE]]
    assert [r.getMessage() for r in caplog.records] == [
        f"configured the jobrun journal namespace without a rate limit: {journald_conf.MAIN_CONF}"
    ]
    assert journald_conf.ensure() is None and len(ran) == 1  # once


# -- integration: the real journald of the sandbox ------------------------------------------


def _restart_journald() -> None:
    subprocess.run(["systemctl", "restart", SERVICE], check=True, capture_output=True)


@pytest.fixture
def sandbox_conf() -> Iterator[None]:
    """The sandbox's journald@jobrun.conf as it was, put back after the test."""
    before = CONF.read_bytes() if CONF.exists() else None
    try:
        yield
    finally:
        if before is None:
            CONF.unlink(missing_ok=True)
        else:
            CONF.write_bytes(before)
        _restart_journald()


def _jobrund_state_dir() -> str:
    out = subprocess.run(
        ["systemctl", "show", "-P", "StateDirectory", "jobrund.service"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return f"/var/lib/{out or 'jobrun'}"


@pytest.mark.integration
@pytest.mark.daemon
@pytest.mark.usefixtures("sandbox_conf")
def test_lines_journald_suppressed_are_reported_not_hidden() -> None:
    # A burst of 100 per 2 s (journald multiplies it by up to 6 for free disk space): most of
    # the 5,000 lines are dropped. journald writes its note when the unit's next line comes
    # after the interval: the last line.
    text = journald_conf.packaged_text()
    text = text.replace("RateLimitIntervalSec=0", "RateLimitIntervalSec=2s")
    CONF.write_text(text.replace("RateLimitBurst=0", "RateLimitBurst=100"))
    _restart_journald()
    # Started through jobrund: in-process, jobrun would refuse to start with this file.
    daemon = {"JOBRUN_MODE": "daemon"}
    job = start("--", "sh", "-c", "seq 5000; sleep 3; echo last", env=daemon)
    wait_finished(job, timeout=60)
    local = {"JOBRUN_MODE": "local", "JOBRUN_STATE_DIR": _jobrund_state_dir()}
    for args, env in (
        (["logs", job], daemon),
        (["logs", "--follow", job], daemon),
        (["logs", job], local),
        (["logs", "--follow", job], local),
    ):
        proc = jobrun(*args, env=env)
        assert proc.returncode != 0, (args, env, proc.stderr)
        found = re.search(r"journald dropped (\d+) lines of job", proc.stderr)
        assert found, proc.stderr
        kept = proc.stdout.splitlines()
        assert 100 <= len(kept) - 1 <= 600 and kept[-1] == "last", len(kept)
        assert len(kept) + int(found.group(1)) == 5001, (len(kept), found.group(1))
        assert kept[:-1] == [str(i) for i in range(1, len(kept))]


@pytest.mark.integration
@pytest.mark.usefixtures("state_dir", "sandbox_conf")
def test_in_process_root_configures_the_namespace_and_keeps_every_line() -> None:
    CONF.unlink(missing_ok=True)
    _restart_journald()  # journald's defaults: 10,000 lines per 30 s times a disk factor
    proc = jobrun("run", "--", "seq", "50000", env={"JOBRUN_MODE": "local"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (
        "jobrun: configured the jobrun journal namespace without a rate limit: "
        f"{CONF}\n" in proc.stderr
    ), proc.stderr
    assert proc.stderr.count("configured the jobrun journal namespace") == 1
    assert CONF.read_text() == journald_conf.packaged_text()
    assert proc.stdout == "".join(f"{i}\n" for i in range(1, 50001)), len(proc.stdout.splitlines())
    # Configured once: the next start says nothing.
    again = jobrun("run", "--", "true", env={"JOBRUN_MODE": "local"})
    assert again.returncode == 0 and "configured" not in again.stderr, again.stderr
