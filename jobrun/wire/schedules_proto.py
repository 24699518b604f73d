"""Schedules (schedule.py) to and from jobrun.v1's messages, for the gRPC service and its client;
a schedule converted to a message and back prints as it did (wire/schedules.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidArgument
from ..properties import limits
from ..schedule import Event, Schedule, check_calendar, parse_in
from ..v1 import jobrun_pb2 as pb
from .jobs import spec_from_limits
from .proto import options_from_proto, options_to_proto


def _time(msg: Any, field: str) -> datetime | None:
    return getattr(msg, field).ToDatetime(tzinfo=UTC) if msg.HasField(field) else None


def _event_to_proto(e: Event) -> pb.ScheduleEvent:
    msg = pb.ScheduleEvent(kind=e.kind, count=e.count)
    msg.at.FromDatetime(e.at.astimezone(UTC))
    if e.until is not None:
        msg.until.FromDatetime(e.until.astimezone(UTC))
    if e.job is not None:
        msg.job = e.job
    if e.note is not None:
        msg.note = e.note
    return msg


def _event_from_proto(msg: pb.ScheduleEvent) -> Event:
    def opt(field: str) -> Any:
        return getattr(msg, field) if msg.HasField(field) else None

    return Event(_time(msg, "at") or datetime.fromtimestamp(0, UTC), msg.kind, opt("job"),
                 msg.count, _time(msg, "until"), opt("note"))  # fmt: skip


def schedule_to_proto(s: Schedule) -> pb.Schedule:
    msg = pb.Schedule(
        id=s.id, timer=s.timer, calendar=s.calendar, once=s.once, catch_up=s.catch_up,
        command=s.spec.command, owner=s.owner, uid=s.uid, limits=options_to_proto(limits(s.spec)),
        events=[_event_to_proto(e) for e in s.events],
    )  # fmt: skip
    if s.spec.name is not None:
        msg.name = s.spec.name
    msg.created_at.FromDatetime(s.created_at.astimezone(UTC))
    if s.next_run is not None:
        msg.next_run.FromDatetime(s.next_run.astimezone(UTC))
    if s.last_run is not None:
        msg.last_run.CopyFrom(_event_to_proto(s.last_run))
    return msg


def schedule_from_proto(msg: pb.Schedule) -> Schedule:
    name = msg.name if msg.HasField("name") else None
    return Schedule(
        id=msg.id,
        spec=spec_from_limits(list(msg.command), name, options_from_proto(msg.limits)),
        owner=msg.owner,
        uid=msg.uid,
        calendar=msg.calendar,
        once=msg.once,
        catch_up=msg.catch_up,
        created_at=_time(msg, "created_at") or datetime.fromtimestamp(0, UTC),
        next_run=_time(msg, "next_run"),
        last_run=_event_from_proto(msg.last_run) if msg.HasField("last_run") else None,
        events=tuple(_event_from_proto(e) for e in msg.events),
    )


def when_to_proto(req: pb.ScheduleRequest, when: dict[str, Any]) -> None:
    """The client's side: `when` as the CLI has it (see Backend.schedule) into the request."""
    if when.get("at") is not None:
        req.at.FromDatetime(when["at"].astimezone(UTC))
    elif when.get("in") is not None:
        req.in_seconds = float(when["in"])
    elif when.get("every") is not None:
        req.every = str(when["every"])
    req.catch_up = bool(when.get("catch_up"))


def when_from_proto(req: pb.ScheduleRequest) -> dict[str, Any]:
    """jobrund's side: keyword arguments of Scheduler.create (calendar, at, catch_up)."""
    which = req.WhichOneof("when")
    out: dict[str, Any] = {"catch_up": req.catch_up}
    if which == "every":
        out["calendar"] = check_calendar(req.every)
    elif which == "in_seconds":
        seconds = parse_in(req.in_seconds)
        out["at"] = datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds, UTC)
    elif which == "at":
        try:
            out["at"] = req.at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError) as e:
            raise InvalidArgument(f"`at` is not a time: {e}") from None
    else:
        raise InvalidArgument("a schedule needs one of at, in_seconds and every")
    return out
