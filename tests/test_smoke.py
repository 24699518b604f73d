"""Smoke test of the platform jobrun stands on, without jobrun: D-Bus to systemd, and the journal.

If this fails, the sandbox (or the host's systemd) is broken, not jobrun: a transient service is
started over the system bus with dbus-fast, and its output is read back with python-systemd.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from systemd import journal

from .helpers import wait_for_async

pytestmark = pytest.mark.integration

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
# systemd's catalog entry "Unit succeeded" (logged as "<unit>: Deactivated successfully.").
UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"


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

        assert await wait_for_async(job_removed, what=f"JobRemoved for {job}", timeout=30) == "done"

        async def finished() -> bool:
            reply = await call(bus, "GetUnit", "s", [unit])
            if reply.error_name == "org.freedesktop.systemd1.NoSuchUnit":
                return True  # a transient service that succeeded is unloaded at once
            (path,) = body_of(reply)
            state: str = body_of(
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

        await wait_for_async(finished, what=f"{unit} to finish", timeout=30)
    finally:
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # dbus-fast: unannotated

    output = journal.Reader()
    output.data_threshold = 0
    output.add_match(_SYSTEMD_UNIT=unit)
    lines: list[str] = []

    async def both_lines() -> bool:
        output.process()
        lines.extend(entry["MESSAGE"] for entry in output)
        return len(lines) >= 2

    await wait_for_async(both_lines, what=f"the output of {unit} in the journal", timeout=30)
    assert lines == [tag, "line2"]

    verdict = journal.Reader()
    verdict.add_match(UNIT=unit, MESSAGE_ID=UNIT_SUCCESS)

    async def success_logged() -> bool:
        verdict.process()
        return any(True for _ in verdict)

    await wait_for_async(success_logged, what=f"systemd to log that {unit} succeeded", timeout=30)
