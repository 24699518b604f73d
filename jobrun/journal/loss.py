"""Output the journal no longer has, or never got: deleted journal files and journald's rate limit.

Deleted files. Journal files are deleted, oldest first, when the namespace journal reaches its size
limits. Every entry of the namespace has a sequence number, counted on across files, so the oldest
entry left tells whether anything was deleted (it is not number 1) and, compared with a cursor's
number, whether what was deleted came after it. For a read from the first line (or since a time)
the comparison is by time with the job's start, which only the caller knows (`started_at`;
without it the check cannot be made). While following, the reader checks whenever files come or
go that the oldest entry left follows right after what it had read. In each case it raises
`OutputLost` rather than starting later -- also when the deleted part may have held none of the
job's lines: the journal cannot tell.

The rate limit. journald notes the lines its rate limit dropped in a record of its own; a reader
that finds such a note for its job in the range it read raises `OutputLost` at the end.
"""

from __future__ import annotations

from ..errors import OutputLost
from .reader import open_reader
from .records import Pos, cursor_pos, from_usec, pos_after, time_pos

__all__ = ["check_suppressed", "deleted", "gap", "suppressed"]

# journald's own record of lines its rate limit dropped (sd-messages.h SD_MESSAGE_JOURNAL_DROPPED):
# "Suppressed N messages from UNIT", N_DROPPED=N, written by journald itself (_TRANSPORT=driver,
# which no client can forge) into the namespace's journal, right before the first line of UNIT it
# lets through again. journald 252 writes it only then: a unit that stops writing while its lines
# are being dropped leaves no such record (journald_conf.py keeps the limit off for that reason).
_DROPPED_ID = "a596d6fe7bfa4994828e72309e95d61e"


def gap(head: Pos, pos: Pos) -> bool:
    """Whether entries after `pos` may have been deleted, `head` being the oldest entry left."""
    if head.seqnum <= 1:
        return False  # the journal never lost an entry
    if head.seqnum_id == pos.seqnum_id:
        return head.seqnum > pos.seqnum + 1
    return head.realtime > pos.realtime


def deleted(what: str, head: Pos) -> OutputLost:
    """The error for `what` having been in journal files that are deleted."""
    return OutputLost(
        f"{what} is no longer in the journal: its oldest entry is from "
        f"{from_usec(head.realtime).isoformat()}",
        hint="journald deleted older journal files (size limits in journald@jobrun.conf)",
    )


def suppressed(namespace: str, unit: str, after: Pos | None) -> int:
    """How many of `unit`'s lines journald's rate limit dropped after `after` (None: at all)."""
    r = open_reader(namespace)
    try:
        r.data_threshold = 0
        r.add_match(f"MESSAGE_ID={_DROPPED_ID}")
        r.add_match("_TRANSPORT=driver")
        tail = f" messages from {unit}".encode()
        total = 0
        while r._next():
            try:
                message = r._get("MESSAGE")
                count = int(r._get("N_DROPPED"))
            except (KeyError, ValueError):
                continue
            if not message.endswith(tail):
                continue
            if after is not None and not pos_after(cursor_pos(r._get_cursor()), after):
                continue
            total += count
        return total
    finally:
        r.close()


def check_suppressed(
    job_id: str,
    unit: str,
    namespace: str,
    *,
    after_cursor: str | None,
    tail: int | None,
    since_usec: int | None,
    first: str | None,
) -> None:
    """Raise OutputLost if journald's rate limit dropped lines of the range just read.

    journald notes the drop right before the next line it lets through, so the lines a note
    counts lie between the records before and after it: a note after the start of the range
    (after the cursor, at or after `since`, after the first record of a tail, `first`) counts."""
    after: Pos | None = None
    if after_cursor is not None:
        after = cursor_pos(after_cursor)
    elif tail is not None:
        if first is None:
            return  # nothing read: an empty tail holds no gap
        after = cursor_pos(first)
    elif since_usec is not None:
        after = time_pos(since_usec)
    count = suppressed(namespace, unit, after)
    if count:
        raise OutputLost(
            f"journald dropped {count} lines of job {job_id}'s output (its rate limit): the "
            "output shown is incomplete",
            hint="set RateLimitIntervalSec=0 in /etc/systemd/journald@jobrun.conf, then "
            "systemctl restart systemd-journald@jobrun.service (jobrun's own file does both)",
        )
