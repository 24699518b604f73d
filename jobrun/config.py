"""jobrund's admin configuration: defaults and caps per user or group.

    /etc/jobrun/jobrund.toml (or $JOBRUN_CONFIG)

    [defaults]                # applied to a job that does not set the value itself
    memory_max = "2G"
    [limits]                  # caps for everyone who is not a jobrun admin
    memory_max = "8G"         # the most a job may ask for (also its default if none given)
    running_jobs = 20         # running jobs per user
    network = false           # whether --network may be asked for
    [users.alice]             # overrides for one user…
    running_jobs = 2
    [groups.students]         # …or for members of a group (a user's entry wins over a group's)
    memory_max = "512M"

    [metrics]                 # Prometheus text files for node-exporter (metrics.py); off without
    enabled = true
    path = "/var/lib/prometheus/node-exporter"   # the textfile collector's directory (default)
    interval = 15             # seconds between writes (default)

    [remote]                  # the gRPC API (daemon/grpc.py, docs/REMOTE.md); off without it
    listen = "0.0.0.0:7443"
    certificate = "/etc/jobrun/remote/server.crt"
    key = "/etc/jobrun/remote/server.key"
    ca = "/etc/jobrun/remote/ca.crt"   # client certificates must be issued by it (its own CA)
    crl = "/etc/jobrun/remote/ca.crl"  # optional: revoked client certificates, re-read on change
    run_as = "dynamic"        # local user remote jobs run as; "dynamic": DynamicUser= per job
    admins = ["ops"]          # identities (certificate CN) that see and manage every job
    [remote.users.alice]      # per identity: its own local user, or admin
    run_as = "jobrun-alice"

Cap keys: the numeric settings of properties.SETTINGS (a maximum), `running_jobs`, the
booleans `network` and `shared_tmp` (whether isolation may be turned off), and `profile`: the
loosest isolation profile allowed (profiles.py; e.g. "default" forbids "relaxed").

Aggregate limits of all of a user's jobs together: the same numeric settings prefixed `slice_`
(`slice_memory_max = "16G"`, `slice_cpu_weight = 100`, `slice_tasks_max = 2000`,
`slice_cpu_quota = "400%"`, `slice_memory_high`, `slice_io_weight`), set on the user's slice
`jobrun-u<UID>.slice` (model.user_slice) when one of their jobs starts; a key not set there is
reset to systemd's default (no limit). Remote jobs run in their run_as user's slice, or all in
`jobrun-remote.slice` with a DynamicUser=, which takes the [limits] values.

Built in, for every user who is not an admin, unless the file sets the key (BUILTIN_LIMITS):
running_jobs = 256, slice_memory_max = 80% of the host's memory, slice_tasks_max = a quarter of
the kernel's task limit. An equal CPUWeight per user slice already shares the CPU per user.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import profiles
from .errors import InvalidArgument, PermissionDenied
from .model import JobSpec
from .properties import SETTINGS_BY_FIELD

if TYPE_CHECKING:
    from dbus_fast import Variant

DEFAULT_PATH = "/etc/jobrun/jobrund.toml"
NUMERIC_CAPS = ("cpu_weight", "memory_high", "memory_max", "io_weight", "tasks_max", "cpu_quota")
BOOL_CAPS = ("network", "shared_tmp")


def config_path() -> Path:
    return Path(os.environ.get("JOBRUN_CONFIG") or DEFAULT_PATH)


SLICE_PREFIX = "slice_"
# "Unset" for every numeric slice property: no limit, or systemd's default weight.
_UNSET = (1 << 64) - 1


@dataclass(frozen=True)
class Caps:
    numeric: dict[str, int] = field(default_factory=dict)
    allowed: dict[str, bool] = field(default_factory=dict)
    running_jobs: int | None = None
    profile: str | None = None  # the loosest profile allowed
    slice: dict[str, int] = field(default_factory=dict)  # NUMERIC_CAPS key → limit of the slice


def _host_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _host_tasks() -> int:
    """The kernel's limit on tasks: the lower of pid_max and threads-max."""
    limits = []
    for name in ("pid_max", "threads-max"):
        with contextlib.suppress(OSError, ValueError):
            limits.append(int(Path(f"/proc/sys/kernel/{name}").read_text()))
    return min(limits, default=32768)


