"""Journal records on the wire: their line-break codes, `jobrun logs --json`'s lines, and the
frames of jobrund's Logs pipe (both directions)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from typing import Any

from ..errors import JobrunError, error_from_name, error_text
from ..journal import LineBreak, Record

# Each LineBreak's wire code is its index here: the kind of its frame in jobrund's Logs pipe,
# and one less than its value in jobrun.v1's LineBreak enum (whose 0 is UNSPECIFIED). Both
# protocols depend on this order: append only.
LINE_BREAKS: tuple[LineBreak, ...] = (
    LineBreak.NEWLINE,
    LineBreak.NUL,
    LineBreak.LINE_MAX,
    LineBreak.EOF,
    LineBreak.PID_CHANGE,
)
LINE_BREAK_CODES: dict[LineBreak, int] = {b: i for i, b in enumerate(LINE_BREAKS)}


def record_to_dict(rec: Record) -> dict[str, Any]:
    """A journal record for `--json`: text when it is UTF-8, base64 of the bytes when not."""
    d: dict[str, Any] = {
        "timestamp": rec.timestamp.isoformat(),
        "cursor": rec.cursor,
        "line_break": str(rec.line_break),
    }
    try:
        d["message"] = rec.message.decode()
    except UnicodeDecodeError:
        d["message"] = None
        d["message_base64"] = base64.b64encode(rec.message).decode()
    return d


def json_lines(records: Sequence[Record]) -> bytes:
    """One JSON object per record, a line each, as one write."""
    return "".join([json.dumps(record_to_dict(r)) + "\n" for r in records]).encode()


# -- jobrund's Logs pipe ------------------------------------------------------------------------
# Logs (D-Bus) answers with the read end of a pipe. jobrund writes frames to it: a header
# (kind, realtime µs, cursor length, message length) followed by the cursor and the message.
# Kinds 0..4 are records (their LineBreak's code above); END says the stream is complete; ERROR
# carries "<D-Bus error name>\0<text>". A pipe that ends without END or ERROR means jobrund went
# away: the client asks again, after the last cursor it got.
# With the option `batch_cursors`, only the last record of each write carries its cursor (the
# others an empty one): a reader that prints no cursors gets half the bytes, and resumes after the
# last cursor it got, holding back what came after it until that record's cursor arrives.
FRAME = struct.Struct("!BQHI")
FRAME_END = 100
FRAME_ERROR = 101


def pack_records(records: Sequence[Record], batch_cursors: bool = False) -> bytes:
    """The frames of many records at once, as one write; with batch_cursors, only the last
    record carries its cursor."""
    pack = FRAME.pack
    codes = LINE_BREAK_CODES
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


def pack_end() -> bytes:
    return FRAME.pack(FRAME_END, 0, 0, 0)


def pack_error(e: JobrunError) -> bytes:
    message = f"{e.dbus_name}\0{error_text(e)}".encode()
    return FRAME.pack(FRAME_ERROR, 0, 0, len(message)) + message


class FrameReader:
    """The records of a Logs pipe, from its bytes as they arrive (`feed`)."""

    def __init__(self) -> None:
        self._buf = b""
        self.ended = False  # the END frame came: the stream is complete
        self.error: JobrunError | None = None  # what an ERROR frame reported

    def feed(self, data: bytes) -> list[Record]:
        """The records `data` completes. Up to END or ERROR, they end at a record that carries
        its cursor (to resume after); records after it wait for their batch's cursor."""
        buf = self._buf + data if self._buf else data
        header = FRAME.size
        unpack = FRAME.unpack_from
        batch: list[Record] = []
        at = 0
        end = len(buf)
        done_at, done_len = 0, 0
        while end - at >= header:
            kind, usec, clen, mlen = unpack(buf, at)
            stop = at + header + clen + mlen
            if stop > end:
                break
            if kind in (FRAME_END, FRAME_ERROR):
                if kind == FRAME_END:
                    self.ended = True
                else:
                    text = buf[at + header + clen : stop].decode(errors="replace")
                    name, _, text = text.partition("\0")
                    self.error = error_from_name(name, text)
                self._buf = b""
                return batch
            cursor = buf[at + header : at + header + clen].decode() if clen else ""
            batch.append(Record(usec, cursor, buf[at + header + clen : stop], LINE_BREAKS[kind]))
            at = stop
            if clen:
                done_at, done_len = at, len(batch)
        self._buf = buf[done_at:]
        del batch[done_len:]
        return batch
