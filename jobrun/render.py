"""Human output of the CLI (rich tables). JSON output is model.job_to_dict as it is."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

_STATE_STYLE = {"running": "cyan", "succeeded": "green", "failed": "red", "stopped": "yellow"}


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(n)


def _ended(d: dict[str, Any]) -> str:
    if d["state"] == "running":
        return ""
    if d["signal"]:
        return str(d["signal"])
    if d["exit_code"] is not None:
        return f"exit {d['exit_code']}"
    return ""


def _status_rows(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, text, the text with rich markup) of each row of `status`."""
    rows: list[tuple[str, str, str]] = []

    def add(label: str, text: str, markup: str | None = None) -> None:
        rows.append((label, text, text if markup is None else markup))

    style = _STATE_STYLE.get(d["state"], "")
    ended = f"  {_ended(d)}" if _ended(d) else ""
    add("ID", d["id"])
    if d["name"]:
        add("Name", d["name"])
    add("State", d["state"] + ended, f"[{style}]{d['state']}[/]" + ended)
    if d["reason"]:
        add("Reason", d["reason"])
    add("Command", " ".join(d["command"]))
    add("Owner", d["owner"])
    add("Unit", d["unit"])
    for key, label in (("created_at", "Created"), ("started_at", "Started"),
                       ("finished_at", "Finished")):  # fmt: skip
        if d[key]:
            add(label, d[key])
    if d["limits"]:
        add("Limits", ", ".join(f"{k}={v}" for k, v in d["limits"].items()))
    u = d.get("usage")
    if u:
        cpu = "-" if u["cpu_seconds"] is None else f"{u['cpu_seconds']:.2f}s"
        add(
            "Usage",
            f"cpu {cpu}, memory {_bytes(u['memory_bytes'])}, tasks {u['tasks'] or '-'}, "
            f"io read {_bytes(u['io_read_bytes'])} write {_bytes(u['io_write_bytes'])}",
        )
    return rows


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT[\d:.+\-]+")  # emoji-free: ":00:" names none


def _console_width() -> int | None:
    """The width rich's Console() would use here, or None where rich might style its output
    (a terminal, FORCE_COLOR, TTY_COMPATIBLE)."""
    env = os.environ
    if "FORCE_COLOR" in env or "TTY_COMPATIBLE" in env or "TTY_INTERACTIVE" in env:
        return None
    try:
        if os.isatty(sys.stdout.fileno()):
            return None
    except (AttributeError, OSError, ValueError):
        return None
    columns = env.get("COLUMNS")
    if columns is not None and columns.isdigit():
        return int(columns) or None
    width = 0
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    return width or 80


def _print_plain(rows: list[tuple[str, str, str]]) -> bool:
    """Print the rows exactly as rich's borderless two-column table would, without importing
    rich (~40 ms of a ~110 ms `jobrun status`): only for output that is not a terminal and text
    that rich would print as it is (printable ASCII without markup or emoji codes, and a table
    that fits the width). False: nothing printed, use rich."""
    width = _console_width()
    if width is None:
        return False
    for _, text, _ in rows:
        if not (text.isascii() and text.isprintable()) or "[" in text:
            return False
        if ":" in text and not _TIMESTAMP.fullmatch(text):
            return False  # rich would look for emoji codes (":smile:")
    w1 = max(len(label) for label, _, _ in rows)
    w2 = max(len(text) for _, text, _ in rows)
    if w1 + 2 + w2 > width:
        return False  # rich would fold the values
    sys.stdout.write("".join(f"{label:<{w1}}  {text:<{w2}}\n" for label, text, _ in rows))
    return True


def status_table(d: dict[str, Any]) -> None:
    rows = _status_rows(d)
    if _print_plain(rows):
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for label, _, markup in rows:
        t.add_row(label, markup)
    Console().print(t)


def list_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print("no jobs (jobrun list --all shows older ones)")
        return
    t = Table(box=None, header_style="bold")
    for col in ("ID", "NAME", "STATE", "ENDED", "OWNER", "CREATED", "COMMAND"):
        t.add_column(col, overflow="ellipsis", no_wrap=col != "COMMAND")
    for d in rows:
        style = _STATE_STYLE.get(d["state"], "")
        t.add_row(
            d["id"],
            d["name"] or "",
            f"[{style}]{d['state']}[/]",
            _ended(d),
            d["owner"],
            (d["created_at"] or "")[:19].replace("T", " "),
            " ".join(d["command"]),
        )
    console.print(t)
