"""One request to jobrund over a blocking bus connection (blocking.py), for the CLI's fast path
(fastcli.py): where a command goes, and jobrund's methods (dbus_api.METHODS) with their errors
as client/dbus.py's DaemonBackend raises them. Fallback: the full CLI does the command."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # as typing's, without importing typing (~4 ms, with re) for --version

if TYPE_CHECKING:
    from typing import Any

    from .blocking import Connection


class Fallback(Exception):
    """The full CLI does this command line."""


def daemon_bus() -> Connection:
    """A bus connection, when the command goes to jobrund; else Fallback."""
    bus = bus_or_in_process()
    if bus is None:
        raise Fallback
    return bus


def bus_or_in_process() -> Connection | None:
    """Where the command goes, as client/target.py decides from JOBRUN_MODE and whether jobrund
    is reachable: a bus connection to reach jobrund, or None for this process (root only);
    Fallback when there is no bus, or in-process jobs are not the caller's to reach."""
    from .. import dbus_api as api
    from .blocking import BusError, Connection

    wanted = os.environ.get("JOBRUN_MODE", "auto")
    if wanted not in ("auto", "daemon", "local"):
        raise Fallback
    if wanted == "local":
        _in_process()
        return None
    try:
        bus = Connection()
    except (OSError, BusError):
        raise Fallback from None
    if wanted == "auto" and os.geteuid() != 0:
        # Not root: jobrund or nothing (client/local.py refuses), so no question whether it is
        # reachable first (a round trip of every command). Where it is not, the bus answers
        # the call itself with ServiceUnknown, and `call` hands the command to the full CLI.
        return bus
    if wanted == "auto" and not _daemon_reachable(bus, api.BUS_NAME):
        bus.close()
        _in_process()
        return None
    return bus


def _in_process() -> None:
    if os.geteuid() != 0:
        raise Fallback  # the full CLI says why not (client/local.py)


def _daemon_reachable(bus: Connection, name: str) -> bool:
    """As client/target.py's daemon_reachable: jobrund runs, or the bus would start it."""
    from .blocking import METHOD_RETURN

    for member, sig, body in (("NameHasOwner", "s", [name]), ("ListActivatableNames", "", [])):
        reply = bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                         member, sig, body)  # fmt: skip
        if reply.kind != METHOD_RETURN or not reply.body:
            continue
        value = reply.body[0]
        if value is True or (isinstance(value, list) and name in value):
            return True
    return False


def call(bus: Connection, member: str, body: list[Any]) -> list[Any]:
    """A method of jobrund's: its reply's body, or the JobrunError its error stands for (as
    client/dbus.py's DaemonBackend.call)."""
    from .. import dbus_api as api
    from ..errors import SERVICE_UNKNOWN, SystemdUnavailable, reply_error
    from .blocking import ALLOW_INTERACTIVE_AUTHORIZATION, ERROR, BusError

    try:
        signature = api.METHODS[member].sig_in
        reply = bus.call(api.BUS_NAME, api.PATH, api.INTERFACE, member, signature, body,
                         ALLOW_INTERACTIVE_AUTHORIZATION)  # fmt: skip
    except (OSError, BusError) as e:
        raise SystemdUnavailable(f"lost the system bus: {e!r}") from e
    if reply.kind == ERROR:
        if reply.error_name == SERVICE_UNKNOWN and os.environ.get("JOBRUN_MODE", "auto") == "auto":
            raise Fallback  # the bus's answer: nothing reached jobrund (it never says this)
        raise reply_error(reply.error_name, reply.body)
    return reply.body


def ask_readonly(bus: Connection, member: str, body: list[Any]) -> list[Any]:
    """A call that changes nothing: on any error the full CLI asks again and says what is wrong."""
    from ..errors import JobrunError

    try:
        return call(bus, member, body)
    except JobrunError:
        raise Fallback from None
    finally:
        bus.close()
