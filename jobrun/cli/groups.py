"""`group`: the caller's groups (queues) in jobrund: how many jobs each runs at once, their
aggregate limits (a slice of the group's own), pausing and resuming their queue."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import typer

from ..config import NUMERIC_CAPS
from ..properties import SETTINGS_BY_FIELD
from . import common
from .app import app
from .common import run_async

if TYPE_CHECKING:
    from ..queuestore import Group

group_app = typer.Typer(
    help="Groups (queues) of jobs: --parallel, aggregate limits, pause and resume "
    "(`jobrun start --group NAME`).",
    no_args_is_help=True,
)
app.add_typer(group_app, name="group")


def _line(g: Group) -> str:
    limits = ", ".join(f"{k}={v}" for k, v in sorted(g.limits.items())) or "-"
    parallel = "no limit" if g.parallel is None else str(g.parallel)
    state = "paused" if g.paused else "active"
    return (
        f"{g.name:<16} {g.owner:<12} {state:<7} parallel {parallel:<8} running {g.running:<5} "
        f"queued {g.queued:<6} limits {limits}"
    )


def _print(groups: list[Group], as_json: bool) -> None:
    from ..wire.groups import group_to_dict

    if as_json:
        print(json.dumps([group_to_dict(g) for g in groups], indent=2))
    else:
        for g in groups:
            print(_line(g))


def _change(name: str, options: dict[str, str], as_json: bool = False) -> None:
    async def go() -> Group:
        b = await common.open_backend()
        try:
            return await b.set_group(name, options)
        finally:
            await b.close()

    _print([run_async(go)], as_json)


@group_app.command("set")
def group_set(
    name: str = typer.Argument(..., metavar="NAME", help="The group (a-z, 0-9, _)"),
    parallel: Optional[int] = typer.Option(  # noqa: UP045
        None, "--parallel", min=0, help="Jobs of the group running at once (0: no limit)"
    ),
    memory_max: Optional[str] = typer.Option(  # noqa: UP045
        None, "--memory-max", metavar="SIZE", help="Memory of all its jobs together ('none')"
    ),
    memory_high: Optional[str] = typer.Option(  # noqa: UP045
        None, "--memory-high", metavar="SIZE", help="Throttle all its jobs above this ('none')"
    ),
    cpu_weight: Optional[str] = typer.Option(  # noqa: UP045
        None, "--cpu-weight", metavar="N", help="CPU share against your other jobs ('none')"
    ),
    cpu_quota: Optional[str] = typer.Option(  # noqa: UP045
        None, "--cpu-quota", metavar="PCT", help="CPU time of all its jobs together ('none')"
    ),
    io_weight: Optional[str] = typer.Option(  # noqa: UP045
        None, "--io-weight", metavar="N", help="IO share against your other jobs ('none')"
    ),
    tasks_max: Optional[str] = typer.Option(  # noqa: UP045
        None, "--tasks-max", metavar="N", help="Processes of all its jobs together ('none')"
    ),
    owner: Optional[str] = typer.Option(  # noqa: UP045
        None, "--owner", metavar="USER", help="Another user's group (admins; remote:NAME)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """Set a group's parallel limit and aggregate limits (made if new; yours only). The
    limits hold for the group's slice, inside your own: all its jobs together."""
    given = {
        "memory_max": memory_max,
        "memory_high": memory_high,
        "cpu_weight": cpu_weight,
        "cpu_quota": cpu_quota,
        "io_weight": io_weight,
        "tasks_max": tasks_max,
    }
    assert set(given) == set(NUMERIC_CAPS) and all(k in SETTINGS_BY_FIELD for k in given)
    options = {k: v for k, v in given.items() if v is not None}
    if parallel is not None:
        options["parallel"] = str(parallel)
    if owner is not None:
        options["owner"] = owner
    _change(name, options, as_json)


@group_app.command("pause")
def group_pause(
    name: str = typer.Argument(..., metavar="NAME"),
    owner: Optional[str] = typer.Option(  # noqa: UP045
        None, "--owner", metavar="USER", help="Another user's group (admins; remote:NAME)"
    ),
) -> None:
    """Start no more jobs of the group (running ones go on)."""
    _change(name, {"paused": "yes"} | ({"owner": owner} if owner is not None else {}))


@group_app.command("resume")
def group_resume(
    name: str = typer.Argument(..., metavar="NAME"),
    owner: Optional[str] = typer.Option(  # noqa: UP045
        None, "--owner", metavar="USER", help="Another user's group (admins; remote:NAME)"
    ),
) -> None:
    """Start the group's queued jobs again, as slots free."""
    _change(name, {"paused": "no"} | ({"owner": owner} if owner is not None else {}))


def _groups() -> list[Group]:
    async def go() -> list[Group]:
        b = await common.open_backend()
        try:
            return await b.groups()
        finally:
            await b.close()

    return run_async(go)


@group_app.command("list")
def group_list(as_json: bool = typer.Option(False, "--json", help="Print JSON")) -> None:
    """Your groups (an admin's: everyone's): state, slots, queue length and limits."""
    _print(_groups(), as_json)


@group_app.command("show")
def group_show(
    name: str = typer.Argument(..., metavar="NAME"),
    owner: Optional[str] = typer.Option(  # noqa: UP045
        None, "--owner", metavar="USER", help="Another user's group (admins; remote:NAME)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON"),
) -> None:
    """One of your groups (an admin: another user's, with --owner)."""
    from ..errors import JobNotFound

    found = [g for g in _groups() if g.name == name and (owner is None or g.owner == owner)]
    if not found:
        common.fail(JobNotFound(f"no group {name}", "see `jobrun group list`"))
    _print(found, as_json)
