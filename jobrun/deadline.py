"""jobrund's deadline keeper: `--timeout` as a clock that stops while the job is paused.

systemd's own clock for a oneshot job (TimeoutStartSec=) cannot be changed once the unit runs
(systemd 252: "Cannot set property"), so a job paused for an hour would be killed an hour early.
Jobs started through jobrund therefore carry no TimeoutStartSec= (Manager.holds_deadlines);
jobrund keeps their clock instead: a job's deadline is its start + its timeout + the time it
spent paused, all in its record, so a restarted jobrund carries on with the same deadlines and
ends at once a job whose deadline passed while it was down. Past its deadline, a running job is
marked timed out (store) and stopped (SIGTERM, SIGKILL after --stop-timeout, as systemd's own
timeout does); Manager derives its outcome as failed with reason and result "timeout".
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .aio import wait_event
from .caller import ROOT
from .errors import JobrunError, SystemdError
from .model import JobState
from .systemd import NO_SUCH_UNIT

if TYPE_CHECKING:
    from .manager import Manager

log = logging.getLogger(__name__)

# The longest the keeper sleeps without a reason to wake (a start it missed a signal of).
MAX_NAP = 1.0


def deadline(started_at: datetime, timeout: float, paused_seconds: float) -> datetime:
    """When a job that is not paused now runs out of its --timeout."""
    return started_at + timedelta(seconds=timeout + paused_seconds)


async def expire_due(manager: Manager) -> float:
    """End every running job past its deadline; seconds until the next deadline (or MAX_NAP)."""
    waiting = manager.queue.waiting_ids()
    nap = MAX_NAP
    for job_id, timeout, started_at, paused, paused_seconds in manager.store.deadline_candidates():
        if paused or job_id in waiting:
            continue  # its clock stands still, or has not started
        if started_at is None:  # started, but its start time is not recorded yet: ask systemd
            started_at = (await manager.status(job_id, ROOT)).started_at
            if started_at is None:
                nap = min(nap, 0.05)
                continue
        left = (deadline(started_at, timeout, paused_seconds) - datetime.now(UTC)).total_seconds()
        if left > 0:
            nap = min(nap, left)
            continue
        await expire(manager, job_id, timeout)
    return nap


async def expire(manager: Manager, job_id: str, timeout: float) -> None:
    """Stop a job that ran out of its time, if it still runs and is not paused."""
    job = await manager.status(job_id, ROOT)
    if job.state is not JobState.RUNNING:
        return  # it ended meanwhile, or was paused: its clock stopped in time
    manager.store.set_timed_out(job_id, datetime.now(UTC))  # first: a stop is then a timeout
    try:
        await manager.systemd.stop_unit(job.unit)
    except SystemdError as e:
        manager.store.set_timed_out(job_id, None)  # not stopped: its own outcome stands
        if e.dbus_error != NO_SUCH_UNIT:  # else it had ended meanwhile
            raise
        return
    log.info("job %s: timeout after %gs of running: stopped", job_id, timeout)


async def keep_forever(manager: Manager) -> None:
    """jobrund's task: sleep until the next deadline, or until a job starts, pauses or resumes
    (manager.deadlines_changed)."""
    while True:
        manager.deadlines_changed.clear()
        try:
            nap = await expire_due(manager)
        except JobrunError as e:
            log.warning("deadlines: %s", e)
            nap = MAX_NAP
        except Exception:  # the keeper must outlive any one failure (a locked database…)
            log.exception("deadlines: a pass failed; trying again")
            nap = MAX_NAP
        await wait_event(manager.deadlines_changed, nap)
