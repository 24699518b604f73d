"""Schedules as JSON (`schedule list --json`, jobrund's D-Bus replies) and the D-Bus options that
say when a schedule fires, both ways."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..model import JobSpec
from ..properties import limits
from ..schedule import Event, Schedule, check_calendar, parse_in
from .jobs import spec_from_limits

if TYPE_CHECKING:
    from dbus_fast import Variant

# Schedule's options besides Start's, and their D-Bus types: one of at_usec (a time, µs since the
# epoch), in_seconds (from now, as jobrund's clock has it) and every (an OnCalendar= expression).
SCHEDULE_OPTIONS = {"at_usec": "x", "in_seconds": "d", "every": "s", "catch_up": "b"}
MAX_USEC = 253402300799999999


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _event_dict(e: Event) -> dict[str, Any]:
    return {"at": _iso(e.at), "kind": e.kind, "job": e.job, "count": e.count,
            "until": _iso(e.until), "note": e.note}  # fmt: skip


def _event(d: dict[str, Any]) -> Event:
    return Event(_time(d["at"]) or datetime.now(UTC), d["kind"], d.get("job"), d.get("count", 1),
                 _time(d.get("until")), d.get("note"))  # fmt: skip


def schedule_to_dict(s: Schedule) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.spec.name,
        "timer": s.timer,
        "calendar": s.calendar,
        "once": s.once,
        "catch_up": s.catch_up,
        "command": list(s.spec.command),
        "owner": s.owner,
        "uid": s.uid,
        "created_at": _iso(s.created_at),
        "next_run": _iso(s.next_run),
        "last_run": _event_dict(s.last_run) if s.last_run else None,
        "events": [_event_dict(e) for e in s.events],
        "limits": limits(s.spec),
    }


def schedule_from_dict(d: dict[str, Any]) -> Schedule:
    spec: JobSpec = spec_from_limits(d["command"], d["name"], d["limits"] or {})
    return Schedule(
        id=d["id"],
        spec=spec,
        owner=d["owner"],
        uid=d["uid"],
        calendar=d["calendar"],
        once=d["once"],
        catch_up=d["catch_up"],
        created_at=_time(d["created_at"]) or datetime.now(UTC),
        next_run=_time(d["next_run"]),
        last_run=_event(d["last_run"]) if d.get("last_run") else None,
        events=tuple(_event(e) for e in d.get("events", [])),
    )


def schedule_json(s: Schedule, indent: int | None = None) -> str:
    return json.dumps(schedule_to_dict(s), indent=indent)


def schedules_json(items: list[Schedule], indent: int | None = None) -> str:
    return json.dumps([schedule_to_dict(s) for s in items], indent=indent)


def schedule_from_json(text: str) -> Schedule:
    return schedule_from_dict(json.loads(text))


def schedules_from_json(text: str) -> list[Schedule]:
    return [schedule_from_dict(d) for d in json.loads(text)]


# -- D-Bus options ----------------------------------------------------------------------------


def when_options(when: dict[str, Any]) -> dict[str, Variant]:
    """The client's side: `when` as the CLI has it (at: datetime, in: seconds, every: text,
    catch_up: bool)."""
    from dbus_fast import Variant

    out: dict[str, Variant] = {}
    if when.get("at") is not None:
        out["at_usec"] = Variant("x", int(when["at"].timestamp() * 1_000_000))
    if when.get("in") is not None:
        out["in_seconds"] = Variant("d", float(when["in"]))
    if when.get("every") is not None:
        out["every"] = Variant("s", str(when["every"]))
    if when.get("catch_up"):
        out["catch_up"] = Variant("b", True)
    return out


def pop_when(options: Any) -> dict[str, Any]:
    """jobrund's side: Schedule's when-options, removed from `options` (the rest are Start's),
    checked: keyword arguments of Scheduler.create (calendar, at, catch_up)."""
    from dbus_fast import Variant

    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidArgument("Schedule options must be a dictionary")
    values: dict[str, Any] = {}
    for key, want in SCHEDULE_OPTIONS.items():
        if key not in options:
            continue
        raw = options.pop(key)
        sig, value = (raw.signature, raw.value) if isinstance(raw, Variant) else (None, raw)
        kind = {"x": int, "d": float, "s": str, "b": bool}[want]
        if (
            (sig is not None and sig != want)
            or not isinstance(value, kind)
            or (kind is not bool and isinstance(value, bool))
        ):
            raise InvalidArgument(f"Schedule option {key} takes type {want}")
        values[key] = value
    given = [k for k in ("at_usec", "in_seconds", "every") if k in values]
    if len(given) != 1:
        raise InvalidArgument("a schedule needs exactly one of --at, --in and --every")
    out: dict[str, Any] = {"catch_up": bool(values.get("catch_up", False))}
    if "every" in values:
        out["calendar"] = check_calendar(values["every"])
    elif "in_seconds" in values:
        seconds = parse_in(values["in_seconds"])
        out["at"] = datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds, UTC)
    else:
        usec = values["at_usec"]
        if not 0 <= usec <= MAX_USEC:
            raise InvalidArgument(f"at_usec must be from 0 to {MAX_USEC}")
        out["at"] = datetime.fromtimestamp(usec / 1_000_000, UTC)
    return out
