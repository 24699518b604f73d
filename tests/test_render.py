"""`jobrun status` prints without rich where rich would print plain text: byte for byte the same."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from jobrun import render
from jobrun.wire.jobs import job_from_dict

BASE: dict[str, Any] = {
    "id": "abc123defg",
    "name": None,
    "state": "succeeded",
    "signal": None,
    "exit_code": 0,
    "result": None,
    "reason": None,
    "command": ["sh", "-c", "echo hi"],
    "owner": "root",
    "uid": 0,
    "invocation_id": None,
    "unit": "jobrun-abc123defg.service",
    "created_at": "2026-11-29T06:00:00.123456+00:00",
    "started_at": "2026-11-29T06:00:01+00:00",
    "finished_at": "2026-11-29T06:00:02.5+00:00",
    "limits": {},
    "usage": None,
}

VARIANTS: list[dict[str, Any]] = [
    BASE,
    {**BASE, "name": "nightly", "limits": {"cpu_weight": 50, "memory_max": 1 << 30}},
    {**BASE, "state": "running", "exit_code": None, "finished_at": None,
     "usage": {"cpu_seconds": 1.5, "memory_bytes": 123456789, "tasks": 3,
               "io_read_bytes": None, "io_write_bytes": 4096}},
    {**BASE, "state": "failed", "exit_code": None, "signal": "SIGKILL", "reason": "killed"},
    {**BASE, "command": ["python3", "-c", "print('x' * 200)", *["arg"] * 20]},
    {**BASE, "command": ["echo", "[bold]not bold[/]"]},  # rich markup: rich decides
    {**BASE, "command": ["echo", ":smile: and a:b"]},  # emoji codes: rich decides
    {**BASE, "name": "ünïcode ✓"},
    {**BASE, "limits": {"writable": ["/srv/a", "/srv/b"]}},
]  # fmt: skip


def printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, d: dict[str, Any], plain: bool) -> str:
    """What status_table writes to a file (not a terminal), with or without the plain path."""
    if not plain:
        monkeypatch.setattr(render, "_print_plain", lambda rows: False)
    path = tmp_path / "out"
    with open(path, "w", encoding="utf-8") as f:
        monkeypatch.setattr(sys, "stdout", f)
        render.status_table(job_from_dict(d))
        monkeypatch.undo()
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("columns", ["20", "40", "41", "42", "43", "58", "80", "120", None])
@pytest.mark.parametrize("d", VARIANTS)
def test_plain_status_is_what_rich_prints(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, d: dict[str, Any], columns: str | None
) -> None:
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ours = printed(monkeypatch, tmp_path, d, plain=True)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    theirs = printed(monkeypatch, tmp_path, d, plain=False)
    assert ours == theirs


def test_the_plain_path_is_taken_for_an_ordinary_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    with open(tmp_path / "out", "w") as f:
        monkeypatch.setattr(sys, "stdout", f)
        assert render._print_plain(render._status_rows(job_from_dict(VARIANTS[2])))
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # no file descriptor: rich decides
    assert not render._print_plain(render._status_rows(job_from_dict(VARIANTS[2])))
