"""The `jobrun` command line: thin over the library; prints, and maps errors to exit codes.

Written in typer's default-value option style so that it also runs on Debian 12's typer 0.7.
`app` holds the global options and the entry point; the commands register themselves on it as
their modules are imported, in the order `--help` lists them: `foreground` (start, run), `jobs`
(stop, wait, status, list), `live` (pause, resume, set), `logs`, `top`, `schedule` (list,
show, rm), `admin` (doctor, certs). The options of `start`, `run` and `set` are generated from
the table in properties.py.
"""

# isort: off
from . import foreground, jobs, live, logs, top, schedule, groups, admin  # noqa: F401 - --help's order

# isort: on
from .app import app, main

__all__ = ["app", "main"]
