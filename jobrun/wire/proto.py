"""jobrun.v1's messages to and from jobrun's own values (Job, Record, settings), for the gRPC
service (daemon/grpc.py) and its client (client/remote.py). A job converted to a message and
back prints as the job did (wire/jobs.py), so `jobrun --remote … status` prints what `jobrun
status` prints on the host.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ..journal import Record
from ..model import Accounting, Job, JobKind, JobState, Outcome, Usage, kind_of
from ..properties import SETTINGS, limits
from ..queuestore import Group
from ..v1 import jobrun_pb2 as pb
from .jobs import spec_from_limits
from .logs import LINE_BREAK_CODES, LINE_BREAKS

SERVICE = "jobrun.v1.Jobs"
ERROR_KEY = "jobrun-error"  # trailing metadata: the error's class, by its D-Bus-style name
_STATES = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.STOPPED: pb.JOB_STATE_STOPPED,
    JobState.PAUSED: pb.JOB_STATE_PAUSED,
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
}
_STATE_OF = {v: k for k, v in _STATES.items()}
_USAGE = tuple(f.name for f in dataclasses.fields(Usage))
_ACCOUNTING = tuple(f.name for f in dataclasses.fields(Accounting) if f.name != "sampled_at")


def _timestamp(dt: datetime | None) -> Timestamp | None:
    if dt is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(dt.astimezone(UTC))
    return ts


def _time(msg: Any, field: str) -> datetime | None:
    if not msg.HasField(field):
        return None
    ts: Timestamp = getattr(msg, field)
    return ts.ToDatetime(tzinfo=UTC)


def options_to_proto(values: dict[str, Any]) -> pb.JobOptions:
    """Settings by field name (parsed values, as in a JobSpec or a job's `limits`)."""
    opts = pb.JobOptions()
    for s in SETTINGS:
        value = values.get(s.field)
        if value is None or value == () or value == []:
            continue
        if isinstance(value, list | tuple):
            getattr(opts, s.field).extend(value)
        else:
            setattr(opts, s.field, value)
    return opts


def options_from_proto(opts: pb.JobOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in SETTINGS:
        value = getattr(opts, s.field)
        if s.is_list:
            if value:
                out[s.field] = list(value)
        elif opts.HasField(s.field):
            out[s.field] = value
    return out


def job_to_proto(job: Job) -> pb.Job:
    o = job.outcome
    msg = pb.Job(
        id=job.id,
        unit=job.unit,
        state=_STATES[o.state],
        command=job.spec.command,
        owner=job.owner,
        uid=job.uid,
        limits=options_to_proto(limits(job.spec)),
        terminal=job.spec.terminal,
        attempt=job.attempt,
        attempts=job.attempts,
    )
    optional = {
        "name": job.spec.name,
        "exit_code": o.exit_code,
        "signal": o.signal,
        "result": o.result,
        "reason": o.reason,
        "invocation_id": job.invocation_id,
        "kind": None if job.spec.kind == JobKind.SERVICE else job.spec.kind.value,
        "reported_by": o.reported_by,
        "schedule": job.schedule,
    }
    for key, value in optional.items():
        if value is not None:
            setattr(msg, key, value)
    times = {
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": o.finished_at,
    }
    for key, dt in times.items():
        ts = _timestamp(dt)
        if ts is not None:
            getattr(msg, key).CopyFrom(ts)
    if job.usage is not None and not o.state.finished:  # as `--json` shows it
        usage = {k: v for k, v in dataclasses.asdict(job.usage).items() if v is not None}
        msg.usage.CopyFrom(pb.Usage(**usage))
    if job.live_limits:
        msg.live_limits.CopyFrom(options_to_proto(job.live_limits))
    a = job.accounting if o.state.finished else None  # as `--json` shows it
    if a is not None:
        values = {k: getattr(a, k) for k in _ACCOUNTING if getattr(a, k) is not None}
        msg.accounting.CopyFrom(pb.Accounting(**values))
        ts = _timestamp(a.sampled_at)
        if ts is not None:
            msg.accounting.sampled_at.CopyFrom(ts)
    return msg


def job_from_proto(msg: pb.Job) -> Job:
    def opt(field: str) -> Any:
        return getattr(msg, field) if msg.HasField(field) else None

    usage = None
    if msg.HasField("usage"):
        usage = Usage(**{k: getattr(msg.usage, k) if msg.usage.HasField(k) else None
                         for k in _USAGE})  # fmt: skip
    accounting = None
    if msg.HasField("accounting"):
        a = msg.accounting
        accounting = Accounting(
            **{k: getattr(a, k) if a.HasField(k) else None for k in _ACCOUNTING},
            sampled_at=_time(a, "sampled_at"),
        )
    return Job(
        id=msg.id,
        spec=spec_from_limits(
            list(msg.command), opt("name"), options_from_proto(msg.limits), kind_of(opt("kind"))
        ).replace(terminal=msg.terminal),
        owner=msg.owner,
        uid=msg.uid,
        created_at=_time(msg, "created_at") or datetime.fromtimestamp(0, UTC),
        invocation_id=opt("invocation_id"),
        started_at=_time(msg, "started_at"),
        outcome=Outcome(
            state=_STATE_OF.get(msg.state, JobState.FAILED),
            result=opt("result"),
            exit_code=opt("exit_code"),
            signal=opt("signal"),
            reason=opt("reason"),
            finished_at=_time(msg, "finished_at"),
            reported_by=opt("reported_by"),
        ),
        usage=usage,
        live_limits=options_from_proto(msg.live_limits),
        accounting=accounting,
        schedule=opt("schedule"),
        attempt=msg.attempt or 1,
        attempts=tuple(msg.attempts),
    )


def group_to_proto(group: Group) -> pb.Group:
    msg = pb.Group(name=group.name, owner=group.owner, paused=group.paused, limits=group.limits,
                   queued=group.queued, running=group.running)  # fmt: skip
    if group.parallel is not None:
        msg.parallel = group.parallel
    return msg


def group_from_proto(msg: pb.Group) -> Group:
    parallel = msg.parallel if msg.HasField("parallel") else None
    return Group(msg.owner, msg.name, parallel, msg.paused, dict(msg.limits), msg.queued,
                 msg.running)  # fmt: skip


def record_to_proto(rec: Record) -> pb.Record:
    line_break: Any = LINE_BREAK_CODES[rec.line_break] + 1
    out = pb.Record(cursor=rec.cursor, message=rec.message, line_break=line_break)
    out.timestamp.FromDatetime(rec.timestamp)
    return out


def record_from_proto(rec: pb.Record) -> Record:
    code = rec.line_break - 1
    line_break = LINE_BREAKS[code] if 0 <= code < len(LINE_BREAKS) else LINE_BREAKS[0]
    return Record(rec.timestamp.ToDatetime(tzinfo=UTC), rec.cursor, rec.message, line_break)
