"""Steering a running job: pause and resume (freezer.py), changing its limits (`jobrun set`), and
the accounting record it leaves behind (accounting.py). Manager's verbs of the same names call
these; the owner check is Manager.status's, as for every verb.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import accounting as acct
from . import freezer
from .errors import InvalidArgument, JobrunError, SystemdError, WrongState
from .model import Accounting, Job, JobState, unit_name
from .properties import SETTINGS_BY_FIELD
from .systemd import NO_SUCH_PROCESS, NO_SUCH_UNIT, SCOPE, SERVICE

if TYPE_CHECKING:
    from .caller import Caller
    from .manager import Manager
    from .store import Store

log = logging.getLogger(__name__)

_GONE = (NO_SUCH_UNIT, NO_SUCH_PROCESS, "org.freedesktop.systemd1.UnitInactive")


def _finished(job: Job, what: str) -> WrongState:
    return WrongState(f"job {job.id} has finished ({job.state}): {what}", "see `jobrun status`")


# -- state ------------------------------------------------------------------------------------


def paused(store: Store, job_id: str, props: Mapping[str, Any]) -> bool:
    """Whether a running job is paused: systemd's FreezerState, else the kernel's cgroup v2
    freezer of its cgroup, else (SIGSTOP, which nothing records) jobrun's own record."""
    if props.get("FreezerState") in ("frozen", "freezing"):
        return True
    if freezer.kernel_frozen(str(props.get("ControlGroup") or "")):
        return True
    paused_at, how, _ = store.pause_info(job_id)
    return paused_at is not None and how == freezer.How.SIGSTOP


def record_usage(store: Store, job: Job, props: Mapping[str, Any], final: bool) -> Job:
    """The job with its accounting brought up to date from its loaded unit (systemd's figures)
    and, while it runs, its cgroup (the kernel's); stored when it grew."""
    reading = acct.from_unit(props)
    cgroup = str(props.get("ControlGroup") or "")
    if not final and cgroup:
        reading = acct.merge(reading, acct.read_cgroup(cgroup)) or reading
    if reading == Accounting():
        return job
    merged = acct.merge(job.accounting, reading)
    last = job.accounting.sampled_at if job.accounting else None
    fresh = (
        not final
        and last is not None
        and merged is not None
        and merged.sampled_at is not None
        and (merged.sampled_at - last).total_seconds() < acct.SAMPLE_INTERVAL
    )  # jobrund's sampler keeps it: a status (or list) of running jobs need not write each time
    if merged != job.accounting and merged is not None and not fresh:
        try:
            store.set_accounting(job.id, merged)
        except JobrunError as e:  # a cache of what was measured: the status stays right
            log.warning("%s", e)
    return replace(job, accounting=merged)


async def sample(manager: Manager, cgroups: dict[str, str]) -> None:
    """One reading of every running job's cgroup into its accounting record (jobrund, every
    accounting.SAMPLE_INTERVAL): what a job leaves behind is its last reading, since systemd
    removes a cgroup as its unit stops. `cgroups`: job ID → ControlGroup, kept between calls."""
    units = await manager.systemd.list_units("jobrun-*.service", "jobrun-*.scope")
    running = {name[len("jobrun-") :].rsplit(".", 1)[0]: (path, name)
               for name, active, _, path, _ in units
               if active in ("active", "activating", "deactivating")}  # fmt: skip
    for gone in set(cgroups) - set(running):
        del cgroups[gone]
    for job_id, (path, name) in running.items():
        if job_id not in cgroups:
            kind = SCOPE if name.endswith(".scope") else SERVICE
            props = await manager.systemd.unit_properties(path, ("ControlGroup",), kind)
            if props.get("ControlGroup"):
                cgroups[job_id] = str(props["ControlGroup"])
    todo = [(job_id, cg) for job_id, cg in cgroups.items() if job_id in running]
    readings = await asyncio.to_thread(lambda: [(j, acct.read_cgroup(cg)) for j, cg in todo])
    changed = []
    for job_id, reading in readings:
        if reading.sampled_at is None:
            continue  # the cgroup went away meanwhile: keep the last good reading
        merged = acct.merge(manager.store.accounting(job_id), reading)
        if merged is not None:
            changed.append((job_id, merged))
    if changed:
        manager.store.set_accountings(changed)  # one transaction for all of them


