"""P7: what `jobrun top` costs with 200 running jobs: CPU time per refresh of the `top` process
and of what it makes others do (jobrund reading the cgroups, polkitd answering jobrund's checks,
dbus-daemon routing), as % of one CPU at one refresh per second (the goal: < 2 %).

The jobs are alice's (`sleep`), and `top` runs as alice in a terminal (a pty, 50 × 160) through
jobrund, the path a user takes: polkit is asked on every refresh. Each process's CPU time comes
from /proc/PID/stat over a window of refreshes (counted in what `top` drew), minus what the same
processes used in an equal window without `top`. For comparison, the cost of asking systemd
instead (ListUnitsByPatterns and a GetAll of each unit's Service properties: the D-Bus way to
the same counters), in this process, PID 1 and dbus-daemon.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time

from .common import (
    ALICE,
    PYTHON,
    ROOT,
    BenchError,
    Config,
    Row,
    as_user,
    jobrun_argv,
    jobrund_pid,
    systemctl,
    wait_idle,
    wall,
)

GOAL = 2.0  # % of one CPU
TITLE = b"jobrun top \xc2\xb7 "  # each refresh draws the title once ("jobrun top · ")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def main_pid(unit: str) -> int:
    try:
        return int(systemctl("show", "-P", "MainPID", unit) or 0)
    except subprocess.CalledProcessError:
        return 0


def others() -> dict[str, int]:
    """The processes `top` makes work, besides itself."""
    pids = {
        "jobrund": jobrund_pid(),
        "polkitd": main_pid("polkit.service"),
        "dbus-daemon": main_pid("dbus.service"),
    }
    return {k: v for k, v in pids.items() if v}


def usage_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def start_jobs(n: int) -> list[str]:
    """n `sleep` jobs of alice's, started through jobrund as alice (32 at once)."""
    argv = as_user(ALICE, [PYTHON, "-m", "bench.p7_top", "start", str(n)])
    _, out = wall(argv, timeout=600, cwd=str(ROOT))
    ids: list[str] = json.loads(out)
    if len(ids) != n:
        raise BenchError(f"started {len(ids)} of {n} jobs")
    return ids


def stop_jobs(ids: list[str]) -> None:
    for i in range(0, len(ids), 100):
        subprocess.run(
            ["systemctl", "stop", *(f"jobrun-{j}.service" for j in ids[i : i + 100])],
            capture_output=True,
            timeout=300,
        )


class Terminal:
    """`jobrun top` as alice in a pty; what it draws is read (and counted) by a thread."""

    def __init__(self, interval: float) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUN_")}
        env.update(JOBRUN_MODE="daemon", TERM="xterm-256color", HOME="/")
        self.proc = subprocess.Popen(
            as_user(ALICE, jobrun_argv("top", "--interval", str(interval))),
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd="/", start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.tail = b""
        self.titles = 0
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                buf = self.tail + data
                self.titles += buf.count(TITLE) - self.tail.count(TITLE)
                self.tail = buf[-4096:]

    def shows(self, text: bytes) -> bool:
        with self.lock:
            return text in self.tail

    def refreshes(self) -> int:
        with self.lock:
            return self.titles

    def quit(self) -> int:
        os.write(self.master, b"q")
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=5)
            os.close(self.master)


def measure_top(n: int, seconds: float, interval: float) -> tuple[float, dict[str, float], int]:
    """(CPU seconds per refresh of `top`, of each other process, refreshes counted)."""
    pids = others()
    before = usage_of(pids)
    time.sleep(seconds)  # the same processes' work without top: subtracted below
    idle = {k: v - before[k] for k, v in usage_of(pids).items()}
    term = Terminal(interval)
    try:
        deadline = time.monotonic() + 120
        while not term.shows(f"{n} running".encode()):
            if time.monotonic() > deadline or term.proc.poll() is not None:
                raise BenchError(f"top did not show {n} running jobs: {term.tail[-500:]!r}")
            time.sleep(0.1)
        pids = others()  # jobrund may have been (re)activated meanwhile
        t0, r0 = cpu_seconds(term.proc.pid), term.refreshes()
        o0 = usage_of(pids)
        start = time.monotonic()
        time.sleep(seconds)
        t1, r1 = cpu_seconds(term.proc.pid), term.refreshes()
        o1 = usage_of(pids)
        elapsed = time.monotonic() - start
    finally:
        code = term.quit()
    if code != 0:
        raise BenchError(f"top exited {code}")
    refreshes = r1 - r0
    if refreshes < 1:
        raise BenchError("top drew nothing in the window")
    scale = seconds / elapsed  # the idle window was `seconds` long
    per = {k: max(0.0, (o1[k] - o0[k]) - idle.get(k, 0.0) / scale) / refreshes for k in o1}
    return (t1 - t0) / refreshes, per, refreshes


