"""Who may do what, decided once for every front end of jobrund.

`admit`: what a caller's job may have. jobrund's D-Bus API and its gRPC API both start jobs
through it: a second copy of a security rule is a future hole. Admins (and root) are not capped;
everyone else gets the caps of /etc/jobrun/jobrund.toml (config.py) applied to the spec, and their
slice's aggregate limits.

`dbus_caller` and `authorize` (both in `authorized_dbus_caller`): who a D-Bus caller is and
whether polkit lets it call a method (jobrun's own actions, polkit/). A gRPC caller is who its
certificate names and the config maps (daemon/grpc.py); its authorization is that mapping.

`admit_start`: a D-Bus Start, whose caller's admin-ness (polkit's `manage-all`) is asked only
where the answer changes what `admit` decides (docs/DESIGN.md, authorization's cost).
"""

from __future__ import annotations

import asyncio
import dataclasses
import pwd
from typing import TYPE_CHECKING, Any

from ..errors import JobrunError, PermissionDenied
from ..manager import Caller
from ..model import queued
from . import polkit

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

    from ..config import Config
    from ..manager import Manager
    from ..model import JobSpec

# The polkit action each of jobrund's D-Bus methods (by verb, dbus_api.METHODS) needs of a caller
# other than root and admins, and what it is for. Methods not named need none.
_MANAGE = (polkit.ACTION_MANAGE_OWN, "manage jobs")
ACTIONS: dict[str, tuple[str, str]] = {
    "start": (polkit.ACTION_START, "start jobs"),  # also of admins: starting is not managing
    "start_scope": (polkit.ACTION_START, "start jobs"),
    "report_scope_exit": _MANAGE,
    "stop": _MANAGE,
    "kill": _MANAGE,  # as Stop: the caller's own jobs, or an admin's any
    "pause": _MANAGE,
    "resume": _MANAGE,
    "set_limits": _MANAGE,  # within the caller's caps: admit_change
    "status": _MANAGE,
    "list_jobs": _MANAGE,
    "logs": _MANAGE,
    "subscribe": _MANAGE,
    "usage": _MANAGE,  # the caller's own running jobs, or an admin's every one
    "schedule": (polkit.ACTION_START, "start jobs"),  # daemon/schedules.py
    "fire_schedule": (polkit.ACTION_START, "start jobs"),  # as its owner
    "list_schedules": _MANAGE,
    "show_schedule": _MANAGE,
    "remove_schedule": _MANAGE,
    "group_set": _MANAGE,  # the caller's own groups only (dispatch.py)
    "groups": _MANAGE,
}
# Methods whose caller is asked `manage-all` only where the answer changes the outcome:
# `admit_start`, which their handler must call.
ADMIN_WHEN_IT_MATTERS = frozenset({"start"})


async def admit(
    config: Config, manager: Manager, spec: JobSpec, caller: Caller
) -> tuple[JobSpec, dict[str, int] | None]:
    """The spec as the caller may run it (defaults filled in, caps enforced: InvalidArgument or
    PermissionDenied otherwise), and the aggregate limits of the caller's slice (None: leave the
    slice as it is, for an admin's)."""
    if caller.admin:
        return spec, None
    # Counting asks systemd, and systemd answers only after the start jobs queued before the
    # question (~50 ms a Start when one follows another): only where a cap needs the count, and
    # only when the caller's jobs without a recorded end (at least those running) reach it.
    running = 0
    cap = config.caps_for(caller.user).running_jobs
    if cap is not None:
        running = manager.unfinished_count(caller)
        if running >= cap:
            running = await manager.running_count(caller)
    spec = config.apply(spec, caller.user, running)
    # A remote caller's jobs run in their local user's slice (that user's limits), or in the
    # DynamicUser jobs' one.
    return spec, config.slice_limits(caller.run_as if caller.remote else caller.user)


def admit_change(config: Config, changes: dict[str, Any], caller: Caller) -> None:
    """That a caller may change a running job's limits to `changes` (properties.build_changes):
    admins uncapped, everyone else within their caps, as for a new job (admit)."""
    if caller.admin:
        return
    config.check_changes(changes, caller.user)  # the caps `admit` applies to its jobs


