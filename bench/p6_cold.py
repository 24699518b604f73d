"""P6: CLI cold start. `jobrun status ID` of a finished job (in-process and through jobrund),
`jobrun list` and `jobrun logs ID` of a one-line job (through jobrund) against
`systemctl show jobrun-ID.service`; `jobrun --version` against a bare `python -c pass`; and
the import time of `python -X importtime -m jobrun --version`, in total and by top-level package
(the self time of every module, added up per package: who makes the CLI slow to start).
"""

from __future__ import annotations

import collections
import subprocess

from . import remote
from .common import (
    PYTHON,
    BenchError,
    Config,
    Row,
    daemon_backend,
    jobrun_argv,
    median,
    wait_idle,
    wall,
)

GOAL_MS = 150.0


def import_times() -> tuple[float, dict[str, float]]:
    """(total ms, self ms per top-level package) of `python -X importtime -m jobrun --version`."""
    proc = subprocess.run(
        [PYTHON, "-X", "importtime", "-m", "jobrun", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    if proc.returncode != 0:
        raise BenchError(f"jobrun --version exited {proc.returncode}: {proc.stderr[-500:]}")
    total = 0.0
    by_package: dict[str, float] = collections.defaultdict(float)
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line.removeprefix("import time:").split("|")
        self_us, cumulative_us, name = int(fields[0]), int(fields[1]), fields[2]
        if len(name) - len(name.lstrip(" ")) == 1:  # imported at the top level
            total += cumulative_us / 1000
        by_package[name.strip().split(".")[0]] += self_us / 1000
    return total, dict(by_package)


async def finished_jobs(cfg: Config) -> tuple[str, str, str]:
    """A finished job in the local store, one in jobrund's (outcome cached, as usual), and one
    of jobrund's that wrote one line."""
    from jobrun.manager import Manager
    from jobrun.properties import build_spec
    from jobrun.store import Store

    async with await Manager.open(Store(cfg.state)) as m:
        local = (await m.start(build_spec(["true"]))).id
        await m.wait(local)
    b = await daemon_backend()
    try:
        remote = (await b.start(["true"], None, {})).id
        await b.wait(remote)
        one_line = (await b.start(["echo", "one line"], None, {})).id
        await b.wait(one_line)
    finally:
        await b.close()
    return local, remote, one_line


async def run(cfg: Config) -> list[Row]:
    n = cfg.size(30, 3)
    local, remote_job, one_line = await finished_jobs(cfg)
    wait_idle()
    runs = {
        "local": (jobrun_argv("status", local), cfg.env("local")),
        "daemon": (jobrun_argv("status", remote_job), cfg.env("daemon")),
        "list": (jobrun_argv("list"), cfg.env("daemon")),
        "logs": (jobrun_argv("logs", one_line), cfg.env("daemon")),
        "systemctl": (["systemctl", "show", f"jobrun-{local}.service"], None),
        "version": (jobrun_argv("--version"), None),
        "python": ([PYTHON, "-c", "pass"], None),
    }
    if remote.available():
        runs["remote"] = (remote.argv("status", remote_job), remote.env())
    times: dict[str, list[float]] = {k: [] for k in runs}
    for argv, env in runs.values():
        wall(argv, env)  # page cache
    names = list(runs)
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            argv, env = runs[name]
            times[name].append(wall(argv, env)[0] * 1000)
    med = {k: median(v) for k, v in times.items()}

    reps = cfg.size(9, 1)
    samples = [import_times() for _ in range(reps)]
    packages = {p for _, by in samples for p in by}
    by_package = {p: median([by.get(p, 0.0) for _, by in samples]) for p in packages}
    top = sorted(by_package.items(), key=lambda kv: -kv[1])[:10]
    cfg.shared["imports"] = top
    total = median([t for t, _ in samples])

    status_base = "`systemctl show jobrun-ID.service`, median"
    rows = []
    if "remote" in med:
        rows.append(
            Row("P6", f"`jobrun --remote … status ID` (gRPC, mutual TLS 1.3), median of {n}",
                med["remote"], "ms", med["systemctl"], status_base, goal=f"≤ {GOAL_MS:.0f} ms",
                met=med["remote"] <= GOAL_MS)
        )  # fmt: skip
    return [
        *rows,
        Row("P6", f"`jobrun status ID` (finished job), in-process, median of {n}", med["local"],
            "ms", med["systemctl"], status_base, goal=f"≤ {GOAL_MS:.0f} ms",
            met=med["local"] <= GOAL_MS),
        Row("P6", f"`jobrun status ID` (finished job), through jobrund, median of {n}",
            med["daemon"], "ms", med["systemctl"], status_base, goal=f"≤ {GOAL_MS:.0f} ms",
            met=med["daemon"] <= GOAL_MS),
        Row("P6", f"`jobrun list` (the jobs of this run), through jobrund, median of {n}",
            med["list"], "ms", med["systemctl"], status_base),
        Row("P6", f"`jobrun logs ID` (a one-line job), through jobrund, median of {n}",
            med["logs"], "ms", med["systemctl"], status_base),
        Row("P6", f"`jobrun --version`, median of {n}", med["version"], "ms", med["python"],
            "`python -c pass` (the interpreter alone), median"),
        Row("P6", f"imports of `python -X importtime -m jobrun --version`, median of {reps}",
            total, "ms", note="top packages: " + ", ".join(f"{p} {ms:.0f}" for p, ms in top[:5])),
    ]  # fmt: skip
