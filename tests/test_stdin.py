"""`jobrun run` passes its stdin to the job when it is not a terminal (as `systemd-run --pipe`):
in-process, and through jobrund (the descriptor goes over D-Bus to jobrund, which hands it on).
"""

from __future__ import annotations

import hashlib

import pytest

from .homes import jobrun_in

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

WHO = [("root", "local"), ("root", "daemon"), ("alice", "daemon")]


@pytest.mark.parametrize(("user", "mode"), WHO)
def test_piped_input_reaches_the_job(user: str, mode: str) -> None:
    proc = jobrun_in("/", user, "run", "--", "wc", "-l", mode=mode, stdin="a\nb\n")
    assert (proc.returncode, proc.stdout) == (0, "2\n"), proc.stderr


@pytest.mark.parametrize(("user", "mode"), WHO)
def test_a_large_input_arrives_whole_and_in_order(user: str, mode: str) -> None:
    text = "".join(f"line {i} ✓\n" for i in range(200_000))  # ~2.4 MB: more than a pipe holds
    proc = jobrun_in("/", user, "run", "--", "sha256sum", mode=mode, stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == hashlib.sha256(text.encode()).hexdigest()


def test_no_input_is_an_empty_one() -> None:
    proc = jobrun_in("/", "alice", "run", "--", "cat", stdin="")
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr
