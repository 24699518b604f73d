"""P2: jobs started per second through the library and through jobrund, one at a time and with 32
in flight, against raw StartTransientUnit calls of a minimal dbus-fast client.

The raw client sends exactly the unit properties jobrun sends (`unit_properties`, built before the
clock starts) and nothing else: no job store, no GetUnit/GetAll for the InvocationID, no Subscribe.
Every job runs `true`; between rows all job units are left to finish, so that no row pays for the
previous one's jobs. Run as `python -m bench.p2_throughput daemon N INFLIGHT` it measures one row
as whoever runs it (the alice rows).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from .common import (
    ALICE,
    PYTHON,
    ROOT,
    BenchError,
    Config,
    Row,
    as_user,
    median,
    wait_idle,
    wall,
)

GOAL = 0.9
INFLIGHT = 32
COMMAND = ["true"]


@dataclass
class Rate:
    """Successful starts per second, and the failures met on the way (counted, not raised)."""

    per_s: float
    failed: int = 0
    error: str = ""


async def rate(start_one: Callable[[], Awaitable[object]], n: int, inflight: int) -> Rate:
    """Starts per second for n starts with at most `inflight` at once."""
    sem = asyncio.Semaphore(inflight)
    failures: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                await start_one()
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - t
    return Rate((n - len(failures)) / elapsed, len(failures), failures[0] if failures else "")


async def raw_rate(n: int, inflight: int) -> Rate:
    from dbus_fast import Message, MessageType

    from jobrun.bus import connect_system_bus
    from jobrun.model import new_job_id, unit_name
    from jobrun.properties import build_spec
    from jobrun.unit import unit_properties

    spec = build_spec(COMMAND)
    ids = [new_job_id() for _ in range(n)]
    props = iter([(unit_name(i), unit_properties(i, spec)) for i in ids])
    bus = await connect_system_bus()
    try:

        async def start_one() -> None:
            name, properties = next(props)
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.systemd1",
                    path="/org/freedesktop/systemd1",
                    interface="org.freedesktop.systemd1.Manager",
                    member="StartTransientUnit",
                    signature="ssa(sv)a(sa(sv))",
                    body=[name, "fail", properties, []],
                )
            )
            if reply is None or reply.message_type == MessageType.ERROR:
                raise BenchError(f"StartTransientUnit failed: {reply and reply.body}")

        return await rate(start_one, n, inflight)
    finally:
        bus.disconnect()


async def library_rate(cfg: Config, n: int, inflight: int) -> Rate:
    from jobrun.manager import Manager
    from jobrun.properties import build_spec
    from jobrun.store import Store

    spec = build_spec(COMMAND)
    async with await Manager.open(Store(cfg.state)) as m:
        return await rate(lambda: m.start(spec), n, inflight)


async def daemon_rate(n: int, inflight: int) -> Rate:
    from .common import daemon_backend

    b = await daemon_backend()
    try:
        await b.start(COMMAND, None, {})  # bus activation, first polkit answer: not measured
        return await rate(lambda: b.start(COMMAND, None, {}), n, inflight)
    finally:
        await b.close()


def alice_rate(n: int, inflight: int) -> Rate:
    argv = as_user(ALICE, [PYTHON, "-m", "bench.p2_throughput", "daemon", str(n), str(inflight)])
    _, out = wall(argv, timeout=600, cwd=str(ROOT))
    return Rate(**json.loads(out))


async def run(cfg: Config) -> list[Row]:
    # Rounds, each variant's turn in a rotating order, so that the machine's noisy moments are
    # shared out; a variant's rate is the median of its rounds.
    rounds = cfg.size(5, 1)
    seq = cfg.size(40, 10)
    par = cfg.size(64, 32)
    names = ["raw", "library", "daemon", "alice"]
    results: dict[tuple[str, int], list[Rate]] = collections.defaultdict(list)
    for n, inflight in ((seq, 1), (par, INFLIGHT)):
        for i in range(rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                await asyncio.to_thread(wait_idle)
                if name == "raw":
                    r = await raw_rate(n, inflight)
                elif name == "library":
                    r = await library_rate(cfg, n, inflight)
                elif name == "daemon":
                    r = await daemon_rate(n, inflight)
                else:
                    r = await asyncio.to_thread(alice_rate, n, inflight)
                results[name, inflight].append(r)
    await asyncio.to_thread(wait_idle)

    labels = {
        "library": "Manager.start (library, root)",
        "daemon": "jobrund Start over D-Bus (root)",
        "alice": "jobrund Start over D-Bus (alice: polkit, caps)",
    }
    rows = []
    for inflight, how, n in ((1, "sequential", seq), (INFLIGHT, f"{INFLIGHT} in flight", par)):
        base = median([r.per_s for r in results["raw", inflight]])
        for name, label in labels.items():
            rs = results[name, inflight]
            value = median([r.per_s for r in rs])
            failed = sum(r.failed for r in rs)
            errors = [r.error for r in rs if r.error]
            rows.append(
                Row(
                    "P2",
                    f"{label}, {how}, median of {rounds} × {n} jobs",
                    value,
                    "jobs/s",
                    base,
                    f"raw StartTransientUnit, {how}",
                    # The goal is stated against raw sequential starts.
                    goal=f"≥ {GOAL}×" if inflight == 1 else "",
                    met=(value >= GOAL * base and not failed) if inflight == 1 else None,
                    note=f"{failed} of {rounds * n} failed: {errors[0][:150]}" if failed else "",
                    samples={
                        name: [r.per_s for r in rs],
                        "raw": [r.per_s for r in results["raw", inflight]],
                    },
                )
            )
    return rows


async def _client_main(n: int, inflight: int) -> None:
    print(json.dumps(asdict(await daemon_rate(n, inflight))))


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "daemon":
        sys.exit("usage: python -m bench.p2_throughput daemon N INFLIGHT")
    asyncio.run(_client_main(int(sys.argv[2]), int(sys.argv[3])))
