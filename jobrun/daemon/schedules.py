"""jobrund's schedules: transient systemd timers that start jobs through jobrund.

A schedule is a pair of transient units: `jobrun-s-SID.timer` (OnCalendar=, visible in
`systemctl list-timers`) and the service it activates, `jobrun-s-SID.service`, a oneshot that
runs `busctl call … FireSchedule s SID` **as the schedule's owner**. jobrund then checks that
caller as it checks any D-Bus call (the bus says who it is, polkit whether it may start jobs),
applies the caps of the moment (admission.admit) and starts the run as Start does: a firing is a
job submission by its owner, with no second path into the manager. The record is written before
the timer exists, and removed if systemd refuses it (an invalid calendar: systemd decides).

Transient units are gone after a reboot: at start-up jobrund re-creates the timers of its
schedules from the database, records the firings missed meanwhile (systemd-analyze computes
them) and, for `--catch-up` schedules, runs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dbus_fast import Variant

from .. import dbus_api as api
from ..caller import ROOT, remote_caller, scope
from ..errors import InvalidArgument, JobNotFound, JobrunError, PermissionDenied, SystemdError
from ..manager import Caller
from ..model import SLICE, Job
from ..outcome import usec_to_datetime
from ..schedule import (
    KEEP_DONE,
    MAX_PER_USER,
    SCHEDULE_PREFIX,
    Event,
    Schedule,
    Schedules,
    at_calendar,
    check_future,
    credential_of,
    credential_text,
    new_schedule_id,
    service_name,
    timer_name,
)
from ..systemd import NO_SUCH_UNIT, PROPS
from .admission import admit

if TYPE_CHECKING:
    from ..config import Config
    from ..dispatch import Dispatcher
    from ..manager import Manager
    from ..model import JobSpec
    from ..tls import ServerTLS

log = logging.getLogger("jobrund")
Schedule_s = list[Schedule]  # `list` is a method name in the class below

TIMER = "org.freedesktop.systemd1.Timer"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ACCURACY_USEC = 1_000_000  # systemd's default (1 min) would make `--in 2s` fire up to a minute late
MAX_MISSED = 10_000  # firings counted while the host was down (more: "at least")
_ANALYZE_LINE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def _busctl() -> str:
    return shutil.which("busctl") or "/usr/bin/busctl"


def fire_command(schedule_id: str) -> list[str]:
    """What a schedule's service runs: a call to jobrund, as the schedule's owner."""
    return [_busctl(), "call", "--timeout=90", api.BUS_NAME, api.PATH, api.INTERFACE,
            "FireSchedule", "s", schedule_id]  # fmt: skip


def service_properties(s: Schedule) -> list[tuple[str, Variant]]:
    argv = fire_command(s.id)
    props = [
        ("Description", Variant("s", f"jobrun schedule {s.id}: fire")),
        ("Type", Variant("s", "oneshot")),
        ("ExecStart", Variant("a(sasb)", [[argv[0], argv, False]])),
        ("Slice", Variant("s", SLICE)),
        ("NoNewPrivileges", Variant("b", True)),
        ("PrivateTmp", Variant("b", True)),
        ("ProtectSystem", Variant("s", "strict")),
        ("ProtectHome", Variant("s", "read-only")),
        ("StandardInput", Variant("s", "null")),
    ]
    if not s.remote and s.uid != 0:
        # As the owner, so that jobrund sees (and polkit judges) the owner calling. Numeric: an
        # all-digit user name would be read as a UID (unit.py).
        props.append(("User", Variant("s", str(s.uid))))
    return props


def timer_properties(s: Schedule) -> list[tuple[str, Variant]]:
    return [
        ("Description", Variant("s", f"jobrun schedule {s.id}")),
        ("TimersCalendar", Variant("a(ss)", [["OnCalendar", s.calendar]])),
        ("AccuracyUSec", Variant("t", ACCURACY_USEC)),
        # A one-shot's timer unloads once it has fired: PID 1 keeps no unit per past firing.
        ("RemainAfterElapse", Variant("b", not s.once)),
    ]


async def occurrences(
    calendar: str, after: datetime, until: datetime
) -> tuple[list[datetime], bool]:
    """The calendar's elapses after `after`, up to `until` (as systemd computes them), and
    whether there are more than MAX_MISSED."""
    proc = await asyncio.create_subprocess_exec(
        "systemd-analyze", "calendar", f"--iterations={MAX_MISSED + 1}",
        f"--base-time=@{int(after.timestamp())}", calendar,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={"TZ": "UTC", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYSTEMD_COLORS": "0"},
    )  # fmt: skip
    out, _ = await proc.communicate()
    times = []
    for m in _ANALYZE_LINE.finditer(out.decode(errors="replace")):
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        if when > until:
            break
        if when > after:
            times.append(when)
    return times[:MAX_MISSED], len(times) > MAX_MISSED


class Scheduler:
    """Schedules for jobrund's front ends: create, list, show, remove, fire, restore."""

    def __init__(
        self, manager: Manager, config: Config, dispatcher: Dispatcher | None = None
    ) -> None:
        self.manager = manager
        self.dispatcher = dispatcher
        self.config = config
        # The remote API's TLS (jobrund sets it where the API is on): its CRL, for firings of
        # remote identities' schedules.
        self.tls: ServerTLS | None = None
        self._firing: dict[str, asyncio.Lock] = {}

    @property
    def table(self) -> Schedules:
        """The schedules' tables in the manager's database (nothing is read before a call)."""
        return Schedules(self.manager.store)

    # -- what callers ask ---------------------------------------------------------------------

    async def create(
        self,
        spec: JobSpec,
        caller: Caller,
        *,
        calendar: str | None = None,
        at: datetime | None = None,
        catch_up: bool = False,
        credential: tuple[bytes, int] | None = None,
    ) -> Schedule:
        """A schedule of `spec` for `caller`: every `calendar`, or once `at`. `credential`: a
        remote caller's certificate (issuer, serial): its revocation stops the firings."""
        if (calendar is None) == (at is None):
            raise InvalidArgument("a schedule needs one of --at, --in and --every")
        if not caller.admin:
            # The caps of now, as a firing will apply them (a count of running jobs aside:
            # that is checked at each firing).
            self.config.apply(spec, caller.user, 0)
            self.table.prune(datetime.now(UTC) - KEEP_DONE)
            if self.table.count(caller.uid, caller.user) >= MAX_PER_USER:
                raise PermissionDenied(
                    f"you have {MAX_PER_USER} schedules, the most jobrund keeps for one user",
                    "remove one first (`jobrun schedule rm SID`)",
                )
        if at is not None:
            calendar = at_calendar(check_future(at))
        assert calendar is not None
        sched = Schedule(
            id=new_schedule_id(),
            spec=spec,
            owner=caller.user,
            uid=caller.uid,
            calendar=calendar,
            once=at is not None,
            catch_up=catch_up,
            created_at=datetime.now(UTC),
            remote=caller.remote,
            run_as=caller.run_as,
            credential=credential_text(credential) if credential else None,
        )
        self.table.add(sched)  # first: no timer of jobrun's exists unknown to it
        try:
            await self._start_timer(sched)
        except SystemdError as e:
            if e.dbus_error in (
                "org.freedesktop.DBus.Error.NoReply",
                "org.freedesktop.DBus.Error.Timeout",
            ):
                raise  # it may exist: the record stays, `schedule rm` removes both
            self.table.remove(sched.id)
            if e.dbus_error == INVALID_ARGS:
                why = e.message.removeprefix("systemd: ")
                raise InvalidArgument(
                    f"systemd refused the schedule {calendar!r}: {why}",
                    "use systemd's OnCalendar= syntax (systemd.time(7)); "
                    "`systemd-analyze calendar EXPR` tries one",
                ) from None
            raise
        except BaseException:
            self.table.remove(sched.id)
            raise
        return await self._with_next(sched)

    def _resolve(self, schedule_id: str, caller: Caller) -> str:
        return self.table.resolve(schedule_id, *scope(caller))

    async def show(self, schedule_id: str, caller: Caller) -> Schedule:
        return await self._with_next(self.table.get(self._resolve(schedule_id, caller)))

    async def list(self, caller: Caller) -> Schedule_s:
        return [await self._with_next(s) for s in self.table.all(*scope(caller))]

    async def remove(self, schedule_id: str, caller: Caller) -> Schedule:
        """Stop the timer, then forget the schedule; its runs stay."""
        sched = self.table.get(self._resolve(schedule_id, caller))
        for unit in (timer_name(sched.id), service_name(sched.id)):
            try:
                await self.manager.systemd.call("StopUnit", "ss", [unit, "replace"])
            except SystemdError as e:
                if e.dbus_error != NO_SUCH_UNIT:
                    raise
            with contextlib.suppress(SystemdError):  # a failed firing stays loaded otherwise
                await self.manager.systemd.call("ResetFailedUnit", "s", [unit])
        self.table.remove(sched.id)
        return sched

    async def fire(self, schedule_id: str, caller: Caller) -> Job | None:
        """A firing: the schedule's owner (its timer's service calls as the owner) or root asks
        for a run. None if the last run is still running (the skip is recorded)."""
        sched = self._firable(schedule_id, caller)
        lock = self._firing.setdefault(sched.id, asyncio.Lock())
        async with lock:
            sched = self.table.get(sched.id)
            last = sched.last_run
            if last is not None and last.job is not None:
                with contextlib.suppress(JobNotFound):
                    job = await self.manager.status(last.job, ROOT)
                    if not job.state.finished:
                        self.table.add_event(sched.id, Event(
                            datetime.now(UTC), "skipped", job=job.id,
                            note=f"run {job.id} was still running"))  # fmt: skip
                        return None
            try:
                mine = not sched.remote and caller.uid == sched.uid
                owner = caller if mine else self._owner(sched)
                spec, slice_limits = await admit(self.config, self.manager, sched.spec, owner)
                # Through the queue where the spec asks for it (--group, --after, --retry).
                submit = self.dispatcher.submit if self.dispatcher else self.manager.start
                job = await submit(spec, owner, slice_limits, schedule=sched.id)
            except JobrunError as e:
                self.table.add_event(sched.id, Event(datetime.now(UTC), "failed", note=e.message))
                raise
            self.table.add_event(sched.id, Event(datetime.now(UTC), "run", job=job.id))
            return job

    def _firable(self, schedule_id: str, caller: Caller) -> Schedule:
        """Only the owner (as the bus says: a local user's own uid) or root may fire a
        schedule; for anyone else it does not exist."""
        try:
            sched = self.table.get(schedule_id if isinstance(schedule_id, str) else "")
        except JobNotFound:
            sched = None
        mine = (
            sched is not None
            and not sched.remote
            and (sched.uid, sched.owner)
            == (
                caller.uid,
                caller.user,
            )
        )
        if sched is None or not (mine or caller.uid == 0):
            raise JobNotFound(f"no schedule {str(schedule_id)[:20]}", "see `jobrun schedule list`")
        return sched

    def _owner(self, sched: Schedule) -> Caller:
        """The owner of a schedule root fires (a remote one's service, a catch-up, or root by
        hand): a remote identity as the remote API's config maps it now (daemon/grpc.py)."""
        if not sched.remote:
            return ROOT if sched.uid == 0 else Caller(sched.uid, sched.owner)
        if self.config.remote is None:
            raise PermissionDenied("the remote API is off: its users' schedules do not fire")
        if self.tls is not None and sched.credential is not None:
            self.tls.refresh()  # the CRL's file, read again if it changed
            if credential_of(sched.credential) in self.tls.revoked:
                raise PermissionDenied(
                    "the certificate that made this schedule was revoked",
                    f"an admin removes it: jobrun schedule rm {sched.id}",
                )
        name = sched.owner.removeprefix("remote:")
        return remote_caller(name, *self.config.remote.identity(name))

    # -- systemd ------------------------------------------------------------------------------

    async def _start_timer(self, sched: Schedule) -> None:
        await self.manager.systemd.start_transient_unit(
            sched.timer,
            timer_properties(sched),
            aux=[(service_name(sched.id), service_properties(sched))],
        )

    async def _timer(self, sched: Schedule) -> dict[str, Any]:
        """The timer's state and next elapse ({} if it is not loaded)."""
        path = await self.manager.systemd.get_unit(sched.timer)
        if path is None:
            return {}
        out: dict[str, Any] = {}
        for interface, name in (
            ("org.freedesktop.systemd1.Unit", "ActiveState"),
            (TIMER, "NextElapseUSecRealtime"),
        ):
            try:
                (value,) = await self.manager.systemd.call(
                    "Get", "ss", [interface, name], path=path, interface=PROPS
                )
            except SystemdError:
                return {}
            out[name] = value.value if isinstance(value, Variant) else value
        return out

    async def _with_next(self, sched: Schedule) -> Schedule:
        timer = await self._timer(sched)
        usec = timer.get("NextElapseUSecRealtime") or 0
        return replace(sched, next_run=usec_to_datetime(usec) if usec else None)

    # -- start-up -----------------------------------------------------------------------------

    async def restore(self) -> Schedule_s:
        """Re-create the timers that are gone (the host rebooted), record what was missed
        meanwhile; the schedules with a firing to catch up (`catch_up`). One question to systemd
        for the timers there are; the missing ones are made 16 at a time (jobrund answers no
        call meanwhile, and its bus activation times out after 25 s)."""
        now = datetime.now(UTC)
        self.table.prune(now - KEEP_DONE)
        try:
            units = await self.manager.systemd.list_units(f"{SCHEDULE_PREFIX}*.timer")
        except JobrunError as e:  # jobrund still serves its jobs; the next start tries again
            log.error("cannot restore schedules: %s", e)
            return []
        loaded = {u[0] for u in units}
        gone = [s for s in self.table.all() if not s.done and s.timer not in loaded]
        limit = asyncio.Semaphore(16)
        results = await asyncio.gather(*(self._restore(s, now, limit) for s in gone))
        return [s for s, catch_up in zip(gone, results, strict=True) if catch_up]

    async def _restore(self, sched: Schedule, now: datetime, limit: asyncio.Semaphore) -> bool:
        """Re-create one schedule's timer; whether a missed firing is to be caught up."""
        async with limit:
            try:
                marks = [sched.created_at] + [e.until or e.at for e in sched.events]
                missed, more = await occurrences(sched.calendar, max(marks), now)
                if missed:
                    self.table.add_event(sched.id, Event(
                        missed[0], "missed", count=len(missed), until=missed[-1],
                        note=("at least " if more else "") + f"{len(missed)} firing(s) missed "
                        "while the host was down" + (", one run now (--catch-up)"
                                                     if sched.catch_up else "")))  # fmt: skip
                if not (sched.once and missed):
                    await self._start_timer(sched)
                return bool(missed) and sched.catch_up
            except (JobrunError, OSError) as e:  # one schedule's trouble stops no other
                log.error("cannot restore schedule %s: %s", sched.id, e)
                return False

    async def catch_up(self, schedules: Schedule_s) -> None:
        """One firing of each, through its service, as the owner (jobrund is on the bus now)."""
        for sched in schedules:
            try:
                if await self.manager.systemd.get_unit(service_name(sched.id)):
                    await self.manager.systemd.call(
                        "StartUnit", "ss", [service_name(sched.id), "replace"]
                    )
                else:  # a one-shot whose time passed: no timer, a service of its own
                    await self.manager.systemd.start_transient_unit(
                        service_name(sched.id), service_properties(sched)
                    )
            except JobrunError as e:
                log.error("cannot catch up schedule %s: %s", sched.id, e)
