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

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument
from .model import JobSpec

if TYPE_CHECKING:
    from dbus_fast import Variant  # imported where used: the CLI's start-up time matters

# socket.AF_INET and AF_INET6 on Linux, without importing socket (the CLI's start-up time).
_AF_INET, _AF_INET6 = 2, 10
DEFAULT = "default"

# Where ProtectHome=yes and PrivateTmp=yes put something else than the host's directories.
HOME_DIRS = ("/home", "/root", "/run/user")
TMP_DIRS = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Hardening:
    """One sandboxing property as a profile sets it."""

    text: str  # the unit-file assignment, e.g. "ProtectSystem=strict" (what docs and users see)
    signature: str  # D-Bus signature of the property
    value: Any  # its D-Bus value
    why: str  # what it protects
    instead: str  # what to do when a job needs what it takes away
    root_only: bool = False  # only for jobs that would otherwise run as root (no User=)

    @property
    def prop(self) -> str:
        return self.text.partition("=")[0]

    def variant(self) -> tuple[str, Variant]:
        from dbus_fast import Variant

        return self.prop, Variant(self.signature, self.value)


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

# -- the rows -------------------------------------------------------------------------------
# fmt: off

DYNAMIC_USER = Hardening(
    "DynamicUser=yes", "b", True,
    "A job started by root would run as root. Without any capability, UID 0 still owns most "
    "files (it reads /etc/shadow, jobrun's job database and every job's journal) and is root to "
    "systemd on the system bus, where it starts a unit with no sandbox at all. Instead each job "
    "runs as a UID of its own that exists only while it runs (this also implies RemoveIPC=yes "
    "and always a private /tmp).",
    "`--profile relaxed` runs it as root. To let a job write into a directory, make the "
    "directory writable for others (the UID is not known in advance).",
    root_only=True,
)
NO_CAPABILITIES = Hardening(
    "CapabilityBoundingSet=", "t", 0,
    "No capability can be gained by any route (setuid-root binaries, file capabilities).",
    "`--profile relaxed` (root with every capability).",
)
NO_NEW_PRIVILEGES = Hardening(
    "NoNewPrivileges=yes", "b", True,
    "setuid/setgid bits and file capabilities confer nothing: su, sudo, mount, ping or a copied "
    "setuid-root binary run with the job's own UID.",
    "`--profile relaxed`.",
)
RESTRICT_SUID_SGID = Hardening(
    "RestrictSUIDSGID=yes", "b", True,
    "The job cannot create setuid/setgid files, which others could run later with its UID (and "
    "dynamic UIDs are reused).",
    "`--profile relaxed`.",
)
UMASK = Hardening(
    "UMask=0077", "u", 0o077,
    "What the job creates is readable by its own UID only: nothing is shared by accident.",
    "Start the command with `umask 022;` (`sh -c 'umask 022; …'`): it is only the initial mask.",
)
PROTECT_SYSTEM = Hardening(
    "ProtectSystem=strict", "s", "strict",
    "The whole file system is read-only, except the job's private /tmp, /var/tmp and /dev/shm "
    "and the paths given with `--writable`.",
    "`--writable DIR` for each directory the job writes (it must exist and, for a job with a "
    "dynamic UID, be writable for others, e.g. mode 1777).",
)
PROTECT_HOME = Hardening(
    "ProtectHome=yes", "s", "yes",
    "/home, /root and /run/user are empty and inaccessible: users' keys, tokens and trees stay "
    "out of reach. A job working in its user's home (the working directory or a `--writable` "
    "path there) gets `ProtectHome=tmpfs` instead: it sees that home read-only, its working "
    "directory and `--writable` paths there read-write, and no other home (see \"Home "
    "directories\" above).",
    "Work in your home, or put the job's files elsewhere (e.g. under /srv); a root-started job "
    "sees only its working directory there (read-only), or `--profile relaxed`.",
)
PRIVATE_SHM = Hardening(
    # a list, not a tuple, for the struct: Debian 12's dbus-fast (1.84) accepts only lists
    "TemporaryFileSystem=/dev/shm:mode=1777", "a(ss)", [["/dev/shm", "mode=1777"]],
    "PrivateDevices= bind-mounts the host's /dev/shm: without this the job would see, and add "
    "to, the shared-memory files of the host and of other jobs.",
    "POSIX shared memory and semaphores still work inside the job; to hand files to others use "
    "a `--writable` directory.",
)
PRIVATE_DEVICES = Hardening(
    "PrivateDevices=yes", "b", True,
    "Only pseudo devices (null, zero, random, tty…): no disks, /dev/mem, GPUs, KVM or FUSE.",
    "`--profile relaxed`.",
)
PROTECT_KERNEL_TUNABLES = Hardening(
    "ProtectKernelTunables=yes", "b", True,
    "/proc/sys, /sys and friends are read-only: no sysctl changes to the shared kernel.",
    "`--profile relaxed`.",
)
PROTECT_KERNEL_MODULES = Hardening(
    "ProtectKernelModules=yes", "b", True,
    "No loading or unloading of kernel modules; the module tree is hidden.",
    "Nothing: no profile allows it. Load modules outside jobrun.",
)
PROTECT_KERNEL_LOGS = Hardening(
    "ProtectKernelLogs=yes", "b", True,
    "No kernel log (dmesg, /dev/kmsg): it shows kernel addresses and other jobs' events.",
    "Nothing: no profile allows it. Read the kernel log on the host.",
)
PROTECT_CONTROL_GROUPS = Hardening(
    "ProtectControlGroups=yes", "b", True,
    "The cgroup tree is read-only: a job cannot raise its own limits or touch others' cgroups.",
    "`--profile relaxed` (e.g. for a job that manages containers).",
)
PROTECT_CLOCK = Hardening(
    "ProtectClock=yes", "b", True,
    "The system and hardware clocks cannot be set.",
    "`--profile relaxed`.",
)
PROTECT_HOSTNAME = Hardening(
    "ProtectHostname=yes", "b", True,
    "A hostname namespace of its own: sethostname() changes nothing outside the job.",
    "Nothing: no profile shares the host's hostname for writing.",
)
PROTECT_PROC = Hardening(
    "ProtectProc=invisible", "s", "invisible",
    "/proc lists only processes of the job's own UID: other jobs, users and daemons, their "
    "command lines and environments are invisible.",
    "`--profile relaxed`.",
)
PROC_SUBSET = Hardening(
    "ProcSubset=pid", "s", "pid",
    "/proc holds process directories only: no /proc/kallsyms, /proc/sys or /proc/sysrq-trigger "
    "— but also no /proc/meminfo, /proc/cpuinfo, /proc/loadavg (free, top and uptime fail).",
    "`--profile relaxed`. nproc and os.cpu_count() still work.",
)
PRIVATE_IPC = Hardening(
    "PrivateIPC=yes", "b", True,
    "System V IPC and POSIX message queues of its own: no reading or removing others' segments.",
    "`--profile relaxed`.",
)
RESTRICT_NAMESPACES = Hardening(
    "RestrictNamespaces=yes", "t", 0,
    "No new namespaces (unshare, clone): user namespaces especially are a large kernel attack "
    "surface.",
    "`--profile relaxed` (bwrap, rootless containers, Chromium's sandbox).",
)
SYSCALLS = Hardening(
    "SystemCallFilter=@system-service", "(bas)", [True, ["@system-service"]],
    "Only the system calls ordinary programs use: no mount, swap, reboot, kexec, module, raw "
    "I/O, clock, obsolete calls, and no ptrace/perf (@debug).",
    "`--profile relaxed` for strace, gdb, perf or LeakSanitizer (they need ptrace).",
)
SYSCALL_ERRNO = Hardening(
    "SystemCallErrorNumber=EPERM", "i", errno.EPERM,
    "A refused system call fails with EPERM instead of killing the process with SIGSYS, so "
    "programs that probe for a call fall back.",
    "Nothing to do.",
)
NATIVE_ABI = Hardening(
    "SystemCallArchitectures=native", "as", ["native"],
    "Only the native system call ABI: filters are per ABI, and the 32-bit and x32 entry points "
    "have a history of kernel bugs.",
    "`--profile relaxed` to run 32-bit binaries.",
)
LOCK_PERSONALITY = Hardening(
    "LockPersonality=yes", "b", True,
    "The execution domain (personality) cannot change.",
    "`--profile relaxed` (setarch, linux32).",
)
RESTRICT_REALTIME = Hardening(
    "RestrictRealtime=yes", "b", True,
    "No realtime scheduling: a SCHED_FIFO busy loop would starve the host whatever its CPUWeight.",
    "Nothing: no profile allows it.",
)
FAMILIES = Hardening(
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "(bas)",
    [True, ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]],
    "Only local, IP and netlink (address lookups) sockets: no packet, Bluetooth, vsock, CAN… "
    "and the kernel code behind them.",
    "`--profile relaxed`.",
)
# strict only
FAMILIES_UNIX = Hardening(
    "RestrictAddressFamilies=AF_UNIX", "(bas)", [True, ["AF_UNIX"]],
    "No IP sockets at all, not even on the private loopback; `--network` is refused.",
    "`--profile default` (with `--network` for the host's network).",
)
IP_DENY = Hardening(
    "IPAddressDeny=any", "a(iayu)",
    [[_AF_INET, bytes(4), 0], [_AF_INET6, bytes(16), 0]],  # lists: as above
    "A second lock on IP: systemd's BPF firewall drops every packet (where the host supports it).",
    "`--profile default`.",
)
PRIVATE_USERS = Hardening(
    "PrivateUsers=yes", "b", True,
    "A user namespace mapping only root and the job's UID: all other owners show as nobody, and "
    "whatever the kernel grants inside it stays inside.",
    "`--profile default`.",
)
NO_WX = Hardening(
    "MemoryDenyWriteExecute=yes", "b", True,
    "No memory both writable and executable: injected code cannot be run.",
    "`--profile default` for JIT runtimes (Java, Node.js, PyPy, LuaJIT).",
)
SYSCALLS_STRICT = Hardening(
    "SystemCallFilter=~@privileged @resources", "(bas)", [False, ["@privileged", "@resources"]],
    "Also no chown, setuid/setgroups, nice/setpriority, sched_setaffinity, set_mempolicy…",
    "`--profile default` (tar or cp -p keeping owners, nice, taskset).",
)

