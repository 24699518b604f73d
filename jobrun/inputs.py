r"""Caller values: the bounds on each and the checks that make a string safe where it goes.

A caller (the CLI, jobrund over D-Bus, the gRPC server) hands in text or plain values; the
parsers here turn each into the value a JobSpec holds, or raise InvalidArgument. A caller's job
reaches them through one function, `properties.build_spec`, by the settings table's rows
(config.py reads the admin's defaults and caps with the same parsers).

systemd writes a transient unit's properties into /run/systemd/transient/UNIT and parses that
file again on every daemon-reload. systemd 252 writes Description=, WorkingDirectory= and
ReadWritePaths= without escaping "\n" or "\r", so a line break in one of them becomes a line of
the unit (`ExecStopPost=+…` runs as root); ReadWritePaths= loses a path with a '"' in it and
changes one with a "\\"; and an executable whose name starts with "+", "!", "-", "@" or ":" gets
that prefix's meaning ("+": run as root) once the file is read again. ExecStart= arguments and
environment values are written C-escaped and survive the reload (tests/security/ proves each of
these by reloading). So every string a caller sends passes exactly one of these checks:
- command arguments and environment values: any text but NUL and control characters other
  than tab and newline (`check_command`, `parse_env`);
- the executable: an absolute path, or a file name that does not start with a prefix character
  (`check_command`);
- the name: printable characters only (it is part of Description=, `check_name`);
- paths: absolute, printable, and no quote or backslash (`parse_workdir`, `parse_writable`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from .errors import InvalidArgument

UINT64_MAX = 2**64 - 1
MAX_ENV = 4096  # more variables than this is a mistake, not a job
MAX_ENV_BYTES = 128 * 1024
MAX_ARG_BYTES = 128 * 1024
MAX_NAME = 64
MAX_WRITABLE = 64
MAX_ARGS = 4096  # arguments of a command
MAX_VALUE = 256  # a number, size, percentage, CPU list or profile name, as text
MAX_PATH = 4096  # PATH_MAX

_LINE_BREAKS = "\u0085\u2028\u2029"  # line breaks besides \n and \r, for parsers that see them
_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))) | set(_LINE_BREAKS)
_TEXT_ALLOWED = frozenset("\t\n")
_PATH_REFUSED = _CONTROLS | frozenset("\"'\\")
_EXEC_PREFIXES = "-@:+!"


def _bounded(value: Any, what: str, max_len: int) -> str:
    """A caller's value as text, refused before any other work if it is longer than `max_len`."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidArgument(f"{what} must be text, not {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    if len(text) > max_len:
        raise InvalidArgument(f"{what} is longer than {max_len} characters")
    return text


def _utf8(value: Any, what: str) -> str:
    """Text that D-Bus can carry to systemd: valid UTF-8 (no lone surrogates from os.fsdecode)."""
    text = str(value)
    try:
        text.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(
            f"{what} must be valid UTF-8 text (systemd's D-Bus API carries nothing else), "
            f"not {text[:80]!r}"
        ) from None
    return text


def _free_text(text: str, what: str) -> str:
    """Text for an argument or an environment value (systemd C-escapes both in the unit file)."""
    _utf8(text, what)
    bad = next((c for c in text if c in _CONTROLS and c not in _TEXT_ALLOWED), None)
    if bad is not None:
        raise InvalidArgument(
            f"{what} contains control characters ({bad!r}): only tab and newline are allowed"
        )
    return text


def _path(value: Any, what: str) -> str:
    """An absolute path that a unit file holds as it is (see above)."""
    path = _utf8(_bounded(value, what, MAX_PATH), what)
    if not path.startswith("/"):
        raise InvalidArgument(f"{what} must be an absolute path, not {path[:80]!r}")
    bad = next((c for c in path if c in _PATH_REFUSED), None)
    if bad is not None:
        raise InvalidArgument(
            f"{what} {path[:80]!r} contains {bad!r}: paths with control characters, quotes or "
            "backslashes cannot be given to systemd safely",
            "rename the directory, or use a symbolic link without such characters",
        )
    return os.path.normpath(path)


