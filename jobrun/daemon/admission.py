"""Who may do what, decided once for every front end of jobrund.

`admit`: what a caller's job may have. jobrund's D-Bus API and its gRPC API both start jobs
through it: a second copy of a security rule is a future hole. Admins (and root) are not capped;
everyone else gets the caps of /etc/jobrun/jobrund.toml (config.py) applied to the spec, and their
slice's aggregate limits.

`dbus_caller` and `authorize` (both in `authorized_dbus_caller`): who a D-Bus caller is and
whether polkit lets it call a method (jobrun's own actions, polkit/). A gRPC caller is who its
certificate names and the config maps (daemon/grpc.py); its authorization is that mapping.
"""

from __future__ import annotations

import asyncio
import pwd
from typing import TYPE_CHECKING, Any

from ..errors import PermissionDenied
from ..manager import Caller
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


async def dbus_caller(bus: MessageBus, sender: str, uid: int) -> Caller:
    """The Caller of a D-Bus request whose sender the bus says is `uid`."""
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise PermissionDenied(f"uid {uid} has no user name on this host") from None
    if uid == 0:
        return Caller(0, user, admin=True)
    admin = await polkit.check(bus, sender, polkit.ACTION_MANAGE_ALL)
    return Caller(uid, user, admin=admin)


async def authorized_dbus_caller(
    bus: MessageBus, sender: str | None, uid: int, verb: str, interactive: bool
) -> Caller:
    """`dbus_caller`, then `authorize` for the method `verb`: the same decisions and errors, in
    the same order. Where both polkit questions are asked whatever the first answer (`start`'s
    action, which admins need too), they are asked at once: one round trip to polkitd instead
    of two in a row. `manage-own` is only asked of a non-admin, so after `manage-all`'s answer:
    asking it anyway could ask an admin something (even interactively) that is not needed."""
    action = ACTIONS.get(verb)
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
