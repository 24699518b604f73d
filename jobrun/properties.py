"""JobSpec → transient-unit properties, through one declarative table.

Each user-settable option is one `Setting` row: the JobSpec field, the CLI flags, the systemd
property and its D-Bus signature, a parser from user text (CLI, D-Bus, gRPC all hand in text or
plain values) and a converter to the D-Bus value. The CLI options are generated from this table and
the tests check every row against `systemctl show`. Only the properties the user set are sent, plus
the few jobrun always sets on purpose (`fixed_properties`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import profiles
from .errors import InvalidArgument
from .model import JOB_FIELD, LOG_NAMESPACE, SLICE, JobSpec

if TYPE_CHECKING:
    from dbus_fast import Variant  # imported where used: the CLI's start-up time matters

UINT64_MAX = 2**64 - 1
USEC_PER_SEC = 1_000_000
MAX_ENV = 4096  # more variables than this is a mistake, not a job
MAX_ENV_BYTES = 128 * 1024
MAX_ARG_BYTES = 128 * 1024
MAX_NAME = 64
MAX_WRITABLE = 64
MAX_ARGS = 4096  # arguments of a command
MAX_VALUE = 256  # a number, size, percentage, CPU list or profile name, as text
MAX_PATH = 4096  # PATH_MAX

# -- caller text: what a transient unit file holds safely ----------------------------------------
# systemd writes a transient unit's properties into /run/systemd/transient/UNIT and parses that
# file again on every daemon-reload. systemd 252 writes Description=, WorkingDirectory= and
# ReadWritePaths= without escaping "\n" or "\r", so a line break in one of them becomes a line of
# the unit (`ExecStopPost=+…` runs as root); ReadWritePaths= loses a path with a '"' in it and
# changes one with a "\\"; and an executable whose name starts with "+", "!", "-", "@" or ":" gets
# that prefix's meaning ("+": run as root) once the file is read again. ExecStart= arguments and
# environment values are written C-escaped and survive the reload (tests/security/ proves each of
# these by reloading). So every string a caller sends passes exactly one of the checks below, here,
# where it enters the JobSpec — the one place every front end (CLI, D-Bus, gRPC) goes through:
# - command arguments and environment values: any text but NUL and control characters other
#   than tab and newline;
# - the executable: an absolute path, or a file name that does not start with a prefix character;
# - the name: printable characters only (it is part of Description=, built by `describe`);
# - paths: absolute, printable, and no quote or backslash.
_LINE_BREAKS = "\u0085\u2028\u2029"  # line breaks besides \n and \r, for parsers that see them
_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))) | set(_LINE_BREAKS)
_TEXT_ALLOWED = frozenset("\t\n")
_PATH_REFUSED = _CONTROLS | frozenset("\"'\\")
_EXEC_PREFIXES = "-@:+!"
CHECK_PATH = "/usr/bin/test"  # coreutils: checks --writable paths as the job's user


def _bounded(value: Any, what: str, max_len: int) -> str:
    """A caller's value as text, refused before any other work if it is longer than `max_len`."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidArgument(f"{what} must be text, not {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    if len(text) > max_len:
        raise InvalidArgument(f"{what} is longer than {max_len} characters")
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


# Applied to text already stripped and at most MAX_VALUE long; the classes of neighbouring parts
# are disjoint, so a match costs time linear in the text (no backtracking between them).
_SIZE_RE = re.compile(r"(\d{1,30}(?:\.\d{1,30})?) ?([KMGTP]?)(i?B)?", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _int_in(low: int, high: int, what: str) -> Callable[[Any], int]:
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


def _size(what: str) -> Callable[[Any], int]:
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


def parse_seconds(value: Any) -> float:
    if not isinstance(value, int | float):
        value = _bounded(value, "--stop-timeout", MAX_VALUE)
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"--stop-timeout must be a number of seconds, not {value!r}"
        ) from None
    if not 0 <= s <= 24 * 3600 or s != s:
        raise InvalidArgument(f"--stop-timeout must be from 0 to 86400 seconds, not {value!r}")
    return s


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


