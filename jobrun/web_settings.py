"""The settings table (properties.SETTINGS) as JSON for the Cockpit page's start form.

The page (cockpit/jobs.js) builds its form from cockpit/settings.json, which this module writes
(`python3 -m jobrun.web_settings > cockpit/settings.json`, run by packaging/gen-cockpit-settings);
tests/test_cockpit.py checks that the file is current, so the table stays the one definition.
"""

from __future__ import annotations

import json
from typing import Any

from . import profiles
from .properties import SETTINGS


def _kind(signature: str, repeat: bool) -> str:
    if signature == "b":
        return "switch"
    return "list" if repeat else "text"


def table() -> list[dict[str, Any]]:
    """One object per setting, in the table's order: the D-Bus option key (`field`), the CLI
    flags (a label the CLI's users know), the kind of input, help, metavar and, for a switch,
    the flags that turn it on and off."""
    rows: list[dict[str, Any]] = []
    for s in SETTINGS:
        flags = s.flags.split("/")
        row: dict[str, Any] = {
            "field": s.field,
            "flag": next(f for f in flags if f.startswith("--")),
            "kind": _kind(s.signature, s.repeat),
            "help": s.help,
            "metavar": s.metavar,
        }
        if s.signature == "b":
            row["on"], row["off"] = flags
            row["default"] = s.default
        if s.field == "profile":
            row["choices"] = list(profiles.names())
        rows.append(row)
    return rows


def text() -> str:
    return json.dumps(table(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(text(), end="")
