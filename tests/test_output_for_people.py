"""`list` and `status` for people: one line per job within 80 columns (--wide: all of it), no
colours when piped or with NO_COLOR, and job IDs completed in bash."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from jobrun import cli, render
from jobrun.cli import common
from jobrun.cli import jobs as job_commands
from jobrun.model import Job
from jobrun.wire.jobs import job_from_dict, job_to_dict

from .test_render import BASE

LONG = ["python3", "-c", "print('x' * 200)", *[f"--argument-{i}" for i in range(20)]]
JOBS: list[dict[str, Any]] = [
    {**BASE, "id": "aaaa111111", "command": LONG, "name": "nightly build of everything ✓"},
    {**BASE, "id": "aaaa222222", "state": "failed", "exit_code": None, "signal": "SIGKILL",
     "owner": "a-user-with-a-long-name", "command": ["sh", "-c", "line one\nline two"]},
    {**BASE, "id": "bbbb333333", "state": "running", "exit_code": None, "finished_at": None,
     "command": ["漢字漢字"] * 30},
]  # fmt: skip


class Backend:
    async def list(self, all: bool) -> list[Job]:
        return [job_from_dict(j) for j in JOBS]

    async def status(self, job_id: str) -> Job:
        return next(job_from_dict(j) for j in JOBS if j["id"].startswith(job_id))

    async def close(self) -> None:
        pass


@pytest.fixture
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    async def open_backend() -> Backend:
        return Backend()

    monkeypatch.setattr(common, "open_backend", open_backend)


def test_list_fits_80_columns_one_line_per_job(
    fake_backend: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = CliRunner().invoke(cli.app, ["list"]).output
    lines = out.splitlines()
    assert len(lines) == 1 + len(JOBS), out
    assert all(render.cells(line) <= 80 for line in lines), out
    for job, line in zip(JOBS, lines[1:], strict=True):
        assert line.startswith(job["id"] + "  ")  # IDs whole
    assert lines[1].endswith("…") and "failed SIGKILL" in lines[2] and "running" in lines[3]
    assert "\x1b" not in out  # not a terminal: no colours
    wide = CliRunner().invoke(cli.app, ["list", "--wide"]).output
    assert " ".join(LONG) in wide and "nightly build of everything ✓" in wide
    assert len(wide.splitlines()) == 1 + len(JOBS)  # the newline in a command is a space


def test_status_shortens_the_command_to_the_terminal(
    fake_backend: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = CliRunner().invoke(cli.app, ["status", "aaaa1"]).output
    assert all(render.cells(line.rstrip()) <= 80 for line in out.splitlines()), out
    command = next(line for line in out.splitlines() if line.startswith("Command"))
    assert command.rstrip().endswith("…")
    wide = CliRunner().invoke(cli.app, ["status", "--wide", "aaaa1"], terminal_width=80).output
    assert "--argument-19" in wide


@pytest.mark.parametrize(
    ("env", "colour"),
    [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)],
)
def test_colours_only_for_a_terminal_without_no_color(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], colour: bool
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(os, "isatty", lambda fd: True)
    assert render.colour_wanted() is colour
    lines = render.list_lines(
        [job_to_dict(job_from_dict(j)) for j in JOBS], 80, render.colour_wanted()
    )
    assert ("\x1b[31mfailed SIGKILL\x1b[0m" in lines[2]) is colour
    monkeypatch.setattr(os, "isatty", lambda fd: False)  # piped
    assert render.colour_wanted() is False


def test_list_piped_through_the_real_cli_has_no_colour_codes() -> None:
    # A fresh interpreter, stdout a pipe: no escape codes whatever TERM says.
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    code = (
        "import sys; from jobrun import render; from tests.test_output_for_people import JOBS;"
        "from jobrun.wire.jobs import job_from_dict, job_to_dict;"
        "render.list_table([job_to_dict(job_from_dict(j)) for j in JOBS])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "\x1b" not in out and len(out.splitlines()) == 4


def test_job_ids_complete_for_stop_status_logs_and_wait(
    fake_backend: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert job_commands.complete_job_id("aaaa") == ["aaaa111111", "aaaa222222"]
    assert job_commands.complete_job_id("bb") == ["bbbb333333"]
    assert job_commands.complete_job_id("zz") == []
    for verb in ("stop", "status", "logs", "wait"):
        command = next(
            c
            for c in cli.app.registered_commands
            if c.callback is not None and (c.name or c.callback.__name__) == verb
        )
        assert command.callback is not None
        params = inspect.signature(command.callback).parameters
        first = next(iter(params.values())).default
        assert getattr(first, "autocompletion", None) is job_commands.complete_job_id, verb


def test_completion_never_prints_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> Backend:
        raise RuntimeError("no bus")

    monkeypatch.setattr(common, "open_backend", broken)
    assert job_commands.complete_job_id("a") == []
