"""What the security tests share: acting as a local user, by the CLI or by raw D-Bus calls."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from ..helpers import as_user_cmd, jobrun_cmd


def jobrun(*args: str, user: str = "root", cwd: str = "/") -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, as `user` (jobrund for a plain user, as users get it)."""
    cmd = jobrun_cmd(user, *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


_RAW_START = """
import asyncio, json, sys
from dbus_fast import Message, MessageType, Variant
from jobrun.bus import connect_system_bus
from jobrun import dbus_api as api

async def main():
    command, options = json.loads(sys.argv[1])
    bus = await connect_system_bus()
    opts = {k: Variant("as" if isinstance(v, list) else "s", v) for k, v in options.items()}
    reply = await bus.call(Message(destination=api.BUS_NAME, path=api.PATH,
        interface=api.INTERFACE, member="Start", signature="asa{sv}", body=[command, opts]))
    if reply.message_type == MessageType.ERROR:
        print(json.dumps({"error": reply.error_name, "text": reply.body[0]}))
    else:
        print(json.dumps({"job": json.loads(reply.body[0])}))

asyncio.run(main())
"""


def raw_start_as(user: str, command: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """jobrund's Start called directly over D-Bus as `user` (no CLI-side checks)."""
    proc = subprocess.run(
        as_user_cmd(user, sys.executable, "-c", _RAW_START, json.dumps([command, options])),
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data
