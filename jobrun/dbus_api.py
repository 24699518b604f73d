"""jobrund's D-Bus interface, defined once: the daemon serves it and the client calls it.

One table, METHODS, drives jobrund's introspection data, its dispatch (each method's `verb` is
the handler's name) and the client's calls. Job records travel as JSON text (the objects
`jobrun status --json` prints, wire/jobs.py) rather than nested a{sv} dictionaries: one schema
for the CLI and D-Bus, and trivially introspectable.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .journal import LineBreak, Record

BUS_NAME = "org.jobrun.Manager1"
PATH = "/org/jobrun/Manager1"
INTERFACE = "org.jobrun.Manager1"


@dataclass(frozen=True)
class Method:
    name: str
    verb: str  # jobrund's handler
    args_in: tuple[tuple[str, str], ...] = ()  # (name, D-Bus type)
    args_out: tuple[tuple[str, str], ...] = ()

    @property
    def sig_in(self) -> str:
        return "".join(t for _, t in self.args_in)

    @property
    def sig_out(self) -> str:
        return "".join(t for _, t in self.args_out)


_JOB = ("job", "s")  # JSON of a job
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # command, options (settings table fields + "name", and "stdin": a descriptor)
        Method("Start", "start", (("command", "as"), ("options", "a{sv}")), (_JOB,)),
        # id (or prefix), timeout (< 0: the job's own) → job, was it running
        Method("Stop", "stop", (("id", "s"), ("timeout", "d")), (_JOB, ("was_running", "b"))),
        # id, signal number → job, was it running (`jobrun run`'s Ctrl-C)
        Method("Kill", "kill", (("id", "s"), ("signal", "i")), (_JOB, ("was_running", "b"))),
        Method("Status", "status", (("id", "s"),), (_JOB,)),
        # all → JSON list of jobs
        Method("List", "list_jobs", (("all", "b"),), (("jobs", "s"),)),
        # id, options (wire/dbus.py LOGS_OPTIONS) → the read end of a pipe of frames
        Method("Logs", "logs", (("id", "s"), ("options", "a{sv}")), (("fd", "h"),)),
        # JobChanged signals for the caller's jobs, until it disconnects
        Method("Subscribe", "subscribe"),
        # the caller's user name and whether it may manage every job
        Method("Whoami", "whoami", (), (("user", "s"), ("admin", "b"))),
    )
}


def introspection_xml() -> str:
    lines = [
        '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"',
        ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">',
        "<node>",
        f' <interface name="{INTERFACE}">',
    ]
    for method in METHODS.values():
        lines.append(f'  <method name="{method.name}">')
        for name, t in method.args_in:
            lines.append(f'   <arg name="{name}" type="{t}" direction="in"/>')
        for name, t in method.args_out:
            lines.append(f'   <arg name="{name}" type="{t}" direction="out"/>')
        lines.append("  </method>")
    lines += [
        '  <signal name="JobChanged">',
        '   <arg name="id" type="s"/>',
        '   <arg name="state" type="s"/>',
        "  </signal>",
        " </interface>",
        ' <interface name="org.freedesktop.DBus.Introspectable">',
        '  <method name="Introspect"><arg name="xml" type="s" direction="out"/></method>',
        " </interface>",
        ' <interface name="org.freedesktop.DBus.Peer">',
        '  <method name="Ping"/>',
        '  <method name="GetMachineId"><arg name="id" type="s" direction="out"/></method>',
        " </interface>",
        "</node>",
    ]
    return "\n".join(lines) + "\n"


# -- Logs: the pipe protocol ----------------------------------------------------------------
# Logs answers with the read end of a pipe. jobrund writes frames to it: a header
# (kind, realtime µs, cursor length, message length) followed by the cursor and the message.
# Kinds 0..4 are records (their LineBreak's code, wire/logs.py LINE_BREAKS); END says the
# stream is complete; ERROR carries "<D-Bus error name>\0<text>". A pipe that ends without END or
# ERROR means jobrund went away: the client asks again, after the last cursor it got.
# With the option `batch_cursors`, only the last record of each write carries its cursor (the
# others an empty one): a reader that prints no cursors gets half the bytes, and resumes after the
# last cursor it got, holding back what came after it until that record's cursor arrives.
FRAME = struct.Struct("!BQHI")
FRAME_END = 100
FRAME_ERROR = 101


def pack_frame(kind: int, usec: int = 0, cursor: bytes = b"", message: bytes = b"") -> bytes:
    return FRAME.pack(kind, usec, len(cursor), len(message)) + cursor + message


def pack_records(
    records: Sequence[Record], codes: Mapping[LineBreak, int], batch_cursors: bool = False
) -> bytes:
    """The frames of many records at once, as one bytes; with batch_cursors, only the last record
    carries its cursor."""
    pack = FRAME.pack
    parts: list[bytes] = []
    append = parts.append
    if batch_cursors and records:
        for r in records[:-1]:
            append(pack(codes[r.line_break], r.usec, 0, len(r.message)))
            append(r.message)
        records = records[-1:]
    for r in records:
        cursor = r.cursor.encode()
        append(pack(codes[r.line_break], r.usec, len(cursor), len(r.message)))
        append(cursor)
        append(r.message)
    return b"".join(parts)
