"""The a{sv} options of jobrund's D-Bus methods, both ways: what the client sends (plain values
as Variants) and what jobrund accepts (validated values, or InvalidArgument, nothing else;
tests/reliability/test_fuzz.py fuzzes the decoders with hypothesis).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument

if TYPE_CHECKING:
    from dbus_fast import Variant

    from ..model import JobSpec

# Start's option for the job's standard input: a descriptor ("h", sent with the message).
STDIN_OPTION = "stdin"
# Start's option for `run --pty`: the caller's pseudo-terminal (its slave side), the job's stdio.
TTY_OPTION = "tty"
# Logs' options and their D-Bus types.
LOGS_OPTIONS = {
    "follow": "b",
    "tail": "x",
    "after_cursor": "s",
    "since_usec": "x",
    "batch_cursors": "b",
}
MAX_CURSOR = 4096  # journal cursors are ~150 characters
MAX_SINCE_USEC = 253402300799999999  # 9999-12-31T23:59:59.999999Z: datetime's own limit


# -- the client's side ------------------------------------------------------------------------


def variant(value: Any) -> Variant:
    """A setting's value as the CLI has it (text, a number, a switch or a list of text)."""
    from dbus_fast import Variant

    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, list | tuple):
        return Variant("as", [str(v) for v in value])
    return Variant("s", str(value))


def start_options(
    name: str | None, values: dict[str, Any], stdin: bool, tty: bool = False
) -> dict[str, Variant]:
    """Start's options: the settings given, the name, and the indexes of the stdin descriptor
    and then of the terminal's (among the message's fds, in that order)."""
    from dbus_fast import Variant

    options = {k: variant(v) for k, v in values.items() if v is not None and v != []}
    if name is not None:
        options["name"] = Variant("s", name)
    if stdin:
        options[STDIN_OPTION] = Variant("h", 0)  # an index into the message's fds
    if tty:
        options[TTY_OPTION] = Variant("h", int(stdin))
    return options


def logs_options(
    follow: bool,
    after_cursor: str | None,
    tail: int | None,
    since: datetime | None,
    cursors: bool = True,
) -> dict[str, Variant]:
    """Logs' options: where to start (after a cursor, the last N, or since a time), whether to
    follow, and whether every record needs its cursor (else one per batch: batch_cursors)."""
    from dbus_fast import Variant

    options: dict[str, Variant] = {"follow": Variant("b", follow)}
    if not cursors:
        options["batch_cursors"] = Variant("b", True)
    if after_cursor is not None:
        options["after_cursor"] = Variant("s", after_cursor)
    elif tail is not None:
        options["tail"] = Variant("x", tail)
    elif since is not None:
        options["since_usec"] = Variant("x", int(since.timestamp() * 1e6))
    return options


# -- jobrund's side ---------------------------------------------------------------------------


def _plain(value: Any) -> tuple[str | None, Any]:
    """(D-Bus signature or None, Python value) of an a{sv} value."""
    from dbus_fast import Variant

    if isinstance(value, Variant):
        return value.signature, value.value
    return None, value


def stdin_of(options: Any, unix_fds: Sequence[int], key: str = STDIN_OPTION) -> int | None:
    """Start's "stdin" option (or `key`'s: "tty"), removed from `options`: the descriptor it
    names among the message's, or None; InvalidArgument if it names none."""
    if not isinstance(options, dict) or key not in options:
        return None
    signature, index = _plain(options.pop(key))
    if signature not in (None, "h") or not isinstance(index, int) or isinstance(index, bool):
        raise InvalidArgument(f"Start's {key} option must be a file descriptor")
    if not 0 <= index < len(unix_fds):
        raise InvalidArgument(f"Start's {key} option names no descriptor sent with the call")
    return unix_fds[index]


def decode_start(command: Any, options: Any, scope: bool = False) -> JobSpec:
    """Start's (command, options): the JobSpec to run. Options are the settings table's fields
    plus "name", with the same (text or plain) values the CLI passes. `scope`: StartScope's,
    for a scope job (properties.build_scope_spec)."""
    from ..properties import build_scope_spec, build_spec

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidArgument("Start options must be a dictionary of settings")
    values = {k: _plain(v)[1] for k, v in options.items()}
    name = values.pop("name", None)
    return (build_scope_spec if scope else build_spec)(command, name=name, **values)


def decode_set(options: Any) -> dict[str, Any]:
    """Set's options: settings of the table whose `live` is set, with the same (text or plain)
    values Start takes; parsed (properties.build_changes)."""
    from ..properties import build_changes

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidArgument("Set options must be a dictionary of settings")
    return build_changes({k: _plain(v)[1] for k, v in options.items()})


def decode_logs_options(options: Any) -> dict[str, Any]:
    """Logs' options: keyword arguments of Manager.logs (follow, tail, after_cursor, since) and
    batch_cursors (how jobrund frames them, see wire/logs.py pack_records)."""
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
