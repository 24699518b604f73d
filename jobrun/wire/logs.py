"""Journal records on the wire: their line-break codes and `jobrun logs --json`'s lines."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

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
