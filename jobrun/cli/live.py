"""`pause`, `resume` and `set`: steering a running job. `set`'s options are the settings table's
rows that can change live (properties.LIVE_SETTINGS)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..properties import LIVE_SETTINGS
from . import common
from .app import app
from .common import err, run_async
from .jobs import id_argument

if TYPE_CHECKING:
    from ..model import Job


@app.command()
def pause(job_id: str = id_argument()) -> None:
    """Pause a running job: freeze all its processes until `jobrun resume`."""

    async def go() -> Job:
        b = await common.open_backend()
        try:
            return await b.pause(job_id)
        finally:
            await b.close()

    job = run_async(go)
    err(f"jobrun: job {job.id} {job.state}")


@app.command()
def resume(job_id: str = id_argument()) -> None:
    """Resume a paused job."""

    async def go() -> Job:
        b = await common.open_backend()
        try:
            return await b.resume(job_id)
        finally:
            await b.close()

    job = run_async(go)
    err(f"jobrun: job {job.id} {job.state}")


def _with_live_settings(fn: Callable[..., None]) -> Callable[..., None]:
    params = [
        inspect.Parameter(
            "job_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=id_argument(), annotation=str
        )
    ]
    for s in LIVE_SETTINGS:
        params.append(
            inspect.Parameter(
                s.field,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, *s.flags.split("/"), help=s.help, metavar=s.metavar),
                annotation=Optional[str],  # noqa: UP045 - typer 0.7 needs typing.Optional
            )
        )
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return fn


@app.command("set")
@_with_live_settings
def set_(job_id: str, **values: Any) -> None:
    """Change limits of a running job, until it ends (within your caps)."""

    async def go() -> Job:
        b = await common.open_backend()
        try:
            return await b.set_limits(job_id, {k: v for k, v in values.items() if v is not None})
        finally:
            await b.close()

    job = run_async(go)
    err(f"jobrun: job {job.id}: " + ", ".join(f"{k}={v}" for k, v in job.live_limits.items()))