_BASE = (
    DYNAMIC_USER, NO_CAPABILITIES, NO_NEW_PRIVILEGES, RESTRICT_SUID_SGID, UMASK,
    PROTECT_SYSTEM, PROTECT_HOME, PRIVATE_SHM, PRIVATE_DEVICES,
    PROTECT_KERNEL_TUNABLES, PROTECT_KERNEL_MODULES, PROTECT_KERNEL_LOGS,
    PROTECT_CONTROL_GROUPS, PROTECT_CLOCK, PROTECT_HOSTNAME,
    PROTECT_PROC, PROC_SUBSET, PRIVATE_IPC, RESTRICT_NAMESPACES,
    SYSCALLS, SYSCALL_ERRNO, NATIVE_ABI, LOCK_PERSONALITY, RESTRICT_REALTIME,
)

STRICT = Profile(
    "strict",
    "default, plus no IP at all, a user namespace, no writable+executable memory and fewer "
    "system calls: for code you do not trust",
    (*_BASE, FAMILIES_UNIX, IP_DENY, PRIVATE_USERS, NO_WX, SYSCALLS_STRICT),
    network=False,
    shared_tmp=False,
)
DEFAULT_PROFILE = Profile(
    DEFAULT,
    "a dynamic UID, a read-only system, no home directories, no devices, no other processes, "
    "a system call filter: for builds, tests and scripts",
    (*_BASE, FAMILIES),
    network=True,
    shared_tmp=False,
)
RELAXED = Profile(
    "relaxed",
    "runs as the caller (root stays root) with only the protections no job needs to lose: "
    "for jobs that must administer the host",
    (PROTECT_KERNEL_MODULES, PROTECT_KERNEL_LOGS, PROTECT_HOSTNAME, RESTRICT_REALTIME),
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
        if (as_root or not h.root_only) and h is not PROTECT_HOME
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
    private_tmp = spec.private_tmp is not False
    for path in spec.writable:
        # (--workdir under /tmp is refused by Manager.start, which knows the caller.)
        if private_tmp and under(path, TMP_DIRS):
            raise InvalidArgument(
                f"--writable {path} is under /tmp or /var/tmp, which a job with a private /tmp "
                "does not see",
                f"use a directory elsewhere, or {RELAXED_HINT} --shared-tmp",
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
        return [(PROTECT_HOME.prop, PROTECT_HOME.signature, PROTECT_HOME.value)]
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
