"""The admission check: what a caller's job may have, decided once for every front end.

jobrund's D-Bus API and its gRPC API both start jobs through `admit`: a second copy of a security
rule is a future hole. Admins (and root) are not capped; everyone else gets the caps of
/etc/jobrun/jobrund.toml (config.py) applied to the spec, and their slice's aggregate limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config
    from .manager import Caller, Manager
    from .model import JobSpec


async def admit(
    config: Config, manager: Manager, spec: JobSpec, caller: Caller
) -> tuple[JobSpec, dict[str, int] | None]:
    """The spec as the caller may run it (defaults filled in, caps enforced: InvalidArgument or
    PermissionDenied otherwise), and the aggregate limits of the caller's slice (None: leave the
    slice as it is, for an admin's)."""
    if caller.admin:
        return spec, None
    # Counting asks systemd, and systemd answers only after the start jobs queued before the
    # question: only where a cap needs the count.
    running = 0
    if config.caps_for(caller.user).running_jobs is not None:
        running = await manager.running_count(caller)
    spec = config.apply(spec, caller.user, running)
    # A remote caller's jobs run in their local user's slice (that user's limits), or in the
    # DynamicUser jobs' one.
    return spec, config.slice_limits(caller.run_as if caller.remote else caller.user)
