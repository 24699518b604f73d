"""Load jobrund as one user: `flood.py MODE ARGS` (run as that user); prints a JSON summary.

flood SECONDS CONNECTIONS DEPTH   keep DEPTH Whoami calls pending on each of CONNECTIONS
                                  connections for SECONDS (each answer is followed by a new
                                  call); prints "flooding" once jobrund answers one Busy (the
                                  backlog is full), then the counts of answers
probe N                           N Whoami calls one after another; their latencies and errors
streams JOB N                     N follow streams of JOB's output, held open until a line
                                  on stdin; the counts of answers
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

RETRY = 1.0  # seconds a flooding caller waits after a Busy answer


def call(member: str, signature: str = "", body: list[Any] | None = None) -> Message:
    return Message(
        destination="org.jobrun.Manager1",
        path="/org/jobrun/Manager1",
        interface="org.jobrun.Manager1",
        member=member,
        signature=signature,
        body=body or [],
    )


def outcome(reply: Message | None) -> str:
    if reply is None:
        return "none"
    if reply.message_type == MessageType.ERROR:
        return str(reply.error_name)
    return "ok"


async def connect() -> MessageBus:
    return await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()


async def flood(seconds: float, connections: int, depth: int) -> None:
    buses = [await connect() for _ in range(connections)]
    counts: Counter[str] = Counter()
    end = time.monotonic() + seconds
    full = asyncio.Event()  # jobrund refused one: this user's backlog is as long as it gets

    async def caller(bus: MessageBus) -> None:
        while time.monotonic() < end:
            result = outcome(await bus.call(call("Whoami")))
            counts[result] += 1
            if result == "org.jobrun.Error.Busy":
                full.set()
                await asyncio.sleep(RETRY)  # "try again in a moment", as the error says

    tasks = [asyncio.create_task(caller(b)) for b in buses for _ in range(depth)]
    with contextlib.suppress(TimeoutError):  # all sent by then, whatever the answers
        await asyncio.wait_for(full.wait(), 1.0)
    print("flooding", flush=True)
    await asyncio.gather(*tasks)
    print(json.dumps(dict(counts)), flush=True)


async def probe(n: int) -> None:
    bus = await connect()
    latencies, errors = [], []
    for _ in range(n):
        t0 = time.monotonic()
        result = outcome(await bus.call(call("Whoami")))
        latencies.append(time.monotonic() - t0)
        if result != "ok":
            errors.append(result)
    print(json.dumps({"latencies": latencies, "errors": errors}), flush=True)


async def streams(job: str, n: int) -> None:
    bus = await connect()
    results: Counter[str] = Counter()
    fds = []
    for _ in range(n):
        reply = await bus.call(call("Logs", "sa{sv}", [job, {"follow": Variant("b", True)}]))
        results[outcome(reply)] += 1
        if reply is not None:
            fds += reply.unix_fds
    print(json.dumps(dict(results)), flush=True)
    sys.stdin.readline()  # held open until told
    for fd in fds:
        os.close(fd)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "flood":
        asyncio.run(flood(float(args[0]), int(args[1]), int(args[2])))
    elif mode == "probe":
        asyncio.run(probe(int(args[0])))
    else:
        asyncio.run(streams(args[0], int(args[1])))
