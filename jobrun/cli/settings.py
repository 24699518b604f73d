"""The options of `start` and `run`, generated from the settings table (properties.SETTINGS),
and what they give: the command, its name and the settings, checked before anything starts."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, Optional

import typer

from ..errors import InvalidArgument, JobrunError
from ..model import JobSpec
from ..properties import SETTINGS, build_scope_spec, build_spec, check_paths
from .common import fail, is_local


def _setting_parameters() -> list[inspect.Parameter]:
    params = []
    for s in SETTINGS:
        if s.signature == "b":
            option = typer.Option(None, s.flags, help=s.help, show_default=False)
            annotation: Any = Optional[bool]  # noqa: UP045 - typer 0.7 needs typing.Optional
        elif s.repeat:
            option = typer.Option(None, *s.flags.split("/"), help=s.help, metavar=s.metavar)
            annotation = Optional[list[str]]  # noqa: UP045
        else:
            option = typer.Option(None, *s.flags.split("/"), help=s.help, metavar=s.metavar)
            annotation = Optional[str]  # noqa: UP045
        params.append(
            inspect.Parameter(
                s.field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
            )
        )
    params.append(
        inspect.Parameter(
            "name",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--name", help="A label shown in list and status"),
            annotation=Optional[str],  # noqa: UP045
        )
    )
    params.append(
        inspect.Parameter(
            "command",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Argument(None, help="The command and its arguments (after --)"),
            annotation=Optional[list[str]],  # noqa: UP045
        )
    )
    return params


def with_settings(fn: Callable[..., None]) -> Callable[..., None]:
    fn.__signature__ = inspect.Signature(_setting_parameters())  # type: ignore[attr-defined]
    return fn


def with_settings_and(
    *flags: tuple[str, str, str],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """As with_settings, plus on/off flags, each (parameter name, flag, help)."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        params = _setting_parameters()
        for name, flag, text in reversed(flags):
            option = typer.Option(False, flag, help=text, show_default=False)
            params.insert(0, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                               default=option, annotation=bool))  # fmt: skip
        fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return fn

    return decorate


COMMAND_CONTEXT = {"allow_interspersed_args": False}


def parse(values: dict[str, Any]) -> tuple[list[str], str | None, dict[str, Any]]:
    """Validate here, before anything is started; the backend gets the user's own values."""
    command, name, options, _ = parse_spec(values)
    return command, name, options


def parse_spec(
    values: dict[str, Any], scope: bool = False
) -> tuple[list[str], str | None, dict[str, Any], JobSpec]:
    """As `parse`, with the spec; `scope`: for `run --scope` (properties.build_scope_spec),
    which runs only here."""
    command = list(values.pop("command") or [])
    name = values.pop("name")
    if command and "/" in command[0] and not command[0].startswith("/"):
        command[0] = os.path.abspath(command[0])  # ./build.sh, bin/tool: as a shell finds them
    local = is_local()
    try:
        if scope and not local:
            from ..client.remote import no_scope_error

            raise no_scope_error()
        if local and values.get("workdir") is None:
            # The job runs where the caller is, as a command in a shell would. (A remote host's
            # jobrund has no use for this host's current directory: there the default stays.)
            values["workdir"] = _current_directory()
        spec = (build_scope_spec if scope else build_spec)(command, name=name, **values)
        if local:
            # As the caller, where the caller is: jobrund (root) does not look (security model).
            check_paths(spec, as_root=os.geteuid() == 0 and not scope)
    except JobrunError as e:
        fail(e)
    options = {k: v for k, v in values.items() if v is not None and v != []}
    return command, name, options, spec


def _current_directory() -> str:
    try:
        return os.getcwd()
    except OSError as e:
        raise InvalidArgument(
            f"the current directory is gone ({e.strerror})", "cd to a directory, or give -C DIR"
        ) from None


def fast_flags_source() -> str:
    """jobrun/start_flags.py: `start`'s options as above, for the fast CLI (fastcli.py), which
    parses them without importing the settings table (packaging/gen-start-flags writes it;
    tests/test_fast_cli.py fails while it is stale)."""
    import json

    q = json.dumps  # a string as ruff writes it
    takes_value = {"--name": ("name", False)}
    switches = {}
    for s in SETTINGS:
        if s.signature == "b":
            on, off = s.flags.split("/")
            switches[on], switches[off] = (s.field, True), (s.field, False)
        else:
            for flag in s.flags.split("/"):
                takes_value[flag] = (s.field, s.repeat)
    lines = [
        '"""`start`\'s options for the fast CLI (fastcli.py), which must not import the settings',
        "table (properties.SETTINGS, ~20 ms): packaging/gen-start-flags writes them from it.",
        'Do not edit; tests/test_fast_cli.py fails while this is stale."""',
        "",
        "# flag: (field, whether it repeats); --name is start's own",
        "TAKES_VALUE = {",
        *(f"    {q(k)}: ({q(f)}, {v})," for k, (f, v) in takes_value.items()),
        "}",
        "# flag: (field, the value it gives)",
        "SWITCHES = {",
        *(f"    {q(k)}: ({q(f)}, {v})," for k, (f, v) in switches.items()),
        "}",
        "FIELDS = (",
        *(f"    {q(s.field)}," for s in SETTINGS),
        ")",
    ]
    return "\n".join(lines) + "\n"
