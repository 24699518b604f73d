"""The CLI's blocking D-Bus client (client/blocking.py) writes what dbus-fast writes and reads
back what dbus-fast writes; non-ASCII text is counted in bytes; and it talks to a real bus.

The comparisons with dbus-fast use ASCII text: Debian's dbus-fast 1.84 writes a non-ASCII
string's length in characters (wrong), PyPI's in bytes."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast import Variant as FastVariant

from jobrun.client import blocking

TEXT = "hello"


def fast_body() -> list[Any]:
    return [
        ["true", TEXT],
        {
            "name": FastVariant("s", TEXT),
            "network": FastVariant("b", True),
            "env": FastVariant("as", ["A=1", "B=2"]),
            "tail": FastVariant("x", -5),
            "timeout": FastVariant("d", 1.5),
            "stdin": FastVariant("h", 0),
        },
    ]


def our_body() -> list[Any]:
    return [
        ["true", TEXT],
        {
            "name": blocking.Variant("s", TEXT),
            "network": blocking.Variant("b", True),
            "env": blocking.Variant("as", ["A=1", "B=2"]),
            "tail": blocking.Variant("x", -5),
            "timeout": blocking.Variant("d", 1.5),
            "stdin": blocking.Variant("h", 0),
        },
    ]


@pytest.mark.unit
def test_a_method_call_is_byte_for_byte_dbus_fasts() -> None:
    ours = blocking.method_call(
        7, "org.jobrun.Manager1", "/org/jobrun/Manager1", "org.jobrun.Manager1", "Start",
        "asa{sv}", our_body(), blocking.ALLOW_INTERACTIVE_AUTHORIZATION,
    )  # fmt: skip
    theirs = Message(
        destination="org.jobrun.Manager1",
        path="/org/jobrun/Manager1",
        interface="org.jobrun.Manager1",
        member="Start",
        signature="asa{sv}",
        body=fast_body(),
        serial=7,
        flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION,
    )._marshall(False)
    assert ours == bytes(theirs)  # (dbus-fast adds the UNIX_FDS field only when it sends)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("signature", "body"),
    [
        ("s", [TEXT]),
        ("sb", ['{"id": "x"}', True]),
        ("as", [["org.freedesktop.DBus", TEXT]]),
        ("h", [0]),
        ("asa{sv}", fast_body()),
        ("", []),
    ],
)
def test_a_reply_reads_back_as_dbus_fast_wrote_it(signature: str, body: list[Any]) -> None:
    reply = Message(
        message_type=MessageType.METHOD_RETURN, reply_serial=3, serial=9, signature=signature,
        body=body, unix_fds=[0] if signature == "h" else [],
    )._marshall(False)  # fmt: skip
    reader = blocking.Reader(bytes(reply), 12)
    fields = dict(reader.read("a(yv)"))
    reader.align(8)
    assert fields[blocking.REPLY_SERIAL] == 3
    got = [reader.read(t) for t in blocking.types_of(fields.get(blocking.SIGNATURE, ""))]
    want = [
        {k: v.value for k, v in b.items()} if isinstance(b, dict) else b for b in body
    ]  # variants read back as their values
    assert got == want


@pytest.mark.unit
def test_non_ascii_text_is_counted_in_bytes_and_reads_back() -> None:
    text = "héllo ✓"
    data = blocking.method_call(1, "d.e", "/p", "i.f", "M", "sas", [text, [text]])
    reader = blocking.Reader(data, 12)
    fields = dict(reader.read("a(yv)"))
    reader.align(8)
    body_start = reader.pos
    assert data[body_start : body_start + 4] == len(text.encode()).to_bytes(4, "little")
    assert [reader.read("s"), reader.read("as")] == [text, [text]]
    assert fields[blocking.SIGNATURE] == "sas" and reader.pos == len(data)


@pytest.mark.unit
def test_addresses() -> None:
    assert blocking.unix_path("unix:path=/run/dbus/system_bus_socket") == (
        "/run/dbus/system_bus_socket"
    )
    assert blocking.unix_path("tcp:host=x;unix:abstract=/tmp/dbus-%41") == "\0/tmp/dbus-A"
    with pytest.raises(blocking.BusError):
        blocking.unix_path("tcp:host=localhost,port=1")


@pytest.mark.integration
def test_hello_and_a_call_to_the_bus() -> None:
    bus = blocking.Connection()
    try:
        reply = bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                         "NameHasOwner", "s", ["org.freedesktop.DBus"])  # fmt: skip
        assert (reply.kind, reply.body) == (blocking.METHOD_RETURN, [True])
        reply = bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                         "NoSuchMethod")  # fmt: skip
        assert reply.kind == blocking.ERROR and reply.error_name
    finally:
        bus.close()