def builtin_limits() -> Caps:
    """What a host gets without a word from its admin: no user can hold more than 256 running
    jobs (each a unit in systemd and a stream to journald), 80% of the memory, or a quarter of
    the kernel's tasks (a fork bomb stops there, not at the host's limit)."""
    return Caps(
        running_jobs=256,
        slice={"memory_max": _host_memory() * 4 // 5, "tasks_max": _host_tasks() // 4},
    )


BUILTIN_LIMITS = builtin_limits()


def _parse_caps(table: dict[str, Any], where: str) -> Caps:
    numeric: dict[str, int] = {}
    allowed: dict[str, bool] = {}
    running: int | None = None
    profile: str | None = None
    slice_caps: dict[str, int] = {}
    for key, value in table.items():
        if key.startswith(SLICE_PREFIX) and key.removeprefix(SLICE_PREFIX) in NUMERIC_CAPS:
            setting = key.removeprefix(SLICE_PREFIX)
            slice_caps[setting] = SETTINGS_BY_FIELD[setting].parse(value)
        elif key in NUMERIC_CAPS:
            numeric[key] = SETTINGS_BY_FIELD[key].parse(value)
        elif key in BOOL_CAPS:
            if not isinstance(value, bool):
                raise InvalidArgument(f"{where}.{key} must be true or false")
            allowed[key] = value
        elif key == "running_jobs":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"{where}.running_jobs must be a whole number ≥ 0")
            running = value
        elif key == "profile":
            profile = profiles.parse_profile(value)
        else:
            raise InvalidArgument(f"unknown key {where}.{key}")
    return Caps(numeric, allowed, running, profile, slice_caps)


def _merge(*caps: Caps) -> Caps:
    out = Caps()
    for c in caps:
        out = Caps(
            {**out.numeric, **c.numeric},
            {**out.allowed, **c.allowed},
            c.running_jobs if c.running_jobs is not None else out.running_jobs,
            c.profile or out.profile,
            {**out.slice, **c.slice},
        )
    return out


DYNAMIC = "dynamic"


@dataclass(frozen=True)
class RemoteConfig:
    host: str
    port: int
    certificate: str
    key: str
    ca: str
    crl: str | None = None  # the CA's revocation list(s), PEM
    run_as: str | None = None  # None: DynamicUser= per job
    admins: frozenset[str] = frozenset()
    users: dict[str, tuple[str | None, bool]] = field(default_factory=dict)  # CN → (run_as, admin)

    def identity(self, name: str) -> tuple[str | None, bool]:
        """(the local user to run as or None for a DynamicUser, admin) for a certificate's CN."""
        run_as, admin = self.users.get(name, (self.run_as, False))
        return run_as, admin or name in self.admins


def _run_as(value: Any, where: str) -> str | None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{where} must be a user name or {DYNAMIC!r}")
    if value == DYNAMIC:
        return None
    try:
        pw = pwd.getpwnam(value)
    except KeyError:
        raise InvalidArgument(f"{where}: no user {value!r} on this host") from None
    if pw.pw_uid == 0:
        raise InvalidArgument(f"{where}: remote jobs never run as root ({value!r})")
    return value


def _parse_remote(t: dict[str, Any], path: Path) -> RemoteConfig:
    where = f"{path}: remote"
    keys = {"listen", "certificate", "key", "ca", "crl", "run_as", "admins", "users"}
    unknown = set(t) - keys
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    listen = t.get("listen")
    host, _, port = str(listen).rpartition(":")
    if not isinstance(listen, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f'{where}.listen must be HOST:PORT, e.g. "0.0.0.0:7443"')
    files = {}
    for key in ("certificate", "key", "ca"):
        value = t.get(key)
        if not isinstance(value, str) or not value.startswith("/"):
            raise InvalidArgument(f"{where}.{key} must be an absolute path")
        files[key] = value
    crl = t.get("crl")
    if crl is not None and (not isinstance(crl, str) or not crl.startswith("/")):
        raise InvalidArgument(f"{where}.crl must be an absolute path")
    admins = t.get("admins", [])
    if not isinstance(admins, list) or not all(isinstance(a, str) for a in admins):
        raise InvalidArgument(f"{where}.admins must be a list of names")
    users: dict[str, tuple[str | None, bool]] = {}
    for name, entry in t.get("users", {}).items():
        if not isinstance(entry, dict) or set(entry) - {"run_as", "admin"}:
            raise InvalidArgument(f"{where}.users.{name} takes run_as and admin")
        if not isinstance(entry.get("admin", False), bool):
            raise InvalidArgument(f"{where}.users.{name}.admin must be true or false")
        run_as = _run_as(entry.get("run_as", t.get("run_as", DYNAMIC)), f"{where}.users.{name}")
        users[name] = (run_as, entry.get("admin", False))
    return RemoteConfig(
        host=host.strip("[]"),
        port=int(port),
        run_as=_run_as(t.get("run_as", DYNAMIC), f"{where}.run_as"),
        admins=frozenset(admins),
        users=users,
        crl=crl,
        **files,
    )


