"""The settings table, and the one entry of a caller's values: `build_spec`.

Each user-settable option is one `Setting` row: the JobSpec field, the CLI flags, the systemd
property and its D-Bus signature, a parser from user text (CLI, D-Bus, gRPC all hand in text or
plain values; inputs.py) and a converter to the D-Bus value. The CLI options are generated from
this table and the tests check every row against `systemctl show`. unit.py sends only the
properties the user set, plus the few jobrun always sets on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import hardening, profiles
from .errors import InvalidArgument
from .inputs import (
    MAX_ENV,
    MAX_ENV_BYTES,
    MAX_WRITABLE,
    check_command,
    check_name,
    cpus_text,
    ids_text,
    int_parser,
    parse_bool,
    parse_cpus,
    parse_env,
    parse_group,
    parse_job_ids,
    parse_percent,
    parse_seconds,
    parse_workdir,
    parse_writable,
    seconds_parser,
    size_parser,
)
from .model import JobKind, JobSpec

USEC_PER_SEC = 1_000_000

# How a setting applies to a scope (`jobrun run --scope`). systemd gives a scope resource control
# only: it starts no process, so no exec or sandbox setting reaches one.
SCOPE_UNIT = "unit"  # a property of the scope unit, as of a service
SCOPE_CLIENT = "client"  # applied by the CLI to the process it starts (cli/scope.py)
SCOPE_NO = ""  # refused: a scope's command is the caller's own process, with no sandbox


def _cpu_mask(cpus: tuple[int, ...]) -> bytes:
    mask = bytearray((max(cpus) // 8) + 1)
    for c in cpus:
        mask[c // 8] |= 1 << (c % 8)
    return bytes(mask)


def _same(v: Any) -> Any:
    return v


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
    several: bool = False  # one value holds several, a tuple in JobSpec ("0,2-3": (0, 2, 3))
    # JobSpec value → a value `parse` takes back: for a front end whose wire carries parsed
    # values (gRPC's JobOptions), through `as_input`.
    to_input: Callable[[Any], Any] = _same
    # Whether `jobrun set` may change it on a running job (SetUnitProperties, runtime): resource
    # control only; systemd 252 refuses the rest on a started unit (CPUAffinity included).
    live: bool = False
    scope: str = SCOPE_NO  # how it applies to a scope: SCOPE_UNIT, SCOPE_CLIENT or SCOPE_NO

    @property
    def is_list(self) -> bool:
        """Whether its JobSpec value is a tuple (a list on the wire)."""
        return self.repeat or self.several


SETTINGS: tuple[Setting, ...] = (
    Setting("cpu_weight", "--cpu-weight", "CPUWeight", "t", int_parser(1, 10000, "--cpu-weight"),
            _same, "CPU share relative to other jobs (1–10000, systemd's default 100)",
            metavar="N",
            scope=SCOPE_UNIT, live=True),
    Setting("memory_high", "--memory-high", "MemoryHigh", "t", size_parser("--memory-high"), _same,
            "Throttle the job above this much memory (e.g. 512M)", metavar="SIZE",
            scope=SCOPE_UNIT, live=True),
    Setting("memory_max", "--memory-max", "MemoryMax", "t", size_parser("--memory-max"), _same,
            "Kill the job above this much memory (e.g. 2G)", metavar="SIZE",
            scope=SCOPE_UNIT, live=True),
    Setting("io_weight", "--io-weight", "IOWeight", "t", int_parser(1, 10000, "--io-weight"), _same,
            "IO share relative to other jobs (1–10000)", metavar="N",
            scope=SCOPE_UNIT, live=True),
    Setting("tasks_max", "--tasks-max", "TasksMax", "t", int_parser(1, 4194304, "--tasks-max"),
            _same, "Most processes and threads the job may have at once", metavar="N",
            scope=SCOPE_UNIT, live=True),
    Setting("cpu_quota", "--cpu-quota", "CPUQuotaPerSecUSec", "t", parse_percent,
            lambda pct: pct * USEC_PER_SEC // 100,
            "CPU time cap, in percent of one CPU (e.g. 150%)", metavar="PCT",
            scope=SCOPE_UNIT, live=True),
    Setting("cpu_affinity", "--cpu-affinity", "CPUAffinity", "ay", parse_cpus, _cpu_mask,
            "Run only on these CPUs (e.g. 0 or 0,2-3)", metavar="CPUS", several=True,
            to_input=cpus_text, scope=SCOPE_CLIENT),
    Setting("network", "--network/--no-network", "PrivateNetwork", "b", parse_bool,
            lambda allowed: not allowed,
            "Give the job the host's network (default: none, only its own loopback)",
            default=False),
    Setting("private_tmp", "--private-tmp/--shared-tmp", "PrivateTmp", "b", parse_bool, _same,
            "A /tmp of the job's own (default) or the host's", default=True),
    # Sent by unit.fixed_properties as EnvironmentFile= (a root-only file, envfile.py): systemd
    # shows Environment= to every local user.
    Setting("env", "-E/--env", "", "as", parse_env, list,
            "Set KEY=VALUE in the job's environment (repeatable; nothing is inherited)",
            metavar="KEY=VALUE", repeat=True, scope=SCOPE_CLIENT),
    Setting("workdir", "-C/--workdir", "WorkingDirectory", "s", parse_workdir, _same,
            "Working directory of the job (default /)", metavar="DIR", scope=SCOPE_CLIENT),
    Setting("stop_timeout", "--stop-timeout", "TimeoutStopUSec", "t", parse_seconds,
            lambda s: int(s * USEC_PER_SEC),
            "Seconds between SIGTERM and SIGKILL when the job is stopped", default=10.0,
            metavar="SECONDS", scope=SCOPE_UNIT),
    # Sent by unit.fixed_properties (every job gets its profile's properties; None: the default).
    Setting("profile", "--profile", "", "s", profiles.parse_profile, _same,
            f"Isolation profile: {', '.join(profiles.names())} (default: {profiles.DEFAULT}; "
            "see docs/ISOLATION.md)", metavar="NAME"),
    Setting("writable", "--writable", "ReadWritePaths", "as", parse_writable, list,
            "Let the job write to this existing path; the rest of the system is read-only "
            "(repeatable)", metavar="PATH", repeat=True),
    # A oneshot service's run is its start: RuntimeMaxSec= has no effect on it (systemd 252),
    # TimeoutStartSec= ends it with Result=timeout (SIGTERM, SIGKILL after --stop-timeout).
    # jobrund sends none and keeps the clock itself, stopped while the job is paused
    # (deadline.py): systemd cannot change TimeoutStartSec= of a running unit.
    Setting("timeout", "--timeout", "TimeoutStartUSec", "t", seconds_parser("--timeout", 0.001),
            lambda s: int(s * USEC_PER_SEC),
            "End the job as failed (reason: timeout) once it has run this many seconds "
            "(time paused does not count)",
            metavar="SECONDS"),
    # jobrund's queue (dispatch.py): no unit property (prop ""), jobrund acts on them.
    Setting("group", "--group", "", "s", parse_group, _same,
            "Queue the job in your group NAME (its --parallel limit and aggregate limits: "
            "`jobrun group set`)", metavar="NAME"),
    Setting("priority", "--priority", "", "x", int_parser(-1000, 1000, "--priority"), _same,
            "Higher first in the group's queue (-1000–1000, default 0)", metavar="N"),
    Setting("after", "--after", "", "as", parse_job_ids, list,
            "Start once these jobs succeeded (fails, without running, if one did not)",
            metavar="ID[,ID…]", several=True, to_input=ids_text),
    Setting("after_any", "--after-any/--after-success", "", "b", parse_bool, _same,
            "With --after: start once they ended, whatever their result"),
    Setting("retry", "--retry", "", "u", int_parser(0, 100, "--retry"), _same,
            "Run a failed job again, at most N more times (each attempt a job of its own)",
            metavar="N"),
    Setting("retry_delay", "--retry-delay", "", "d", seconds_parser("--retry-delay"), _same,
            "Seconds between a failure and the next attempt (default 0)", metavar="SECONDS"),
    Setting("retry_backoff", "--retry-backoff/--no-retry-backoff", "", "b", parse_bool, _same,
            "Double --retry-delay at each further attempt"),
)  # fmt: skip

SETTINGS_BY_FIELD = {s.field: s for s in SETTINGS}
LIVE_SETTINGS = tuple(s for s in SETTINGS if s.live)


def build_changes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `jobrun set`'s values (text or plain values, by setting field) into JobSpec
    values; InvalidArgument for a setting that cannot change while a job runs, or none at all."""
    changes: dict[str, Any] = {}
    for key, value in values.items():
        setting = SETTINGS_BY_FIELD.get(key)
        if setting is None:
            raise InvalidArgument(f"unknown setting {key!r}")
        if value is None:
            continue
        if not setting.live:
            flag = setting.flags.split("/")[-1]
            raise InvalidArgument(
                f"{flag} cannot be changed while a job runs",
                "only " + ", ".join(s.flags for s in LIVE_SETTINGS) + " can (jobrun set)",
            )
        changes[key] = setting.parse(value)
    if not changes:
        raise InvalidArgument(
            "nothing to change", "give one of " + ", ".join(s.flags for s in LIVE_SETTINGS)
        )
    return changes


