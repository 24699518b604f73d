"""Who asks the Manager, which jobs they see, and who their jobs run as."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from .errors import PermissionDenied
from .model import user_slice
from .unit import UnitContext


@dataclass(frozen=True)
class Caller:
    """Who asks. `admin` callers see and manage every job; others only their own.

    A local caller owns the jobs of its uid, which run as that user (root's with the profile's
    DynamicUser=). A `remote` caller (daemon/grpc.py: a client certificate's identity, `user` being
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

    def unit_context(self) -> UnitContext:
        """Who this caller's jobs run as, with which home, in which slice (model.user_slice)."""
        if self.remote:
            user = self.uid if self.run_as is not None else None
            dynamic = self.run_as is None
        else:
            user, dynamic = (None if self.uid == 0 else self.uid), False
        return UnitContext(
            user=user,
            dynamic_user=dynamic,
            slice_name=user_slice(None if self.remote and self.run_as is None else self.uid),
            home=home_of(user),
        )


# jobrund acting on its own (its queue, schedules, deadlines): root, who sees every job.
ROOT = Caller(0, "root", admin=True)


def remote_caller(name: str, run_as: str | None, admin: bool) -> Caller:
    """The remote identity `name` (a client certificate's CN), whose jobs run as the local user
    `run_as` (None: DynamicUser=); PermissionDenied if that user is gone."""
    uid = -1
    if run_as is not None:
        try:
            uid = pwd.getpwnam(run_as).pw_uid
        except KeyError:
            raise PermissionDenied(f"the local user {run_as!r} of remote:{name} is gone") from None
    return Caller(uid, f"remote:{name}", admin=admin, remote=True, run_as=run_as)


def home_of(uid: int | None) -> str | None:
    """The home directory of the user a job runs as, from the user database (not the caller)."""
    if uid is None:
        return None
    try:
        return os.path.normpath(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return None


def scope(caller: Caller) -> tuple[int | None, str | None]:
    """The store's filter for the jobs a caller may see: (uid, owner name); None: any."""
    if caller.admin:
        return None, None
    # A local user's jobs are those they started here: a remote identity's jobs that run as the
    # same local user (run_as) stay the remote identity's, and the other way round.
    return (None, caller.user) if caller.remote else (caller.uid, caller.user)