async def dbus_way(rounds: int) -> tuple[float, float]:
    """CPU seconds per refresh of asking systemd for every job unit's counters: (this process,
    PID 1 + dbus-daemon)."""
    from jobrun.systemd import PROPS, SERVICE, Systemd

    dbus = main_pid("dbus.service")
    async with await Systemd.connect() as sd:
        own, theirs = [], []
        for _ in range(rounds):
            o0, p0 = time.process_time(), cpu_seconds(1) + cpu_seconds(dbus)
            units = await sd.list_units("jobrun-*.service")
            await asyncio.gather(
                *(sd.call("GetAll", "s", [SERVICE], path=u[3], interface=PROPS) for u in units)
            )
            own.append(time.process_time() - o0)
            theirs.append(cpu_seconds(1) + cpu_seconds(dbus) - p0)
    return sorted(own)[len(own) // 2], sorted(theirs)[len(theirs) // 2]


async def run(cfg: Config) -> list[Row]:
    n = cfg.size(200, 20)
    seconds = float(cfg.size(30, 4))
    interval = 1.0
    await asyncio.to_thread(wait_idle)
    ids = await asyncio.to_thread(start_jobs, n)
    try:
        top_s, per, refreshes = await asyncio.to_thread(measure_top, n, seconds, interval)
        own, theirs = await dbus_way(cfg.size(5, 2))
    finally:
        await asyncio.to_thread(stop_jobs, ids)
        await asyncio.to_thread(wait_idle)
    jobrund = per.get("jobrund", 0.0)
    helpers = sum(v for k, v in per.items() if k != "jobrund")
    total = top_s + jobrund
    what = f"{n} jobs, alice in a 50×160 terminal, {refreshes} refreshes"
    detail = ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in per.items())
    return [
        Row("P7", f"`jobrun top`'s own CPU per refresh ({what})", top_s * 100, "% of a CPU"),
        Row(
            "P7",
            f"jobrund's CPU per refresh ({n} jobs' cgroups read)",
            jobrund * 100,
            "% of a CPU",
            note=f"per refresh: {detail}",
        ),
        Row(
            "P7",
            f"top + jobrund at 1 refresh/s ({n} jobs)",
            total * 100,
            "% of a CPU",
            (own + theirs) * 100,
            "asking systemd instead: GetAll per unit (client, PID 1, dbus-daemon)",
            goal=f"< {GOAL:g} %",
            met=total * 100 < GOAL,
            samples={"top_ms": [top_s * 1000], "dbus_way_ms": [own * 1000, theirs * 1000]},
        ),
        Row(
            "P7",
            "the same with polkitd and dbus-daemon (two polkit checks per call of alice's)",
            (total + helpers) * 100,
            "% of a CPU",
        ),
    ]


async def _start_main(n: int) -> None:
    from jobrun.bus import connect_system_bus
    from jobrun.client.dbus import DaemonBackend

    b = DaemonBackend(await connect_system_bus())
    sem = asyncio.Semaphore(32)

    async def one() -> str:
        async with sem:
            return (await b.start(["sleep", "3600"], None, {})).id

    try:
        print(json.dumps(await asyncio.gather(*(one() for _ in range(n)))))
    finally:
        await b.close()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "start":
        sys.exit("usage: python -m bench.p7_top start N")
    asyncio.run(_start_main(int(sys.argv[2])))
