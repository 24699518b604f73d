"""How a job ended — derived from systemd alone.

While the unit is loaded, D-Bus has it (Result, ExecMainCode, ExecMainStatus). A transient unit
that succeeded is unloaded at once, and nothing on D-Bus remembers it; PID 1's own records in the
system journal do (trusted `_PID=1`, keyed by `UNIT=`, which is unique per job since job IDs are
never reused). jobs run as Type=oneshot, for which systemd counts only exit status 0 as success,
so every other ending is logged at notice level with its exit code or signal (see unit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal as signals
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from . import cgroup as cgroups
from .model import REPORTED_BY_CLIENT, JobSpec, JobState, Outcome, Usage

# sd-messages.h
MSG_PROCESS_EXIT = "98e322203f7a4ed290d09fe03c09fe15"
MSG_UNIT_RESULT = "d9b373ed55a64feb8242e02dbe79a49c"
MSG_UNIT_SUCCESS = "7ad2d189f7e94e70a38c781354912448"
MSG_UNIT_STOPPED = "9d1aaa27d60140bd96365438aad20286"
MSG_UNIT_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"

CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3
EXIT_CODES = {"exited": CLD_EXITED, "killed": CLD_KILLED, "dumped": CLD_DUMPED}
UINT64_MAX = 2**64 - 1

# systemd's own exit statuses for a process that failed before exec (src/basic/exit-status.h).
_SETUP_STEPS = {
    200: "cannot change to the working directory",
    204: "out of memory while setting up the job",
    214: "cannot set up the job's scheduling",
    216: "cannot set up the job's groups",
    217: "the job's user does not exist",
    218: "cannot apply the job's capabilities",
    225: "cannot set up the job's network namespace",
    226: "cannot set up the job's file system namespace (ProtectSystem, PrivateTmp…)",
    228: "cannot apply the job's seccomp filter",
    233: "cannot set up the job's working/state directory",
}
EXIT_EXEC = 203

ACTIVE_STATES = ("active", "activating", "deactivating", "reloading", "refreshing")


def signal_name(n: int) -> str:
    try:
        return signals.Signals(n).name
    except ValueError:
        return f"SIG{n}"


def usec_to_datetime(value: Any) -> datetime | None:
    if not value or value == UINT64_MAX:
        return None
    return datetime.fromtimestamp(int(value) / 1e6, UTC)


def _u64(value: Any) -> int | None:
    if value is None or value == UINT64_MAX:
        return None
    return int(value)


def from_exit(
    spec: JobSpec,
    result: str,
    code: int,
    status: int,
    stopped: bool,
    finished_at: datetime | None,
    oom: bool = False,
) -> Outcome:
    """The outcome for systemd's Result and the main process's (si_code, si_status)."""
    exit_code: int | None = None
    sig: str | None = None
    reason: str | None = None
    if code == CLD_EXITED:
        exit_code = status
    elif code in (CLD_KILLED, CLD_DUMPED):
        sig = signal_name(status)
    if stopped:
        state = JobState.STOPPED
        reason = "stopped on request" + (f" ({sig})" if sig else "")
    elif result == "success" and exit_code == 0:
        state = JobState.SUCCEEDED
    else:
        state = JobState.FAILED
        if result == "timeout":
            reason = "timeout"  # --timeout (TimeoutStartSec=) ran out: SIGTERM, then SIGKILL
        elif result == "oom-kill" or oom:
            reason = "ran out of memory: killed by the kernel at MemoryMax"
        elif exit_code == EXIT_EXEC:
            exit_code = None
            reason = f"command not found or not executable: {spec.command[0]}"
        elif exit_code in _SETUP_STEPS:
            reason = f"{_SETUP_STEPS[exit_code]} (systemd exit status {exit_code})"
            exit_code = None
        elif sig:
            reason = f"killed by {sig}" + (" (core dumped)" if code == CLD_DUMPED else "")
        elif exit_code is not None:
            reason = f"exited with status {exit_code}"
        elif result == "exit-code" and spec.writable:
            # The command never ran: the check of its --writable paths failed (unit.py).
            reason = (
                "a --writable path does not exist, or the job's user cannot reach it: "
                + ", ".join(spec.writable)
            )
        else:
            reason = f"systemd result: {result}"
    return Outcome(state, result, exit_code, sig, reason, finished_at)


def reported(
    exit_code: int | None, signum: int | None, stopped: bool, finished_at: datetime
) -> Outcome:
    """A scope job's outcome as its client saw its process end (systemd keeps no exit status
    of a scope): marked reported by the client."""
    sig = signal_name(signum) if signum is not None else None
    reason: str | None
    if sig is not None:
        result, reason = "signal", f"killed by {sig}"
    else:
        result = "success" if exit_code == 0 else "exit-code"
        reason = None if exit_code == 0 else f"exited with status {exit_code}"
    if stopped:
        state, reason = JobState.STOPPED, "stopped on request" + (f" ({sig})" if sig else "")
    else:
        state = JobState.SUCCEEDED if exit_code == 0 else JobState.FAILED
    return Outcome(state, result, exit_code, sig, reason, finished_at,
                   reported_by=REPORTED_BY_CLIENT)  # fmt: skip


def unreported(stopped: bool, finished_at: datetime) -> Outcome:
    """A scope job that ended with no exit status reported: its client went away first."""
    reason = "exit status not reported: the jobrun client that started it went away first"
    if stopped:
        return Outcome(JobState.STOPPED, "unreported", None, None, "stopped on request; " + reason,
                       finished_at)  # fmt: skip
    return Outcome(JobState.FAILED, "unreported", None, None, reason, finished_at)


# The unit properties a job's status is made of (running, from_unit, unit_oom, usage, and the
# manager's record of the start); the rest of systemd's are not fetched.
STATUS_PROPERTIES = frozenset(
    {
        # org.freedesktop.systemd1.Unit
        "ActiveState",
        "Job",
        "LoadState",
        "InvocationID",
        "InactiveEnterTimestamp",
        "FreezerState",  # frozen by FreezeUnit (freezer.py)
        "InactiveExitTimestamp",
        # org.freedesktop.systemd1.Service
        "Result",
        "ExecMainCode",
        "ExecMainStatus",
        "ExecMainStartTimestamp",
        "ExecMainExitTimestamp",
        "ControlGroup",
        "CPUUsageNSec",
        "IOReadBytes",
        "IOWriteBytes",
        "MemoryCurrent",
        "TasksCurrent",
        "MemoryPeak",  # systemd 254 and later (accounting.py)
        "RuntimeMaxUSec",
    }
)


def running(props: Mapping[str, Any]) -> bool:
    """Whether a loaded unit runs, or is about to: right after StartTransientUnit the unit is
    still inactive, with its start job queued (its `Job` property, (id, path), has an id)."""
    if props.get("ActiveState") in ACTIVE_STATES:
        return True
    job = props.get("Job") or (0, "/")
    return props.get("ActiveState") == "inactive" and bool(job[0])


def from_unit(spec: JobSpec, props: Mapping[str, Any], stopped: bool, oom: bool) -> Outcome:
    """The outcome of a loaded unit, RUNNING while it is active (or about to be)."""
    if running(props):
        return Outcome(JobState.RUNNING)
    return from_exit(
        spec,
        str(props.get("Result", "")),
        int(props.get("ExecMainCode", 0)),
        int(props.get("ExecMainStatus", 0)),
        stopped,
        usec_to_datetime(props.get("ExecMainExitTimestamp"))
        or usec_to_datetime(props.get("InactiveEnterTimestamp")),
        oom,
    )


def message_id(record: Mapping[str, Any]) -> str:
    value = record.get("MESSAGE_ID")
    return value.hex if isinstance(value, uuid.UUID) else str(value or "")


def from_journal_records(spec: JobSpec, records: Sequence[Mapping[str, Any]], stopped: bool,
                         oom: bool) -> Outcome | None:  # fmt: skip
    """The outcome from PID 1's records of one run, or None if they hold no ending (yet)."""
    code, status, result = 0, 0, ""
    finished_at: datetime | None = None
    ended = False
    for r in records:
        mid = message_id(r)
        when = r.get("__REALTIME_TIMESTAMP")
        if mid == MSG_PROCESS_EXIT:
            code = EXIT_CODES.get(str(r.get("EXIT_CODE")), 0)
            with contextlib.suppress(TypeError, ValueError):
                status = int(r.get("EXIT_STATUS", 0))
        elif mid == MSG_UNIT_RESULT:
            result = str(r.get("UNIT_RESULT", ""))
            ended, finished_at = True, when
        elif mid == MSG_UNIT_SUCCESS:
            result = result or "success"
            ended, finished_at = True, when
        elif mid == MSG_UNIT_STOPPED:
            stopped = True
            ended, finished_at = True, finished_at or when
    if not ended:
        return None
    if result == "success" and code == 0:
        code, status = CLD_EXITED, 0
    return from_exit(spec, result, code, status, stopped, finished_at, oom)


