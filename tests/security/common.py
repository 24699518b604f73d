"""What the security tests share: acting as a local user, by the CLI or by raw D-Bus calls."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ..helpers import dbus_call_as, jobrun_cmd, options_code


def jobrun(*args: str, user: str = "root", cwd: str = "/") -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter, as `user` (jobrund for a plain user, as users get it)."""
    cmd = jobrun_cmd(user, *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def raw_start_as(user: str, command: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """jobrund's Start called directly over D-Bus as `user` (no CLI-side checks)."""
    err, reply = dbus_call_as(user, "Start", f"[{command!r}, {options_code(options)}]")
    if err is not None:
        return {"error": err, "text": reply[0]}
    return {"job": json.loads(reply[0])}
