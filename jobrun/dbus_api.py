"""jobrund's D-Bus interface, defined once: the daemon serves it and the client calls it.

Job records travel as JSON text (the same objects `jobrun status --json` prints) rather than
nested a{sv} dictionaries: one schema for the CLI, D-Bus and gRPC, and trivially introspectable.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument, JobrunError

if TYPE_CHECKING:
    from datetime import datetime

    from .model import JobSpec

if TYPE_CHECKING:
    from .journal import LineBreak, Record

BUS_NAME = "org.jobrun.Manager1"
PATH = "/org/jobrun/Manager1"
INTERFACE = "org.jobrun.Manager1"

# member → (input signature, output signature)
METHODS: dict[str, tuple[str, str]] = {
    # command, options (SETTINGS fields + "name", and "stdin": a descriptor) → job JSON
    "Start": ("asa{sv}", "s"),
    "Stop": ("sd", "sb"),  # id (or prefix), timeout (< 0: the job's own) → job JSON, was running
    "Kill": ("si", "sb"),  # id, signal number → job JSON, was running (`jobrun run`'s Ctrl-C)
    "Status": ("s", "s"),  # id → job JSON
    "List": ("b", "s"),  # all → JSON list of jobs
    "Logs": ("sa{sv}", "h"),  # id, options (follow, tail, after_cursor, json) → pipe to read
    "Subscribe": ("", ""),  # JobChanged signals for the caller's jobs, until it disconnects
    "Whoami": ("", "sb"),  # the caller's user name and whether it may manage every job
}
SIGNALS: dict[str, str] = {"JobChanged": "ss"}  # id, state
# Start's option for the job's standard input: a descriptor ("h", sent with the message).
STDIN_OPTION = "stdin"

_ARG_NAMES = {
    "Start": (["command", "options"], ["job"]),
    "Stop": (["id", "timeout"], ["job", "was_running"]),
    "Kill": (["id", "signal"], ["job", "was_running"]),
    "Status": (["id"], ["job"]),
    "List": (["all"], ["jobs"]),
    "Logs": (["id", "options"], ["fd"]),
    "Subscribe": ([], []),
    "Whoami": ([], ["user", "admin"]),
}


def _split(signature: str) -> list[str]:
    from dbus_fast.signature import SignatureTree

    return [t.signature for t in SignatureTree(signature).types]


def introspection_xml() -> str:
    lines = [
        '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"',
        ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">',
        "<node>",
        f' <interface name="{INTERFACE}">',
    ]
    for member, (sig_in, sig_out) in METHODS.items():
        names_in, names_out = _ARG_NAMES[member]
        lines.append(f'  <method name="{member}">')
        for name, t in zip(names_in, _split(sig_in), strict=True):
            lines.append(f'   <arg name="{name}" type="{t}" direction="in"/>')
        for name, t in zip(names_out, _split(sig_out), strict=True):
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


# -- request decoding: a message body → validated values, or InvalidArgument, nothing else ------
# (tests/test_reliability.py fuzzes these with hypothesis.)

MAX_CURSOR = 4096  # journal cursors are ~150 characters
MAX_SINCE_USEC = 253402300799999999  # 9999-12-31T23:59:59.999999Z: datetime's own limit


def _plain(value: Any) -> tuple[str | None, Any]:
    """(D-Bus signature or None, Python value) of an a{sv} value."""
    from dbus_fast import Variant

    if isinstance(value, Variant):
        return value.signature, value.value
    return None, value


def stdin_of(options: Any, unix_fds: Sequence[int]) -> int | None:
    """Start's "stdin" option (removed from `options`): the descriptor it names among the
    message's, or None; InvalidArgument if it names none."""
    if not isinstance(options, dict) or STDIN_OPTION not in options:
        return None
    signature, index = _plain(options.pop(STDIN_OPTION))
    if signature not in (None, "h") or not isinstance(index, int) or isinstance(index, bool):
        raise InvalidArgument("Start's stdin option must be a file descriptor")
    if not 0 <= index < len(unix_fds):
        raise InvalidArgument("Start's stdin option names no descriptor sent with the call")
    return unix_fds[index]


