"""`top`: the caller's running jobs (every job, for an admin) with their resource use, live.

One `usage` request per refresh for all the jobs (usage.py reads their cgroups); rates come from
two samples' counters and the server's clock. The screen is drawn as lines of text rather than
a rich Table: laying out a table of 200 rows every second cost more than everything else
`top` does (bench P7).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import typer

from ..aio import wait_event
from ..errors import InvalidArgument
from . import common
from .app import app
from .common import fail, run_async

if TYPE_CHECKING:
    from ..client.backend import Backend
    from ..usage import Rates, Sample

SPARKS = "▁▂▃▄▅▆▇█"
HISTORY_SECONDS = 60.0  # what the sparkline shows
KEYS = {"c": "cpu", "m": "mem", "i": "io", "t": "tasks"}
Row = tuple["Sample", "Rates"]


def _sort_key(sort: str) -> Callable[[Row], Any]:
    def io(r: Row) -> float:
        return (r[1].io_read_rate or 0) + (r[1].io_write_rate or 0)

    keys: dict[str, Callable[[Row], Any]] = {
        "cpu": lambda r: (-(r[1].cpu_percent or 0), r[0].id),
        "mem": lambda r: (-(r[0].memory_bytes or 0), r[0].id),
        "io": lambda r: (-io(r), r[0].id),
        "tasks": lambda r: (-(r[0].tasks or 0), r[0].id),
        "id": lambda r: r[0].id,
    }
    return keys[sort]


SORTS = ("cpu", "mem", "io", "tasks", "id")


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" or n >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    return "-"  # not reached


def sparkline(values: deque[float], width: int) -> str:
    """The last `width` CPU percentages (of one CPU, full block at 100 % or more)."""
    shown = list(values)[-width:] if width > 0 else []
    cells = [" " if v < 0.5 else SPARKS[min(7, int(v / 100 * 8))] for v in shown]
    return " " * (width - len(cells)) + "".join(cells)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


# The columns before the sparkline, with their spaces.
FIXED_WIDTH = 10 + 1 + 12 + 1 + 7 + 1 + 6 + 1 + 7 + 1 + 7 + 1 + 8 + 1 + 8 + 1 + 5 + 2


class Screen:
    """The rows of one refresh, with each job's CPU history."""

    def __init__(self, interval: float) -> None:
        self.prev: dict[str, Sample] = {}
        self.history: dict[str, deque[float]] = {}
        self.length = max(2, round(HISTORY_SECONDS / interval))
        self.rows: list[Row] = []

    def update(self, samples: list[Sample]) -> None:
        from ..usage import rates

        rows = []
        for s in samples:
            r = rates(self.prev.get(s.id), s)
            if r.cpu_percent is not None:
                self.history.setdefault(s.id, deque(maxlen=self.length)).append(r.cpu_percent)
            rows.append((s, r))
        self.prev = {s.id: s for s in samples}
        self.history = {k: v for k, v in self.history.items() if k in self.prev}
        self.rows = rows

    def lines(self, sort: str, width: int, height: int) -> tuple[str, list[str]]:
        """(the header, the job lines) fitting width × height."""
        rows = sorted(self.rows, key=_sort_key(sort))[: max(0, height)]
        spark = max(0, min(self.length, width - FIXED_WIDTH))
        header = (
            f"{'ID':<10} {'USER':<12} {'STATE':<7} {'CPU%':>6} {'MEM':>7} {'LIMIT':>7} "
            f"{'READ/s':>8} {'WRITE/s':>8} {'TASKS':>5}  {'CPU, last minute':<{spark}}"
        )
        out = []
        for s, r in rows:
            cpu = "-" if r.cpu_percent is None else f"{r.cpu_percent:.1f}"
            out.append(
                f"{s.id:<10} {_printable(s.user)[:12]:<12} {s.state[:7]:<7} {cpu:>6} "
                f"{size(s.memory_bytes):>7} {size(s.memory_max):>7} "
                f"{size(r.io_read_rate):>8} {size(r.io_write_rate):>8} "
                f"{'-' if s.tasks is None else s.tasks:>5}  "
                f"{sparkline(self.history.get(s.id, deque()), spark)}"
            )
        return header[:width], [line[:width] for line in out]


