"""Human output of the CLI: `status` and `list` for people (JSON for scripts is wire/jobs.py).

Both render a job in its wire form, the dict `--json` prints and jobrund sends
(wire/jobs.py `job_to_dict`), not a model.Job: the CLI's fast path (fastcli.py) prints what came
over the bus without building a Job (dataclasses, datetime and the settings table cost ~12 ms),
and the typer app prints `job_to_dict(job)`: one renderer for both.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # as typing's, without importing typing on the CLI's fast path

if TYPE_CHECKING:
    from typing import Any

    JobDict = dict[str, Any]  # a job as wire/jobs.py's job_to_dict makes it

_STATE_STYLE = {
    "queued": "blue",
    "running": "cyan",
    "paused": "magenta",
    "succeeded": "green",
    "failed": "red",
    "stopped": "yellow",
}


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return str(n)


def _ended(job: JobDict) -> str:
    if job["state"] == "running":
        return ""
    if job["signal"]:
        return str(job["signal"])
    if job["exit_code"] is not None:
        return f"exit {job['exit_code']}"
    return ""


def _status_rows(job: JobDict, width: int | None = None) -> list[tuple[str, str, str]]:
    """(label, text, the text with rich markup) of each row of `status`; with a `width`, the
    command is shortened with … to fit one line of it (the label column is at most 8 wide)."""
    rows: list[tuple[str, str, str]] = []

    def add(label: str, text: str, markup: str | None = None) -> None:
        rows.append((label, text, text if markup is None else markup))

    state = job["state"]
    style = _STATE_STYLE.get(state, "")
    ended = f"  {_ended(job)}" if _ended(job) else ""
    if ended and job.get("reported_by"):
        ended += f" (reported by the {job['reported_by']})"
    add("ID", job["id"])
    if job["name"]:
        add("Name", job["name"])
    add("State", state + ended, f"[{style}]{state}[/]" + ended)
    if job["reason"]:
        add("Reason", job["reason"])
    attempts = job.get("attempts")
    if attempts:
        add("Attempt", f"{job['attempt']} of {len(attempts)} ({', '.join(attempts)})")
    command = " ".join(job["command"])
    add("Command", command if width is None else fit(command, width - 10))
    add("Owner", job["owner"])
    add("Unit", job["unit"])
    if job.get("schedule"):
        add("Schedule", job["schedule"])
    for label, key in (("Created", "created_at"), ("Started", "started_at"),
                       ("Finished", "finished_at")):  # fmt: skip
        if job[key]:
            add(label, job[key])  # ISO 8601, as datetime.isoformat() wrote it
    settings = job["limits"] or {}
    changed = job.get("live_limits") or {}
    if settings or changed:
        shown = []
        for k in [*settings, *(k for k in changed if k not in settings)]:
            if k in changed and changed[k] != settings.get(k):
                shown.append(f"{k}={changed[k]} (asked {settings.get(k, 'none')})")
            else:
                shown.append(f"{k}={settings[k]}")
        add("Limits", ", ".join(shown))
    u = job["usage"]  # only an unfinished job's (wire/jobs.py), as `--json` shows it
    if u:
        cpu = "-" if u["cpu_seconds"] is None else f"{u['cpu_seconds']:.2f}s"
        add(
            "Usage",
            f"cpu {cpu}, memory {_bytes(u['memory_bytes'])}, tasks {u['tasks'] or '-'}, "
            f"io read {_bytes(u['io_read_bytes'])} write {_bytes(u['io_write_bytes'])}",
        )
    a = job.get("accounting")
    if a:
        cpu = "-" if a["cpu_seconds"] is None else f"{a['cpu_seconds']:.2f}s"
        tasks = "-" if a["tasks_peak"] is None else str(a["tasks_peak"])
        add(
            "Used",
            f"cpu {cpu}, peak memory {_bytes(a['memory_peak_bytes'])}, tasks peak {tasks}, "
            f"io read {_bytes(a['io_read_bytes'])} write {_bytes(a['io_write_bytes'])}",
        )
    return rows


def _timestamp(text: str) -> bool:
    """Whether ASCII `text` is a timestamp as jobrund writes them (NNNN-NN-NNT, then digits and
    `:.+-`), which has no emoji code (":00:" names none); without `re` (~9 ms to import)."""
    digits = "0123456789"
    return (
        len(text) > 11
        and all(text[i] in digits for i in (0, 1, 2, 3, 5, 6, 8, 9))
        and text[4] == text[7] == "-"
        and text[10] == "T"
        and all(c in "0123456789:.+-" for c in text[11:])
    )


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
        if ":" in text and not _timestamp(text):
            return False  # rich would look for emoji codes (":smile:")
    w1 = max(len(label) for label, _, _ in rows)
    w2 = max(len(text) for _, text, _ in rows)
    if w1 + 2 + w2 > width:
        return False  # rich would fold the values
    sys.stdout.write("".join(f"{label:<{w1}}  {text:<{w2}}\n" for label, text, _ in rows))
    return True


def status_table(job: JobDict, wide: bool = False) -> None:
    rows = _status_rows(job, None if wide else terminal_width())
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


def cells(text: str) -> int:
    """Terminal cells of `text`: wide (East Asian) characters take two, combining ones none."""
    if text.isascii():  # one cell each (none is wide or combining): most of what `list` shows
        return len(text)
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def fit(text: str, width: int) -> str:
    """`text` in at most `width` cells, shortened with … at the end; one line of it."""
    text = " ".join(text.split("\n"))
    if cells(text) <= width:
        return text
    if text.isascii():
        return text[: max(width - 1, 0)] + "…"
    out, used = [], 0
    for c in text:
        n = cells(c)
        if used + n > width - 1:
            break
        out.append(c)
        used += n
    return "".join(out) + "…"


def terminal_width() -> int:
    """The terminal's columns; where stdout is no terminal, COLUMNS or 80 (as rich does)."""
    try:
        if os.isatty(sys.stdout.fileno()):
            return os.get_terminal_size(sys.stdout.fileno()).columns
    except (AttributeError, OSError, ValueError):
        pass
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 80


