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

Cap keys: the numeric settings of properties.SETTINGS (a maximum), `running_jobs`, the
booleans `network` and `shared_tmp` (whether isolation may be turned off), and `profile`: the
loosest isolation profile allowed (profiles.py; e.g. "default" forbids "relaxed").
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import profiles
from .errors import InvalidArgument, PermissionDenied
from .model import JobSpec
from .properties import SETTINGS_BY_FIELD

DEFAULT_PATH = "/etc/jobrun/jobrund.toml"
NUMERIC_CAPS = ("cpu_weight", "memory_high", "memory_max", "io_weight", "tasks_max", "cpu_quota")
BOOL_CAPS = ("network", "shared_tmp")


def config_path() -> Path:
    return Path(os.environ.get("JOBRUN_CONFIG") or DEFAULT_PATH)


@dataclass(frozen=True)
class Caps:
    numeric: dict[str, int] = field(default_factory=dict)
    allowed: dict[str, bool] = field(default_factory=dict)
    running_jobs: int | None = None
    profile: str | None = None  # the loosest profile allowed


def _parse_caps(table: dict[str, Any], where: str) -> Caps:
    numeric: dict[str, int] = {}
    allowed: dict[str, bool] = {}
    running: int | None = None
    profile: str | None = None
    for key, value in table.items():
        if key in NUMERIC_CAPS:
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
    return Caps(numeric, allowed, running, profile)


def _merge(*caps: Caps) -> Caps:
    out = Caps()
    for c in caps:
        out = Caps(
            {**out.numeric, **c.numeric},
            {**out.allowed, **c.allowed},
            c.running_jobs if c.running_jobs is not None else out.running_jobs,
            c.profile or out.profile,
        )
    return out


@dataclass(frozen=True)
class Config:
    defaults: dict[str, Any] = field(default_factory=dict)
    limits: Caps = field(default_factory=Caps)
    users: dict[str, Caps] = field(default_factory=dict)
    groups: dict[str, Caps] = field(default_factory=dict)
    source: str = "(built-in defaults)"

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        path = path or config_path()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"cannot read {path}: {e}") from e
        unknown = set(data) - {"defaults", "limits", "users", "groups", "remote"}
        if unknown:
            raise InvalidArgument(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
        defaults = {}
        for key, value in data.get("defaults", {}).items():
            if key not in SETTINGS_BY_FIELD:
                raise InvalidArgument(f"{path}: unknown key defaults.{key}")
            defaults[key] = SETTINGS_BY_FIELD[key].parse(value)
        return cls(
            defaults=defaults,
            limits=_parse_caps(data.get("limits", {}), "limits"),
            users={u: _parse_caps(t, f"users.{u}") for u, t in data.get("users", {}).items()},
            groups={g: _parse_caps(t, f"groups.{g}") for g, t in data.get("groups", {}).items()},
            source=str(path),
        )

    def caps_for(self, user: str) -> Caps:
        groups = _groups_of(user)
        group_caps = [c for g, c in sorted(self.groups.items()) if g in groups]
        return _merge(self.limits, *group_caps, self.users.get(user, Caps()))

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


def _groups_of(user: str) -> set[str]:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return set()
    names = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    with contextlib.suppress(KeyError):
        names.add(grp.getgrgid(pw.pw_gid).gr_name)
    return names