def read_pid1_records(unit: str) -> tuple[list[dict[str, Any]], bool]:
    """PID 1's journal records about `unit`, and whether one says a stop job ran (blocking)."""
    from systemd import journal  # imported here: the CLI's start-up time matters

    from . import _sigbus

    _sigbus.install()  # journald truncates archived files under our mappings (see _sigbus.c)
    reader = journal.Reader()
    try:
        reader.add_match(_PID="1", UNIT=unit)
        records = [dict(e) for e in reader]
    finally:
        reader.close()
    stopped = any(message_id(r) == MSG_UNIT_STOPPED for r in records)
    return records, stopped


def kernel_oom_killed(unit: str) -> bool:
    """Whether the kernel log says the memory cgroup of `unit` ran out of memory.

    On cgroup v1 systemd 252 reports an OOM kill as Result=signal/SIGKILL (oom-kill needs v2's
    memory.events); the kernel still names the cgroup: "oom_memcg=/…/jobrun-ID.service".
    """
    needle = f"/{unit}".encode()
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                return False
            except OSError:  # EPIPE: records overwritten while reading; keep going
                continue
            if not rec:
                return False
            if b"oom_memcg=" in rec and needle in rec:
                return True
    finally:
        os.close(fd)


def unit_oom(unit: str, spec: JobSpec, props: Mapping[str, Any], stopped: bool) -> bool:
    """Whether the job of a loaded unit was killed for going over its --memory-max."""
    if stopped or spec.memory_max is None:
        return False
    if props.get("Result") == "oom-kill":
        return True
    return (
        props.get("ExecMainCode") == CLD_KILLED
        and props.get("ExecMainStatus") == 9
        and kernel_oom_killed(unit)
    )


