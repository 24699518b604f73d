"""Metrics for Prometheus: jobrund writes them where node-exporter's textfile collector reads.

Off by default; on with a `[metrics]` section in jobrund.toml (config.py). Every `interval`
seconds jobrund writes `jobrun.prom` in `path` (Debian's prometheus-node-exporter reads
/var/lib/prometheus/node-exporter), whole: a temporary file in the same directory (a name the
collector skips: it reads only `*.prom`) renamed over the old one, so a scrape never sees half a
file. The file goes when jobrund stops: numbers nobody updates would look current.

Labels carry only job IDs, user names and states, never a job's free-text name; every value is
escaped as the text format requires (backslash, double quote, line feed), and other control
characters are replaced: a hostile string cannot add a line or a sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .usage import Sample

if TYPE_CHECKING:
    from .config import MetricsConfig
    from .manager import Manager

log = logging.getLogger("jobrund.metrics")

FILE_NAME = "jobrun.prom"
STATES = ("running", "paused", "succeeded", "failed", "stopped")


def escape(value: str) -> str:
    """A label value as the text format writes it (between double quotes)."""
    out = []
    for c in value:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029":
            out.append("\ufffd")
        else:
            out.append(c)
    return "".join(out)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


@dataclass(frozen=True)
class Family:
    """A metric family: its name, type and help, and the field of a sample it reports."""

    name: str
    type: str  # counter or gauge
    help: str
    field: str


# Per job, labelled job= and user=; per group (the label of GROUPINGS), the same summed over the
# group's running jobs.
JOB_FAMILIES = (
    Family("cpu_seconds_total", "counter", "CPU time used", "cpu_seconds"),
    Family("memory_bytes", "gauge", "Memory in use", "memory_bytes"),
    Family("memory_max_bytes", "gauge", "Memory limit (absent: none)", "memory_max"),
    Family("tasks", "gauge", "Processes and threads", "tasks"),
    Family("io_read_bytes_total", "counter", "Bytes read from block devices", "io_read_bytes"),
    Family("io_write_bytes_total", "counter", "Bytes written to block devices", "io_write_bytes"),
)
# How running jobs are grouped: label → the group of a sample. Today a group is a user (each
# user's jobs share a slice); job groups would be one more entry here.
GROUPINGS: dict[str, Callable[[Sample], str]] = {"user": lambda s: s.user}


class Writer:
    """The exposition text, family by family, each with its HELP and TYPE once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, type_: str, help_: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        rows = list(samples)
        if not rows:
            return
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {type_}")
        self.lines += [f"{name}{_labels(labels)} {_number(v)}" for labels, v in rows]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(samples: list[Sample], stored: dict[str, int]) -> str:
    """The metrics of these running jobs' samples and of the store's counts by state
    (Store.count_by_state: ended jobs by their recorded outcome)."""
    w = Writer()
    live = Counter(s.state for s in samples)
    counts = {state: live[state] if state in ("running", "paused") else stored.get(state, 0)
              for state in STATES}  # fmt: skip
    w.family("jobrun_jobs", "gauge", "Jobs by state (ended ones: as recorded by jobrun)",
             (({"state": state}, n) for state, n in counts.items()))  # fmt: skip
    for f in JOB_FAMILIES:
        w.family(
            f"jobrun_job_{f.name}",
            f.type,
            f"{f.help} by a running job",
            (
                ({"job": s.id, "user": s.user}, value)
                for s in samples
                if (value := getattr(s, f.field)) is not None
            ),
        )
    for label, group_of in GROUPINGS.items():
        groups: dict[str, list[Sample]] = {}
        for s in samples:
            groups.setdefault(group_of(s), []).append(s)
        per_state = [
            ({label: g, "state": state}, sum(1 for s in members if s.state == state))
            for g, members in sorted(groups.items())
            for state in ("running", "paused")
        ]
        w.family(f"jobrun_{label}_jobs", "gauge", f"Running jobs by {label} and state", per_state)
        for f in JOB_FAMILIES:
            if f.field == "memory_max":
                continue  # a sum of limits limits nothing (the slice's own limit does)
            totals = []
            for g, members in sorted(groups.items()):
                values = [v for s in members if (v := getattr(s, f.field)) is not None]
                if values:
                    totals.append(({label: g}, sum(values)))
            # Summed over running jobs only: a job that ends leaves the sum (not a counter).
            w.family(f"jobrun_{label}_{f.name.removesuffix('_total')}", "gauge",
                     f"{f.help} by the {label}'s running jobs together", totals)  # fmt: skip
    return w.text()


def write_atomically(directory: Path, text: str) -> Path:
    """`directory`/jobrun.prom replaced whole, readable by the collector (jobrund's umask is
    077)."""
    target = directory / FILE_NAME
    tmp = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


async def export(manager: Manager, config: MetricsConfig) -> None:
    """Write the metrics every `config.interval` seconds until cancelled, then remove them."""
    from .caller import Caller

    root = Caller(0, "root", admin=True)
    directory = Path(config.path)
    failing = False
    try:
        while True:
            try:
                text = render(await manager.usage(root), manager.store.count_by_state())
                write_atomically(directory, text)
                failing = False
            except Exception as e:  # a full disk or a missing directory: say so once
                if not failing:
                    log.warning("cannot write metrics to %s: %s", directory / FILE_NAME, e)
                failing = True
            await asyncio.sleep(config.interval)
    finally:
        with contextlib.suppress(OSError):
            (directory / FILE_NAME).unlink()
