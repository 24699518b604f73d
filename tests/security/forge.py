"""Forge signals to jobrund, as any local user can: `forge.py PID ACTION...` (run as that user).

Each signal goes, unicast, to every connection of the process PID (jobrund has two: its service
and its systemd client), past every match rule. ACTION is one of
  props:JOB               PropertiesChanged of the job's unit: InvocationID aa…, started in 1970
  removed:JOBPATH:UNIT    JobRemoved of a systemd job, result "done"
  gone:NAME               NameOwnerChanged: NAME left the bus
  owner                   NameOwnerChanged: this connection now owns org.freedesktop.systemd1
Prints the targets as JSON, after a call to jobrund (its answer comes after the signals).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

BUS = "org.freedesktop.DBus"
FAKE_INVOCATION = bytes([0xAA] * 16)


def unit_path(job: str) -> str:
    return "/org/freedesktop/systemd1/unit/jobrun_2d" + job + "_2eservice"


async def bus_call(
    bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None
) -> Message:
    reply = await bus.call(
        Message(destination=BUS, path="/org/freedesktop/DBus", interface=BUS, member=member,
                signature=signature, body=body or [])
    )  # fmt: skip
    assert reply is not None
    return reply


def signals(action: str, me: str, systemd_owner: str, target: str) -> list[Message]:
    kind, _, rest = action.partition(":")
    out: list[tuple[str, str, str, str, list[Any]]] = []
    if kind == "props":
        for interface in ("org.freedesktop.systemd1.Unit", "org.freedesktop.systemd1.Service"):
            changed = {
                "InvocationID": Variant("ay", FAKE_INVOCATION),
                "ExecMainStartTimestamp": Variant("t", 1),
                "InactiveExitTimestamp": Variant("t", 1),
                "ActiveState": Variant("s", "failed"),
            }
            out.append(("sa{sv}as", unit_path(rest), "org.freedesktop.DBus.Properties",
                        "PropertiesChanged", [interface, changed, []]))  # fmt: skip
    elif kind == "removed":
        job_path, unit = rest.split(":")
        number = int(job_path.rsplit("/", 1)[1])
        out.append(("uoss", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                    "JobRemoved", [number, job_path, unit, "done"]))  # fmt: skip
    elif kind == "gone":
        out.append(("sss", "/org/freedesktop/DBus", BUS, "NameOwnerChanged", [rest, rest, ""]))
    elif kind == "owner":
        out.append(("sss", "/org/freedesktop/DBus", BUS, "NameOwnerChanged",
                    ["org.freedesktop.systemd1", systemd_owner, me]))  # fmt: skip
    else:
        raise SystemExit(f"unknown action {action}")
    return [
        Message(message_type=MessageType.SIGNAL, destination=target, path=p, interface=i,
                member=m, signature=s, body=b)
        for s, p, i, m, b in out
    ]  # fmt: skip


async def main(pid: int, actions: list[str]) -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    names = (await bus_call(bus, "ListNames")).body[0]
    targets = []
    for name in names:
        if name.startswith(":"):
            reply = await bus_call(bus, "GetConnectionUnixProcessID", "s", [name])
            if reply.message_type == MessageType.METHOD_RETURN and reply.body[0] == pid:
                targets.append(name)
    systemd_owner = (await bus_call(bus, "GetNameOwner", "s", ["org.freedesktop.systemd1"])).body[0]
    assert targets, f"no connection of pid {pid} on the bus"
    for action in actions:
        for target in targets:
            for msg in signals(action, bus.unique_name or "", systemd_owner, target):
                await bus.send(msg)
    # jobrund answers this after it has read the signals sent before it on its connection.
    reply = await bus.call(
        Message(destination="org.jobrun.Manager1", path="/org/jobrun/Manager1",
                interface="org.jobrun.Manager1", member="Whoami")
    )  # fmt: skip
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
    print(json.dumps(targets))
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