def build_spec(command: list[str] | tuple[str, ...], /, name: str | None = None,
               **values: Any) -> JobSpec:  # fmt: skip
    """Validate user values (text or plain values) into a JobSpec; raises InvalidArgument.

    The one function every front end (CLI, D-Bus, gRPC) hands a caller's job to: each string
    passes exactly one check of inputs.py here. `command` is positional-only, so a request field
    named "command" is an unknown setting rather than a TypeError."""
    cmd = check_command(command)
    if name is not None:
        name = check_name(name)
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


def build_scope_spec(command: list[str] | tuple[str, ...], /, name: str | None = None,
                     **values: Any) -> JobSpec:  # fmt: skip
    """As `build_spec`, for a scope (`jobrun run --scope`): a setting a scope cannot have (the
    sandbox: SCOPE_NO in the table) is refused, not ignored."""
    for key, value in values.items():
        setting = SETTINGS_BY_FIELD.get(key)
        if setting is not None and setting.scope == SCOPE_NO and value not in (None, [], ()):
            flag = setting.flags.split("/")[0]
            raise InvalidArgument(
                f"{flag} does not apply to --scope: a scope's command is your own process, "
                "in your terminal, with no sandbox (systemd gives a scope resource limits only)",
                f"drop {flag}, or run the command as a job of its own (without --scope)",
            )
    return build_spec(command, name=name, **values).replace(kind=JobKind.SCOPE)


def for_scope(spec: JobSpec) -> JobSpec:
    """The spec without what a scope cannot have (defaults an admin's config filled in)."""
    drop = {s.field: () if s.repeat else None for s in SETTINGS if s.scope == SCOPE_NO}
    return spec.replace(**drop)


def as_input(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings by field holding JobSpec values (as `limits` gives them, or gRPC's JobOptions
    carry them) → values `build_spec` takes, by each row's `to_input`. A key that names no
    setting passes unchanged, for build_spec to refuse."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        setting = SETTINGS_BY_FIELD.get(key)
        out[key] = setting.to_input(value) if setting is not None and value is not None else value
    return out


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
        and hardening.DYNAMIC_USER in profile.settings
        and not profiles.hides_tmp(spec, spec.workdir)  # refused anyway: Manager.start
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
