"""Scope jobs (`jobrun run --scope`): the caller's own process, put in a transient scope that
systemd accounts and limits (docs/DESIGN.md, "Scope jobs"). A scope has no exit status in
systemd: its client reports it (report_exit), and `refresh` says how one without a report
stands. Manager's start_scope, report_exit and status call these.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from . import outcome as oc
from . import processes
from .caller import scope
from .errors import InvalidArgument, NoJournalOutput, PermissionDenied, SystemdError
from .model import Job, JobKind, JobSpec, JobState, Outcome, new_job_id
from .systemd import NO_ANSWER, SCOPE
from .unit import scope_properties

if TYPE_CHECKING:
    from .caller import Caller
    from .manager import Manager


async def start(
    manager: Manager,
    spec: JobSpec,
    claim: processes.Claim,
    parent: int,
    caller: Caller,
    slice_limits: dict[str, int] | None = None,
) -> Job:
    """Put the caller's process `claim` in a new scope job (`jobrun run --scope`) in the
    caller's slice, with the spec's limits. `parent`: the PID of the caller's process
    that asks, which must be the claimed process's parent (processes.check_child) and
    reports its exit status (report_exit)."""
    if caller.remote or spec.kind != JobKind.SCOPE:
        raise InvalidArgument("only a local caller's own process can be put in a scope")
    processes.check_child(claim, caller.uid, parent)
    parent_started = processes.start_time(parent)
    if parent_started is None:
        raise PermissionDenied("the process asking has exited")
    slice_name = caller.unit_context().slice_name
    if slice_limits is not None:
        await manager.set_slice_limits(slice_name, slice_limits)
    now = datetime.now(UTC)
    job = Job(id=new_job_id(), spec=spec, owner=caller.user, uid=caller.uid,
              created_at=now, started_at=now)  # fmt: skip
    # Record first, with who reports its exit, so the scope is never unknown to jobrun.
    manager.store.add(job)
    manager.store.set_started(job.id, None, now)
    manager.store.set_reporter(job.id, parent, parent_started)
    await manager.systemd.subscribe()  # JobRemoved of the start job, below
    try:
        sd_job = await manager.systemd.start_transient_unit(
            job.unit, scope_properties(job.id, spec, claim.pid, slice_name), keep_result=True
        )
    except (SystemdError, PermissionDenied) as e:
        if getattr(e, "dbus_error", None) not in NO_ANSWER:
            manager.store.remove(job.id)
        raise
    # systemd moves the process when its start job runs, after the reply: the client lets its
    # child exec only once this returns, so nothing of the command runs outside the scope.
    result = await manager.systemd.expect_job(sd_job)
    if result != "done":
        outcome = Outcome(JobState.FAILED, result, reason=f"systemd's start of the scope: {result}",
                          finished_at=datetime.now(UTC))  # fmt: skip
        manager.cache(manager.store.set_outcome, job.id, outcome)
        raise SystemdError(f"systemd could not start the scope {job.unit} ({result})")
    if not processes.still_there(claim):
        # It exited between the check and systemd's move, so the PID systemd moved may
        # since be another's (systemd 252 takes PIDs, not pidfds): the job is over, and
        # nobody manages what the scope may hold through jobrun (docs/DESIGN.md).
        outcome = Outcome(JobState.FAILED, "unreported", reason="the process exited before "
                          "it was put in the scope", finished_at=datetime.now(UTC))  # fmt: skip
        manager.cache(manager.store.set_outcome, job.id, outcome)
        raise PermissionDenied(f"process {claim.pid} exited before it was put in the scope")
    return job


async def report_exit(
    manager: Manager, job_id: str, caller: Caller, exit_code: int | None, signum: int | None
) -> Job:
    """A scope job's end as its client saw its process end (`exit_code`, or killed by
    `signum`): accepted once, from the job's owner only (not an admin: nobody else saw
    it). The rest of the scope ends with it, as a service's (KillMode=control-group)."""
    if (exit_code is None) == (signum is None):
        raise InvalidArgument("report either an exit code or a signal")
    if exit_code is not None and not 0 <= exit_code <= 255:
        raise InvalidArgument(f"exit code {exit_code} is not from 0 to 255")
    if signum is not None and (signum not in signal.valid_signals() or signum == 0):
        raise InvalidArgument(f"{signum} is not a signal number")
    full = manager.store.resolve(job_id, *scope(replace(caller, admin=False)))
    job, stop_requested = manager.store.get(full)
    if job.spec.kind != JobKind.SCOPE:
        raise InvalidArgument(f"job {job.id} is not a scope: systemd reports how it ended")
    outcome = oc.reported(exit_code, signum, stop_requested is not None, datetime.now(UTC))
    if not manager.store.set_outcome_once(job.id, outcome):
        raise InvalidArgument(f"job {job.id} has ended already; its end was recorded")
    with contextlib.suppress(SystemdError):  # the scope is gone: nothing left in it
        await manager.systemd.stop_unit(job.unit)
    for event in manager.report_waiters:
        event.set()
    return replace(job, outcome=outcome)


async def refresh(manager: Manager, job: Job, stop_requested: bool) -> Job:
    """A scope job with no reported end: running while its scope runs, or while the client
    that reports it lives (its process has ended, its report is on the way); else it ended
    unreported (the client was killed)."""
    path = await manager.systemd.get_unit(job.unit)
    props = await manager.systemd.unit_properties(path, oc.STATUS_PROPERTIES, SCOPE) if path else {}
    if props and job.invocation_id is None:
        job = manager.record_start(job, props.get("InvocationID"), job.started_at)
    if props and oc.running(props):
        return replace(job, outcome=Outcome(JobState.RUNNING), usage=oc.usage(props))
    reporter = manager.store.reporter(job.id)
    if reporter is not None and processes.alive(*reporter):
        return replace(job, outcome=Outcome(JobState.RUNNING))
    outcome = oc.unreported(stop_requested, datetime.now(UTC))
    if not manager.store.set_outcome_once(job.id, outcome):  # reported meanwhile
        return manager.store.get(job.id)[0]
    return replace(job, outcome=outcome)


def require_journal_output(job: Job) -> None:
    """NoJournalOutput for a scope job: its output went to its caller's terminal; the same
    for a terminal job's (`run --pty`)."""
    if job.spec.terminal:
        raise NoJournalOutput(
            f"job {job.id} ran on its caller's terminal (run --pty): its output went there, "
            "not to the journal, and jobrun has none of it",
            "record the session yourself (e.g. `script -c 'jobrun run --pty -- CMD' FILE`), "
            "or run the command without --pty to keep its output",
        )
    if job.spec.kind == JobKind.SCOPE:
        raise NoJournalOutput(
            f"job {job.id} ran as a scope in its caller's terminal (run --scope): its output "
            "went there, not to the journal, and jobrun has none of it",
            "redirect it yourself (e.g. `jobrun run --scope -- CMD | tee FILE`), or run the "
            "command as a job of its own (without --scope) to keep its output",
        )