METRICS_PATH = "/var/lib/prometheus/node-exporter"  # Debian's prometheus-node-exporter reads it


@dataclass(frozen=True)
class MetricsConfig:
    path: str = METRICS_PATH
    interval: float = 15.0


def _parse_metrics(t: dict[str, Any], path: Path) -> MetricsConfig | None:
    where = f"{path}: metrics"
    unknown = set(t) - {"enabled", "path", "interval"}
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    enabled = t.get("enabled", False)
    if not isinstance(enabled, bool):
        raise InvalidArgument(f"{where}.enabled must be true or false")
    directory = t.get("path", METRICS_PATH)
    if (
        not isinstance(directory, str)
        or not directory.startswith("/")
        or len(directory) > 1024
        or any(not c.isprintable() for c in directory)
    ):
        raise InvalidArgument(f"{where}.path must be an absolute directory path")
    interval = t.get("interval", 15)
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise InvalidArgument(f"{where}.interval must be a number of seconds")
    if not 1 <= interval <= 3600:
        raise InvalidArgument(f"{where}.interval must be 1 to 3600 seconds")
    return MetricsConfig(os.path.normpath(directory), float(interval)) if enabled else None


def _parse_queue(t: Any, path: Path) -> bool:
    """[queue]: owners_may_set (default true)."""
    if not isinstance(t, dict):
        raise InvalidArgument(f"{path}: [queue] must be a table")
    unknown = set(t) - {"owners_may_set"}
    if unknown:
        raise InvalidArgument(f"{path}: unknown key(s) queue.{', queue.'.join(sorted(unknown))}")
    value = t.get("owners_may_set", True)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{path}: queue.owners_may_set must be true or false")
    return value


