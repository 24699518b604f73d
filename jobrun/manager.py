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

from . import envfile
from . import outcome as oc
from .config import slice_properties
from .errors import InvalidArgument, JobrunError, PermissionDenied, StateError, SystemdError
from .model import (
    UNIT_PREFIX,
    Job,
    JobSpec,
    JobState,
    Outcome,
    flatten,
    new_job_id,
    unit_name,
    user_slice,
)
from .profiles import home_properties
from .properties import parse_seconds, unit_properties
from .store import Store

if TYPE_CHECKING:
    from .journal import Record

    Batch = list[Record]  # `list` is a method name in the classes below
from .systemd import Systemd

_UNIT_PATH = "/org/freedesktop/systemd1/unit/" + UNIT_PREFIX.replace("-", "_2d")
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"

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
    """Who asks. `admin` callers see and manage every job; others only their own.

    A local caller owns the jobs of its uid, which run as that user (root's with the profile's
    DynamicUser=). A `remote` caller (remote.py: a client certificate's identity, `user` being
    "remote:NAME") owns the jobs it started by that name; they run as the local user `run_as`, or
    with DynamicUser= when that is None, never as root, and `uid` is run_as's uid (-1 if dynamic).
    """

    uid: int
    user: str
    admin: bool = False
    remote: bool = False
    run_as: str | None = None

    @classmethod
    def current(cls) -> Caller:
        uid = os.geteuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return cls(uid, user, admin=uid == 0)


