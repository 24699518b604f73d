"""Groups (queues) as JSON: what `jobrun group list --json` prints and jobrund's D-Bus API
carries, and the options of GroupSet."""

from __future__ import annotations

import json
from typing import Any

from ..config import NUMERIC_CAPS
from ..errors import InvalidArgument
from ..inputs import int_parser, parse_bool
from ..properties import SETTINGS_BY_FIELD
from ..queuestore import Group

_parallel = int_parser(0, 10000, "--parallel")


def group_to_dict(group: Group) -> dict[str, Any]:
    return {
        "name": group.name,
        "owner": group.owner,
        "parallel": group.parallel,
        "paused": group.paused,
        "limits": dict(group.limits),
        "queued": group.queued,
        "running": group.running,
    }


def group_from_dict(d: dict[str, Any]) -> Group:
    return Group(d["owner"], d["name"], d["parallel"], d["paused"], dict(d["limits"]),
                 d["queued"], d["running"])  # fmt: skip


def groups_json(groups: list[Group]) -> str:
    return json.dumps([group_to_dict(g) for g in groups])


def groups_from_json(text: str) -> list[Group]:
    return [group_from_dict(d) for d in json.loads(text)]


def decode_group_options(options: dict[str, Any]) -> dict[str, Any]:
    """GroupSet's options (text, as the CLI passes them): keyword arguments of
    Dispatcher.set_group. "parallel" (0: no limit), "paused", and the numeric settings of the
    settings table a slice takes (config.NUMERIC_CAPS), "none" removing one."""
    out: dict[str, Any] = {}
    limits: dict[str, int | None] = {}
    for key, value in options.items():
        if key == "parallel":
            out["parallel"] = _parallel(value)
        elif key == "owner":  # an admin acting on another user's group (dispatch.py)
            out["owner"] = str(value)
        elif key == "paused":
            out["paused"] = parse_bool(value)
        elif key in NUMERIC_CAPS:
            text = str(value).strip().lower()
            limits[key] = None if text == "none" else SETTINGS_BY_FIELD[key].parse(value)
        else:
            raise InvalidArgument(f"unknown group setting {key[:40]!r}")
    if limits:
        out["limits"] = limits
    return out
