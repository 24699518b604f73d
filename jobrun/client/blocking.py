"""A blocking D-Bus client for the CLI's single requests to jobrund (the fast path, fastcli.py).

The asyncio client (dbus-fast) costs ~70 ms of imports before the first byte is sent; a CLI that
sends one request and waits for one reply needs a socket, the EXTERNAL handshake and the
marshalling of the few types jobrund's methods use: this module, on `_socket` and `struct` only.
Strings are marshalled as UTF-8 bytes (their length in bytes: what the wire counts).
Anything unexpected raises BusError, and the CLI takes its full path instead.
"""

from __future__ import annotations

import _socket as socket  # the C module: `socket` adds ~2 ms of enum classes this needs none of
import os
import struct

TYPE_CHECKING = False  # as typing's, without importing typing

if TYPE_CHECKING:
    from typing import Any

DEFAULT_ADDRESS = "unix:path=/run/dbus/system_bus_socket"
ALLOW_INTERACTIVE_AUTHORIZATION = 0x4
METHOD_CALL, METHOD_RETURN, ERROR = 1, 2, 3
# header fields
PATH, INTERFACE, MEMBER, ERROR_NAME, REPLY_SERIAL, DESTINATION, SIGNATURE, UNIX_FDS = (
    1, 2, 3, 4, 5, 6, 8, 9,
)  # fmt: skip
_FIXED = {"y": "B", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d", "h": "I"}
_ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "h": 4, "s": 4, "o": 4}
_ALIGN.update({"a": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8})
MAX_MESSAGE = 1 << 27  # the spec's limit


class BusError(Exception):
    """The bus could not be reached or said something this client does not handle."""


class Variant:
    """A value of type "v" to send: its signature and the value."""

    def __init__(self, signature: str, value: Any) -> None:
        self.signature = signature
        self.value = value


