"""jobrun.v1's messages to and from jobrun's own values, for the server (remote.py) and the
client (remote_client.py): the job dicts every front end prints (model.job_to_dict) and journal
Records. Kept apart from the server so that the CLI does not import the manager to read replies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from .journal import LineBreak, Record
from .properties import SETTINGS
from .v1 import jobrun_pb2 as pb

SERVICE = "jobrun.v1.Jobs"
ERROR_KEY = "jobrun-error"  # trailing metadata: the error's class, by its D-Bus-style name
_STATES = {"running": pb.JOB_STATE_RUNNING, "succeeded": pb.JOB_STATE_SUCCEEDED,
           "failed": pb.JOB_STATE_FAILED, "stopped": pb.JOB_STATE_STOPPED}  # fmt: skip
_STATE_NAMES = {v: k for k, v in _STATES.items()}
_BREAKS = list(LineBreak)  # wire value = index + 1 (0 is UNSPECIFIED)
_USAGE = ("cpu_seconds", "memory_bytes", "tasks", "io_read_bytes", "io_write_bytes")


def _timestamp(iso: str | None) -> Timestamp | None:
    if iso is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(iso).astimezone(UTC))
    return ts


def _iso(msg: Any, field: str) -> str | None:
    if not msg.HasField(field):
        return None
    ts: Timestamp = getattr(msg, field)
    return ts.ToDatetime(tzinfo=UTC).isoformat()


def options_to_proto(values: dict[str, Any]) -> pb.JobOptions:
    """Settings by field name (parsed values, as in a JobSpec or model's `limits`)."""
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
        if s.field == "cpu_affinity" or s.repeat:
            if value:
                out[s.field] = list(value)
        elif opts.HasField(s.field):
            out[s.field] = value
    return out


def proto_job(d: dict[str, Any]) -> pb.Job:
    job = pb.Job(
        id=d["id"],
        unit=d["unit"],
        state=_STATES[d["state"]],
        command=d["command"],
        owner=d["owner"],
        uid=d["uid"],
        limits=options_to_proto(d["limits"]),
    )
    for key in ("name", "exit_code", "signal", "result", "reason", "invocation_id"):
        if d[key] is not None:
            setattr(job, key, d[key])
    for key in ("created_at", "started_at", "finished_at"):
        ts = _timestamp(d[key])
        if ts is not None:
            getattr(job, key).CopyFrom(ts)
    if d["usage"] is not None:
        usage = {k: v for k, v in d["usage"].items() if v is not None}
        job.usage.CopyFrom(pb.Usage(**usage))
    return job


def job_from_proto(job: pb.Job) -> dict[str, Any]:
    """The dict model.job_to_dict gives for the same job (same keys, order and values)."""

    def opt(field: str) -> Any:
        return getattr(job, field) if job.HasField(field) else None

    usage = None
    if job.HasField("usage"):
        usage = {k: getattr(job.usage, k) if job.usage.HasField(k) else None for k in _USAGE}
    return {
        "id": job.id,
        "name": opt("name"),
        "unit": job.unit,
        "state": _STATE_NAMES.get(job.state, "failed"),
        "exit_code": opt("exit_code"),
        "signal": opt("signal"),
        "result": opt("result"),
        "reason": opt("reason"),
        "command": list(job.command),
        "owner": job.owner,
        "uid": job.uid,
        "created_at": _iso(job, "created_at"),
        "started_at": _iso(job, "started_at"),
        "finished_at": _iso(job, "finished_at"),
        "invocation_id": opt("invocation_id"),
        "limits": options_from_proto(job.limits),
        "usage": usage,
    }


def proto_record(rec: Record) -> pb.Record:
    line_break: Any = _BREAKS.index(rec.line_break) + 1
    out = pb.Record(cursor=rec.cursor, message=rec.message, line_break=line_break)
    out.timestamp.FromDatetime(rec.timestamp)
    return out


def record_from_proto(rec: pb.Record) -> Record:
    index = rec.line_break - 1
    line_break = _BREAKS[index] if 0 <= index < len(_BREAKS) else LineBreak.NEWLINE
    return Record(rec.timestamp.ToDatetime(tzinfo=UTC), rec.cursor, rec.message, line_break)
