"""Human output of the CLI (rich tables). JSON output is model.job_to_dict as it is."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

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


def status_table(d: dict[str, Any]) -> None:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    style = _STATE_STYLE.get(d["state"], "")
    t.add_row("ID", d["id"])
    if d["name"]:
        t.add_row("Name", d["name"])
    t.add_row("State", f"[{style}]{d['state']}[/]" + (f"  {_ended(d)}" if _ended(d) else ""))
    if d["reason"]:
        t.add_row("Reason", d["reason"])
    t.add_row("Command", " ".join(d["command"]))
    t.add_row("Owner", d["owner"])
    t.add_row("Unit", d["unit"])
    for key, label in (("created_at", "Created"), ("started_at", "Started"),
                       ("finished_at", "Finished")):  # fmt: skip
        if d[key]:
            t.add_row(label, d[key])
    if d["limits"]:
        t.add_row("Limits", ", ".join(f"{k}={v}" for k, v in d["limits"].items()))
    u = d.get("usage")
    if u:
        cpu = "-" if u["cpu_seconds"] is None else f"{u['cpu_seconds']:.2f}s"
        t.add_row(
            "Usage",
            f"cpu {cpu}, memory {_bytes(u['memory_bytes'])}, tasks {u['tasks'] or '-'}, "
            f"io read {_bytes(u['io_read_bytes'])} write {_bytes(u['io_write_bytes'])}",
        )
    Console().print(t)


def list_table(rows: list[dict[str, Any]]) -> None:
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
