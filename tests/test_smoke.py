"""Smoke test of the platform jobrun stands on, without jobrun: D-Bus to systemd, and the journal.

If this fails, the sandbox (or the host's systemd) is broken, not jobrun: a transient service is
started over the system bus with dbus-fast, and its output is read back with python-systemd.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from systemd import journal

pytestmark = pytest.mark.integration

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
# systemd's catalog entry "Unit succeeded" (logged as "<unit>: Deactivated successfully.").
UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"
T = TypeVar("T")


async def eventually(
    condition: Callable[[], Awaitable[T]], *, what: str, timeout: float = 30.0
) -> T:
    """Await `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def call(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    *,
    destination: str = SYSTEMD,
    path: str = MANAGER_PATH,
    interface: str = MANAGER,
) -> Message:
    reply = await bus.call(
        Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
    )
    assert reply is not None
    return reply


def body_of(reply: Message) -> list[Any]:
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    return reply.body


async def test_transient_service_runs_and_its_output_reaches_the_journal() -> None:
    tag = f"smoke-{secrets.token_hex(6)}"
    unit = f"{tag}.service"
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        # Listen before starting: a short job can be over before StartTransientUnit replies.
        removed: dict[str, str] = {}

        def on_message(msg: Message) -> None:
            if (
                msg.message_type == MessageType.SIGNAL
                and msg.interface == MANAGER
                and msg.member == "JobRemoved"
            ):
                _id, job, _unit, result = msg.body
                removed[job] = result

        bus.add_message_handler(on_message)
        rule = (
            f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
            f"interface='{MANAGER}',member='JobRemoved'"
        )
        body_of(
            await call(
                bus,
                "AddMatch",
                "s",
                [rule],
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
            )
        )
        body_of(await call(bus, "Subscribe"))

        script = f"echo {tag}; echo line2"
        properties = [
            ["Description", Variant("s", "jobrun smoke test")],
            ["ExecStart", Variant("a(sasb)", [["/bin/sh", ["/bin/sh", "-c", script], False]])],
        ]
        (job,) = body_of(
            await call(
                bus, "StartTransientUnit", "ssa(sv)a(sa(sv))", [unit, "fail", properties, []]
            )
        )

        async def job_removed() -> str | None:
            return removed.get(job)

        assert await eventually(job_removed, what=f"JobRemoved for {job}") == "done"

        async def finished() -> bool:
            reply = await call(bus, "GetUnit", "s", [unit])
            if reply.error_name == "org.freedesktop.systemd1.NoSuchUnit":
                return True  # a transient service that succeeded is unloaded at once
            (path,) = body_of(reply)
            state = body_of(
                await call(
                    bus,
                    "Get",
                    "ss",
                    ["org.freedesktop.systemd1.Unit", "ActiveState"],
                    path=path,
                    interface="org.freedesktop.DBus.Properties",
                )
            )[0].value
            assert state != "failed", f"{unit} failed"
            return state == "inactive"

        await eventually(finished, what=f"{unit} to finish")
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()

    output = journal.Reader()
    output.data_threshold = 0
    output.add_match(_SYSTEMD_UNIT=unit)
    lines: list[str] = []

    async def both_lines() -> bool:
        output.process()
        lines.extend(entry["MESSAGE"] for entry in output)
        return len(lines) >= 2

    await eventually(both_lines, what=f"the output of {unit} in the journal")
    assert lines == [tag, "line2"]

    verdict = journal.Reader()
    verdict.add_match(UNIT=unit, MESSAGE_ID=UNIT_SUCCESS)

    async def success_logged() -> bool:
        verdict.process()
        return any(True for _ in verdict)

    await eventually(success_logged, what=f"systemd to log that {unit} succeeded")
