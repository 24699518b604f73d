"""Home directories for the sandbox's test users, and the CLI run from a directory as a user.

/home is the host's (only /etc is the sandbox's overlay), so a test's homes live in a temporary
directory under /home that is removed afterwards, and the users' home fields point there only
inside the sandbox (usermod writes the overlay's /etc/passwd).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .helpers import jobrun_cmd


@contextmanager
def scratch_homes(*users: str) -> Iterator[dict[str, Path]]:
    """A fresh home (mode 0755, as Debian's useradd makes them) for each user, in a temporary
    directory under /home; the users' old home fields come back afterwards."""
    base = Path(tempfile.mkdtemp(prefix="jobrun-test-", dir="/home"))
    base.chmod(0o755)
    old = {u: pwd.getpwnam(u).pw_dir for u in users}
    homes = {u: base / u for u in users}
    try:
        for user, home in homes.items():
            home.mkdir(mode=0o755)
            entry = pwd.getpwnam(user)
            os.chown(home, entry.pw_uid, entry.pw_gid)
            subprocess.run(["usermod", "-d", str(home), user], check=True, capture_output=True)
        yield homes
    finally:
        for user, path in old.items():
            subprocess.run(["usermod", "-d", path, user], check=True, capture_output=True)
        shutil.rmtree(base)


def make(path: Path, text: str, user: str, mode: int = 0o644) -> Path:
    """A file or (text None-like "") directory owned by `user`."""
    entry = pwd.getpwnam(user)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def mkdir(path: Path, user: str, mode: int = 0o755) -> Path:
    entry = pwd.getpwnam(user)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def user_env(user: str, mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOBRUN_STATE_DIR",)}
    env["JOBRUN_MODE"] = mode
    if user != "root":
        env["HOME"] = pwd.getpwnam(user).pw_dir
    return env


def jobrun_in(
    cwd: Path | str, user: str, *args: str, mode: str = "daemon", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`jobrun ARGS` as `user`, from the directory `cwd` (a fresh interpreter)."""
    return subprocess.run(
        jobrun_cmd(user, *args),
        capture_output=True,
        text=True,
        env=user_env(user, mode),
        timeout=120,
        cwd=cwd,
        input=stdin,
    )
