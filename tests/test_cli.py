"""CLI behaviour that needs no systemd: parsing, bad input, exit codes, nothing started."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from jobrun import cli
from jobrun.cli import common
from jobrun.properties import SETTINGS


def _runner() -> CliRunner:
    """A runner that keeps stdout and stderr apart. click 8.2+ always does; 8.1 (Debian 12's
    8.1.3) mixes stderr into stdout unless told not to, and 8.2 removed that switch."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click 8.1's; typed by 8.2+
    except TypeError:
        return CliRunner()


def seen(result: Result) -> str:
    """What the user sees: stdout and stderr."""
    return result.stdout + result.stderr


runner = _runner()


@pytest.fixture(autouse=True)
def no_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse() -> None:
        raise AssertionError("bad input must not reach the manager")

    monkeypatch.setattr(common, "open_backend", refuse)


@pytest.mark.parametrize(
    "args",
    [
        ["start"],
        ["start", "--"],
        ["start", "--cpu-weight", "0", "--", "true"],
        ["start", "--cpu-weight", "abc", "--", "true"],
        ["start", "--memory-max", "12Q", "--", "true"],
        ["start", "--memory-high", "-1", "--", "true"],
        ["start", "--io-weight", "10001", "--", "true"],
        ["start", "--tasks-max", "-3", "--", "true"],
        ["start", "--cpu-quota", "lots", "--", "true"],
        ["start", "-E", "NOVALUE", "--", "true"],
        ["start", "-E", "=x", "--", "true"],
        ["start", "-C", "relative", "--", "true"],
        ["start", "--stop-timeout", "-1", "--", "true"],
        ["start", "--name", "", "--", "true"],
        ["start", "--no-such-option", "--", "true"],
        ["run", "--memory-max", "0", "--", "true"],
        ["stop", "--timeout", "soon", "abc"],
        ["status"],
        ["frobnicate"],
    ],
)
def test_bad_input_is_a_one_line_error_and_exit_2(args: list[str]) -> None:
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, seen(result)
    assert "Traceback" not in seen(result)
    assert result.stdout == "" or "Usage" in seen(result)


def test_error_says_what_to_do() -> None:
    result = runner.invoke(cli.app, ["start", "--"])
    assert "no command given" in seen(result) and "jobrun start -- CMD" in seen(result)


def test_every_setting_is_an_option_of_start_and_run() -> None:
    for verb in ("start", "run"):
        help_text = runner.invoke(cli.app, [verb, "--help"], terminal_width=200).output
        for s in SETTINGS:
            for flag in s.flags.replace("/", " ").split():
                assert flag in help_text, (verb, flag)


def test_version() -> None:
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("jobrun ")
