"""The in-process backend: jobrun's library in this process, for root."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import PermissionDenied
from .backend import Backend

if TYPE_CHECKING:
    from ..manager import Manager
    from ..model import Job
    from ..processes import Claim
    from ..store import Store
    from .backend import Batch, Jobs, Samples


class LocalBackend(Backend):
    """The library in this process (root only). The Manager (and with it the bus) is opened on
    first need: the status of a finished job comes from the job database alone."""

    mode = "local"

    def __init__(self, manager: Manager | None = None) -> None:
        self._manager = manager
        self._store: Store | None = None  # `top` without a Manager

    @classmethod
    async def open(cls) -> LocalBackend:
        if os.geteuid() != 0:
            raise PermissionDenied(
                "jobrun runs jobs in-process only as root, and jobrund is not reachable",
                "run it as root, or install jobrun's package (it brings jobrund)",
            )
        return cls()

    async def _m(self) -> Manager:
        if self._manager is None:
            from ..manager import Manager

            # No Subscribe: start needs no signals; stop and wait subscribe when they need to.
            self._manager = await Manager.open(subscribe=False)
        return self._manager

    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None, tty: int | None = None) -> Job:  # fmt: skip
        from ..journald_conf import ensure
        from ..properties import build_spec

        spec = build_spec(command, name=name, **values)
        ensure()  # no rate limit in the journal namespace, or no job (journald_conf.py)
        m = await self._m()
        return await m.start(spec, stdin=stdin, tty=tty)

    async def start_scope(self, command: list[str], name: str | None, values: dict[str, Any],
                          claim: Claim) -> Job:  # fmt: skip
        from ..properties import build_scope_spec

        spec = build_scope_spec(command, name=name, **values)
        return await (await self._m()).start_scope(spec, claim, os.getpid())

    async def report_exit(self, job_id: str, exit_code: int | None, signum: int | None) -> Job:
        return await (await self._m()).report_exit(job_id, None, exit_code, signum)

    async def stop(self, job_id: str, timeout: float | None) -> tuple[Job, bool]:
        return await (await self._m()).stop(job_id, timeout=timeout)

    async def kill(self, job_id: str, signum: int) -> tuple[Job, bool]:
        return await (await self._m()).kill(job_id, signum=signum)

    async def pause(self, job_id: str) -> Job:
        return await (await self._m()).pause(job_id)

    async def resume(self, job_id: str) -> Job:
        return await (await self._m()).resume(job_id)

    async def set_limits(self, job_id: str, values: dict[str, Any]) -> Job:
        from ..properties import build_changes

        changes = build_changes(values)  # root: no caps
        return await (await self._m()).set_limits(job_id, changes)

    async def status(self, job_id: str) -> Job:
        if self._manager is None:
            from ..store import Store

            store = Store().open()
            try:
                job, _ = store.get(store.resolve(job_id, None))  # root: every job
            finally:
                store.close()
            if job.outcome.state.finished:
                return job
        return await (await self._m()).status(job_id)

    async def list(self, all: bool) -> Jobs:
        return await (await self._m()).list(all=all)

    async def usage(self) -> Samples:
        """Read in this process (root: every job); the store alone, no bus (usage.py)."""
        if self._manager is not None:
            return await self._manager.usage()
        from ..caller import Caller, scope
        from ..store import Store
        from ..usage import samples

        if self._store is None:
            self._store = Store().open()
        store, (uid, owner) = self._store, scope(Caller.current())
        return samples(lambda ids: store.owners_of(ids, uid, owner))

    async def wait(self, job_id: str) -> Job:
        return await (await self._m()).wait(job_id)

    async def log_batches(
        self,
        job_id: str,
        *,
        follow: bool = False,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        cursors: bool = True,
    ) -> AsyncGenerator[Batch, None]:
        m = await self._m()
        batches = m.log_batches(
            job_id, follow=follow, after_cursor=after_cursor, tail=tail, since=since
        )
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch

    async def close(self) -> None:
        if self._store is not None:
            self._store.close()
        if self._manager is not None:
            await self._manager.close()