async def admit_start(
    config: Config, manager: Manager, spec: JobSpec, caller: Caller, bus: MessageBus, sender: str
) -> tuple[Caller, JobSpec, dict[str, int] | None]:
    """`admit` for a D-Bus Start, whose caller `authorized_dbus_caller` returned without asking
    polkit whether it is an admin (`caller.admin` False until asked). An admin's job is the
    spec as given, in a slice left as it is. Where the caps, applied as for anyone, leave the
    spec unchanged, refuse nothing and find the caller's slice with their limits already, that
    is the same job: the question is not asked, and polkitd (which answers one question at a
    time, ~4 ms each) has one question of the Start, not two. Everywhere else (a cap changes or
    refuses it, the slice's limits are still to be set, the job goes to the queue, which keeps
    its caller) it is asked, and decides as `admit` always did. The caller, spec and limits as
    `submit` takes them."""
    if caller.admin:  # root (_local_caller), or already asked
        return (caller, *await admit(config, manager, spec, caller))
    try:
        capped, limits = await admit(config, manager, spec, caller)
    except JobrunError:
        if not await polkit.check(bus, sender, polkit.ACTION_MANAGE_ALL):
            raise
        return dataclasses.replace(caller, admin=True), spec, None
    if (
        not queued(spec)
        and capped == spec
        and limits == manager.slice_limits_of(caller.unit_context().slice_name)
    ):
        return caller, capped, limits
    if await polkit.check(bus, sender, polkit.ACTION_MANAGE_ALL):
        return dataclasses.replace(caller, admin=True), spec, None
    return caller, capped, limits


def _local_caller(uid: int) -> Caller:
    """A local user by uid, before polkit is asked: only root is an admin yet."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise PermissionDenied(f"uid {uid} has no user name on this host") from None
    return Caller(uid, user, admin=uid == 0)


async def dbus_caller(bus: MessageBus, sender: str, uid: int) -> Caller:
    """The Caller of a D-Bus request whose sender the bus says is `uid`."""
    caller = _local_caller(uid)
    if uid == 0:
        return caller
    return dataclasses.replace(
        caller, admin=await polkit.check(bus, sender, polkit.ACTION_MANAGE_ALL)
    )


async def authorized_dbus_caller(
    bus: MessageBus, sender: str | None, uid: int, verb: str, interactive: bool
) -> Caller:
    """`dbus_caller`, then `authorize` for the method `verb`: the same decisions and errors, in
    the same order. Where both polkit questions are asked whatever the first answer (`start`'s
    action, which admins need too), they are asked at once: one round trip to polkitd instead
    of two in a row. `manage-own` is only asked of a non-admin, so after `manage-all`'s answer:
    asking it anyway could ask an admin something (even interactively) that is not needed.

    Start (ADMIN_WHEN_IT_MATTERS) asks only its own action here: the caller comes back with
    `admin` False, and `admit_start` asks `manage-all` where the answer matters."""
    action = ACTIONS.get(verb)
    if verb in ADMIN_WHEN_IT_MATTERS and uid != 0 and sender is not None:
        caller = _local_caller(uid)
        await authorize(bus, sender, caller, verb, interactive)
        return caller
    if uid == 0 or sender is None or action is None or action is _MANAGE:
        caller = await dbus_caller(bus, sender or "", uid)
        await authorize(bus, sender, caller, verb, interactive)
        return caller
    name, what = action
    who, allowed = await asyncio.gather(
        dbus_caller(bus, sender, uid),
        polkit.check(bus, sender, name, interactive),
        return_exceptions=True,
    )
    if isinstance(who, BaseException):
        raise who  # as dbus_caller alone: an unknown uid, polkit failing
    if isinstance(allowed, BaseException):
        raise allowed
    if not allowed:
        raise PermissionDenied(f"not authorized to {what}", f"polkit action {name}")
    return who


async def authorize(
    bus: MessageBus, sender: str | None, caller: Caller, verb: str, interactive: bool
) -> None:
    """PermissionDenied unless polkit lets the caller call the method `verb`; `interactive`:
    the caller may wait for an authentication dialog."""
    action = ACTIONS.get(verb)
    if action is None or caller.uid == 0 or (caller.admin and action is _MANAGE):
        return
    if sender is None:
        raise PermissionDenied("no sender")
    name, what = action
    if not await polkit.check(bus, sender, name, interactive):
        raise PermissionDenied(f"not authorized to {what}", f"polkit action {name}")
