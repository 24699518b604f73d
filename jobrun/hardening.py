"""The sandboxing properties profiles are made of: one `Hardening` row each.

A row is the unit-file assignment, its D-Bus signature and value, why it is there, and what a user
does when a job needs what it takes away. profiles.py groups the rows into named profiles, and
docs/ISOLATION.md shows the `why` and `instead` of each (`profiles.markdown_table`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbus_fast import Variant  # imported where used: the CLI's start-up time matters

# socket.AF_INET and AF_INET6 on Linux, without importing socket (the CLI's start-up time).
_AF_INET, _AF_INET6 = 2, 10


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
# fmt: on
