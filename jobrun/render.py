"""Human output of the CLI: `status` and `list` for people (JSON for scripts is wire/jobs.py)."""

from __future__ import annotations

import os
import re
import sys

from .model import Job, JobState

_STATE_STYLE = {
    "queued": "blue",
    "running": "cyan",
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


def _ended(job: Job) -> str:
    o = job.outcome
    if not o.state.finished:
        return ""
    if o.signal:
        return o.signal
    if o.exit_code is not None:
        return f"exit {o.exit_code}"
    return ""


def _status_rows(job: Job, width: int | None = None) -> list[tuple[str, str, str]]:
    """(label, text, the text with rich markup) of each row of `status`; with a `width`, the
    command is shortened with … to fit one line of it (the label column is at most 8 wide)."""
    rows: list[tuple[str, str, str]] = []

    def add(label: str, text: str, markup: str | None = None) -> None:
        rows.append((label, text, text if markup is None else markup))

    from .properties import limits

    state = job.state.value
    style = _STATE_STYLE.get(state, "")
    ended = f"  {_ended(job)}" if _ended(job) else ""
    add("ID", job.id)
    if job.spec.name:
        add("Name", job.spec.name)
    add("State", state + ended, f"[{style}]{state}[/]" + ended)
    if job.outcome.reason:
        add("Reason", job.outcome.reason)
    if job.attempts:
        add("Attempt", f"{job.attempt} of {len(job.attempts)} ({', '.join(job.attempts)})")
    command = " ".join(job.spec.command)
    add("Command", command if width is None else fit(command, width - 10))
    add("Owner", job.owner)
    add("Unit", job.unit)
    for label, dt in (("Created", job.created_at), ("Started", job.started_at),
                      ("Finished", job.outcome.finished_at)):  # fmt: skip
        if dt:
            add(label, dt.isoformat())
    settings = limits(job.spec)
    if settings:
        add("Limits", ", ".join(f"{k}={v}" for k, v in settings.items()))
    u = job.usage if not job.state.finished else None  # as `--json` shows it
    if u:
        cpu = "-" if u.cpu_seconds is None else f"{u.cpu_seconds:.2f}s"
        add(
            "Usage",
            f"cpu {cpu}, memory {_bytes(u.memory_bytes)}, tasks {u.tasks or '-'}, "
            f"io read {_bytes(u.io_read_bytes)} write {_bytes(u.io_write_bytes)}",
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


def status_table(job: Job, wide: bool = False) -> None:
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


_ANSI = {"cyan": "36", "green": "32", "red": "31", "yellow": "33", "bold": "1"}


def _paint(text: str, style: str, colour: bool) -> str:
    return f"\x1b[{_ANSI[style]}m{text}\x1b[0m" if colour and style else text


def _created(job: Job, wide: bool) -> str:
    text = job.created_at.isoformat()[:19].replace("T", " ")
    return text if wide else text[5:16]  # MM-DD HH:MM


def list_lines(jobs: list[Job], width: int | None, colour: bool = False) -> list[str]:
    """`jobrun list`: a header and one line per job. With a `width`, every line fits it: IDs,
    states and times whole, names and owners shortened, the command given what is left and
    shortened with …; `width` None (--wide): everything in full."""
    wide = width is None
    table = [
        [
            job.id,
            job.spec.name or "",
            job.state.value
            + (f" {_ended(job)}" if _ended(job) and job.state != JobState.SUCCEEDED else ""),
            job.owner,
            _created(job, wide),
            " ".join(" ".join(job.spec.command).split("\n")),
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
            style = "bold" if n == 0 else _STATE_STYLE[jobs[n - 1].state] if i == 2 else ""
            parts.append(_paint(text, style, colour) + pad)
        command = r[5] if room is None else fit(r[5], room)
        parts.append(_paint(command, "bold", colour) if n == 0 else command)
        lines.append("  ".join(parts).rstrip())
    return lines


def list_table(jobs: list[Job], wide: bool = False) -> None:
    if not jobs:
        print("no jobs (jobrun list --all shows older ones)")
        return
    lines = list_lines(jobs, None if wide else terminal_width(), colour_wanted())
    sys.stdout.write("".join(line + "\n" for line in lines))