async def sample_forever(manager: Manager) -> None:
    cgroups: dict[str, str] = {}
    while True:
        try:
            await sample(manager, cgroups)
        except JobrunError as e:
            log.warning("accounting: %s", e)
        await asyncio.sleep(acct.SAMPLE_INTERVAL)


# -- verbs ------------------------------------------------------------------------------------


async def _control_group(manager: Manager, job: Job) -> str:
    path = await manager.systemd.get_unit(job.unit)
    props = await manager.systemd.unit_properties(path, ("ControlGroup",)) if path else {}
    return str(props.get("ControlGroup") or "")


async def pause(manager: Manager, job_id: str, caller: Caller | None) -> Job:
    job = await manager.status(job_id, caller)
    if job.state is JobState.PAUSED:
        raise WrongState(f"job {job.id} is paused already", f"`jobrun resume {job.id}`")
    if job.state.finished:
        raise _finished(job, "there is nothing to pause")
    cgroup = await _control_group(manager, job)
    try:
        how = await freezer.freeze(manager.systemd, job.unit, cgroup)
    except SystemdError as e:
        if e.dbus_error in _GONE:
            ended = await manager.status(job.id, caller)
            raise _finished(ended, "there is nothing to pause") from None
        raise
    manager.store.set_paused(job.id, datetime.now(UTC), how)
    manager.deadlines_changed.set()
    log.info("job %s paused (%s)", job.id, how)
    return await manager.status(job.id, caller)


async def thaw(manager: Manager, job: Job) -> float:
    """Resume a paused job's processes; how long it was paused (seconds)."""
    paused_at, how, _ = manager.store.pause_info(job.id)
    cgroup = await _control_group(manager, job)
    try:
        await freezer.thaw(manager.systemd, job.unit, cgroup, freezer.How(how) if how else None)
    except SystemdError as e:
        if e.dbus_error not in _GONE:
            raise
    paused_for = (datetime.now(UTC) - paused_at).total_seconds() if paused_at else 0.0
    manager.store.set_resumed(job.id, paused_for)
    manager.deadlines_changed.set()  # its --timeout clock runs again (deadline.py)
    return paused_for


async def resume(manager: Manager, job_id: str, caller: Caller | None) -> Job:
    job = await manager.status(job_id, caller)
    if job.state.finished:
        raise _finished(job, "there is nothing to resume")
    if job.state is not JobState.PAUSED:
        raise WrongState(f"job {job.id} is running, not paused", f"`jobrun pause {job.id}`")
    await thaw(manager, job)
    return await manager.status(job.id, caller)


async def set_limits(
    manager: Manager, job_id: str, changes: dict[str, Any], caller: Caller | None
) -> Job:
    """Change live settings (properties.build_changes: parsed, `live` rows only) of a running
    or paused job, until it ends (SetUnitProperties, runtime). The caller's caps are the front
    end's to check first (admission.admit_change)."""
    from dbus_fast import Variant

    job = await manager.status(job_id, caller)
    if job.state.finished:
        raise _finished(job, "its limits can no longer change")
    now = {s: getattr(job.spec, s) for s in ("memory_high", "memory_max")}
    now.update({k: v for k, v in job.live_limits.items() if k in now})
    now.update({k: v for k, v in changes.items() if k in now})
    if None not in now.values() and now["memory_high"] > now["memory_max"]:
        raise InvalidArgument("--memory-high must not be above --memory-max")
    props = []
    for key, value in changes.items():
        s = SETTINGS_BY_FIELD[key]
        if not s.live:  # build_changes refuses these; a second line of defence
            raise InvalidArgument(f"{s.flags} cannot be changed while a job runs")
        props.append((s.prop, Variant(s.signature, s.to_dbus(value))))
    try:
        await manager.systemd.set_unit_properties(unit_name(job.id), props)
    except SystemdError as e:
        if e.dbus_error in _GONE:
            ended = await manager.status(job.id, caller)
            raise _finished(ended, "its limits can no longer change") from None
        raise
    manager.store.set_live_limits(job.id, {**job.live_limits, **changes})
    log.info("job %s: limits set live: %s", job.id, changes)
    return await manager.status(job.id, caller)