# Seconds to wait for PID 1's records of a just-unloaded unit to reach the journal.
RECORD_WAIT = 3.0


async def from_journal(
    unit: str, spec: JobSpec, stop_requested: bool
) -> tuple[Outcome, Mapping[str, Any] | None]:
    """How the job of an unloaded `unit` ended, from PID 1's records, and PID 1's record of its
    start (None if there is none): the unit's InvocationID and start time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORD_WAIT
    while True:
        records, _ = await asyncio.to_thread(read_pid1_records, unit)
        starting = next((r for r in records if message_id(r) == MSG_UNIT_STARTING), None)
        killed9 = any(
            message_id(r) == MSG_PROCESS_EXIT and str(r.get("EXIT_STATUS")) == "9" for r in records
        )
        oom = (
            killed9
            and not stop_requested
            and spec.memory_max is not None
            and kernel_oom_killed(unit)
        )
        outcome = from_journal_records(spec, records, stop_requested, oom)
        if outcome is not None:
            return outcome, starting
        # PID 1's records of a unit unloaded a moment ago may not be in the journal yet.
        if loop.time() > deadline:
            if stop_requested and starting is None:
                # Stopped while its start job was still queued: it never ran.
                return Outcome(JobState.STOPPED, reason="stopped before it started"), None
            return Outcome(
                JobState.FAILED,
                reason="systemd has no record of how this job ended "
                "(the journal lost it, or the host went down while it ran)",
            ), starting
        await asyncio.sleep(0.02)


def usage(props: Mapping[str, Any]) -> Usage:
    """Counters of a running unit; where systemd has none (cgroup v1) read the kernel's."""
    cgroup = str(props.get("ControlGroup") or "")
    cpu_ns = _u64(props.get("CPUUsageNSec"))
    cpu = cpu_ns / 1e9 if cpu_ns is not None else None
    io_read, io_write = _u64(props.get("IOReadBytes")), _u64(props.get("IOWriteBytes"))
    if cgroup:
        if cpu is None:
            # cpu and cpuacct are separate v1 hierarchies here; the cgroup2 mirror still counts.
            v2 = cgroups.v2_dir(cgroup)
            cpu = cgroups.cpu_seconds(cgroups.read(v2 / "cpu.stat")) if v2 is not None else None
        if io_read is None or io_write is None:
            path = cgroups.ROOT / "blkio" / cgroup.lstrip("/")
            io_read, io_write = cgroups.io_v1(
                cgroups.read(path / "blkio.throttle.io_service_bytes_recursive")
            )
    return Usage(
        cpu_seconds=cpu,
        memory_bytes=_u64(props.get("MemoryCurrent")),
        tasks=_u64(props.get("TasksCurrent")),
        io_read_bytes=io_read,
        io_write_bytes=io_write,
    )
