"""Schedules on the command line: `start --at/--in/--every` and `jobrun schedule list/show/rm`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..errors import JobrunError
from . import common
from .app import app
from .common import err, fail, run_async

if TYPE_CHECKING:
    from ..schedule import Event, Schedule

schedule_app = typer.Typer(
    help="Jobs that start later or again and again (systemd timers): list, show, remove.",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")

_WHEN = {
    "at": typer.Option(None, "--at", metavar="TIME",
                       help="Start it once at TIME (2026-12-24T18:00, local unless it says "
                       "+HH:MM; or HH:MM, the next one); prints the schedule's ID"),
    "in_": typer.Option(None, "--in", metavar="DURATION",
                        help="Start it once after DURATION (90s, 10m, 2h, 1d)"),
    "every": typer.Option(None, "--every", metavar="CALENDAR",
                          help="Start it at each time of CALENDAR, systemd's OnCalendar= syntax "
                          "('hourly', '*-*-* 02:00:00', 'Mon..Fri 9:00')"),
    "catch_up": typer.Option(False, "--catch-up",
                             help="After the host was down at a firing time, run one missed "
                             "firing when jobrund starts (as Persistent=)"),
}  # fmt: skip


def with_schedule_options(fn: Callable[..., None]) -> Callable[..., None]:
    """`start`'s options of when (after the settings' ones, before the command)."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    extra = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=option,
            annotation=bool if name == "catch_up" else Optional[str],  # noqa: UP045
        )
        for name, option in _WHEN.items()
    ]
    fn.__signature__ = sig.replace(parameters=params[:-1] + extra + params[-1:])  # type: ignore[attr-defined]
    return fn


def pop_when(values: dict[str, Any]) -> dict[str, Any] | None:
    """The schedule asked for by `start`'s options (removed from `values`), checked here; None
    for a job to start now."""
    from ..schedule import check_calendar, parse_at, parse_in

    at, in_, every = values.pop("at", None), values.pop("in_", None), values.pop("every", None)
    catch_up = bool(values.pop("catch_up", False))
    given = [n for n, v in (("--at", at), ("--in", in_), ("--every", every)) if v is not None]
    try:
        if len(given) > 1:
            from ..errors import InvalidArgument

            raise InvalidArgument(f"{' and '.join(given)} exclude each other", "give one of them")
        if not given:
            if catch_up:
                from ..errors import InvalidArgument

                raise InvalidArgument("--catch-up is for schedules", "add --every CALENDAR")
            return None
        return {
            "at": parse_at(at) if at is not None else None,
            "in": parse_in(in_) if in_ is not None else None,
            "every": check_calendar(every) if every is not None else None,
            "catch_up": catch_up,
        }
    except JobrunError as e:
        fail(e)


def start_scheduled(command: list[str], name: str | None, options: dict[str, Any],
                    when: dict[str, Any]) -> None:  # fmt: skip
    async def go() -> Schedule:
        b = await common.open_backend()
        try:
            return await b.schedule(command, name, options, when)
        finally:
            await b.close()

    sched = run_async(go)
    print(sched.id)
    nxt = f", next run {_time(sched.next_run)}" if sched.next_run else ""
    err(f"jobrun: schedule {sched.id} ({sched.timer}): {_when(sched)}{nxt}")


def _time(dt: datetime | None) -> str:
    return dt.astimezone().isoformat(timespec="seconds") if dt else "-"


def _when(s: Schedule) -> str:
    return f"once at {s.calendar}" if s.once else f"every {s.calendar}"


def _last(s: Schedule) -> str:
    return f"{_time(s.last_run.at)} {s.last_run.job}" if s.last_run else "-"


def _event(e: Event) -> str:
    what = {"run": f"run {e.job}", "skipped": "skipped", "failed": "failed",
            "missed": f"missed {e.count}"}.get(e.kind, e.kind)  # fmt: skip
    until = f" … {_time(e.until)}" if e.until and e.count > 1 else ""
    note = f" ({e.note})" if e.note and e.kind != "run" else ""
    return f"{_time(e.at)}{until}  {what}{note}"


def _id_argument() -> Any:
    return typer.Argument(..., metavar="SID", help="Schedule ID or a unique prefix of it")


_JSON = typer.Option(False, "--json", help="Print JSON for scripts")


@schedule_app.command("list")
def list_(as_json: bool = _JSON) -> None:
    """Your schedules (an admin's: everyone's), with their last and next run."""

    async def go() -> list[Schedule]:
        b = await common.open_backend()
        try:
            return await b.schedules()
        finally:
            await b.close()

    items = run_async(go)
    if as_json:
        from ..wire.schedules import schedules_json

        print(schedules_json(items, indent=2))
        return
    from ..render import fit, terminal_width

    rows = [("ID", "WHEN", "NEXT", "LAST RUN", "OWNER", "COMMAND")]
    for s in items:
        rows.append((s.id, _when(s), _time(s.next_run), _last(s), s.owner,
                     " ".join(s.spec.command)))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        head = "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True))
        print(head + "  " + fit(r[5], max(10, terminal_width() - len(head) - 2)))


@schedule_app.command()
def show(schedule_id: str = _id_argument(), as_json: bool = _JSON) -> None:
    """A schedule: when it fires, its runs, and the firings skipped, failed or missed."""

    async def go() -> Schedule:
        b = await common.open_backend()
        try:
            return await b.show_schedule(schedule_id)
        finally:
            await b.close()

    s = run_async(go)
    if as_json:
        from ..wire.schedules import schedule_json

        print(schedule_json(s, indent=2))
        return
    from ..properties import limits

    rows = [("ID", s.id), ("When", _when(s) + (", --catch-up" if s.catch_up else "")),
            ("Timer", s.timer), ("Command", " ".join(s.spec.command)), ("Owner", s.owner),
            ("Created", _time(s.created_at)), ("Next run", _time(s.next_run)),
            ("Last run", _last(s))]  # fmt: skip
    if s.spec.name:
        rows.insert(1, ("Name", s.spec.name))
    settings = limits(s.spec)
    if settings:
        rows.append(("Limits", ", ".join(f"{k}={v}" for k, v in settings.items())))
    for label, text in rows:
        print(f"{label:<9} {text}")
    if s.events:
        print("Firings:")
        for e in s.events:
            print(f"  {_event(e)}")


@schedule_app.command("rm")
def rm(schedule_id: str = _id_argument()) -> None:
    """Remove a schedule: its timer stops; the runs it made stay."""

    async def go() -> Schedule:
        b = await common.open_backend()
        try:
            return await b.remove_schedule(schedule_id)
        finally:
            await b.close()

    s = run_async(go)
    err(f"jobrun: schedule {s.id} removed (its runs stay)")
