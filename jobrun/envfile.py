"""A job's -E variables, in a file only root can read, named by EnvironmentFile=.

systemd shows a unit's Environment= to every local user (`systemctl show -p Environment`), so the
values a caller passes with -E (tokens, passwords) never go there. PID 1 reads this file, as root,
when it starts the job's process; the job sees the variables, other users see only the file's
name. The file is removed once jobrun learns that the job has ended (Manager: the first status
that finds it final); /run is emptied at boot in any case.
"""

from __future__ import annotations

import contextlib
import os

ENV_DIR = "/run/jobrun/env"


def path(job_id: str) -> str:
    return os.path.join(ENV_DIR, f"{job_id}.env")


_ESCAPED = str.maketrans({c: "\\" + c for c in '"\\`$'})


def quote(value: str) -> str:
    """A value as systemd's environment-file parser reads it back exactly: double-quoted, with
    the four characters it unescapes there (" \\ ` $) escaped; a newline inside the quotes is
    part of the value. (Not single quotes: after one closes, the parser takes a quote as text.)
    Values hold no other control character than tab and newline (inputs.py)."""
    return '"' + value.translate(_ESCAPED) + '"'


def render(env: tuple[str, ...]) -> str:
    lines = []
    for assignment in env:
        key, _, value = assignment.partition("=")
        lines.append(f"{key}={quote(value)}\n")
    return "".join(lines)


def write(job_id: str, env: tuple[str, ...]) -> str | None:
    """Write the job's variables (mode 0600, a new file); its path, or None without variables."""
    if not env:
        return None
    os.makedirs(ENV_DIR, mode=0o700, exist_ok=True)
    target = path(job_id)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render(env))
    return target


def remove(job_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(job_id))
