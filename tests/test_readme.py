"""README.md's examples, run as written: the lines of its console blocks, in order, through bash
(so `id=$(...)` carries over), in a project directory under a home holding an executable
build.sh and a Makefile with a `test` target, as root and as alice. Each line must succeed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT
from .helpers import as_user_cmd
from .homes import make, mkdir, scratch_homes, user_env

pytestmark = [pytest.mark.integration, pytest.mark.daemon]

BUILD_SH = '#!/bin/sh\necho "building ($*) in $(pwd)"\n'
MAKEFILE = "test:\n\t@echo all tests passed\n"


def readme_commands() -> list[str]:
    """The `$ ` lines of README.md's ```console blocks, in order."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```console\n(.*?)^```", text, flags=re.S | re.M)
    return [line[2:] for b in blocks for line in b.splitlines() if line.startswith("$ ")]


def test_the_readme_has_examples_to_run() -> None:
    commands = readme_commands()
    assert len(commands) >= 5 and any("./build.sh" in c for c in commands)


def script(commands: list[str]) -> str:
    """The commands one per line, each followed by a line recording its exit status (a line of
    its own: a command may end in a comment)."""
    lines = ["__rc=()"]
    for c in commands:
        lines += [c, "__rc+=($?)"]
    lines.append('echo "__status ${__rc[*]}"')
    return "\n".join(lines) + "\n"


def _open_to_others(path: str) -> bool:
    p = Path(os.path.realpath(path))
    return all(d.stat().st_mode & 0o001 for d in p.parents) and bool(p.stat().st_mode & 0o001)


def jobrun_command(bin_dir: Path) -> Path:
    """A `jobrun` on PATH for every user: this checkout run by this interpreter, or by Debian's
    (whose libraries the package uses) where others cannot run this one (a pyenv under /root)."""
    python = sys.executable if _open_to_others(sys.executable) else "/usr/bin/python3"
    bin_dir.mkdir(mode=0o755)
    wrapper = bin_dir / "jobrun"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {python} -m jobrun "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


@pytest.fixture
def project() -> Iterator[Path]:
    with scratch_homes("alice") as homes:
        jobrun_command(homes["alice"].parent / "bin")
        proj = mkdir(homes["alice"] / "proj", "alice")
        make(proj / "build.sh", BUILD_SH, "alice", mode=0o755)
        make(proj / "Makefile", MAKEFILE, "alice")
        yield proj


@pytest.mark.parametrize("user", ["root", "alice"])
def test_readme_examples_run_as_written(project: Path, user: str) -> None:
    commands = readme_commands()
    env = user_env(user, "daemon")
    env["PATH"] = f"{project.parent.parent / 'bin'}:{env['PATH']}"  # this checkout's jobrun
    proc = subprocess.run(
        as_user_cmd(user, "bash", "-c", script(commands)),
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.rstrip("\n").rpartition("\n")[2]
    statuses = last.removeprefix("__status ").split()
    failed = [(c, s) for c, s in zip(commands, statuses, strict=True) if s != "0"]
    assert not failed, f"{failed}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    # What the lines printed: build.sh ran in the project, with its argument; make test passed.
    assert f"building (--release) in {project}" in proc.stdout
    assert "all tests passed" in proc.stdout
    assert "Traceback" not in proc.stderr