def check_command(command: Any) -> tuple[str, ...]:
    """The command line: at most MAX_ARGS arguments and MAX_ARG_BYTES, each free text, and an
    executable that a unit file holds as it is."""
    if not isinstance(command, list | tuple):
        raise InvalidArgument("the command must be a list of arguments")
    if len(command) > MAX_ARGS:
        raise InvalidArgument(f"the command has more than {MAX_ARGS} arguments")
    cmd = tuple(command)
    if not cmd or not cmd[0]:
        raise InvalidArgument("no command given", "put it after --: jobrun start -- CMD [ARG...]")
    size = 0
    for arg in cmd:
        if not isinstance(arg, str):
            raise InvalidArgument("command arguments must be text")
        size += len(arg)
        if size > MAX_ARG_BYTES:
            raise InvalidArgument(f"the command is longer than {MAX_ARG_BYTES} bytes")
        _free_text(arg, "a command argument")
    if sum(len(a.encode()) for a in cmd) > MAX_ARG_BYTES:
        raise InvalidArgument(f"the command is longer than {MAX_ARG_BYTES} bytes")
    exe = cmd[0]
    if not exe.startswith("/") and ("/" in exe or exe[0] in _EXEC_PREFIXES):
        raise InvalidArgument(
            f"the command must be an absolute path or the name of a program on PATH, "
            f"not {exe[:80]!r}",
            "give the full path (jobrun resolves ./prog against the current directory)",
        )
    if any(c in _PATH_REFUSED for c in exe):
        raise InvalidArgument(
            f"the program {exe[:80]!r} contains control characters, quotes or backslashes"
        )
    return cmd


def check_name(value: Any) -> str:
    """A job's name: 1 to MAX_NAME printable characters."""
    name = _utf8(_bounded(value, "--name", 4 * MAX_NAME), "--name")
    if not name or len(name) > MAX_NAME or any(c in _CONTROLS for c in name):
        raise InvalidArgument(
            f"--name must be 1–{MAX_NAME} printable characters, not {name[:80]!r}"
        )
    return name