def _cpu_mask(cpus: tuple[int, ...]) -> bytes:
    mask = bytearray((max(cpus) // 8) + 1)
    for c in cpus:
        mask[c // 8] |= 1 << (c % 8)
    return bytes(mask)


@dataclass(frozen=True)
class Setting:
    field: str  # JobSpec attribute; also the key in a job's "limits"
    flags: str  # CLI flags, typer syntax ("--network/--no-network" for switches)
    prop: str  # systemd property; "" for the profile, which stands for several (profiles.py)
    signature: str  # its D-Bus signature (of the user's value, for the profile)
    parse: Callable[[Any], Any]  # user value → JobSpec value (raises InvalidArgument)
    to_dbus: Callable[[Any], Any]  # JobSpec value → D-Bus value
    help: str
    default: Any = None  # sent when the user set nothing (None: send nothing)
    metavar: str = ""
    repeat: bool = False  # the option may be given several times (a tuple in JobSpec)


def _same(v: Any) -> Any:
    return v


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise InvalidArgument(f"expected yes or no, not {v!r}")


SETTINGS: tuple[Setting, ...] = (
    Setting("cpu_weight", "--cpu-weight", "CPUWeight", "t", _int_in(1, 10000, "--cpu-weight"),
            _same, "CPU share relative to other jobs (1–10000, systemd's default 100)",
            metavar="N"),
    Setting("memory_high", "--memory-high", "MemoryHigh", "t", _size("--memory-high"), _same,
            "Throttle the job above this much memory (e.g. 512M)", metavar="SIZE"),
    Setting("memory_max", "--memory-max", "MemoryMax", "t", _size("--memory-max"), _same,
            "Kill the job above this much memory (e.g. 2G)", metavar="SIZE"),
    Setting("io_weight", "--io-weight", "IOWeight", "t", _int_in(1, 10000, "--io-weight"), _same,
            "IO share relative to other jobs (1–10000)", metavar="N"),
    Setting("tasks_max", "--tasks-max", "TasksMax", "t", _int_in(1, 4194304, "--tasks-max"),
            _same, "Most processes and threads the job may have at once", metavar="N"),
    Setting("cpu_quota", "--cpu-quota", "CPUQuotaPerSecUSec", "t", parse_percent,
            lambda pct: pct * USEC_PER_SEC // 100,
            "CPU time cap, in percent of one CPU (e.g. 150%)", metavar="PCT"),
    Setting("cpu_affinity", "--cpu-affinity", "CPUAffinity", "ay", parse_cpus, _cpu_mask,
            "Run only on these CPUs (e.g. 0 or 0,2-3)", metavar="CPUS"),
    Setting("network", "--network/--no-network", "PrivateNetwork", "b", _bool,
            lambda allowed: not allowed,
            "Give the job the host's network (default: none, only its own loopback)",
            default=False),
    Setting("private_tmp", "--private-tmp/--shared-tmp", "PrivateTmp", "b", _bool, _same,
            "A /tmp of the job's own (default) or the host's", default=True),
    # Sent by fixed_properties as EnvironmentFile= (a root-only file, envfile.py): systemd shows
    # Environment= to every local user.
    Setting("env", "-E/--env", "", "as", parse_env, list,
            "Set KEY=VALUE in the job's environment (repeatable; nothing is inherited)",
            metavar="KEY=VALUE", repeat=True),
    Setting("workdir", "-C/--workdir", "WorkingDirectory", "s", parse_workdir, _same,
            "Working directory of the job (default /)", metavar="DIR"),
    Setting("stop_timeout", "--stop-timeout", "TimeoutStopUSec", "t", parse_seconds,
            lambda s: int(s * USEC_PER_SEC),
            "Seconds between SIGTERM and SIGKILL when the job is stopped", default=10.0,
            metavar="SECONDS"),
    # Sent by fixed_properties (every job gets its profile's properties; None: the default).
    Setting("profile", "--profile", "", "s", profiles.parse_profile, _same,
            f"Isolation profile: {', '.join(profiles.names())} (default: {profiles.DEFAULT}; "
            "see docs/ISOLATION.md)", metavar="NAME"),
    Setting("writable", "--writable", "ReadWritePaths", "as", parse_writable, list,
            "Let the job write to this existing path; the rest of the system is read-only "
            "(repeatable)", metavar="PATH", repeat=True),
)  # fmt: skip

SETTINGS_BY_FIELD = {s.field: s for s in SETTINGS}


def build_spec(command: list[str] | tuple[str, ...], /, name: str | None = None,
               **values: Any) -> JobSpec:  # fmt: skip
    """Validate user values (text or plain values) into a JobSpec; raises InvalidArgument.

    `command` is positional-only, so a request field named "command" is an unknown setting
    rather than a TypeError."""
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
    if name is not None:
        name = _utf8(_bounded(name, "--name", 4 * MAX_NAME), "--name")
        if not name or len(name) > MAX_NAME or any(c in _CONTROLS for c in name):
            raise InvalidArgument(
                f"--name must be 1–{MAX_NAME} printable characters, not {name[:80]!r}"
            )
    parsed: dict[str, Any] = {}
    for key, value in values.items():
        setting = SETTINGS_BY_FIELD.get(key)
        if setting is None:
            raise InvalidArgument(f"unknown setting {key!r}")
        if value is None or (setting.repeat and not value):
            continue
        if setting.repeat:
            if not isinstance(value, list | tuple):
                raise InvalidArgument(f"{key} takes a list of values")
            most = MAX_WRITABLE if key == "writable" else MAX_ENV
            if len(value) > most:
                raise InvalidArgument(f"at most {most} values of {setting.flags.split('/')[-1]}")
            parsed[key] = tuple(setting.parse(v) for v in value)
        else:
            parsed[key] = setting.parse(value)
    env = parsed.get("env", ())
    if len(env) > MAX_ENV or sum(len(e) for e in env) > MAX_ENV_BYTES:
        raise InvalidArgument(f"at most {MAX_ENV} variables and {MAX_ENV_BYTES} bytes of --env")
    mh, mm = parsed.get("memory_high"), parsed.get("memory_max")
    if mh is not None and mm is not None and mh > mm:
        raise InvalidArgument("--memory-high must not be above --memory-max")
    if len(parsed.get("writable", ())) > MAX_WRITABLE:
        raise InvalidArgument(f"at most {MAX_WRITABLE} --writable paths")
    spec = JobSpec(command=cmd, name=name, **parsed)
    profiles.check(spec)
    return spec


def check_paths(spec: JobSpec, as_root: bool = False) -> None:
    """That -C and --writable exist, as the calling process sees them; raises InvalidArgument.

    Only for a front end that runs as the job's owner (the CLI): jobrund, as root, would tell a
    caller which paths exist where the caller cannot look. There systemd checks them instead,
    as the job's user (docs/DESIGN.md, security model). `as_root`: the caller is root, whose job
    the profile may run as a dynamic UID, which enters only directories open to others."""
    if spec.workdir is not None and not os.path.isdir(spec.workdir):
        raise InvalidArgument(f"--workdir {spec.workdir}: no such directory")
    for path in spec.writable:
        if not os.path.exists(path):
            # systemd would fail the job's start (226/NAMESPACE) rather than ignore it.
            raise InvalidArgument(f"--writable {path}: no such file or directory")
    profile = profiles.get(spec.profile)
    if (
        as_root
        and spec.workdir is not None
        and profiles.DYNAMIC_USER in profile.settings
        and not profiles.under(spec.workdir, profiles.TMP_DIRS)  # refused anyway: Manager.start
    ):
        closed = _closed_to_others(spec.workdir, spec.writable)
        if closed is not None:
            raise InvalidArgument(
                f"the working directory {spec.workdir} is out of reach of the job: a job "
                f"started by root runs as a dynamic UID under --profile {profile.name}, and "
                f"{closed} is closed to others",
                f"open it (chmod o+x {closed}), run it from (or -C) a directory others can "
                f"enter, or use {profiles.RELAXED_HINT} to run it as root",
            )


def _closed_to_others(workdir: str, writable: tuple[str, ...]) -> str | None:
    """The directory nearest to / on the way to `workdir` that others cannot enter, as the job
    sees the way: under a home only the bound directory and below count (profiles.home_properties
    binds it into an empty tmpfs), elsewhere every directory from /."""
    top = "/"
    if profiles.under(workdir, profiles.HOME_DIRS):
        top = min((w for w in writable if profiles.under(workdir, (w,))), key=len, default=workdir)
    way = [workdir]
    while way[-1] not in (top, "/"):
        way.append(os.path.dirname(way[-1]))
    for path in reversed(way):
        try:
            if not os.stat(path).st_mode & 0o001:
                return path
        except OSError:
            return path
    return None


def limits(spec: JobSpec) -> dict[str, Any]:
    """The settings the user gave, by field name (for status output)."""
    out: dict[str, Any] = {}
    for s in SETTINGS:
        value = getattr(spec, s.field)
        if value is not None and value != ():
            out[s.field] = list(value) if isinstance(value, tuple) else value
    return out


def describe(job_id: str, spec: JobSpec) -> str:
    """Description=: the job's ID and its name (checked by build_spec), never the command line,
    which other users can read there (systemctl status) and which may hold anything."""
    return f"jobrun job {job_id}" + (f" ({spec.name})" if spec.name else "")


def fixed_properties(
    job_id: str,
    spec: JobSpec,
    user: int | None = None,
    dynamic_user: bool = False,
    env_file: str | None = None,
    slice_name: str = SLICE,
    home: str | None = None,
    stdin: bool = False,
) -> list[tuple[str, Variant]]:
    """What every job gets, on purpose: identity, output, and its profile's sandbox.

    `user`: the UID to run as (None: root's job, which the profile may give a DynamicUser=);
    sent as a number, since systemd reads an all-digit User= name as a UID (a user named "1003"
    would run as UID 1003). `dynamic_user`: DynamicUser=yes whatever the profile (remote jobs
    with no local user). `env_file`: where the job's -E variables are (envfile.py). `home`: the
    home directory of `user` (profiles.home_properties: what the job sees of the homes).
    `stdin`: the job reads the descriptor sent with the start as unix_fds[0] (`jobrun run` with
    its stdin not a terminal, as `systemd-run --pipe`); otherwise it reads /dev/null."""
    from dbus_fast import Variant

    props = [
        ("Description", Variant("s", describe(job_id, spec))),
        ("Slice", Variant("s", slice_name)),
        # oneshot: systemd counts only exit 0 as success (a service of another type also counts
        # SIGTERM/SIGINT/SIGHUP/SIGPIPE deaths as clean and logs them at debug level only, and
        # the exit status of an unloaded unit would be lost); the start job lasts as long as the
        # command, and a failing exec fails the start.
        ("Type", Variant("s", "oneshot")),
        ("KillMode", Variant("s", "control-group")),
        ("CPUAccounting", Variant("b", True)),
        ("MemoryAccounting", Variant("b", True)),
        ("IOAccounting", Variant("b", True)),
        ("TasksAccounting", Variant("b", True)),
        (
            ("StandardInputFileDescriptor", Variant("h", 0))
            if stdin
            else ("StandardInput", Variant("s", "null"))
        ),
        ("StandardOutput", Variant("s", "journal")),
        ("StandardError", Variant("s", "journal")),
        # A job line starting with "<3>" is the job's text, not a syslog priority for journald.
        ("SyslogLevelPrefix", Variant("b", False)),
        # A journal namespace of jobrun's own: journald's rate limit is off there (units/), so no
        # line is dropped; JOBRUN_JOB names this job's records for readers.
        ("LogNamespace", Variant("s", LOG_NAMESPACE)),
        ("LogExtraFields", Variant("aay", [f"{JOB_FIELD}={job_id}".encode()])),
        # The argv runs exactly as given. systemd expands $VAR and ${VAR} in arguments at exec
        # time and turns $$ into $, so every $ goes as $$. (Not ExecStartEx's no-env-expand:
        # systemd 252 cannot read ExecStartEx back from the transient unit file, and every
        # daemon-reload then marks running jobs bad-setting.) A list, not a tuple, for the struct:
        # Debian 12's dbus-fast (1.84) accepts only lists inside a Variant.
        (
            "ExecStart",
            Variant(
                "a(sasb)",
                [[spec.command[0], [a.replace("$", "$$") for a in spec.command], False]],
            ),
        ),
    ]
    if user is not None:
        props.append(("User", Variant("s", str(user))))
    if env_file is not None:
        props.append(("EnvironmentFiles", Variant("a(sb)", [[env_file, False]])))
    props += profiles.properties(spec.profile, as_root=user is None)
    for prop, signature, value in profiles.home_properties(
        spec, user=user, dynamic_user=dynamic_user, home=home
    ):
        props.append((prop, Variant(signature, value)))
    if dynamic_user and ("DynamicUser", Variant("b", True)) not in props:
        props.append(("DynamicUser", Variant("b", True)))
    return props


def unit_properties(
    job_id: str,
    spec: JobSpec,
    user: int | None = None,
    dynamic_user: bool = False,
    env_file: str | None = None,
    slice_name: str = SLICE,
    home: str | None = None,
    stdin: bool = False,
) -> list[tuple[str, Variant]]:
    from dbus_fast import Variant

    props = fixed_properties(job_id, spec, user, dynamic_user, env_file, slice_name, home, stdin)
    as_the_user = user is not None or dynamic_user
    for s in SETTINGS:
        value = getattr(spec, s.field)
        if value is None or value == ():
            value = s.default
        if value is None or not s.prop or (s.field == "writable" and as_the_user):
            continue
        props.append((s.prop, Variant(s.signature, s.to_dbus(value))))
    if spec.writable and as_the_user:
        props += _writable_as_the_user(spec.writable)
    return props


def _writable_as_the_user(paths: tuple[str, ...]) -> list[tuple[str, Variant]]:
    """--writable for a job that does not run as its (root) caller: systemd makes the paths
    writable as root, so whether the start failed (a missing path) or the path shows up in the
    job's mount table would tell the caller what exists where they cannot look. Instead a missing
    path is skipped ("-"), and before the command runs, `test -e` checks each path as the job's
    user: a path missing or out of the user's reach fails the job the same way, before any of
    the caller's code sees the mounts."""
    from dbus_fast import Variant

    checks = [[CHECK_PATH, [CHECK_PATH, "-e", p.replace("$", "$$")], False] for p in paths]
    return [
        ("ReadWritePaths", Variant("as", ["-" + p for p in paths])),
        ("ExecStartPre", Variant("a(sasb)", checks)),
    ]
