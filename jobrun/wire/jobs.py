"""Jobs as JSON: what `--json` prints and what jobrund's D-Bus API carries (one schema for both).

Stable field names, ISO 8601 times, nulls; `job_from_dict` reads back exactly what `job_to_dict`
wrote, so a job that crossed the bus prints byte for byte as one read in-process.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from .. import accounting as acct
from ..model import Job, JobKind, JobSpec, JobState, Outcome, Usage, kind_of
from ..properties import SETTINGS, limits


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def job_to_dict(job: Job) -> dict[str, Any]:
    """The job as scripts see it (`--json`)."""
    o = job.outcome
    return {
        "id": job.id,
        "name": job.spec.name,
        "unit": job.unit,
        "kind": job.spec.kind.value,
        "terminal": job.spec.terminal,  # `run --pty`: its output went to a terminal
        "state": o.state.value,
        "exit_code": o.exit_code,
        "signal": o.signal,
        "result": o.result,
        "reason": o.reason,
        "reported_by": o.reported_by,
        "command": list(job.spec.command),
        "owner": job.owner,
        "uid": job.uid,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(o.finished_at),
        "invocation_id": job.invocation_id,
        "limits": limits(job.spec),
        "usage": dataclasses.asdict(job.usage) if job.usage and not o.state.finished else None,
        # Limits changed while it ran (`jobrun set`), by setting; "limits" stays what was asked.
        "live_limits": dict(job.live_limits),
        # What the whole run used, kept after it ended (accounting.py); null: not measured, or
        # not ended yet (a running job's is its "usage", as it changes).
        "accounting": (
            acct.to_dict(job.accounting) if job.accounting and o.state.finished else None
        ),
        "schedule": job.schedule,
        "attempt": job.attempt,
        "attempts": list(job.attempts),
    }


def spec_from_limits(
    command: list[str], name: str | None, values: dict[str, Any], kind: str = JobKind.SERVICE
) -> JobSpec:
    """The JobSpec whose `limits` are `values` (settings by field name, lists for repeated ones);
    values a front end reports are not parsed again."""
    fields = {s.field for s in SETTINGS}
    settings: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields
    }
    return JobSpec(command=tuple(command), name=name, kind=kind_of(kind), **settings)


def job_from_dict(d: dict[str, Any]) -> Job:
    """The Job of a `job_to_dict` dict."""
    usage = d.get("usage")
    created = _time(d["created_at"])
    assert created is not None  # every job has one
    return Job(
        id=d["id"],
        spec=spec_from_limits(
            d["command"], d["name"], d["limits"] or {}, d.get("kind") or JobKind.SERVICE
        ).replace(terminal=bool(d.get("terminal"))),
        owner=d["owner"],
        uid=d["uid"],
        created_at=created,
        invocation_id=d["invocation_id"],
        started_at=_time(d["started_at"]),
        outcome=Outcome(
            state=JobState(d["state"]),
            result=d["result"],
            exit_code=d["exit_code"],
            signal=d["signal"],
            reason=d["reason"],
            finished_at=_time(d["finished_at"]),
            reported_by=d.get("reported_by"),
        ),
        usage=Usage(**usage) if usage else None,
        live_limits=dict(d.get("live_limits") or {}),
        accounting=acct.from_dict(d["accounting"]) if d.get("accounting") else None,
        schedule=d.get("schedule"),
        attempt=d.get("attempt", 1),
        attempts=tuple(d.get("attempts", ())),
    )


def job_json(job: Job, indent: int | None = None) -> str:
    return json.dumps(job_to_dict(job), indent=indent)


def jobs_json(jobs: list[Job], indent: int | None = None) -> str:
    return json.dumps([job_to_dict(j) for j in jobs], indent=indent)


def job_from_json(text: str) -> Job:
    return job_from_dict(json.loads(text))


def jobs_from_json(text: str) -> list[Job]:
    return [job_from_dict(d) for d in json.loads(text)]