@contextlib.contextmanager
def _keys(on_key: Callable[[str], None]) -> Iterator[None]:
    """Single key presses from a terminal on stdin (cbreak mode, restored after)."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        with contextlib.suppress(OSError):
            for ch in os.read(fd, 64).decode(errors="replace"):
                on_key(ch)

    tty.setcbreak(fd)
    loop.add_reader(fd, readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _live(b: Backend, sort: str, interval: float) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(highlight=False)
    screen = Screen(interval)
    wake = asyncio.Event()
    state = {"sort": sort, "quit": False}

    def on_key(ch: str) -> None:
        if ch in ("q", "Q"):
            state["quit"] = True
        elif ch.lower() in KEYS:
            state["sort"] = KEYS[ch.lower()]
        else:
            return
        wake.set()

    def stop() -> None:
        state["quit"] = True
        wake.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    next_sample = 0.0
    with _keys(on_key), Live(console=console, screen=True, auto_refresh=False) as live:
        while not state["quit"]:
            now = time.monotonic()
            if now >= next_sample:
                screen.update(await b.usage())
                next_sample = now + interval
            width, height = console.size
            header, lines = screen.lines(str(state["sort"]), width, height - 2)
            io_note = ""
            if screen.rows and all(s.io_read_bytes is None for s, _ in screen.rows):
                io_note = " · IO: - (not counted on this host's cgroups)"
            title = (
                f"jobrun top · {len(screen.rows)} running · sorted by {state['sort']} · "
                f"c/m/i/t sort, q quit{io_note}"
            )
            text = Text(title[:width] + "\n", style="bold")
            text.append(header + "\n", style="reverse")
            text.append("\n".join(lines))
            live.update(text, refresh=True)
            wake.clear()
            await wait_event(wake, next_sample - time.monotonic())


async def _once(b: Backend, interval: float) -> list[Row]:
    from ..usage import rates

    first = {s.id: s for s in await b.usage()}
    await asyncio.sleep(interval)
    return [(s, rates(first.get(s.id), s)) for s in await b.usage()]


@app.command()
def top(
    sort: str = typer.Option(
        "cpu", "--sort", "-s", metavar="KEY", help="Order by cpu, mem, io, tasks or id"
    ),
    once: bool = typer.Option(False, "--once", help="Print one sample and exit"),
    as_json: bool = typer.Option(False, "--json", help="With --once: print JSON for scripts"),
    interval: float = typer.Option(
        1.0,
        "--interval",
        "-n",
        metavar="SECONDS",
        help="Between refreshes; with --once, over which rates are measured",
    ),
) -> None:
    """Show running jobs' CPU, memory, IO and tasks, live (keys: c m i t sort, q quits)."""
    if sort not in SORTS:
        fail(InvalidArgument(f"--sort takes {', '.join(SORTS)}, not {sort[:40]!r}"))
    if not 0.1 <= interval <= 60:
        fail(InvalidArgument("--interval takes 0.1 to 60 seconds"))
    if as_json and not once:
        fail(InvalidArgument("--json prints one sample: add --once"))

    async def go() -> list[Row]:
        b = await common.open_backend()
        try:
            if once:
                return await _once(b, interval)
            await _live(b, sort, interval)
            return []
        finally:
            await b.close()

    rows = run_async(go)
    if not once:
        return
    rows.sort(key=_sort_key(sort))
    if as_json:
        import json

        from ..wire.usage import top_dict

        print(json.dumps([top_dict(s, r) for s, r in rows], indent=2))
        return
    screen = Screen(interval)
    screen.rows = rows
    header, lines = screen.lines(sort, FIXED_WIDTH, len(rows))  # no history: no sparkline
    print(header.rstrip())
    for line in lines:
        print(line.rstrip())