def _one_type(sig: str, i: int) -> int:
    """The end of the single complete type starting at sig[i]."""
    c = sig[i]
    if c == "a":
        return _one_type(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        i += 1
        while sig[i] != close:
            i = _one_type(sig, i)
        return i + 1
    return i + 1


def types_of(sig: str) -> list[str]:
    out, i = [], 0
    while i < len(sig):
        end = _one_type(sig, i)
        out.append(sig[i:end])
        i = end
    return out


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def pad(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def write(self, t: str, value: Any) -> None:
        c = t[0]
        self.pad(_ALIGN.get(c, 1))
        if c in _FIXED:
            self.buf += struct.pack("<" + _FIXED[c], value)
        elif c == "b":
            self.buf += struct.pack("<I", 1 if value else 0)
        elif c in "so":
            data = value.encode()
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
        elif c == "g":
            data = value.encode()
            self.buf += bytes([len(data)]) + data + b"\0"
        elif c == "v":
            self.write("g", value.signature)
            self.write(value.signature, value.value)
        elif c == "a":
            item = t[1:]
            at = len(self.buf)
            self.buf += b"\0\0\0\0"
            self.pad(_ALIGN.get(item[0], 1))
            start = len(self.buf)
            items = value.items() if item[0] == "{" else value
            for v in items:
                self.write(item, v)
            struct.pack_into("<I", self.buf, at, len(self.buf) - start)
        elif c in "({":
            for sub, v in zip(types_of(t[1:-1]), value, strict=True):
                self.write(sub, v)
        else:
            raise BusError(f"cannot marshal type {t!r}")


class Reader:
    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.pos = offset

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def read(self, t: str) -> Any:
        c = t[0]
        self.align(_ALIGN.get(c, 1))
        if c in _FIXED:
            fmt = "<" + _FIXED[c]
            (value,) = struct.unpack_from(fmt, self.data, self.pos)
            self.pos += struct.calcsize(fmt)
            return value
        if c == "b":
            (n,) = struct.unpack_from("<I", self.data, self.pos)
            self.pos += 4
            return bool(n)
        if c in "so":
            (n,) = struct.unpack_from("<I", self.data, self.pos)
            text = self.data[self.pos + 4 : self.pos + 4 + n].decode()
            self.pos += 4 + n + 1
            return text
        if c == "g":
            n = self.data[self.pos]
            text = self.data[self.pos + 1 : self.pos + 1 + n].decode()
            self.pos += 1 + n + 1
            return text
        if c == "v":
            return self.read(self.read("g"))
        if c == "a":
            (n,) = struct.unpack_from("<I", self.data, self.pos)
            self.pos += 4
            self.align(_ALIGN.get(t[1], 1))
            end = self.pos + n
            items = []
            while self.pos < end:
                items.append(self.read(t[1:]))
            return dict(items) if t[1] == "{" else items
        if c in "({":
            return tuple(self.read(sub) for sub in types_of(t[1:-1]))
        raise BusError(f"cannot unmarshal type {t!r}")


def unix_path(address: str) -> str:
    """The socket of the first unix:path= or unix:abstract= address; BusError for others."""
    for one in address.split(";"):
        kind, _, params = one.partition(":")
        if kind != "unix":
            continue
        for pair in params.split(","):
            key, _, value = pair.partition("=")
            if key == "path":
                return _unescape(value)
            if key == "abstract":
                return "\0" + _unescape(value)
    raise BusError(f"unsupported bus address {address!r}")


def _unescape(value: str) -> str:
    if "%" not in value:
        return value
    from urllib.parse import unquote_to_bytes

    return os.fsdecode(unquote_to_bytes(value))


def method_call(
    serial: int,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str,
    body: list[Any] | tuple[Any, ...],
    flags: int = 0,
    n_fds: int = 0,
) -> bytes:
    """A METHOD_CALL message, little-endian."""
    w = _Writer()
    for t, v in zip(types_of(signature), body, strict=True):
        w.write(t, v)
    fields: list[tuple[int, Variant]] = [
        (PATH, Variant("o", path)),
        (INTERFACE, Variant("s", interface)),
        (MEMBER, Variant("s", member)),
        (DESTINATION, Variant("s", destination)),
    ]
    if signature:
        fields.append((SIGNATURE, Variant("g", signature)))
    if n_fds:
        fields.append((UNIX_FDS, Variant("u", n_fds)))
    h = _Writer()
    h.buf += struct.pack("<cBBBII", b"l", METHOD_CALL, flags, 1, len(w.buf), serial)
    h.write("a(yv)", fields)
    h.pad(8)
    return bytes(h.buf + w.buf)


class Reply:
    def __init__(self, kind: int, fields: dict[int, Any], body: list[Any], fds: list[int]):
        self.kind = kind
        self.error_name: str | None = fields.get(ERROR_NAME)
        self.body = body
        self.fds = fds


class Connection:
    """One blocking connection to the system bus, with unix fd passing."""

    def __init__(self, address: str | None = None) -> None:
        address = address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_ADDRESS
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(unix_path(address))
            uid = str(os.geteuid()).encode().hex().encode()
            self.sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n")
            self._inbuf = b""
            for expected in (b"OK ", b"AGREE_UNIX_FD"):
                line = self._line()
                if not line.startswith(expected):
                    raise BusError(f"bus authentication: {line!r}")
            self.serial = 0
            self.fds: list[int] = []  # received, for messages not read yet
            self.last_fds: list[int] = []  # the last reply's, until taken or closed
            self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                      "Hello")  # fmt: skip
        except BaseException:
            self.sock.close()
            raise

    def _line(self) -> bytes:
        while b"\r\n" not in self._inbuf:
            data = self.sock.recv(4096)
            if not data:
                raise BusError("the bus closed the connection during authentication")
            self._inbuf += data
        line, _, self._inbuf = self._inbuf.partition(b"\r\n")
        return line

    def call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | tuple[Any, ...] = (),
        flags: int = 0,
        fds: list[int] | None = None,
    ) -> Reply:
        """A method call and its reply (a METHOD_RETURN or an ERROR)."""
        self.serial += 1
        serial = self.serial
        data = method_call(serial, destination, path, interface, member, signature, body, flags,
                           len(fds or ()))  # fmt: skip
        if fds:
            self.sock.sendmsg(
                [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
            )
        else:
            self.sock.sendall(data)
        while True:
            reply = self._receive()
            if reply is not None and reply[0] == serial:
                for fd in self.last_fds:
                    if fd >= 0:
                        os.close(fd)
                self.last_fds = reply[1].fds
                return reply[1]

    def _recv_exactly(self, n: int) -> bytes:
        while len(self._inbuf) < n:
            data, ancdata, _, _ = self.sock.recvmsg(max(n - len(self._inbuf), 65536),
                                                    socket.CMSG_SPACE(16 * 4))  # fmt: skip
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    self.fds += struct.unpack(f"{usable // 4}i", payload[:usable])
            if not data:
                raise BusError("the bus closed the connection")
            self._inbuf += data
        out, self._inbuf = self._inbuf[:n], self._inbuf[n:]
        return out

    def _receive(self) -> tuple[int, Reply] | None:
        """The next message: (its reply serial, the reply), or None for other messages."""
        head = self._recv_exactly(16)
        if head[:1] != b"l":
            raise BusError("big-endian messages are not handled")
        kind, body_len, _, fields_len = struct.unpack_from("<xBxxIII", head)
        rest_len = fields_len + (-(16 + fields_len) % 8) + body_len
        if 16 + rest_len > MAX_MESSAGE:
            raise BusError("message too large")
        data = head + self._recv_exactly(rest_len)
        r = Reader(data, 12)
        fields = dict(r.read("a(yv)"))
        r.align(8)
        n_fds = fields.get(UNIX_FDS, 0)
        fds, self.fds = self.fds[:n_fds], self.fds[n_fds:]
        if kind not in (METHOD_RETURN, ERROR) or REPLY_SERIAL not in fields:
            for fd in fds:
                os.close(fd)
            return None
        body = [r.read(t) for t in types_of(fields.get(SIGNATURE, ""))]
        return fields[REPLY_SERIAL], Reply(kind, fields, body, fds)

    def take_fd(self, index: int) -> int:
        """The descriptor at `index` of the last reply's; the caller closes it."""
        fd = self.last_fds[index]
        self.last_fds[index] = -1
        return fd

    def close(self) -> None:
        for fd in self.fds + self.last_fds:
            if fd >= 0:
                os.close(fd)
        self.sock.close()
