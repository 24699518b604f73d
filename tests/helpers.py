"""Small helpers shared by the tests: poll until a deadline (never sleep to wait), run the CLI
(in-process state or through jobrund, as root or as a local user), call jobrund raw over D-Bus."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

T = TypeVar("T")
# What a condition returns while it is not met yet (besides T's own falsy values: 0, "", []).
NotYet = None | Literal[False]


def wait_for(
    condition: Callable[[], T | NotYet],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T:
    """Poll `condition` every `interval` seconds until it returns something truthy, and return
    that; fail saying `what` was awaited after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@overload
async def wait_for_async(
    condition: Callable[[], Awaitable[T | NotYet]],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T: ...
@overload
async def wait_for_async(
    condition: Callable[[], T | NotYet],
    *,
    what: str,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T: ...
async def wait_for_async(
    condition: Callable[[], Any], *, what: str, timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """`wait_for` inside an event loop: `condition` may be a coroutine function, or a plain one
    whose answer other tasks of this loop change (the loop runs them between polls)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def jobrun(
    *args: str, check: bool = False, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process (a fresh interpreter, as a user would)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "jobrun", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"jobrun {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def start(*args: str, **kw: Any) -> str:
    out = jobrun("start", *args, check=True, **kw).stdout
    assert out.endswith("\n") and out.count("\n") == 1, out
    return out.strip()


def status(job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(jobrun("status", job_id, "--json", check=True).stdout)
    return data


def as_user_cmd(user: str, *cmd: str) -> list[str]:
    """`cmd` run as `user` with the user's groups (root's runs as it is)."""
    if user == "root":
        return list(cmd)
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd]


def jobrun_cmd(user: str, *args: str) -> list[str]:
    """`jobrun ARGS` as `user`, in a fresh interpreter."""
    return as_user_cmd(user, sys.executable, "-m", "jobrun", *args)


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI that goes through jobrund (no test's private state directory)."""
    env = {k: v for k, v in os.environ.items() if k != "JOBRUN_STATE_DIR"}
    env["JOBRUN_MODE"] = "daemon"
    env.update(extra or {})
    return env


def as_user(
    user: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The CLI through jobrund, as `user`, from / (a fresh process, as a user would run it)."""
    return subprocess.run(
        jobrun_cmd(user, *args),
        capture_output=True,
        text=True,
        env=daemon_env(env),
        timeout=timeout,
        cwd="/",
    )


def start_as(user: str, *args: str) -> str:
    proc = as_user(user, "start", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def status_as(user: str, job_id: str) -> dict[str, Any]:
    proc = as_user(user, "status", job_id, "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


_DBUS_CALL = """
import asyncio, json
from dbus_fast import Message, MessageType, Variant as V
from jobrun.bus import connect_system_bus
from jobrun import dbus_api as api

async def main(member, body):
    bus = await connect_system_bus()
    r = await bus.call(Message(destination=api.BUS_NAME, path=api.PATH, interface=api.INTERFACE,
                               member=member, signature=api.METHODS[member].sig_in, body=body))
    err = r.error_name if r.message_type == MessageType.ERROR else None
    print(json.dumps([err, r.body]))

asyncio.run(main(%r, %s))
"""


def dbus_call_as(user: str, member: str, body_code: str) -> tuple[str | None, list[Any]]:
    """One raw D-Bus call to jobrund as `user` (a child process, so the bus sees that uid):
    its error name or None, and the reply's body. `body_code` is Python that builds the body
    (`V` is dbus-fast's Variant)."""
    code = _DBUS_CALL % (member, body_code)
    proc = subprocess.run(
        as_user_cmd(user, sys.executable, "-c", code),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    err, reply = json.loads(proc.stdout)
    return err, reply


def options_code(options: dict[str, Any]) -> str:
    """Python for an a{sv} of options as dbus_call_as takes it: a list is an `as`, else `s`."""
    items = (
        f"{k!r}: V({'as' if isinstance(v, list) else 's'!r}, {v!r})" for k, v in options.items()
    )
    return "{" + ", ".join(items) + "}"


def wait_finished(job_id: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: (s := status(job_id))["state"] != "running" and s,
        timeout=timeout,
        interval=0.05,
        what=f"job {job_id} to finish",
    )


def systemctl_show(unit: str, *props: str) -> dict[str, str]:
    out = subprocess.run(
        ["systemctl", "show", unit, *(f"--property={p}" for p in props)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal_output(job_id: str) -> str:
    """The job's output as journalctl shows it (until the reader tests own this)."""
    return subprocess.run(
        ["journalctl", "--namespace=jobrun", "-o", "cat", "--no-pager", f"JOBRUN_JOB={job_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def cgroup_pids(unit: str) -> list[int] | None:
    """PIDs in the unit's cgroup (pids hierarchy), or None once the cgroup is gone."""
    # In its owner's slice, jobrun.slice/jobrun-u<UID>.slice (or jobrun-remote.slice).
    for path in Path("/sys/fs/cgroup/pids/jobrun.slice").glob(f"*.slice/{unit}/cgroup.procs"):
        try:
            with open(path) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return None
    return None


def inotify_instances(pid: int | str = "self") -> int:
    """How many inotify instances a process holds (its fds that are one)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:inotify":
                count += 1
        except OSError:
            continue
    return count


MSG_UNIT_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"  # PID 1: "Starting UNIT..."


def job_starts(since: str) -> list[str]:
    """Job IDs in the order PID 1 began starting their units since `since` (journalctl's
    --since), once per start: the order a queue released them in, and how often each ran."""
    out = subprocess.run(
        ["journalctl", "-q", "-o", "json", "--output-fields=UNIT", f"--since={since}", "_PID=1",
         f"MESSAGE_ID={MSG_UNIT_STARTING}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    units = (str(json.loads(line).get("UNIT", "")) for line in out.splitlines())
    return [u[len("jobrun-") : -len(".service")] for u in units if u.startswith("jobrun-")]