def _home(uid: int | None) -> str | None:
    """The home directory of the user a job runs as, from the user database (not the caller)."""
    if uid is None:
        return None
    try:
        return os.path.normpath(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return None


def _scope(caller: Caller) -> tuple[int | None, str | None]:
    """The store's filter for the jobs a caller may see: (uid, owner name); None: any."""
    if caller.admin:
        return None, None
    # A local user's jobs are those they started here: a remote identity's jobs that run as the
    # same local user (run_as) stay the remote identity's, and the other way round.
    return (None, caller.user) if caller.remote else (caller.uid, caller.user)


class Manager:
    def __init__(self, systemd: Systemd, store: Store) -> None:
        from .journal.fanout import Feeds

        self.systemd = systemd
        self.store = store
        self.feeds = Feeds()  # one journal reader per followed job, for all its followers
        self._slice_limits: dict[str, dict[str, int]] = {}  # slice → the limits it was given
        self._listening = contextlib.ExitStack()
        self._listening.enter_context(systemd.listen(self._on_signal))

    @classmethod
    async def open(cls, store: Store | None = None, *, subscribe: bool = True) -> Manager:
        """`subscribe=False`: no systemd signals until `stop` or `wait` need them (a CLI that
        only starts a job saves the round trips)."""
        store = (store or Store()).open()
        systemd = await Systemd.connect()
        try:
            if subscribe:
                await systemd.subscribe()
        except BaseException:
            systemd.close()
            raise
        return cls(systemd, store)

    async def close(self) -> None:
        await self.feeds.close()
        self._listening.close()
        self.systemd.close()
        self.store.close()

    async def __aenter__(self) -> Manager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- verbs ------------------------------------------------------------------------------

    async def start(
        self,
        spec: JobSpec,
        caller: Caller | None = None,
        slice_limits: dict[str, int] | None = None,
        stdin: int | None = None,
    ) -> Job:
        """Start a job in the caller's slice (model.user_slice); `slice_limits` (numeric
        settings, config.slice_limits): the aggregate limits that slice gets first, exactly
        (None: the slice is left as it is, e.g. an admin's). `stdin`: a descriptor of the
        caller's the job reads as its standard input (systemd keeps a copy; the caller still
        owns and closes this one)."""
        caller = caller or Caller.current()
        # Whether -C and --writable exist is not asked here: as root, the answer would tell a
        # caller about paths they cannot see. The CLI checks them as the caller
        # (properties.check_paths); systemd checks them as the job's user (exit status 200/226).
        if spec.workdir is not None:
            private_tmp = spec.private_tmp is not False
            if private_tmp and any(spec.workdir == d or spec.workdir.startswith(d + "/")
                                   for d in ("/tmp", "/var/tmp")):  # fmt: skip
                raise InvalidArgument(
                    f"the working directory {spec.workdir} is under /tmp or /var/tmp, which a "
                    "job with a private /tmp does not see",
                    "run it from (or -C) a directory elsewhere, or add --profile relaxed "
                    "--shared-tmp",
                )
        if caller.remote:
            user = caller.uid if caller.run_as is not None else None
            dynamic = caller.run_as is None
        else:
            user, dynamic = (None if caller.uid == 0 else caller.uid), False
        home = _home(user)
        # What the job may see of the homes depends on who it runs as: refused here, before
        # anything is recorded or started.
        home_properties(spec, user=user, dynamic_user=dynamic, home=home)
        slice_name = user_slice(None if caller.remote and caller.run_as is None else caller.uid)
        if slice_limits is not None and self._slice_limits.get(slice_name) != slice_limits:
            # Written as a runtime drop-in that outlives the slice's unloading: once per slice
            # and set of limits while this process runs, not once per job.
            await self.systemd.set_unit_properties(slice_name, slice_properties(slice_limits))
            self._slice_limits[slice_name] = dict(slice_limits)
        job = Job(
            id=new_job_id(),
            spec=spec,
            owner=caller.user,
            uid=caller.uid,
            created_at=datetime.now(UTC),
        )
        # Record first, so a job systemd runs is never unknown to jobrun; forget it if refused.
        self.store.add(job)
        try:
            env_file = envfile.write(job.id, spec.env)
        except OSError as e:
            self.store.remove(job.id)
            raise StateError(f"cannot write the job's environment file: {e}") from e
        props = unit_properties(
            job.id,
            spec,
            user,
            dynamic_user=dynamic,
            env_file=env_file,
            slice_name=slice_name,
            home=home,
            stdin=stdin is not None,
        )
        try:
            await self.systemd.start_transient_unit(
                job.unit, props, None if stdin is None else [stdin]
            )
        except (SystemdError, PermissionDenied) as e:
            # systemd answered no: nothing runs. Any other failure (no answer, the bus lost,
            # this task cancelled because jobrund is stopping) leaves it unknown whether systemd
            # carried the request out, so the record stays: status finds the unit, or reports
            # that none ran.
            if getattr(e, "dbus_error", None) not in _NO_ANSWER:
                self.store.remove(job.id)
                envfile.remove(job.id)
            raise
        # No question to systemd after the start: asked at once, it answers only after running
        # the start jobs queued before (forking and sandboxing each unit), which cost most of the
        # concurrency of many starts (docs/PERFORMANCE.md, P2). The InvocationID and start time
        # come with the unit's PropertiesChanged signal (_on_signal); if this process ends
        # first, `status` records them (from the unit, or PID 1's journal).
        return job

    def _cache(self, write: Callable[..., None], *args: object) -> None:
        """A write of what systemd itself knows (start, outcome): a failure (disk full) costs
        only the cache, which the next status fills again; the answer stays right."""
        try:
            write(*args)
        except StateError as e:
            log.warning("%s", e)

    def _on_signal(self, msg: Message) -> None:
        """Record a job's InvocationID and start time from its unit's PropertiesChanged signals
        (the InvocationID and the start time may come in different ones)."""
        path = msg.path or ""
        if msg.member != "PropertiesChanged" or not path.startswith(_UNIT_PATH):
            return
        if len(msg.body) != 3 or msg.body[0] not in (UNIT_INTERFACE, SERVICE_INTERFACE):
            return
        changed = msg.body[1]
        value = changed.get("InvocationID")
        inv = bytes(value.value).hex() if value is not None and value.value else None
        started = None
        for key in ("ExecMainStartTimestamp", "InactiveExitTimestamp"):
            value = changed.get(key)
            if value is not None and value.value:
                started = oc.usec_to_datetime(value.value)
                break
        if inv is None and started is None:
            return
        job_id = path[len(_UNIT_PATH) :].removesuffix("_2eservice")
        with contextlib.suppress(JobrunError):  # a signal handler has nobody to tell
            self.store.set_started_once(job_id, inv, started)

    def resolve(self, job_id: str, caller: Caller | None = None) -> str:
        return self.store.resolve(job_id, *_scope(caller or Caller.current()))

    async def status(self, job_id: str, caller: Caller | None = None, fresh: bool = False) -> Job:
        """The job with its current outcome (and usage while it runs)."""
        full = self.resolve(job_id, caller)
        job, stop_requested = self.store.get(full)
        if job.outcome.state.finished and not fresh:
            return job
        return await self._refresh(job, stop_requested is not None)

    async def _refresh(self, job: Job, stop_requested: bool) -> Job:
        path = await self.systemd.get_unit(job.unit)
        props = await self.systemd.unit_properties(path, oc.STATUS_PROPERTIES) if path else {}
        if props and job.started_at is None:
            started = oc.usec_to_datetime(props.get("ExecMainStartTimestamp"))
            job = self._record_start(job, props.get("InvocationID"), started)
        if props and oc.running(props):
            return replace(job, outcome=Outcome(JobState.RUNNING), usage=oc.usage(props))
        if props and props.get("LoadState") == "loaded":
            stopped = stop_requested or (await asyncio.to_thread(oc.read_pid1_records, job.unit))[1]
            outcome = oc.from_unit(job.spec, props, stopped, self._oom(job, props, stopped))
        else:
            job, outcome = await self._outcome_from_journal(job, stop_requested)
        if outcome.state.finished:
            self._cache(self.store.set_outcome, job.id, outcome)
            envfile.remove(job.id)  # PID 1 read it when the job started
        return replace(job, outcome=outcome)

    def _record_start(self, job: Job, invocation: object, started: datetime | None) -> Job:
        inv = invocation.hex() if isinstance(invocation, bytes | bytearray) else invocation
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
                if stop_requested and not any(
                    oc.message_id(r) == oc.MSG_UNIT_STARTING for r in records
                ):
                    # Stopped while its start job was still queued: it never ran.
                    return job, Outcome(JobState.STOPPED, reason="stopped before it started")
                return job, Outcome(
                    JobState.FAILED,
                    reason="systemd has no record of how this job ended "
                    "(the journal lost it, or the host went down while it ran)",
                )
            await asyncio.sleep(0.02)

    async def list(self, caller: Caller | None = None, all: bool = False) -> list[Job]:
        caller = caller or Caller.current()
        since = None if all else datetime.now(UTC) - RECENT
        rows = self.store.all(*_scope(caller), since=since)
        sem = asyncio.Semaphore(16)

        async def one(job: Job, stop_requested: bool) -> Job:
            if job.outcome.state.finished:
                return job
            async with sem:
                return await self._refresh(job, stop_requested)

        return list(await asyncio.gather(*(one(j, s is not None) for j, s in rows)))

    async def running_count(self, caller: Caller) -> int:
        """How many of the caller's jobs systemd runs now: one call for the units, one query."""
        units = await self.systemd.list_units(f"{UNIT_PREFIX}*.service")
        running = [
            name[len(UNIT_PREFIX) : -len(".service")]
            for name, active, _, _, queued in units
            if active in oc.ACTIVE_STATES or queued == "start"  # started, not yet run
        ]
        return self.store.count_owned(running, *_scope(replace(caller, admin=False)))

    async def stop(
        self, job_id: str, caller: Caller | None = None, timeout: float | None = None
    ) -> tuple[Job, bool]:
        """Stop a job and wait until it has ended: (the job, whether it was still running)."""
        job = await self.status(job_id, caller)
        if job.outcome.state.finished:
            return job, False
        if timeout is not None:
            timeout = parse_seconds(timeout)
        await self.systemd.subscribe()  # JobRemoved of the stop job, below
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

    async def kill(
        self, job_id: str, caller: Caller | None = None, signum: int = signal.SIGINT
    ) -> tuple[Job, bool]:
        """Send `signum` to every process of a running job, as a terminal's Ctrl-C reaches a
        whole foreground process group: (the job, whether it was still running)."""
        if signum not in signal.valid_signals() or signum == 0:
            raise InvalidArgument(f"{signum} is not a signal number")
        job = await self.status(job_id, caller)
        if job.outcome.state.finished:
            return job, False
        try:
            await self.systemd.kill_unit(job.unit, signum)
        except SystemdError as e:
            if e.dbus_error not in (
                "org.freedesktop.systemd1.NoSuchUnit",
                "org.freedesktop.systemd1.NoSuchProcess",
            ):
                raise
            return await self.status(job.id, caller), False
        return job, True

    def logs(
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
        return flatten(
            self.log_batches(
                job_id, caller, follow=follow, after_cursor=after_cursor, tail=tail, since=since
            )
        )

    async def log_batches(
        self,
        job_id: str,
        caller: Caller | None = None,
        *,
        follow: bool = False,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
    ) -> AsyncGenerator[Batch, None]:
        """As `logs`, in lists of records (never empty). Followers of one job share one journal
        reader and one watcher of its unit (fanout.py)."""
        from .journal import JobOutput

        job = await self.status(job_id, caller)
        output = JobOutput(job.id, started_at=job.started_at, finished_at=job.outcome.finished_at)
        if not follow and job.state.finished:
            # journald may still be writing what a finished job wrote (a chatty job's output
            # lags behind by seconds): read up to the exact end, as a follower does, not up to
            # the journal's current end.
            done = asyncio.Event()
            done.set()
            batches = output.batches(
                after_cursor=after_cursor, tail=tail, since=since, follow=True, ended=done
            )
        elif not follow:
            batches = output.batches(after_cursor=after_cursor, tail=tail, since=since)
        else:

            def watch(ended: asyncio.Event) -> asyncio.Task[object] | None:
                if job.state.finished:
                    ended.set()
                    return None
                # Access was checked above; the watcher serves every follower of the job.
                watcher: asyncio.Task[object] = asyncio.create_task(
                    self.wait(job.id, Caller(0, "root", admin=True))
                )
                watcher.add_done_callback(lambda _: ended.set())
                return watcher

            batches = self.feeds.follow(
                output, watch, after_cursor=after_cursor, tail=tail, since=since
            )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch

    async def wait(self, job_id: str, caller: Caller | None = None) -> Job:
        """Wait until the job has ended; returns it with its outcome."""
        full = self.resolve(job_id, caller)
        unit = unit_name(full)
        changed = asyncio.Event()

        def on_signal(msg: Message) -> None:
            mine = msg.body[2] == unit if msg.member == "JobRemoved" else msg.path == path
            if mine:
                changed.set()

        await self.systemd.subscribe()  # before the first look at the job, below
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
