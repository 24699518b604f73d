"""A job's transient unit: the properties jobrun sends systemd to start it.

Only the properties the user set (the settings table, properties.py) are sent, plus the few jobrun
always sets on purpose (`fixed_properties`): identity, output, and the profile's sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import profiles
from .model import JOB_FIELD, LOG_NAMESPACE, SLICE, JobSpec
from .properties import SCOPE_UNIT, SETTINGS

if TYPE_CHECKING:
    from dbus_fast import Variant  # imported where used: the CLI's start-up time matters

CHECK_PATH = "/usr/bin/test"  # coreutils: checks --writable paths as the job's user


@dataclass(frozen=True)
class UnitContext:
    """What a job's unit takes from outside its JobSpec: who it runs as and where jobrun put
    things for it. Each comes from the job's owner (Manager.start), never from a caller's strings.

    `user`: the UID to run as (None: root's job, which the profile may give a DynamicUser=);
    sent as a number, since systemd reads an all-digit User= name as a UID (a user named "1003"
    would run as UID 1003). `dynamic_user`: DynamicUser=yes whatever the profile (remote jobs
    with no local user). `env_file`: where the job's -E variables are (envfile.py). `home`: the
    home directory of `user` (profiles.home_properties: what the job sees of the homes).
    `stdin`: the job reads the descriptor sent with the start as unix_fds[0] (`jobrun run` with
    its stdin not a terminal, as `systemd-run --pipe`); otherwise it reads /dev/null. `tty`: the
    job's stdio is this terminal instead (`run --pty`, pty.py)."""

    user: int | None = None
    dynamic_user: bool = False
    env_file: str | None = None
    slice_name: str = SLICE
    home: str | None = None
    stdin: bool = False
    tty: str | None = None

    @property
    def as_the_user(self) -> bool:
        """Whether the job runs as someone else than root: a User= or a DynamicUser=."""
        return self.user is not None or self.dynamic_user


def describe(job_id: str, spec: JobSpec) -> str:
    """Description=: the job's ID and its name (checked by build_spec), never the command line,
    which other users can read there (systemctl status) and which may hold anything."""
    return f"jobrun job {job_id}" + (f" ({spec.name})" if spec.name else "")


def fixed_properties(
    job_id: str, spec: JobSpec, ctx: UnitContext = UnitContext()
) -> list[tuple[str, Variant]]:
    """What every job gets, on purpose: identity, output, and its profile's sandbox."""
    from dbus_fast import Variant

    props = [
        ("Description", Variant("s", describe(job_id, spec))),
        ("Slice", Variant("s", ctx.slice_name)),
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
            if ctx.stdin
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
    if ctx.user is not None:
        props.append(("User", Variant("s", str(ctx.user))))
    if ctx.env_file is not None:
        props.append(("EnvironmentFiles", Variant("a(sb)", [[ctx.env_file, False]])))
    props += profiles.properties(spec.profile, as_root=ctx.user is None)
    for prop, signature, value in profiles.home_properties(
        spec, user=ctx.user, dynamic_user=ctx.dynamic_user, home=ctx.home
    ):
        props.append((prop, Variant(signature, value)))
    if ctx.dynamic_user and ("DynamicUser", Variant("b", True)) not in props:
        props.append(("DynamicUser", Variant("b", True)))
    if ctx.tty is not None:
        from . import pty

        props = [p for p in props if p[0] not in pty.STDIO] + pty.unit_properties(ctx.tty)
    return props


def unit_properties(
    job_id: str, spec: JobSpec, ctx: UnitContext = UnitContext()
) -> list[tuple[str, Variant]]:
    """Every property of the job's unit: `fixed_properties` and those of the settings it has."""
    from dbus_fast import Variant

    props = fixed_properties(job_id, spec, ctx)
    for s in SETTINGS:
        value = getattr(spec, s.field)
        if value is None or value == ():
            value = s.default
        if value is None or not s.prop or (s.field == "writable" and ctx.as_the_user):
            continue
        props.append((s.prop, Variant(s.signature, s.to_dbus(value))))
    if spec.writable and ctx.as_the_user:
        props += _writable_as_the_user(spec.writable)
    return props


def scope_properties(
    job_id: str, spec: JobSpec, pid: int, slice_name: str
) -> list[tuple[str, Variant]]:
    """The properties of a scope job's unit (`jobrun run --scope`): its identity, the process
    it holds, accounting, and the settings of the table that apply to a scope (SCOPE_UNIT).
    No User=, output or sandbox: the process is the caller's, started by the caller."""
    from dbus_fast import Variant

    props = [
        ("Description", Variant("s", describe(job_id, spec))),
        ("Slice", Variant("s", slice_name)),
        ("PIDs", Variant("au", [pid])),
        ("KillMode", Variant("s", "control-group")),
        ("CPUAccounting", Variant("b", True)),
        ("MemoryAccounting", Variant("b", True)),
        ("IOAccounting", Variant("b", True)),
        ("TasksAccounting", Variant("b", True)),
    ]
    for s in SETTINGS:
        value = getattr(spec, s.field)
        if value is None or value == ():
            value = s.default
        if s.scope == SCOPE_UNIT and value is not None:
            props.append((s.prop, Variant(s.signature, s.to_dbus(value))))
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
