"""Isolation profiles: named sets of systemd sandboxing properties that every job gets.

A profile is data: an ordered list of `Hardening` rows (the unit-file assignment, its D-Bus
signature and value, why it is there, and what a user does when a job needs what it takes away).
`PROFILES` is ordered from the most to the least isolated, so a later cap ("users may ask for
nothing looser than default") is a comparison of positions: `within(name, cap)`.

PrivateNetwork= and PrivateTmp= are not here: they have options of their own (`--network`,
`--shared-tmp`, see properties.py); a profile only says whether those options may loosen them.
docs/ISOLATION.md carries `markdown_table()` verbatim (a test keeps the two equal) and the
`systemd-analyze security` exposure of each profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import hardening
from .errors import InvalidArgument
from .hardening import Hardening
from .model import JobSpec

if TYPE_CHECKING:
    from dbus_fast import Variant  # imported where used: the CLI's start-up time matters

DEFAULT = "default"

# Where ProtectHome=yes and PrivateTmp=yes put something else than the host's directories.
HOME_DIRS = ("/home", "/root", "/run/user")
TMP_DIRS = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    settings: tuple[Hardening, ...]
    network: bool  # whether --network may give the job the host's network
    shared_tmp: bool  # whether --shared-tmp may give the job the host's /tmp

    @property
    def hides_home(self) -> bool:
        return any(h.prop == "ProtectHome" for h in self.settings)


RELAXED_HINT = "--profile relaxed"

# fmt: off

_BASE = (
    hardening.DYNAMIC_USER, hardening.NO_CAPABILITIES, hardening.NO_NEW_PRIVILEGES,
    hardening.RESTRICT_SUID_SGID, hardening.UMASK, hardening.PROTECT_SYSTEM,
    hardening.PROTECT_HOME, hardening.PRIVATE_SHM, hardening.PRIVATE_DEVICES,
    hardening.PROTECT_KERNEL_TUNABLES, hardening.PROTECT_KERNEL_MODULES,
    hardening.PROTECT_KERNEL_LOGS, hardening.PROTECT_CONTROL_GROUPS, hardening.PROTECT_CLOCK,
    hardening.PROTECT_HOSTNAME, hardening.PROTECT_PROC, hardening.PROC_SUBSET,
    hardening.PRIVATE_IPC, hardening.RESTRICT_NAMESPACES, hardening.SYSCALLS,
    hardening.SYSCALL_ERRNO, hardening.NATIVE_ABI, hardening.LOCK_PERSONALITY,
    hardening.RESTRICT_REALTIME,
)

STRICT = Profile(
    "strict",
    "default, plus no IP at all, a user namespace, no writable+executable memory and fewer "
    "system calls: for code you do not trust",
    (*_BASE, hardening.FAMILIES_UNIX, hardening.IP_DENY, hardening.PRIVATE_USERS,
     hardening.NO_WX, hardening.SYSCALLS_STRICT),
    network=False,
    shared_tmp=False,
)
DEFAULT_PROFILE = Profile(
    DEFAULT,
    "a dynamic UID, a read-only system, no home directories, no devices, no other processes, "
    "a system call filter: for builds, tests and scripts",
    (*_BASE, hardening.FAMILIES),
    network=True,
    shared_tmp=False,
)
RELAXED = Profile(
    "relaxed",
    "runs as the caller (root stays root) with only the protections no job needs to lose: "
    "for jobs that must administer the host",
    (hardening.PROTECT_KERNEL_MODULES, hardening.PROTECT_KERNEL_LOGS, hardening.PROTECT_HOSTNAME,
     hardening.RESTRICT_REALTIME),
    network=True,
    shared_tmp=True,
)
# fmt: on

PROFILES: tuple[Profile, ...] = (STRICT, DEFAULT_PROFILE, RELAXED)  # most isolated first
BY_NAME = {p.name: p for p in PROFILES}


def names() -> list[str]:
    return [p.name for p in PROFILES]


def get(name: str | None) -> Profile:
    """The profile called `name` (None: the default one); InvalidArgument for an unknown name."""
    profile = BY_NAME.get(DEFAULT if name is None else name)
    if profile is None:
        raise InvalidArgument(f"unknown profile {name!r}", f"choose one of: {', '.join(names())}")
    return profile


def parse_profile(value: Any) -> str:
    return get(str(value).strip().lower()).name


def rank(name: str | None) -> int:
    """Position from the most isolated (0) to the least: compare to cap a user's choice."""
    return PROFILES.index(get(name))


def within(name: str | None, cap: str) -> bool:
    """Whether profile `name` is no looser than profile `cap`."""
    return rank(name) <= rank(cap)


def properties(name: str | None, as_root: bool) -> list[tuple[str, Variant]]:
    """The unit properties of profile `name`; `as_root`: the job has no User= of its own.
    ProtectHome= is not among them: it depends on the job's paths (`home_properties`)."""
    return [
        h.variant()
        for h in get(name).settings
        if (as_root or not h.root_only) and h is not hardening.PROTECT_HOME
    ]


def under(path: str, dirs: tuple[str, ...]) -> bool:
    """Whether `path` is one of `dirs` or below one."""
    return any(path == d or path.startswith(d + "/") for d in dirs)


