"""Connecting to the system bus with dbus-fast, and the fix for its EAGAIN disconnect.

dbus-fast (like dbus-next before it) treats a BlockingIOError from send() on its non-blocking
socket as a fatal error and drops the connection: a burst of calls larger than the socket buffer
knocked a server off the bus (FACTS.md; dbus-next #153). EAGAIN only means "not now": keep the
unsent rest of the message and let the event loop call us back when the socket is writable.
"""

from __future__ import annotations

import os
from typing import Any

from dbus_fast import BusType, Message
from dbus_fast.aio import MessageBus
from dbus_fast.aio import message_bus as _aio

from .errors import SystemdUnavailable

_original_write_callback = _aio._MessageWriter.write_callback


def _original_write_callback_eagain_safe(self: Any, remove_writer: bool) -> None:
    # The original catches every Exception and disconnects; make send() raise past it only for
    # EAGAIN by wrapping the socket for the duration of the call.
    sock = self.sock
    if not isinstance(sock, _EagainSocket):
        self.sock = _EagainSocket(sock)
    _original_write_callback(self, remove_writer)


class _EagainSocket:
    """Forwards to the real socket; send/sendmsg raise _Again (not an Exception) on EAGAIN."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def send(self, data: Any) -> int:
        try:
            return int(self._sock.send(data))
        except BlockingIOError:
            raise _Again from None

    def sendmsg(self, buffers: Any, ancdata: Any) -> int:
        try:
            return int(self._sock.sendmsg(buffers, ancdata))
        except BlockingIOError:
            raise _Again from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Again(BaseException):
    """Raised through dbus-fast's `except Exception` so the connection survives EAGAIN."""


def _patched(self: Any, remove_writer: bool = True) -> None:
    try:
        _original_write_callback_eagain_safe(self, remove_writer)
    except _Again:
        self.loop.add_writer(self.fd, self.write_callback)


_aio._MessageWriter.write_callback = _patched  # type: ignore[method-assign]


def system_bus_address() -> str | None:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")


async def connect_system_bus() -> MessageBus:
    try:
        return await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    except (OSError, EOFError) as e:
        address = system_bus_address() or "unix:path=/run/dbus/system_bus_socket"
        raise SystemdUnavailable(
            f"cannot connect to the system bus at {address}: {getattr(e, 'strerror', None) or e}",
            "is dbus running? On a host without systemd as PID 1, run jobrun under "
            "tests/with-systemd",
        ) from e


async def call_bus_daemon(
    bus: MessageBus, member: str, signature: str = "", body: list[Any] | None = None
) -> Message | None:
    """A method call to the bus itself (org.freedesktop.DBus): AddMatch, NameHasOwner, …"""
    return await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member=member,
            signature=signature,
            body=body or [],
        )
    )