def colour_wanted() -> bool:
    """Colours only for a person at a terminal: not when piped, nor with NO_COLOR
    (no-color.org) or TERM=dumb; FORCE_COLOR asks for them anyway."""
    env = os.environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    try:
        return os.isatty(sys.stdout.fileno()) and env.get("TERM") != "dumb"
    except (AttributeError, OSError, ValueError):
        return False


_ANSI = {"magenta": "35", "cyan": "36", "green": "32", "red": "31", "yellow": "33", "bold": "1"}


def _paint(text: str, style: str, colour: bool) -> str:
    return f"\x1b[{_ANSI[style]}m{text}\x1b[0m" if colour and style else text


def _created(job: JobDict, wide: bool) -> str:
    text = str(job["created_at"])[:19].replace("T", " ")
    return text if wide else text[5:16]  # MM-DD HH:MM


def list_lines(jobs: list[JobDict], width: int | None, colour: bool = False) -> list[str]:
    """`jobrun list`: a header and one line per job. With a `width`, every line fits it: IDs,
    states and times whole, names and owners shortened, the command given what is left and
    shortened with …; `width` None (--wide): everything in full."""
    wide = width is None
    table = [
        [
            job["id"],
            job["name"] or "",
            job["state"]
            + (f" {_ended(job)}" if _ended(job) and job["state"] != "succeeded" else ""),
            job["owner"],
            _created(job, wide),
            " ".join(" ".join(job["command"]).split("\n")),
        ]
        for job in jobs
    ]
    head = ["ID", "NAME", "STATE", "OWNER", "CREATED", "COMMAND"]
    show = [True, any(r[1] for r in table), True, len({r[3] for r in table}) > 1, True, True]
    most = [99, 14, 99, 8, 99]  # the name and the owner are shortened when a width applies
    widths: list[int] = []
    for i in range(5):
        w = max([cells(head[i])] + [cells(r[i]) for r in table])
        widths.append(w if wide else min(w, most[i]))
    used = sum(w + 2 for i, w in enumerate(widths) if show[i])
    if width is not None and show[1] and width - used < 24:
        # The command matters more than the name: the name gives up to 8 cells.
        give = min(24 - (width - used), widths[1] - 6)
        widths[1] -= give
        used -= give
    room = None if width is None else max(width - used, 8)
    lines = []
    for n, r in enumerate([head, *table]):
        parts = []
        for i in range(5):
            if not show[i]:
                continue
            text = r[i] if wide else fit(r[i], widths[i])
            pad = " " * (widths[i] - cells(text))
            style = "bold" if n == 0 else _STATE_STYLE[jobs[n - 1]["state"]] if i == 2 else ""
            parts.append(_paint(text, style, colour) + pad)
        command = r[5] if room is None else fit(r[5], room)
        parts.append(_paint(command, "bold", colour) if n == 0 else command)
        lines.append("  ".join(parts).rstrip())
    return lines


def list_table(jobs: list[JobDict], wide: bool = False) -> None:
    if not jobs:
        print("no jobs (jobrun list --all shows older ones)")
        return
    lines = list_lines(jobs, None if wide else terminal_width(), colour_wanted())
    sys.stdout.write("".join(line + "\n" for line in lines))
