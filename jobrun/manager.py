"""The library API: start, stop, status, list and wait for jobs (asyncio, owner-aware).

Front ends (the CLI in-process, jobrund, the gRPC server) call a Manager on behalf of a Caller; the
Manager knows nothing about how its results are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dbus_fast import Message

from . import envfile, live, processes, scopes
from . import outcome as oc
from . import usage as usage_
from .aio import wait_event
from .caller import ROOT, scope
from .caller import Caller as Caller
from .config import slice_properties
from .errors import (
    InvalidArgument,
    JobrunError,
    PermissionDenied,
    StateError,
    SystemdError,
)
from .inputs import parse_seconds
from .model import (
    UNIT_PREFIX,
    Job,
    JobKind,
    JobSpec,
    JobState,
    Outcome,
    flatten,
    new_job_id,
    queued,
)
from .output import job_batches
from .profiles import RELAXED_HINT, check_tmp, home_properties
from .queuestore import Queue, waiting_reason
from .store import Store
from .systemd import NO_ANSWER, NO_SUCH_PROCESS, NO_SUCH_UNIT, SERVICE, UNIT, Systemd
from .unit import UnitContext, unit_properties

if TYPE_CHECKING:
    from .journal import Record

    Batch = list[Record]  # `list` is a method name in the classes below
    Samples = list[usage_.Sample]

_UNIT_PATH = "/org/freedesktop/systemd1/unit/" + UNIT_PREFIX.replace("-", "_2d")

log = logging.getLogger(__name__)


SCOPE_REPORT_WAIT = 5.0  # seconds `stop` waits for a stopped scope's client to report its end
RECENT = timedelta(hours=24)  # `list` without --all: running jobs and those created since


class Manager:
    def __init__(self, systemd: Systemd, store: Store) -> None:
        from .journal.fanout import Feeds

        self.systemd = systemd
        self.store = store
        self.feeds = Feeds()  # one journal reader per followed job, for all its followers
        self._slice_limits: dict[str, dict[str, int]] = {}  # slice → the limits it was given
        self.report_waiters: set[asyncio.Event] = set()  # of waiters, set by a scope's report
        self.queue = Queue(store)  # jobrund's queue (dispatch.py): waiting jobs are shown here
        # jobrund keeps --timeout itself, with a clock that stops while a job is paused
        # (deadline.py): its jobs get no TimeoutStartSec=. The keeper wakes on this event.
        self.holds_deadlines = False
        self.deadlines_changed = asyncio.Event()
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
        schedule: str | None = None,
        tty: int | None = None,
        *,
        job: Job | None = None,
        slice_name: str | None = None,
    ) -> Job:
        """Start a job in the caller's slice (model.user_slice); `slice_limits` (numeric
        settings, config.slice_limits): the aggregate limits that slice gets first, exactly
        (None: the slice is left as it is, e.g. an admin's). `stdin`: a descriptor of the
        caller's the job reads as its standard input (systemd keeps a copy; the caller still
        owns and closes this one). `schedule`: the schedule whose firing this is (schedule.py).
        `tty`: the caller's pseudo-terminal, the job's stdio (`run --pty`, pty.py), open until
        this returns.

        `job` and `slice_name`: jobrund's dispatcher (dispatch.py) starting a job of its queue,
        recorded already, in its group's slice. Without it a queued spec (--group, --after,
        --retry) is refused: only jobrund keeps a queue."""
        caller = caller or Caller.current()
        if job is None and queued(spec):
            raise InvalidArgument(
                "--group, --after and --retry need jobrund, which keeps the queue",
                "install and start jobrund (systemctl start jobrund), or run without them",
            )
        tty_path = None
        if tty is not None:
            from .pty import terminal_path

            tty_path = terminal_path(tty, caller.uid)
            spec = spec.replace(terminal=True)
        ctx = self.check(spec, caller)
        if slice_name is not None:
            ctx = replace(ctx, slice_name=slice_name)
        user_slice_name = caller.unit_context().slice_name
        if slice_limits is not None:
            await self.set_slice_limits(user_slice_name, slice_limits)
        queued_job = job is not None
        if job is None:
            job = self.new_job(spec, caller, schedule)
            # Record first, so a job systemd runs is never unknown to jobrun; forget it if
            # refused.
            self.store.add(job)
        try:
            env_file = envfile.write(job.id, spec.env)
        except OSError as e:
            self._forget(job.id, queued_job, f"cannot write the job's environment file: {e}")
            raise StateError(f"cannot write the job's environment file: {e}") from e
        ctx = replace(ctx, env_file=env_file, stdin=stdin is not None, tty=tty_path)
        unit_spec = spec.replace(timeout=None) if self.holds_deadlines else spec
        props = unit_properties(job.id, unit_spec, ctx)
        try:
            await self.systemd.start_transient_unit(
                job.unit, props, None if stdin is None else [stdin]
            )
        except (SystemdError, PermissionDenied) as e:
            # systemd answered no: nothing runs. Any other failure (no answer, the bus lost,
            # this task cancelled because jobrund is stopping) leaves it unknown whether systemd
            # carried the request out, so the record stays: status finds the unit, or reports
            # that none ran.
            if getattr(e, "dbus_error", None) not in NO_ANSWER:
                self._forget(job.id, queued_job, f"systemd refused to start it: {e}")
                envfile.remove(job.id)
            raise
        # No question to systemd after the start: asked at once, it answers only after running
        # the start jobs queued before (forking and sandboxing each unit), which cost most of the
        # concurrency of many starts (docs/PERFORMANCE.md, P2). The InvocationID and start time
        # come with the unit's PropertiesChanged signal (_on_signal); if this process ends
        # first, `status` records them (from the unit, or PID 1's journal).
        return job

    async def start_scope(
        self,
        spec: JobSpec,
        claim: processes.Claim,
        parent: int,
        caller: Caller | None = None,
        slice_limits: dict[str, int] | None = None,
    ) -> Job:
        """Put the caller's process `claim` in a new scope job (`jobrun run --scope`, scopes.py);
        `parent`: the caller's process that asks and will report its exit status."""
        return await scopes.start(
            self, spec, claim, parent, caller or Caller.current(), slice_limits
        )

    async def report_exit(
        self, job_id: str, caller: Caller | None, exit_code: int | None, signum: int | None
    ) -> Job:
        """A scope job's end as its client saw it (scopes.py): once, from its owner only."""
        return await scopes.report_exit(self, job_id, caller or Caller.current(), exit_code, signum)

    def check(self, spec: JobSpec, caller: Caller) -> UnitContext:
        """What a job of this caller's is refused for before anything is recorded; the context
        of its unit."""
        # Whether -C and --writable exist is not asked here: as root, the answer would tell a
        # caller about paths they cannot see. The CLI checks them as the caller
        # (properties.check_paths); systemd checks them as the job's user (exit status 200/226).
        if spec.workdir is not None:
            check_tmp(spec, spec.workdir, "the working directory",
                      f"run it from (or -C) a directory elsewhere, or add {RELAXED_HINT} "
                      "--shared-tmp")  # fmt: skip
        ctx = caller.unit_context()
        # What the job may see of the homes depends on who it runs as: refused here, before
        # anything is recorded or started.
        home_properties(spec, user=ctx.user, dynamic_user=ctx.dynamic_user, home=ctx.home)
        return ctx

    @staticmethod
    def new_job(spec: JobSpec, caller: Caller, schedule: str | None = None) -> Job:
        return Job(
            id=new_job_id(), spec=spec, owner=caller.user, uid=caller.uid,
            created_at=datetime.now(UTC), schedule=schedule,
        )  # fmt: skip

    def slice_limits_of(self, slice_name: str) -> dict[str, int] | None:
        """The limits `set_slice_limits` last gave the slice while this process runs (None:
        none yet, or not known)."""
        return self._slice_limits.get(slice_name)

    async def set_slice_limits(self, slice_name: str, limits: dict[str, int]) -> None:
        """Give a slice exactly these aggregate limits. Written as a runtime drop-in that
        outlives the slice's unloading: once per slice and set of limits while this process
        runs, not once per job."""
        if self._slice_limits.get(slice_name) != limits:
            await self.systemd.set_unit_properties(slice_name, slice_properties(limits))
            self._slice_limits[slice_name] = dict(limits)

    def _forget(self, job_id: str, queued_job: bool, reason: str) -> None:
        """A job systemd did not take: a new one is forgotten (the caller gets the error); one
        of the queue, which its owner saw waiting, fails saying why."""
        if queued_job:
            self.cache(
                self.store.set_outcome,
                job_id,
                Outcome(JobState.FAILED, reason=reason, finished_at=datetime.now(UTC)),
            )
        else:
            self.store.remove(job_id)

    def cache(self, write: Callable[..., None], *args: object) -> None:
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
        if len(msg.body) != 3 or msg.body[0] not in (UNIT, SERVICE):
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
        job_id = path[len(_UNIT_PATH) :].removesuffix("_2eservice").removesuffix("_2escope")
        with contextlib.suppress(JobrunError):  # a signal handler has nobody to tell
            self.store.set_started_once(job_id, inv, started)
        self.deadlines_changed.set()  # a clock may have started

    def resolve(self, job_id: str, caller: Caller | None = None) -> str:
        return self.store.resolve(job_id, *scope(caller or Caller.current()))

    async def status(self, job_id: str, caller: Caller | None = None, fresh: bool = False) -> Job:
        """The job with its current outcome (and usage while it runs)."""
        full = self.resolve(job_id, caller)
        job, stop_requested = self.store.get(full)
        job = self._with_attempts(job)
        # A scope's outcome is what its client reported: systemd has nothing to derive it from.
        if job.outcome.state.finished and (not fresh or job.spec.kind == JobKind.SCOPE):
            return job
        waiting = self._waiting(job)
        if waiting is not None:
            return waiting
        return await self._refresh(job, stop_requested is not None)

    def _with_attempts(self, job: Job) -> Job:
        attempt, attempts = self.queue.attempts(job.id)
        return replace(job, attempt=attempt, attempts=attempts) if attempts else job

    def queued_view(self, job: Job) -> Job:
        """A job just put in the queue, as `status` shows it."""
        return self._waiting(job) or job

    def _waiting(self, job: Job) -> Job | None:
        """The job as `queued`, saying what it waits for, if it waits in jobrund's queue."""
        entry = self.queue.get(job.id)
        if entry is None or entry.started:
            return None
        return replace(
            job, outcome=Outcome(JobState.QUEUED, reason=waiting_reason(self.queue, job, entry))
        )

    async def _refresh(self, job: Job, stop_requested: bool) -> Job:
        if job.spec.kind == JobKind.SCOPE:
            return await scopes.refresh(self, job, stop_requested)
        path = await self.systemd.get_unit(job.unit)
        props = await self.systemd.unit_properties(path, oc.STATUS_PROPERTIES) if path else {}
        if props and job.started_at is None:
            started = oc.usec_to_datetime(props.get("ExecMainStartTimestamp"))
            job = self.record_start(job, props.get("InvocationID"), started)
        if props and oc.running(props):
            job = live.record_usage(self.store, job, props, final=False)
            state = JobState.PAUSED if live.paused(self.store, job.id, props) else JobState.RUNNING
            return replace(job, outcome=Outcome(state), usage=oc.usage(props))
        if props and props.get("LoadState") == "loaded":
            job = live.record_usage(self.store, job, props, final=True)
            stopped = stop_requested or (await asyncio.to_thread(oc.read_pid1_records, job.unit))[1]
            oom = oc.unit_oom(job.unit, job.spec, props, stopped)
            outcome = oc.from_unit(job.spec, props, stopped, oom)
        else:
            job, outcome = await self._outcome_from_journal(job, stop_requested)
        if outcome.state.finished and not stop_requested and self.store.timed_out(job.id):
            outcome = replace(outcome, state=JobState.FAILED, result="timeout", reason="timeout")
        if outcome.state.finished:
            self.cache(self.store.set_outcome, job.id, outcome)
            envfile.remove(job.id)  # PID 1 read it when the job started
        return replace(job, outcome=outcome)

    def record_start(self, job: Job, invocation: object, started: datetime | None) -> Job:
        inv = invocation.hex() if isinstance(invocation, bytes | bytearray) else invocation
        inv = str(inv).replace("-", "") if inv else job.invocation_id
        if inv != job.invocation_id or started != job.started_at:
            self.cache(self.store.set_started, job.id, inv, started or job.started_at)
        return replace(job, invocation_id=inv, started_at=started or job.started_at)

    async def _outcome_from_journal(self, job: Job, stop_requested: bool) -> tuple[Job, Outcome]:
        outcome, starting = await oc.from_journal(job.unit, job.spec, stop_requested)
        if job.started_at is None and starting is not None:
            started = starting.get("__REALTIME_TIMESTAMP")
            job = self.record_start(job, starting.get("INVOCATION_ID"), started)
        return job, outcome

    async def list(self, caller: Caller | None = None, all: bool = False) -> list[Job]:
        caller = caller or Caller.current()
        since = None if all else datetime.now(UTC) - RECENT
        rows = self.store.all(*scope(caller), since=since)
        sem = asyncio.Semaphore(16)

        waiting = self.queue.waiting_ids()
        retried = self.queue.attempts_of([j.id for j, _ in rows])

        async def refreshed(job: Job, stop_requested: bool) -> Job:
            async with sem:
                return await self._refresh(job, stop_requested)

        jobs: list[Job] = []
        unfinished: list[tuple[int, Job, bool]] = []  # asked of systemd, 16 at once
        for job, stop_requested in rows:
            if job.id in retried:
                attempt, attempts = retried[job.id]
                job = replace(job, attempt=attempt, attempts=attempts)
            if not job.outcome.state.finished and job.id in waiting:
                job = self._waiting(job) or job
            elif not job.outcome.state.finished:
                unfinished.append((len(jobs), job, stop_requested is not None))
            jobs.append(job)
        # A task only for those: finished jobs are as stored (most of a long list).
        fresh = await asyncio.gather(*(refreshed(j, s) for _, j, s in unfinished))
        for (at, _, _), job in zip(unfinished, fresh, strict=True):
            jobs[at] = job
        return jobs

    def unfinished_count(self, caller: Caller) -> int:
        """An upper bound of `running_count` from the job database alone (no question to
        systemd): the caller's jobs whose end is not recorded."""
        return self.store.count_unfinished(*scope(replace(caller, admin=False)))

    async def running_count(self, caller: Caller) -> int:
        """How many of the caller's jobs systemd runs now: one call for the units, one query."""
        units = await self.systemd.list_units(f"{UNIT_PREFIX}*.service", f"{UNIT_PREFIX}*.scope")
        running = [
            name[len(UNIT_PREFIX) :].removesuffix(".service").removesuffix(".scope")
            for name, active, _, _, queued in units
            if active in oc.ACTIVE_STATES or queued == "start"  # started, not yet run
        ]
        return self.store.count_owned(running, *scope(replace(caller, admin=False)))

    async def usage(self, caller: Caller | None = None) -> Samples:
        """A sample of each running job the caller may see (usage.py: the cgroups' counters,
        read on the loop: a few small sysfs reads per job, no question to systemd)."""
        uid, owner = scope(caller or Caller.current())
        return usage_.samples(lambda ids: self.store.owners_of(ids, uid, owner))

    async def stop(
        self, job_id: str, caller: Caller | None = None, timeout: float | None = None
    ) -> tuple[Job, bool]:
        """Stop a job and wait until it has ended: (the job, whether it was still running)."""
        job = await self.status(job_id, caller)
        if job.outcome.state.finished:
            return job, False
        if job.state is JobState.QUEUED and self.queue.cancel(job.id):
            outcome = Outcome(JobState.STOPPED, reason="stopped before it ran (it was queued)",
                              finished_at=datetime.now(UTC))  # fmt: skip
            self.store.set_outcome(job.id, outcome)
            return replace(job, outcome=outcome), True
        if timeout is not None:
            timeout = parse_seconds(timeout)
        if job.state is JobState.PAUSED:
            await live.thaw(self, job)  # a frozen process would act on SIGTERM only once thawed
        await self.systemd.subscribe()  # JobRemoved of the stop job, below
        self.store.set_stop_requested(job.id, datetime.now(UTC))
        try:
            sd_job = await self.systemd.stop_unit(job.unit)
        except SystemdError as e:
            if e.dbus_error != NO_SUCH_UNIT:
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
        if job.spec.kind == JobKind.SCOPE:
            # Its end is what its client reports once its process died: wait for that a while.
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self.wait(job.id, caller), SCOPE_REPORT_WAIT), True
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
            if e.dbus_error not in (NO_SUCH_UNIT, NO_SUCH_PROCESS):
                raise
            return await self.status(job.id, caller), False
        return job, True

    async def pause(self, job_id: str, caller: Caller | None = None) -> Job:
        """Freeze every process of a running job (freezer.py); WrongState if it is not."""
        return await live.pause(self, job_id, caller)

    async def resume(self, job_id: str, caller: Caller | None = None) -> Job:
        """Thaw a paused job; WrongState if it is not paused."""
        return await live.resume(self, job_id, caller)

    async def set_limits(
        self, job_id: str, changes: dict[str, Any], caller: Caller | None = None
    ) -> Job:
        """Change live settings of a running job (live.set_limits)."""
        return await live.set_limits(self, job_id, changes, caller)

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
        reader and one watcher of its unit (journal/fanout.py)."""
        job = await self.status(job_id, caller)
        scopes.require_journal_output(job)
        # Access was checked here; the watcher of the job's end serves every follower.
        wait = functools.partial(self.wait, job.id, ROOT)
        batches = job_batches(
            self.feeds, job, wait, follow=follow, after_cursor=after_cursor, tail=tail, since=since
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch

    async def wait(self, job_id: str, caller: Caller | None = None) -> Job:
        """Wait until the job has ended; returns it with its outcome."""
        full = self.resolve(job_id, caller)
        unit = self.store.get(full)[0].unit
        changed = asyncio.Event()

        def on_signal(msg: Message) -> None:
            mine = msg.body[2] == unit if msg.member == "JobRemoved" else msg.path == path
            if mine:
                changed.set()

        await self.systemd.subscribe()  # before the first look at the job, below
        path = await self.systemd.get_unit(unit)
        self.report_waiters.add(changed)  # a scope job ends with its client's report
        with self.systemd.listen(on_signal), _discarding(self.report_waiters, changed):
            while True:
                changed.clear()
                job = await self.status(full, caller)
                if job.outcome.state.finished:
                    return job
                path = path or await self.systemd.get_unit(unit)
                # Signals wake us at once; the timeout is only a safety net for a missed one.
                await wait_event(changed, 2.0)


@contextlib.contextmanager
def _discarding(events: set[asyncio.Event], event: asyncio.Event) -> Iterator[None]:
    try:
        yield
    finally:
        events.discard(event)
