"""jobrund's dispatcher: groups (queues) with a parallel limit, dependencies and retries.

`Dispatcher.submit` is the one way a job enters through jobrund (D-Bus, gRPC, and schedules):
a job without --group, --after or --retry starts at once (Manager.start); any other is recorded
with a queue entry (queuestore.py) and started by the dispatcher's loop when its group has a free
slot, its dependencies ended and its retry delay passed. The loop runs when a job's unit ends
(systemd's JobRemoved), when something is submitted or changed, at a retry's time, and every
SAFETY_NET seconds; from the database alone, so jobrund killed or the host rebooted loses no
waiting job: the next jobrund carries on where this one stopped.

Each attempt of a --retry job is a job of its own (its ID, unit, record and output), linked to the
first (queuestore `attempts`); `status` shows which attempt it is and all their IDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import pwd
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .aio import end_task, wait_event
from .caller import ROOT, Caller, remote_caller
from .config import RemoteConfig
from .errors import InvalidArgument, JobNotFound, JobrunError, PermissionDenied
from .inputs import parse_group
from .manager import Manager
from .model import Job, JobSpec, JobState, Outcome, group_slice, queued
from .queuestore import Entry, Group, Queue, now

log = logging.getLogger("jobrund")

SAFETY_NET = 10.0  # seconds: a pass even without a signal (one lost, a unit ended while down)
PAGE = 256  # waiting entries read at a time
MAX_PARALLEL = 10000


def caller_from(data: dict[str, Any]) -> Caller:
    known = {f.name for f in dataclasses.fields(Caller)}
    return Caller(**{k: v for k, v in data.items() if k in known})


class Dispatcher:
    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.queue: Queue = manager.queue
        self.remote: RemoteConfig | None = None  # whom remote:NAME is (group --owner)
        self._wake = asyncio.Event()
        self._ended: set[str] = set()  # jobs whose unit systemd said ended since the last pass
        self._full = True  # look at every started job in the next pass
        self._last_full = 0.0  # time.monotonic() of the last such pass
        self._task: asyncio.Task[None] | None = None
        self._listening = contextlib.ExitStack()

    def start(self) -> None:
        """Run the loop (jobrund, once its bus name is taken)."""
        self._listening.enter_context(self.manager.systemd.listen(self._on_signal))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self._listening.close()
        if self._task is not None:
            await end_task(self._task)

    def wake(self) -> None:
        self._wake.set()

    # -- submitting ---------------------------------------------------------------------------

    async def submit(
        self,
        spec: JobSpec,
        caller: Caller,
        slice_limits: dict[str, int] | None = None,
        stdin: int | None = None,
        schedule: str | None = None,
        tty: int | None = None,
    ) -> Job:
        """Start the job (admitted already: daemon/admission.py), or queue it; the job as
        `status` shows it then. `schedule`, `tty`: as Manager.start's."""
        if not queued(spec):
            return await self.manager.start(
                spec, caller, slice_limits, stdin=stdin, schedule=schedule, tty=tty
            )
        if stdin is not None or tty is not None:
            raise InvalidArgument(
                "a job of the queue (--group, --after, --retry) reads no standard input "
                "and has no terminal",
                "use `jobrun start`, or give the input as a file",
            )
        self.manager.check(spec, caller)
        if spec.after:
            # Only jobs the caller may see, resolved now: a job depends only on jobs older than
            # itself, so no cycle can ever form.
            spec = spec.replace(after=tuple(self.manager.resolve(i, caller) for i in spec.after))
        job = Manager.new_job(spec, caller, schedule)
        entry = Entry(
            id=job.id,
            owner=caller.user,
            group=spec.group or "",
            priority=spec.priority or 0,
            not_before=0.0,
            caller=dataclasses.asdict(caller),
            slice_limits=slice_limits,
            started=False,
        )
        with self.queue.write() as db:
            Queue.add_job(db, job, entry)
        self.wake()
        return self.manager.queued_view(job)

    # -- groups -------------------------------------------------------------------------------

    def groups(self, caller: Caller) -> list[Group]:
        return self.queue.groups(None if caller.admin else caller.user)

    async def set_group(
        self,
        caller: Caller,
        name: str,
        parallel: int | None = None,
        paused: bool | None = None,
        limits: dict[str, int | None] | None = None,
        owner: str | None = None,
        owners_may_set: bool = True,
    ) -> Group:
        """Change one of the caller's own groups (made if new): what is None stays; in
        `parallel` 0 is no limit; in `limits` a None value removes that limit. The limits
        apply at once to the group's slice (its running jobs too)."""
        name = parse_group(name)
        caller = self._owner(caller, owner, name)
        if not caller.admin and not owners_may_set:
            raise PermissionDenied(
                "only an admin may change groups here (queue.owners_may_set is false)",
                "ask an admin to run `jobrun group set` for you",
            )
        group = self.queue.group(caller.user, name)
        if parallel is not None:
            if not 0 <= parallel <= MAX_PARALLEL:
                raise InvalidArgument(f"--parallel must be from 0 (no limit) to {MAX_PARALLEL}")
            group = replace(group, parallel=parallel or None)
        if paused is not None:
            group = replace(group, paused=paused)
        if limits:
            merged = dict(group.limits)
            for key, value in limits.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            group = replace(group, limits=merged)
        self.queue.save_group(group)
        if limits is not None:
            await self.manager.set_slice_limits(self.slice_of(caller, name), group.limits)
        self.wake()
        return self.queue.group(caller.user, name)

    def _owner(self, caller: Caller, owner: str | None, name: str) -> Caller:
        """Whom a group change is for: the caller, or (an admin only) the local user or remote
        identity (remote:NAME, of the remote API's config) `owner`; for anyone else another
        user's group is not found (as another's jobs are)."""
        if owner is None or owner == caller.user:
            return caller
        if not caller.admin:
            raise JobNotFound(f"no group {name} of {owner[:40]}", "see `jobrun group list`")
        if owner.startswith("remote:"):
            if self.remote is None:
                raise InvalidArgument(f"{owner[:40]}: the remote API is not configured here")
            remote = owner.removeprefix("remote:")
            return remote_caller(remote, self.remote.identity(remote)[0], admin=True)
        try:
            uid = pwd.getpwnam(owner).pw_uid
        except (KeyError, ValueError):
            raise JobNotFound(f"no user {owner[:40]}", "see `jobrun group list`") from None
        return Caller(uid, owner, admin=True)

    @staticmethod
    def slice_of(caller: Caller, group: str) -> str:
        return group_slice(caller.unit_context().slice_name, group)

    # -- the loop -----------------------------------------------------------------------------

    def _on_signal(self, msg: Any) -> None:
        if msg.member != "JobRemoved" or len(msg.body) != 4:
            return
        unit = str(msg.body[2])
        if unit.startswith("jobrun-") and unit.endswith(".service"):
            self._ended.add(unit[len("jobrun-") : -len(".service")])
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the queue's dispatcher failed; trying again")
                delay, self._full = 1.0, True
            if not await wait_event(self._wake, delay):
                self._full = True

    async def run_once(self) -> float:
        """One pass: record the ends of started jobs (and their retries), fail jobs whose
        dependencies failed, start what may start. Returns the seconds until the next pass
        is due without a signal."""
        # A full look at least every SAFETY_NET seconds, also when signals never stop coming.
        full = self._full or time.monotonic() - self._last_full > SAFETY_NET
        if full:
            self._last_full = time.monotonic()
        self._full = False
        ended, self._ended = self._ended, set()
        for entry in self.queue.started():
            if full or entry.id in ended:
                try:
                    job = await self.manager.status(entry.id, ROOT)
                except JobrunError as e:
                    log.warning("cannot tell whether job %s ended: %s", entry.id, e)
                    continue
                if job.state.finished:
                    self._finished(entry, job)
        return await self._start_waiting()

    def _finished(self, entry: Entry, job: Job) -> None:
        """A started job ended: its slot is free; a failed attempt with retries left gets its
        next attempt, queued, in the same transaction."""
        spec = job.spec
        attempt, _ = self.queue.attempts(job.id)
        left = (spec.retry or 0) - (attempt - 1)
        with self.queue.write() as db:
            db.execute("DELETE FROM queue WHERE id = ?", (entry.id,))
            if job.state is JobState.FAILED and left > 0:
                delay = (spec.retry_delay or 0.0) * (2 ** (attempt - 1) if spec.retry_backoff
                                                     else 1)  # fmt: skip
                nxt = Manager.new_job(spec, caller_from(entry.caller))
                nxt = replace(nxt, owner=job.owner, uid=job.uid)
                number = Queue.add_attempt(db, job.id, nxt.id)
                Queue.add_job(db, nxt, replace(entry, id=nxt.id, not_before=now() + delay,
                                               started=False))  # fmt: skip
                log.info("job %s failed (%s): attempt %d is job %s", job.id,
                         job.outcome.reason, number, nxt.id)  # fmt: skip

    async def _start_waiting(self) -> float:
        next_at = now() + SAFETY_NET
        for owner, name in self.queue.waiting_groups():
            group = self.queue.group(owner, name) if name else None
            if group is not None and group.paused:
                continue
            free: float = math.inf
            if group is not None and group.parallel is not None:
                free = group.parallel - group.running
            after: tuple[int, int] | None = None
            while free > 0:
                rows = self.queue.waiting_in(owner, name, after, PAGE)
                for entry, priority, seq in rows:
                    after = (priority, seq)
                    if free <= 0:
                        break
                    if entry.not_before > now():
                        next_at = min(next_at, entry.not_before)
                        continue
                    if await self._start(entry, group):
                        free -= 1
                if len(rows) < PAGE:
                    break
        return max(0.0, next_at - now())

    async def _start(self, entry: Entry, group: Group | None) -> bool:
        """Start a waiting job if its dependencies allow (or fail it if they never will):
        whether it took a slot."""
        job, _ = self.manager.store.get(entry.id)
        verdict = await self._dependencies(job)
        if verdict is None:
            return False
        if verdict:
            self._fail_waiting(entry.id, verdict)
            return False
        if not self.queue.claim(entry.id):
            return False  # stopped meanwhile
        caller = caller_from(entry.caller)
        slice_name = None
        try:
            if group is not None:
                slice_name = self.slice_of(caller, group.name)
                await self.manager.set_slice_limits(slice_name, group.limits)
            await self.manager.start(job.spec, caller, entry.slice_limits, job=job,
                                     slice_name=slice_name)  # fmt: skip
        except (JobrunError, PermissionDenied) as e:
            # Marked failed if systemd refused; without an answer it may run: the next full
            # pass finds out either way.
            log.warning("job %s of the queue did not start: %s", job.id, e)
            self._full = True
        return True

    async def _dependencies(self, job: Job) -> str | None:
        """ "" when the job may start, None while it must wait, else why it never will."""
        for dep in job.spec.after:
            last = self.queue.last_attempt(dep)
            if self.queue.get(last) is not None:
                return None  # waiting, running, or ended and not yet seen so
            try:
                state = (await self.manager.status(last, ROOT)).state
            except JobrunError:
                return f"dependency {dep} is gone"
            if not state.finished:
                return None
            if state is not JobState.SUCCEEDED and not job.spec.after_any:
                return f"dependency {dep} {state.value}"
        return ""

    def _fail_waiting(self, job_id: str, reason: str) -> None:
        outcome = Outcome(JobState.FAILED, reason=reason, finished_at=datetime.now(UTC))
        with self.queue.write() as db:
            if db.execute("DELETE FROM queue WHERE id = ? AND started = 0", (job_id,)).rowcount:
                Queue.set_outcome(db, job_id, outcome)
