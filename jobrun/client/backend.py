"""What the CLI does with jobs, wherever they run, and what the backends share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import JobrunError
from ..model import flatten

if TYPE_CHECKING:
    from ..journal import Record
    from ..model import Job
    from ..processes import Claim
    from ..queuestore import Group
    from ..schedule import Schedule
    from ..usage import Sample

    Batch = list[Record]  # `list` is a method name in the class below
    Jobs = list[Job]
    Samples = list[Sample]
    Schedules = list[Schedule]
    Argv = list[str]
    Groups = list[Group]  # `list` is a method name in the class below

# Asking again after the server went away mid-stream (jobrund restarted): ~2 min in all.
RESUME_RETRIES = 50
RESUME_DELAY = 0.1  # times the retry's number, at most RESUME_DELAY_MAX
RESUME_DELAY_MAX = 3.0


def _no_groups(mode: str) -> JobrunError:
    from ..errors import InvalidArgument

    return InvalidArgument(
        f"groups are jobrund's queue, which is not reachable here (mode: {mode})",
        "run it where jobrund serves the system bus (JOBRUN_MODE=daemon)",
    )


class Backend(Protocol):
    """A backend subclasses this for `logs`; the rest each implements. In `logs` and
    `log_batches`, cursors=False lets a backend leave out the cursor of records but the last of
    each batch (as "")."""

    mode: str

    # stdin: a descriptor the job reads; tty: a pseudo-terminal's slave, its stdio (run --pty)
    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None, tty: int | None = None) -> Job: ...  # fmt: skip
    async def start_scope(self, command: list[str], name: str | None, values: dict[str, Any],
                          claim: Claim) -> Job:  # fmt: skip
        """`run --scope`: this process's child `claim` in a new scope job."""
        ...

    async def report_exit(self, job_id: str, exit_code: int | None, signum: int | None) -> Job:
        """A scope job's end as this process saw its child end."""
        ...

    async def stop(self, job_id: str, timeout: float | None) -> tuple[Job, bool]: ...
    async def kill(self, job_id: str, signum: int) -> tuple[Job, bool]: ...
    async def status(self, job_id: str) -> Job: ...
    async def pause(self, job_id: str) -> Job: ...
    async def resume(self, job_id: str) -> Job: ...
    # values: settings by field, as the CLI has them (text), checked by build_changes
    async def set_limits(self, job_id: str, values: dict[str, Any]) -> Job: ...
    async def list(self, all: bool) -> Jobs: ...
    async def wait(self, job_id: str) -> Job: ...
    async def usage(self) -> Samples: ...
    def log_batches(
        self,
        job_id: str,
        *,
        follow: bool = False,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        cursors: bool = True,
    ) -> AsyncGenerator[Batch, None]: ...
    async def close(self) -> None: ...

    # Schedules (schedule.py) are jobrund's: its D-Bus backend has them; the others say so.
    async def schedule(self, command: Argv, name: str | None, values: dict[str, Any],
                       when: dict[str, Any]) -> Schedule:  # fmt: skip
        """A schedule of the command; `when`: at (datetime), in (seconds) or every (an
        OnCalendar= expression), and catch_up."""
        raise self._no_schedules()

    async def schedules(self) -> Schedules:
        raise self._no_schedules()

    async def show_schedule(self, schedule_id: str) -> Schedule:
        raise self._no_schedules()

    async def remove_schedule(self, schedule_id: str) -> Schedule:
        raise self._no_schedules()

    def _no_schedules(self) -> JobrunError:
        from ..errors import InvalidArgument, SystemdUnavailable

        if self.mode == "remote":
            return InvalidArgument("schedules are not available over the remote API yet")
        return SystemdUnavailable(
            "schedules are jobrund's, and jobrund is not reachable on the system bus",
            "install jobrun's package (it brings jobrund); `jobrun doctor` checks the host",
        )

    async def groups(self) -> Groups:
        """The caller's groups (jobrund's queue, dispatch.py): only through jobrund's D-Bus."""
        raise _no_groups(self.mode)

    async def set_group(self, name: str, options: dict[str, str]) -> Group:
        raise _no_groups(self.mode)

    def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        cursors: bool = True,
    ) -> AsyncGenerator[Record, None]:
        """The job's records one by one (see `log_batches`)."""
        return flatten(
            self.log_batches(
                job_id,
                follow=follow,
                after_cursor=after_cursor,
                tail=tail,
                since=since,
                cursors=cursors,
            )
        )


async def resume_after(
    read: Callable[[str | None, int | None, datetime | None], AsyncGenerator[Batch | None, None]],
    gone: type[JobrunError],
    *,
    after_cursor: str | None,
    tail: int | None,
    since: datetime | None,
) -> AsyncGenerator[Batch, None]:
    """The batches of `read(after_cursor, tail, since)`, a stream of jobrund's; if the server
    goes away mid-stream (`read` raises `gone`), read again after the last cursor received: no
    gap, no duplicate. `read` yields None once its stream is open: a stream that fails before
    then, with no cursor to resume after, is reported at once (the server is not there at all)."""
    retries = 0
    opened = False
    while True:
        try:
            async with contextlib.aclosing(read(after_cursor, tail, since)) as batches:
                async for batch in batches:
                    if batch is None:
                        opened = True
                    elif batch:
                        retries = 0
                        after_cursor, tail, since = batch[-1].cursor, None, None
                        yield batch
            return
        except gone:
            if (after_cursor is None and not opened) or retries >= RESUME_RETRIES:
                raise
        retries += 1
        await asyncio.sleep(min(RESUME_DELAY * retries, RESUME_DELAY_MAX))