@dataclass(frozen=True)
class Config:
    defaults: dict[str, Any] = field(default_factory=dict)
    limits: Caps = BUILTIN_LIMITS
    users: dict[str, Caps] = field(default_factory=dict)
    groups: dict[str, Caps] = field(default_factory=dict)
    source: str = "(built-in defaults)"
    remote: RemoteConfig | None = None
    metrics: MetricsConfig | None = None  # None: off
    # [queue] owners_may_set: may a non-admin change (`group set/pause/resume`) their groups
    owners_may_set: bool = True

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        path = path or config_path()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"cannot read {path}: {e}") from e
        unknown = set(data) - {
            "defaults",
            "limits",
            "users",
            "groups",
            "remote",
            "metrics",
            "queue",
        }
        if unknown:
            raise InvalidArgument(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
        defaults = {}
        for key, value in data.get("defaults", {}).items():
            if key not in SETTINGS_BY_FIELD:
                raise InvalidArgument(f"{path}: unknown key defaults.{key}")
            defaults[key] = SETTINGS_BY_FIELD[key].parse(value)
        return cls(
            defaults=defaults,
            limits=_merge(BUILTIN_LIMITS, _parse_caps(data.get("limits", {}), "limits")),
            users={u: _parse_caps(t, f"users.{u}") for u, t in data.get("users", {}).items()},
            groups={g: _parse_caps(t, f"groups.{g}") for g, t in data.get("groups", {}).items()},
            source=str(path),
            remote=_parse_remote(data["remote"], path) if "remote" in data else None,
            metrics=_parse_metrics(data["metrics"], path) if "metrics" in data else None,
            owners_may_set=_parse_queue(data.get("queue", {}), path),
        )

    def caps_for(self, user: str) -> Caps:
        # The user's groups only where groups have caps: each lookup goes through NSS, where
        # nss-systemd asks PID 1 (~1 ms of every Start, more while PID 1 is busy).
        groups = _groups_of(user) if self.groups else set()
        group_caps = [c for g, c in sorted(self.groups.items()) if g in groups]
        return _merge(self.limits, *group_caps, self.users.get(user, Caps()))

    def slice_limits(self, user: str | None) -> dict[str, int]:
        """The aggregate limits of a local user's slice (None: the remote DynamicUser slice,
        which takes [limits]), as numeric settings; those not configured are absent."""
        return dict((self.caps_for(user) if user is not None else self.limits).slice)

    def apply(self, spec: JobSpec, user: str, running: int) -> JobSpec:
        """Defaults filled in and caps enforced for a non-admin user; raises on a violation."""
        caps = self.caps_for(user)
        if caps.running_jobs is not None and running >= caps.running_jobs:
            raise PermissionDenied(
                f"you already have {running} running jobs, the most allowed for {user} "
                f"is {caps.running_jobs}",
                f"stop one first (limits in {self.source})",
            )
        defaults = {k: v for k, v in self.defaults.items() if getattr(spec, k) in (None, ())}
        spec = spec.replace(**defaults) if defaults else spec
        changes: dict[str, Any] = {}
        for key, cap in caps.numeric.items():
            value = getattr(spec, key)
            if value is None or (key in defaults and value > cap):
                changes[key] = cap  # a cap is also the value of a job that asks for nothing
            elif value > cap:
                flag = SETTINGS_BY_FIELD[key].flags
                raise PermissionDenied(
                    f"{flag} {value} is above the most allowed for {user} ({cap})",
                    f"ask for at most {cap} (limits in {self.source})",
                )
        if spec.network and not caps.allowed.get("network", True):
            raise PermissionDenied(
                f"{user} may not give jobs the host's network (--network)",
                f"run it without --network (limits in {self.source})",
            )
        if spec.private_tmp is False and not caps.allowed.get("shared_tmp", True):
            raise PermissionDenied(
                f"{user} may not give jobs the host's /tmp (--shared-tmp)",
                f"run it without --shared-tmp (limits in {self.source})",
            )
        if caps.profile is not None and not profiles.within(spec.profile, caps.profile):
            raise PermissionDenied(
                f"{user} may not use --profile {spec.profile} (the loosest allowed is "
                f"{caps.profile})",
                f"use --profile {caps.profile} or a stricter one (limits in {self.source})",
            )
        spec = spec.replace(**changes) if changes else spec
        profiles.check(spec)  # what the defaults filled in must fit the profile too
        return spec

    def check_changes(self, changes: dict[str, Any], user: str) -> None:
        """That live changes of a running job's limits (`jobrun set`) stay within a non-admin
        user's caps, as `apply` holds a new job to them; raises PermissionDenied."""
        caps = self.caps_for(user)
        for key, value in changes.items():
            cap = caps.numeric.get(key)
            if cap is not None and value > cap:
                flag = SETTINGS_BY_FIELD[key].flags
                raise PermissionDenied(
                    f"{flag} {value} is above the most allowed for {user} ({cap})",
                    f"ask for at most {cap} (limits in {self.source})",
                )


def _groups_of(user: str) -> set[str]:
    """The names of the user's groups, its primary one too: the groups a login of theirs gets
    (getgrouplist, one question to NSS rather than a walk through every group)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return set()
    names = set()
    for gid in os.getgrouplist(user, pw.pw_gid):
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    return names


def slice_properties(limits: dict[str, int]) -> list[tuple[str, Variant]]:
    """The unit properties that give a slice exactly `limits`: every numeric setting, those not
    in `limits` reset (so a key removed from the config stops applying)."""
    from dbus_fast import Variant

    props = []
    for key in NUMERIC_CAPS:
        s = SETTINGS_BY_FIELD[key]
        value = s.to_dbus(limits[key]) if key in limits else _UNSET
        props.append((s.prop, Variant(s.signature, value)))
    return props
