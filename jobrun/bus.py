"""Connecting to the system bus with dbus-fast, and two fixes for it, applied on import.

EAGAIN: dbus-fast (like dbus-next before it) treats a BlockingIOError from send() on its
non-blocking socket as a fatal error and drops the connection: a burst of calls larger than the
socket buffer knocked a server off the bus (dbus-next #153). EAGAIN only means "not
now": keep the unsent rest of the message and let the event loop call us back when the socket is
writable.

UTF-8: dbus-fast 1.84 (Debian 12's python3-dbus-fast) writes a string's length in characters, not
in UTF-8 bytes, so any non-ASCII string (an argument, a job name, an environment value) makes
dbus-daemon drop the connection. Its marshaller is compiled (a Cython class whose methods cannot
be replaced), so where a probe shows the fault, messages whose bytes are not all ASCII are
marshalled again here. Reading is right in 1.84: it takes the length from the wire.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from dbus_fast import BusType, Message, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.aio import message_bus as _aio
from dbus_fast.signature import get_signature_tree

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


# -- UTF-8 string lengths ----------------------------------------------------------------------

_ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "h": 4, "s": 4, "o": 4}
_ALIGN.update({"a": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8})
_PACK = {t: struct.Struct("<" + f).pack for t, f in zip("ynqbiuhxtd", "BhHIiIIqQd", strict=True)}
_PACK_U32 = _PACK["u"]


def _write(buf: bytearray, type_: Any, value: Any) -> None:
    """Append one value of `type_` (a dbus-fast SignatureType) in D-Bus's little-endian wire
    format, aligned to its offset in `buf`, which starts at a multiple of 8 in the message."""
    token = type_.token
    buf += bytes(-len(buf) % _ALIGN[token])
    if token in "so":
        data = value.encode()
        buf += _PACK_U32(len(data))
        buf += data
        buf.append(0)
    elif token == "g":
        data = value.encode()
        buf.append(len(data))
        buf += data
        buf.append(0)
    elif token == "v":
        _write(buf, _SIGNATURE_TYPE, value.signature)
        _write(buf, value.type, value.value)
    elif token == "a":
        at = len(buf)
        buf += bytes(4)
        child = type_.children[0]
        buf += bytes(-len(buf) % _ALIGN[child.token])  # padding before the first element: not
        start = len(buf)  # counted in the array's length, and there even when it is empty
        if child.token == "y":
            buf += value
        else:
            for item in value.items() if child.token == "{" else value:
                _write(buf, child, item)
        buf[at : at + 4] = _PACK_U32(len(buf) - start)
    elif token in "({":
        for child, item in zip(type_.children, value, strict=True):
            _write(buf, child, item)
    else:
        buf += _PACK[token](value)


_SIGNATURE_TYPE = get_signature_tree("g").types[0]
_HEADER = get_signature_tree("(yyyyuua(yv))").types[0]


def marshall(msg: Message, negotiate_unix_fd: bool) -> bytearray:
    """The message as the D-Bus specification writes it: what dbus-fast 5 sends."""
    body = bytearray()
    for type_, value in zip(get_signature_tree(msg.signature).types, msg.body, strict=True):
        _write(body, type_, value)
    fields: list[list[Any]] = []
    for code, signature, value in (
        (1, "o", msg.path),
        (2, "s", msg.interface),
        (3, "s", msg.member),
        (4, "s", msg.error_name),
        (5, "u", msg.reply_serial),
        (6, "s", msg.destination),
        (8, "g", msg.signature),
        (9, "u", len(msg.unix_fds) if negotiate_unix_fd else 0),
    ):
        if value:
            fields.append([code, Variant(signature, value)])
    header = bytearray()
    _write(header, _HEADER, [ord("l"), msg.message_type.value, int(msg.flags), 1, len(body),
                             msg.serial, fields])  # fmt: skip
    header += bytes(-len(header) % 8)
    return header + body


def _marshalls_utf8_right() -> bool:
    probe = Message(path="/p", member="M", signature="s", body=["é"])._marshall(False)
    return bytes(probe).endswith(b"\x02\x00\x00\x00\xc3\xa9\x00")


_original_buffer_message = _aio._MessageWriter.buffer_message


def _buffer_message_utf8(self: Any, msg: Message, future: Any = None) -> None:
    # Only a message with a non-ASCII byte can hold a string whose length dbus-fast got wrong.
    _original_buffer_message(self, msg, future)
    data, unix_fds, fut = self.messages[-1]
    if not data.isascii():
        self.messages[-1] = (marshall(msg, self.negotiate_unix_fd), unix_fds, fut)


if not _marshalls_utf8_right():
    _aio._MessageWriter.buffer_message = _buffer_message_utf8  # type: ignore[method-assign]


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
