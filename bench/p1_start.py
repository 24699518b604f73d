"""P1: wall time of `jobrun start -- true` against `systemd-run --quiet true`.

The variants take turns, run by run, so that a noisy moment of the machine hurts them alike.
Note what each waits for: `systemd-run` waits until systemd has run the start job (for its simple
service: forked and executed `true`); `jobrun start` returns once systemd has accepted the
transient unit and jobrun has read its InvocationID (the job is oneshot: waiting for its start job
would mean waiting for the command to finish).
"""

from __future__ import annotations

from . import remote
from .common import (
    ALICE,
    BenchError,
    Config,
    Row,
    as_user,
    jobrun_argv,
    median,
    percentile,
    wait_idle,
    wall,
)

GOAL = 1.5


def variants(cfg: Config) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    start = jobrun_argv("start", "--", "true")
    runs = {
        "systemd-run": (["systemd-run", "--quiet", "true"], None),
        "local": (start, cfg.env("local")),
        "daemon": (start, cfg.env("daemon")),
        "daemon-alice": (as_user(ALICE, start), cfg.env("daemon")),
    }
    if remote.available():
        runs["remote"] = (remote.argv("start", "--", "true"), remote.env())
    return runs


LABELS = {
    "local": "`jobrun start -- true`, in-process (root)",
    "daemon": "`jobrun start -- true` through jobrund (root)",
    "daemon-alice": "`jobrun start -- true` through jobrund (alice: polkit, caps)",
    "remote": "`jobrun --remote 127.0.0.1:PORT … start -- true` (gRPC, mutual TLS 1.3)",
}


async def run(cfg: Config) -> list[Row]:
    n = cfg.size(50, 5)
    runs = variants(cfg)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for argv, env in runs.values():  # warm the page cache and jobrund (bus activation)
        wall(argv, env)
    wait_idle()
    names = list(runs)
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            argv, env = runs[name]
            t, out = wall(argv, env)
            if name != "systemd-run" and not out.strip():
                raise BenchError(f"jobrun start ({name}) printed no job ID")
            times[name].append(t * 1000)
    wait_idle()
    base = times["systemd-run"]
    rows = []
    for name, label in LABELS.items():
        if name not in times:
            continue
        for stat, fn in (("median", median), ("p95", lambda xs: percentile(xs, 95))):
            value, baseline = fn(times[name]), fn(base)
            rows.append(
                Row(
                    "P1",
                    f"{label}, {stat} of {n}",
                    value,
                    "ms",
                    baseline,
                    f"`systemd-run --quiet true`, {stat}",
                    goal=f"≤ {GOAL}×",
                    met=value <= GOAL * baseline,
                    samples={name: times[name], "systemd-run": base},
                )
            )
    return rows
