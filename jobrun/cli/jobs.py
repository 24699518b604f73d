"""`stop`, `wait`, `status` and `list`, and completing job IDs for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import typer

from ..model import JobState
from . import common
from .app import app
from .common import err, run_async
from .foreground import exit_status

if TYPE_CHECKING:
    from ..model import Job


def complete_job_id(incomplete: str) -> list[str]:
    """Bash completion of a job ID: the caller's jobs of the last day (as `list` shows them),
    running ones first. Nothing at all when jobrun cannot ask (completion must never print)."""
    import asyncio

    async def ids() -> list[str]:
        b = await common.open_backend()
        try:
            jobs = await b.list(False)
        finally:
            await b.close()
        jobs.sort(key=lambda j: (j.state != JobState.RUNNING, j.created_at.isoformat()))
        return [j.id for j in jobs if j.id.startswith(incomplete)]

    try:
        return asyncio.run(asyncio.wait_for(ids(), 5))
    except Exception:
        return []


def id_argument() -> Any:
    return typer.Argument(
        ..., metavar="ID", help="Job ID or a unique prefix of it", autocompletion=complete_job_id
    )


_WIDE_HELP = "Everything in full (default: fit the terminal, shortening the command with …)"


@app.command()
def stop(
    job_id: str = id_argument(),
    timeout: Optional[float] = typer.Option(  # noqa: UP045
        None, "--timeout", "-t", help="Seconds to wait after SIGTERM before SIGKILL"
    ),
) -> None:
    """Stop a job: SIGTERM to all its processes, SIGKILL after the grace period."""

    async def go() -> None:
        b = await common.open_backend()
        try:
            job, was_running = await b.stop(job_id, timeout)
        finally:
            await b.close()
        if was_running:
            err(f"jobrun: job {job.id} {job.state}")
        else:
            err(f"jobrun: job {job.id} had already finished ({job.state})")

    run_async(go)


WAIT_TIMEOUT_EXIT = 124  # as timeout(1): the jobs were still running when --timeout ran out


@app.command()
def wait(
    job_ids: list[str] = typer.Argument(  # noqa: B008
        ...,
        metavar="ID...",
        help="Job IDs or unique prefixes of them",
        autocompletion=complete_job_id,
    ),
    timeout: Optional[float] = typer.Option(  # noqa: UP045
        None, "--timeout", "-t", min=0, help="Give up after SECONDS (exit status 124)"
    ),
) -> None:
    """Wait until the jobs have ended; exit with the first failing one's status (0: all
    succeeded)."""
    import asyncio

    async def go() -> int:
        b = await common.open_backend()
        try:
            # Every ID is checked before waiting: a typo is an error now, not after the others.
            jobs = [await b.status(job_id) for job_id in job_ids]
            pending = [j.id for j in jobs]

            async def all_of_them() -> None:
                for i, job in enumerate(jobs):
                    if not job.state.finished:
                        jobs[i] = await b.wait(job.id)
                    pending.remove(job.id)

            try:
                await asyncio.wait_for(all_of_them(), timeout)
            except TimeoutError:
                err(f"jobrun: still running after {timeout:g}s: {' '.join(pending)}")
                return WAIT_TIMEOUT_EXIT
        finally:
            await b.close()
        status = 0
        for job in jobs:
            if job.state != JobState.SUCCEEDED:
                err(f"jobrun: job {job.id} {job.state}: {job.outcome.reason or job.outcome.result}")
                status = status or exit_status(job) or 1
        return status

    raise typer.Exit(run_async(go))


@app.command()
def status(
    job_id: str = id_argument(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
    wide: bool = typer.Option(False, "--wide", "-w", help=_WIDE_HELP),
) -> None:
    """Show a job's state, exit code, limits and resource use."""

    async def go() -> Job:
        b = await common.open_backend()
        try:
            return await b.status(job_id)
        finally:
            await b.close()

    job = run_async(go)
    if as_json:
        from ..wire.jobs import job_json

        print(job_json(job, indent=2))
        return
    from ..render import status_table
    from ..wire.jobs import job_to_dict

    status_table(job_to_dict(job), wide=wide)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts"),
    all_: bool = typer.Option(False, "--all", "-a", help="Include jobs older than a day"),
    wide: bool = typer.Option(False, "--wide", "-w", help=_WIDE_HELP),
) -> None:
    """List running and recent jobs."""

    async def go() -> list[Job]:
        b = await common.open_backend()
        try:
            return await b.list(all_)
        finally:
            await b.close()

    jobs = run_async(go)
    if as_json:
        from ..wire.jobs import jobs_json

        print(jobs_json(jobs, indent=2))
        return
    from ..render import list_table
    from ..wire.jobs import job_to_dict

    list_table([job_to_dict(j) for j in jobs], wide=wide)