def check(spec: JobSpec) -> None:
    """Refuse what the spec's profile cannot give; raises InvalidArgument."""
    profile = get(spec.profile)
    flag = f"--profile {profile.name}"
    if spec.network and not profile.network:
        raise InvalidArgument(
            f"{flag} allows no IP sockets, so --network cannot work",
            "use --profile default --network",
        )
    if spec.private_tmp is False and not profile.shared_tmp:
        raise InvalidArgument(
            f"--shared-tmp needs {RELAXED_HINT}: under {flag} every job has a /tmp of its own",
            "pass files through a --writable directory instead",
        )
    for path in spec.writable:
        # The working directory meets the same rule in Manager.start.
        check_tmp(
            spec, path, "--writable", f"use a directory elsewhere, or {RELAXED_HINT} --shared-tmp"
        )


def hides_tmp(spec: JobSpec, path: str) -> bool:
    """Whether the job does not see the host's `path`: it is under /tmp or /var/tmp, and the job
    has a /tmp of its own (PrivateTmp=, unless --shared-tmp)."""
    return spec.private_tmp is not False and under(path, TMP_DIRS)


def check_tmp(spec: JobSpec, path: str, what: str, hint: str) -> None:
    """Refuse `path` (`what`: the option or role it has) if the job would not see it."""
    if hides_tmp(spec, path):
        raise InvalidArgument(
            f"{what} {path} is under /tmp or /var/tmp, which a job with a private /tmp "
            "does not see",
            hint,
        )


def home_properties(
    spec: JobSpec, *, user: int | None, dynamic_user: bool, home: str | None
) -> list[tuple[str, str, Any]]:
    """What a job sees of the home directories: (property, D-Bus signature, value) rows that
    replace the profile's ProtectHome=yes; raises InvalidArgument for what it cannot see.

    A profile that hides homes hides all of them, unless the job works in one (its working
    directory or a --writable path is under /home, /root or /run/user). Then the homes become an
    empty read-only tmpfs (ProtectHome=tmpfs) and into it are bound:
    - for a job running as a user (`user`, whose home directory is `home`): that home,
      read-only; the working directory and --writable paths there are made read-write
      (ReadWritePaths=, resolved inside the job's mount namespace, so a symbolic link to another
      user's home leads nowhere). Paths in another home are refused: binding them would open
      directories their owner keeps closed.
    - for a job started by root (no `user`, so a DynamicUser= of the profile): the working
      directory, read-only, and the --writable paths, read-write; the dynamic UID reads and
      writes there what others may. root may show its job any path; nobody else is involved.
    - a remote job with a dynamic UID (`dynamic_user`) has no home here: refused.
    `user` and `home` come from the job's owner, never from the caller's strings."""
    profile = get(spec.profile)
    if not profile.hides_home:
        return []
    workdir = spec.workdir if spec.workdir is not None and under(spec.workdir, HOME_DIRS) else None
    writable = [p for p in spec.writable if under(p, HOME_DIRS)]
    if workdir is None and not writable:
        hidden = hardening.PROTECT_HOME
        return [(hidden.prop, hidden.signature, hidden.value)]
    flag = f"--profile {profile.name}"
    where = workdir or writable[0]
    what = "the working directory" if workdir else "--writable"
    if dynamic_user or (user is not None and (home is None or not under(home, HOME_DIRS))):
        raise InvalidArgument(
            f"{what} {where} is under {', '.join(HOME_DIRS)}, which {flag} hides from a job "
            "that has no home there",
            f"use a directory elsewhere (e.g. under /srv; -C DIR), or {RELAXED_HINT}",
        )
    props: list[tuple[str, str, Any]] = [("ProtectHome", "s", "tmpfs")]
    if user is not None:
        assert home is not None
        outside = next((p for p in [workdir, *writable] if p and not under(p, (home,))), None)
        if outside is not None:
            raise InvalidArgument(
                f"{outside} is in a home directory other than yours ({home}); under {flag} a "
                "job sees no home but its own user's",
                f"work in {home}, or in a directory outside {', '.join(HOME_DIRS)} (-C DIR)",
            )
        props.append(_bind("BindReadOnlyPaths", [home]))
        if workdir is not None:
            props.append(("ReadWritePaths", "as", ["-" + workdir]))
        return props
    if workdir is not None and not any(under(workdir, (w,)) for w in writable):
        props.append(_bind("BindReadOnlyPaths", [workdir]))
    if writable:
        props.append(_bind("BindPaths", writable))
    return props


_MS_REC = 0x4000  # what systemd-run sends for a bind (a recursive one: submounts included)


def _bind(prop: str, paths: list[str]) -> tuple[str, str, Any]:
    """Each path bound onto itself; (source, destination, ignore if missing, mount flags).
    Lists, not tuples, for the structs: Debian 12's dbus-fast (1.84) accepts only lists."""
    return prop, "a(ssbt)", [[p, p, False, _MS_REC] for p in paths]


def _cell(ok: bool) -> str:
    return "✓" if ok else ""


def markdown_table() -> str:
    """Every setting of every profile, with why and what to do instead (docs/ISOLATION.md)."""
    rows: list[Hardening] = []
    for p in (DEFAULT_PROFILE, STRICT, RELAXED):
        rows += [h for h in p.settings if h not in rows]
    head = "| setting | " + " | ".join(p.name for p in PROFILES) + " | why | when a job needs it |"
    lines = [head, "|---|" + "---|" * len(PROFILES) + "---|---|"]
    for h in rows:
        marks = " | ".join(_cell(h in p.settings) for p in PROFILES)
        note = " (root-started jobs)" if h.root_only else ""
        lines.append(f"| `{h.text}`{note} | {marks} | {h.why} | {h.instead} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m jobrun.profiles: the table for docs/ISOLATION.md
    print(markdown_table(), end="")
