"""Values that travel along jobrun's data path: what to run (JobSpec) and what it became (Job)."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import string
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

UNIT_PREFIX = "jobrun-"
SLICE = "jobrun.slice"
REMOTE_SLICE = "jobrun-remote.slice"  # remote jobs with a DynamicUser= (no local uid)
LOG_NAMESPACE = "jobrun"
JOB_FIELD = "JOBRUN_JOB"  # journal field naming a job's records (LogExtraFields=)

# IDs: 10 characters of [0-9a-z] (~51 bits), safe in unit names and journal fields.
ID_ALPHABET = string.digits + string.ascii_lowercase
ID_LENGTH = 10


def new_job_id() -> str:
    import secrets  # here: it loads OpenSSL (hashlib), which `status` and `--version` never need

    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def is_valid_id_prefix(text: str) -> bool:
    return 0 < len(text) <= ID_LENGTH and all(c in ID_ALPHABET for c in text)


def user_slice(uid: int | None) -> str:
    """The slice of a user's jobs, under jobrun.slice (a dash in a slice's name is a level):
    one per uid, so that each user's jobs share CPU, memory and tasks as one (None: remote
    jobs with a DynamicUser=, which share one)."""
    return REMOTE_SLICE if uid is None or uid < 0 else f"jobrun-u{uid}.slice"


class JobKind(enum.StrEnum):
    """What systemd runs a job as. A service is started by systemd (output in the journal); a
    scope holds a process its caller started (`jobrun run --scope`: the caller's terminal),
    which systemd only accounts and limits (docs/DESIGN.md)."""

    SERVICE = "service"
    SCOPE = "scope"


def kind_of(text: str | None) -> JobKind:
    """A job's kind as a record or the wire spells it; unset or unknown (a newer version's):
    a service."""
    try:
        return JobKind(text or JobKind.SERVICE)
    except ValueError:
        return JobKind.SERVICE


def unit_name(job_id: str, kind: str = JobKind.SERVICE) -> str:
    return f"{UNIT_PREFIX}{job_id}.{kind}"


def group_slice(owner_slice: str, group: str) -> str:
    """The slice of a user's group, under the slice of the user's jobs (user_slice), so the
    user's own limits still hold for all of their jobs and a group can only divide the user's
    share (a dash is a level: jobrun-u1000-g-build.slice is in jobrun-u1000-g.slice, in
    jobrun-u1000.slice)."""
    return owner_slice.removesuffix(".slice") + f"-g-{group}.slice"


QUEUE_FIELDS = ("group", "priority", "after", "after_any", "retry", "retry_delay", "retry_backoff")


def queued(spec: JobSpec) -> bool:
    """Whether the job goes through jobrund's queue (dispatch.py), not straight to systemd."""
    return bool(spec.group or spec.after or spec.retry)


class JobState(enum.StrEnum):
    QUEUED = "queued"  # waiting in jobrund's queue (group slot, dependencies, retry delay)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    PAUSED = "paused"  # running, its processes frozen (jobrun pause)

    @property
    def finished(self) -> bool:
        return self not in (JobState.RUNNING, JobState.PAUSED, JobState.QUEUED)


@dataclass(frozen=True)
class JobSpec:
    """What to run and with which limits. Fields set to None were not given by the user."""

    command: tuple[str, ...]
    name: str | None = None
    cpu_weight: int | None = None
    memory_high: int | None = None
    memory_max: int | None = None
    io_weight: int | None = None
    tasks_max: int | None = None
    cpu_quota: int | None = None  # percent of one CPU
    network: bool | None = None
    private_tmp: bool | None = None
    env: tuple[str, ...] = ()
    workdir: str | None = None
    stop_timeout: float | None = None
    cpu_affinity: tuple[int, ...] | None = None
    profile: str | None = None  # isolation profile (profiles.py); None: the default one
    writable: tuple[str, ...] = ()  # paths the job may write despite ProtectSystem=strict
    kind: JobKind = JobKind.SERVICE
    terminal: bool = False  # `run --pty`: its stdio was its caller's pseudo-terminal (pty.py)
    timeout: float | None = None  # seconds the job may run (TimeoutStartSec= of a oneshot)
    # jobrund's queue (dispatch.py): none of these is a unit property.
    group: str | None = None  # the caller's group (queue) the job waits in and runs in
    priority: int | None = None  # higher first within a group's queue (default 0)
    after: tuple[str, ...] = ()  # job IDs that must have ended first
    after_any: bool | None = None  # start once `after` ended whatever the result
    retry: int | None = None  # further attempts after a failure
    retry_delay: float | None = None  # seconds before the next attempt (default 0)
    retry_backoff: bool | None = None  # double the delay at each attempt

    def replace(self, **changes: Any) -> JobSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Usage:
    """Resource use of a running job; None where this host cannot tell."""

    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    tasks: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None


@dataclass(frozen=True)
class Accounting:
    """What a job used over its whole run, kept after it ended (like `sacct`); None where this
    host cannot tell (accounting.py says what each field is, per cgroup version). Peaks and
    counters are the kernel's, as of `sampled_at`: the last reading before the cgroup was gone."""

    cpu_seconds: float | None = None
    memory_peak_bytes: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    tasks_peak: int | None = None
    sampled_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as systemd recorded it."""

    state: JobState
    result: str | None = None  # systemd's Result=, e.g. "success", "exit-code", "signal"
    exit_code: int | None = None
    signal: str | None = None
    reason: str | None = None  # a sentence for humans, e.g. "command not found: foo"
    finished_at: datetime | None = None
    # Who says so: None for systemd; "client" for a scope's exit status, which only the
    # process that waited for it saw (Manager.report_exit).
    reported_by: str | None = None


REPORTED_BY_CLIENT = "client"


@dataclass(frozen=True)
class Job:
    id: str
    spec: JobSpec
    owner: str
    uid: int
    created_at: datetime
    invocation_id: str | None = None
    started_at: datetime | None = None
    outcome: Outcome = field(default_factory=lambda: Outcome(JobState.RUNNING))
    usage: Usage | None = None
    # Limits changed while it ran (`jobrun set`), by setting field: the spec keeps what was asked.
    live_limits: dict[str, Any] = field(default_factory=dict)
    accounting: Accounting | None = None
    schedule: str | None = None  # the schedule (schedule.py) whose firing started it
    attempt: int = 1  # which attempt of a --retry job this is (each attempt is a job)
    attempts: tuple[str, ...] = ()  # IDs of all attempts, in order, once retried

    @property
    def unit(self) -> str:
        return unit_name(self.id, self.spec.kind)

    @property
    def state(self) -> JobState:
        return self.outcome.state


async def flatten(batches: AsyncGenerator[list[T], None]) -> AsyncGenerator[T, None]:
    """The items of a generator of lists, one by one (the log readers read in batches, some
    callers want records); the source is closed with the result, even when left early."""
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for item in batch:
                yield item
