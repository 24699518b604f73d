"""The library API: start, stop, status, list and wait for jobs (asyncio, owner-aware).

Front ends (the CLI in-process, jobrund, the gRPC server) call a Manager on behalf of a Caller; the
Manager knows nothing about how its results are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from dbus_fast import Message

from . import outcome as oc
from .errors import InvalidArgument, PermissionDenied, StateError, SystemdError
from .model import UNIT_PREFIX, Job, JobSpec, JobState, Outcome, new_job_id, unit_name
from .properties import parse_seconds, unit_properties
from .store import Store

if TYPE_CHECKING:
    from .journal import Record
from .systemd import Systemd

log = logging.getLogger(__name__)

# Errors from the bus itself, not from systemd: the call may or may not have been carried out.
# (The load test saw "Message recipient disconnected from message bus without replying".)
_NO_ANSWER = (
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
)

RECENT = timedelta(hours=24)  # `list` without --all: running jobs and those created since
RECORD_WAIT = (
    3.0  # seconds to wait for PID 1's records of a just-unloaded unit to reach the journal
)


@dataclass(frozen=True)
class Caller:
    """Who asks. `admin` callers see and manage every job; others only their own."""

    uid: int
    user: str
    admin: bool = False

    @classmethod
    def current(cls) -> Caller:
        uid = os.geteuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return cls(uid, user, admin=uid == 0)


class Manager:
    def __init__(self, systemd: Systemd, store: Store) -> None:
        self.systemd = systemd
        self.store = store

    @classmethod
    async def open(cls, store: Store | None = None) -> Manager:
        store = (store or Store()).open()
        systemd = await Systemd.connect()
        try:
            await systemd.subscribe()
        except BaseException:
            systemd.close()
            raise
        return cls(systemd, store)

    async def close(self) -> None:
        self.systemd.close()
        self.store.close()

    async def __aenter__(self) -> Manager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- verbs ------------------------------------------------------------------------------

    async def start(self, spec: JobSpec, caller: Caller | None = None) -> Job:
        caller = caller or Caller.current()
        if spec.workdir is not None:
            if not os.path.isdir(spec.workdir):
                raise InvalidArgument(f"--workdir {spec.workdir}: no such directory")
            private_tmp = spec.private_tmp is not False
            if private_tmp and any(spec.workdir == d or spec.workdir.startswith(d + "/")
                                   for d in ("/tmp", "/var/tmp")):  # fmt: skip
                raise InvalidArgument(
                    f"--workdir {spec.workdir} is under /tmp or /var/tmp, which a job with a "
                    "private /tmp does not see",
                    "add --profile relaxed --shared-tmp, or use a directory elsewhere",
                )
        job = Job(
            id=new_job_id(),
            spec=spec,
            owner=caller.user,
            uid=caller.uid,
            created_at=datetime.now(UTC),
        )
        # Record first, so a job systemd runs is never unknown to jobrun; forget it if refused.
        self.store.add(job)
        user = None if caller.uid == 0 else caller.user
        try:
            await self.systemd.start_transient_unit(job.unit, unit_properties(job.id, spec, user))
        except (SystemdError, PermissionDenied) as e:
            # systemd answered no: nothing runs. Any other failure (no answer, the bus lost,
            # this task cancelled because jobrund is stopping) leaves it unknown whether systemd
            # carried the request out, so the record stays: status finds the unit, or reports
            # that none ran.
            if getattr(e, "dbus_error", None) not in _NO_ANSWER:
                self.store.remove(job.id)
            raise
        invocation, started = await self._acquire_invocation(job.unit)
        self._cache(self.store.set_started, job.id, invocation, started)
        return replace(job, invocation_id=invocation, started_at=started)

    def _cache(self, write: Callable[..., None], *args: object) -> None:
        """A write of what systemd itself knows (start, outcome): a failure (disk full) costs
        only the cache, which the next status fills again; the answer stays right."""
        try:
            write(*args)
        except StateError as e:
            log.warning("%s", e)

    async def _acquire_invocation(self, unit: str) -> tuple[str | None, datetime | None]:
        """The run's InvocationID and start time, if the unit is still loaded (it names the run)."""
        path = await self.systemd.get_unit(unit)
        if path is None:
            return None, None
        props = await self.systemd.unit_properties(path)
        inv = props.get("InvocationID")
        invocation = bytes(inv).hex() if inv else None
        return invocation, oc.usec_to_datetime(
            props.get("ExecMainStartTimestamp")
        ) or oc.usec_to_datetime(
            props.get("ActiveEnterTimestamp") or props.get("InactiveExitTimestamp")
        )

    def resolve(self, job_id: str, caller: Caller | None = None) -> str:
        caller = caller or Caller.current()
        return self.store.resolve(job_id, None if caller.admin else caller.uid)

    async def status(self, job_id: str, caller: Caller | None = None, fresh: bool = False) -> Job:
        """The job with its current outcome (and usage while it runs)."""
        full = self.resolve(job_id, caller)
        job, stop_requested = self.store.get(full)
        if job.outcome.state.finished and not fresh:
            return job
        return await self._refresh(job, stop_requested is not None)

    async def _refresh(self, job: Job, stop_requested: bool) -> Job:
        path = await self.systemd.get_unit(job.unit)
        props = await self.systemd.unit_properties(path) if path else {}
        if props and job.started_at is None:
            started = oc.usec_to_datetime(props.get("ExecMainStartTimestamp"))
            job = self._record_start(job, props.get("InvocationID"), started)
        if props and oc.is_running(props):
            return replace(job, outcome=Outcome(JobState.RUNNING), usage=oc.usage(props))
        if props and props.get("LoadState") == "loaded":
            stopped = stop_requested or (await asyncio.to_thread(oc.read_pid1_records, job.unit))[1]
            outcome = oc.from_unit(job.spec, props, stopped, self._oom(job, props, stopped))
        else:
            job, outcome = await self._outcome_from_journal(job, stop_requested)
        if outcome.state.finished:
            self._cache(self.store.set_outcome, job.id, outcome)
        return replace(job, outcome=outcome)

    def _record_start(self, job: Job, invocation: object, started: datetime | None) -> Job:
        inv = invocation.hex() if isinstance(invocation, bytes) else invocation
        inv = str(inv).replace("-", "") if inv else job.invocation_id
        if inv != job.invocation_id or started != job.started_at:
            self._cache(self.store.set_started, job.id, inv, started or job.started_at)
        return replace(job, invocation_id=inv, started_at=started or job.started_at)

    def _oom(self, job: Job, props: dict[str, object], stopped: bool) -> bool:
        if stopped or job.spec.memory_max is None:
            return False
        if props.get("Result") == "oom-kill":
            return True
        return (
            props.get("ExecMainCode") == oc.CLD_KILLED
            and props.get("ExecMainStatus") == 9
            and oc.kernel_oom_killed(job.unit)
        )

    async def _outcome_from_journal(self, job: Job, stop_requested: bool) -> tuple[Job, Outcome]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORD_WAIT
        while True:
            records, _ = await asyncio.to_thread(oc.read_pid1_records, job.unit)
            if job.started_at is None:
                for r in records:
                    if oc.message_id(r) == oc.MSG_UNIT_STARTING:
                        job = self._record_start(
                            job, r.get("INVOCATION_ID"), r.get("__REALTIME_TIMESTAMP")
                        )
                        break
            killed9 = any(
                oc.message_id(r) == oc.MSG_PROCESS_EXIT and str(r.get("EXIT_STATUS")) == "9"
                for r in records
            )
            oom = (
                killed9
                and not stop_requested
                and job.spec.memory_max is not None
                and oc.kernel_oom_killed(job.unit)
            )
            outcome = oc.from_journal_records(job.spec, records, stop_requested, oom)
            if outcome is not None:
                return job, outcome
            # PID 1's records of a unit unloaded a moment ago may not be in the journal yet.
            if loop.time() > deadline:
                return job, Outcome(
                    JobState.FAILED,
                    reason="systemd has no record of how this job ended "
                    "(the journal lost it, or the host went down while it ran)",
                )
            await asyncio.sleep(0.02)

    async def list(self, caller: Caller | None = None, all: bool = False) -> list[Job]:
        caller = caller or Caller.current()
        since = None if all else datetime.now(UTC) - RECENT
        rows = self.store.all(None if caller.admin else caller.uid, since)
        sem = asyncio.Semaphore(16)

        async def one(job: Job, stop_requested: bool) -> Job:
            if job.outcome.state.finished:
                return job
            async with sem:
                return await self._refresh(job, stop_requested)

        return list(await asyncio.gather(*(one(j, s is not None) for j, s in rows)))

    async def running_count(self, uid: int) -> int:
        """How many jobs of `uid` systemd runs now: one call for the units, one query for owners."""
        units = await self.systemd.list_units(f"{UNIT_PREFIX}*.service")
        running = [
            name[len(UNIT_PREFIX) : -len(".service")]
            for name, active, _, _, job in units
            if active in oc.ACTIVE_STATES or job  # a queued start is a running job too
        ]
        return self.store.count_owned(running, uid)

    async def stop(
        self, job_id: str, caller: Caller | None = None, timeout: float | None = None
    ) -> tuple[Job, bool]:
        """Stop a job and wait until it has ended: (the job, whether it was still running)."""
        job = await self.status(job_id, caller)
        if job.outcome.state.finished:
            return job, False
        if timeout is not None:
            timeout = parse_seconds(timeout)
        self.store.set_stop_requested(job.id, datetime.now(UTC))
        try:
            sd_job = await self.systemd.stop_unit(job.unit)
        except SystemdError as e:
            if e.dbus_error != "org.freedesktop.systemd1.NoSuchUnit":
                raise
        else:
            done = self.systemd.expect_job(sd_job)
            if timeout is not None:
                # systemd cannot change TimeoutStopUSec of a running unit: a shorter grace is
                # enforced here, by SIGKILL to every process of the unit when it runs out.
                try:
                    await asyncio.wait_for(asyncio.shield(done), timeout)
                except TimeoutError:
                    await self.systemd.kill_unit(job.unit, signal.SIGKILL)
            await done
        return await self.status(job.id, caller), True

    async def logs(
        self,
        job_id: str,
        caller: Caller | None = None,
        *,
        follow: bool = False,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
    ) -> AsyncGenerator[Record, None]:
        """The job's output records from the journal; with `follow`, until the job has ended
        and all of its output has been read (also when it is stopped)."""
        from .journal import JobOutput

        job = await self.status(job_id, caller)
        output = JobOutput(job.id, started_at=job.started_at)
        ended: asyncio.Event | None = None
        watcher: asyncio.Task[Job] | None = None
        if follow:
            ended = asyncio.Event()
            if job.state.finished:
                ended.set()
            else:
                watcher = asyncio.create_task(self.wait(job.id, caller))
                watcher.add_done_callback(lambda _: ended.set())
        try:
            async for record in output.records(
                follow=follow, ended=ended, after_cursor=after_cursor, tail=tail, since=since
            ):
                yield record
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(BaseException):
                    await watcher

    async def wait(self, job_id: str, caller: Caller | None = None) -> Job:
        """Wait until the job has ended; returns it with its outcome."""
        full = self.resolve(job_id, caller)
        unit = unit_name(full)
        changed = asyncio.Event()

        def on_signal(msg: Message) -> None:
            mine = msg.body[2] == unit if msg.member == "JobRemoved" else msg.path == path
            if mine:
                changed.set()

        path = await self.systemd.get_unit(unit)
        with self.systemd.listen(on_signal):
            while True:
                changed.clear()
                job = await self.status(full, caller)
                if job.outcome.state.finished:
                    return job
                path = path or await self.systemd.get_unit(unit)
                # Signals wake us at once; the timeout is only a safety net for a missed one.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=2.0)