# Applied to text already stripped and at most MAX_VALUE long; the classes of neighbouring parts
# are disjoint, so a match costs time linear in the text (no backtracking between them).
_SIZE_RE = re.compile(r"(\d{1,30}(?:\.\d{1,30})?) ?([KMGTP]?)(i?B)?", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def int_parser(low: int, high: int, what: str) -> Callable[[Any], int]:
    """A parser of whole numbers from `low` to `high`, named `what` in its errors."""

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise InvalidArgument(f"{what} must be a whole number from {low} to {high}")
        try:
            n = int(value) if isinstance(value, int) else int(str(value).strip(), 10)
        except ValueError:
            raise InvalidArgument(
                f"{what} must be a whole number from {low} to {high}, not {str(value)!r}"
            ) from None
        if not low <= n <= high:
            raise InvalidArgument(f"{what} must be from {low} to {high}, not {n}")
        return n

    return parse


def parse_size(value: Any, what: str = "size") -> int:
    """'512M', '2G', '1.5G', '1048576' → bytes (powers of 1024, like systemd)."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _SIZE_RE.fullmatch(_bounded(value, what, MAX_VALUE).strip())
        if not m:
            raise InvalidArgument(
                f"{what} must be a size like 512M or 2G (K, M, G, T: powers of 1024), "
                f"not {str(value)!r}"
            )
        f = float(m.group(1)) * _SIZE_FACTORS[m.group(2).upper()]
        # A long run of digits is inf as a float, and int(inf) raises OverflowError.
        n = int(f) if f < UINT64_MAX else UINT64_MAX
    if not 1 <= n < UINT64_MAX:
        raise InvalidArgument(f"{what} must be at least 1 byte and below 16 EiB, not {value!r}")
    return n


def size_parser(what: str) -> Callable[[Any], int]:
    return lambda value: parse_size(value, what)


def parse_percent(value: Any) -> int:
    text = _bounded(value, "--cpu-quota", MAX_VALUE).strip()
    m = re.fullmatch(r"(\d{1,9})\s*%?", text)  # bounded: int() refuses over 4300 digits
    if not m:
        raise InvalidArgument(f"--cpu-quota must be a percentage like 150%, not {text!r}")
    n = int(m.group(1))
    if not 1 <= n <= 100 * 1024:
        raise InvalidArgument(f"--cpu-quota must be from 1% to 102400%, not {n}%")
    return n


def seconds_parser(what: str, low: float = 0, high: float = 24 * 3600) -> Callable[[Any], float]:
    """A parser of a number of seconds from `low` to `high`, named `what` in its errors."""

    def parse(value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            value = _bounded(value, what, MAX_VALUE)
        try:
            s = float(value)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{what} must be a number of seconds, not {value!r}") from None
        if not low <= s <= high or s != s:
            raise InvalidArgument(f"{what} must be from {low:g} to {high:g} seconds, not {value!r}")
        return s

    return parse


parse_seconds = seconds_parser("--stop-timeout")

MAX_GROUP = 32
_GROUP_RE = re.compile(rf"[a-z0-9_]{{1,{MAX_GROUP}}}")


def parse_group(value: Any) -> str:
    """A group's name: lower-case letters, digits and _, as a slice name's part (a dash would be
    a level of slices)."""
    text = _bounded(value, "--group", MAX_VALUE).strip()
    if not _GROUP_RE.fullmatch(text):
        raise InvalidArgument(f"a group name is 1–{MAX_GROUP} of a–z, 0–9 and _, not {text[:40]!r}")
    return text


MAX_AFTER = 64
_ID_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz")


def parse_job_ids(value: Any) -> tuple[str, ...]:
    """`--after ID[,ID…]`: job IDs or unique prefixes (resolved by jobrund, as the caller)."""
    text = _bounded(value, "--after", MAX_VALUE * 8)
    ids = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if not ids or len(ids) > MAX_AFTER:
        raise InvalidArgument(f"--after takes 1 to {MAX_AFTER} job IDs, separated by commas")
    for i in ids:
        if len(i) > 10 or not set(i) <= _ID_CHARS:
            raise InvalidArgument(f"--after: {i[:40]!r} is not a job ID")
    return ids


def ids_text(ids: tuple[str, ...]) -> str:
    return ",".join(ids)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise InvalidArgument(f"expected yes or no, not {value!r}")


def parse_env(value: Any) -> str:
    text = _utf8(_bounded(value, "--env", MAX_ENV_BYTES), "--env")
    key, sep, val = text.partition("=")
    if not sep or not _ENV_NAME_RE.match(key):
        raise InvalidArgument(
            f"--env takes KEY=VALUE with KEY made of letters, digits and _, not {text[:80]!r}"
        )
    _free_text(val, f"--env value of {key}")
    return text


def parse_workdir(value: Any) -> str:
    return _path(value, "--workdir")


def parse_writable(value: Any) -> str:
    path = _path(value, "--writable")
    if path == "/" or any(path == d or path.startswith(d + "/") for d in ("/proc", "/sys", "/dev")):
        raise InvalidArgument(
            f"--writable {path} would open the whole system or a kernel interface to the job",
            "name the directories the job writes",
        )
    return path


def parse_cpus(value: Any) -> tuple[int, ...]:
    """'0', '0,2', '0-3' → (0,), (0, 2), (0, 1, 2, 3)."""
    cpus: set[int] = set()
    text = _bounded(value, "--cpu-affinity", MAX_VALUE)
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi or lo)
            # Bounds before range(): "0-10000000000" would build a set of 10^10 numbers.
            if not 0 <= first <= last < 8192:
                raise InvalidArgument(
                    f"--cpu-affinity takes CPU numbers from 0 to 8191, not {text!r}"
                )
            cpus.update(range(first, last + 1))
    except ValueError:
        raise InvalidArgument(
            f"--cpu-affinity takes CPU numbers like 0,2-3, not {text!r}"
        ) from None
    if not cpus:
        raise InvalidArgument(f"--cpu-affinity takes CPU numbers from 0 to 8191, not {text!r}")
    return tuple(sorted(cpus))


def cpus_text(cpus: tuple[int, ...] | list[int]) -> str:
    """CPU numbers as the text `parse_cpus` reads: (0, 2, 3) → '0,2,3'."""
    return ",".join(str(c) for c in cpus)