def decode_start(command: Any, options: Any) -> JobSpec:
    """Start's (command, options): the JobSpec to run. Options are the settings table's fields
    plus "name", with the same (text or plain) values the CLI passes."""
    from .properties import build_spec

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidArgument("Start options must be a dictionary of settings")
    values = {k: _plain(v)[1] for k, v in options.items()}
    name = values.pop("name", None)
    return build_spec(command, name=name, **values)


def decode_logs_options(options: Any) -> dict[str, Any]:
    """Logs' options: keyword arguments of Manager.logs (follow, tail, after_cursor, since) and
    batch_cursors (how jobrund frames them, see pack_records)."""
    from datetime import UTC, datetime

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidArgument("Logs options must be a dictionary")
    unknown = set(options) - set(LOGS_OPTIONS)
    if unknown:
        raise InvalidArgument(f"unknown Logs option(s): {', '.join(sorted(unknown))[:200]}")
    opts: dict[str, Any] = {}
    for key, raw in options.items():
        sig, value = _plain(raw)
        want = {"b": bool, "x": int, "s": str}[LOGS_OPTIONS[key]]
        wrong = not isinstance(value, want) or (want is int and isinstance(value, bool))
        if (sig is not None and sig != LOGS_OPTIONS[key]) or wrong:
            raise InvalidArgument(f"Logs option {key} takes type {LOGS_OPTIONS[key]}")
        opts[key] = value
    tail, since = opts.get("tail"), opts.get("since_usec")
    if tail is not None and tail < 0:
        raise InvalidArgument(f"tail must not be negative, not {tail}")
    if since is not None and not 0 <= since <= MAX_SINCE_USEC:
        raise InvalidArgument(f"since_usec must be from 0 to {MAX_SINCE_USEC}, not {since}")
    cursor = opts.get("after_cursor")
    if cursor is not None and (not cursor or len(cursor) > MAX_CURSOR or "\0" in cursor):
        raise InvalidArgument("after_cursor is not a journal cursor")
    since_dt: datetime | None = None
    if since is not None:
        since_dt = datetime.fromtimestamp(since // 1_000_000, UTC).replace(
            microsecond=since % 1_000_000
        )
    return {
        "follow": bool(opts.get("follow", False)),
        "tail": tail,
        "after_cursor": cursor,
        "since": since_dt,
        "batch_cursors": bool(opts.get("batch_cursors", False)),
    }


HINT_SEPARATOR = "\n\nhint: "


def error_text(e: JobrunError) -> str:
    return e.message + (HINT_SEPARATOR + e.hint if e.hint else "")


def _all_error_classes() -> dict[str, type[JobrunError]]:
    out: dict[str, type[JobrunError]] = {}
    todo: list[type[JobrunError]] = [JobrunError]
    while todo:
        cls = todo.pop()
        out.setdefault(cls.dbus_name, cls)
        todo.extend(cls.__subclasses__())
    return out


def error_from_dbus(name: str | None, text: str) -> JobrunError:
    """The JobrunError a D-Bus error reply stands for (JobrunError itself for unknown names)."""
    cls = _all_error_classes().get(name or "", JobrunError)
    message, _, hint = text.partition(HINT_SEPARATOR)
    if cls is JobrunError and name and not name.startswith("org.jobrun."):
        message = f"{message} ({name})"
    return cls(message, hint)


# -- Logs: the pipe protocol ----------------------------------------------------------------
# Logs answers with the read end of a pipe. jobrund writes frames to it: a header
# (kind, realtime µs, cursor length, message length) followed by the cursor and the message.
# Kinds 0..4 are records (their LineBreak, in journal.LINE_BREAK_CODES order); END says the
# stream is complete; ERROR carries "<D-Bus error name>\0<text>". A pipe that ends without END or
# ERROR means jobrund went away: the client asks again, after the last cursor it got.
# With the option `batch_cursors`, only the last record of each write carries its cursor (the
# others an empty one): a reader that prints no cursors gets half the bytes, and resumes after the
# last cursor it got, holding back what came after it until that record's cursor arrives.
FRAME = struct.Struct("!BQHI")
FRAME_END = 100
FRAME_ERROR = 101
LOGS_OPTIONS = {
    "follow": "b",
    "tail": "x",
    "after_cursor": "s",
    "since_usec": "x",
    "batch_cursors": "b",
}


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
