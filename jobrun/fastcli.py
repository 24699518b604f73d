"""The `jobrun` command's entry point: a fast path for the common commands, else the typer app.

typer, click, rich, asyncio and dbus-fast cost ~150 ms of imports before a command does
anything; `jobrun status ID` itself needs ~10 ms. This module parses `--version`, `status`,
`list`, `logs`, `start` and `stop` through jobrund on this host (and `status` of a finished job in
process, from the job database), with the options generated from the same settings table
(properties.SETTINGS) as the typer app's, and asks jobrund over a blocking bus connection
(client/oneshot.py), printing jobs as jobrund sent them (render.py works on that wire form:
no job model). Whenever anything is not the plain case it understands fully (--help,
completion, a remote, an option it does not know, a malformed value, a job in process other than
a finished one's status, an error before a job was started), it hands the command line to the
typer app (jobrun.cli), which then does everything itself: help, completion and every error
message stay those of the one full CLI. tests/test_fast_cli.py runs command lines through both
and compares.

JOBRUN_CLI_FULL=1 (internal, for those tests) always takes the typer app.
"""

from __future__ import annotations

import os
import sys

from .client.oneshot import Fallback, ask_readonly, bus_or_in_process, call, daemon_bus

TYPE_CHECKING = False  # as typing's, without importing typing (~4 ms, with re) for --version

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .errors import JobrunError

# The environment the typer app reads that the fast path does not handle.
FULL_PATH_ENV = (
    "JOBRUN_CLI_FULL",
    "_JOBRUN_COMPLETE",
    "COMP_WORDS",
    "JOBRUN_REMOTE",
    "JOBRUN_CONTEXT",
    "JOBRUN_CERT",
    "JOBRUN_KEY",
    "JOBRUN_CA",
)


_sent = False  # a Start went to jobrund: the full CLI must not run the command again


def main() -> None:
    """The `jobrun` command."""
    try:
        code = fast(sys.argv[1:])
    except Fallback:
        code = None
    except KeyboardInterrupt:
        code = 130  # as the full CLI's commands
    except Exception as e:
        if not _sent:
            code = None  # nothing done yet: the full CLI runs the command (and says what broke)
        else:
            from .cli.common import internal_error

            code = internal_error(e)
    if code is None:
        from .cli import main as full

        full()
        return
    sys.stdout.flush()
    sys.exit(code)


def fast(args: list[str]) -> int | None:
    """The exit status of the command, done here; None (or Fallback): for the typer app."""
    if not args or any(name in os.environ for name in FULL_PATH_ENV):
        return None
    for arg in args:
        try:
            arg.encode()
        except UnicodeEncodeError:
            return None  # the full CLI explains (cli/app.py)
    if args == ["--version"]:
        from . import __version__

        print(f"jobrun {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None or os.path.exists(_config_file()):
        return None  # a config file may name a remote context: the full CLI reads it
    return command(args[1:])


def _config_file() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "jobrun", "config.toml")


def _flags(args: list[str], flags: dict[str, str]) -> tuple[dict[str, bool], list[str]]:
    """Switches given (by their name in `flags`) and the positional arguments, as click parses
    a command with interspersed arguments; Fallback for anything else."""
    given = dict.fromkeys(flags.values(), False)
    positional = []
    for arg in args:
        if arg in flags:
            given[flags[arg]] = True
        elif arg.startswith("-"):
            raise Fallback  # an unknown option, --help, "--", combined short flags
        else:
            positional.append(arg)
    return given, positional


def status(args: list[str]) -> int:
    given, ids = _flags(args, {"--json": "json", "--wide": "wide", "-w": "wide"})
    if len(ids) != 1:
        raise Fallback
    bus = bus_or_in_process()
    if bus is None:
        job = _stored_finished_job(ids[0])
    else:
        (text,) = ask_readonly(bus, "Status", [ids[0]])
        job = json_loads(text)  # jobrund's job_to_dict: what `--json` prints and render.py reads
    if given["json"]:
        import json

        print(json.dumps(job, indent=2))  # as wire/jobs.py's job_json
    else:
        from .render import status_table

        status_table(job, wide=given["wide"])
    return 0


class _JsonContext:
    """What the C scanner of CPython's json (`_json.make_scanner`) reads of a JSONDecoder: the
    defaults of `json.loads`."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": -float("inf"), "Infinity": float("inf"), "NaN": float("nan")}.get


def json_loads(text: str) -> Any:
    """`json.loads(text)` of jobrund's replies, by json's own C scanner without importing json,
    whose decoder imports `re` (~9 ms of a ~35 ms `status` or `list`; render.py needs neither).
    Anything but one JSON value with nothing around it, and a Python without the C scanner, goes
    to json itself, which decodes it or raises exactly as always."""
    scan: Any = None
    try:
        import _json

        scan = _json.make_scanner(_JsonContext)  # type: ignore[arg-type]  # a decoder's fields
    except ImportError:
        pass
    if scan is not None and text[:1] in ("{", "["):
        try:
            value, end = scan(text, 0)
        except (StopIteration, ValueError):
            pass
        else:
            if end == len(text):
                return value
    import json

    return json.loads(text)


def _stored_finished_job(job_id: str) -> dict[str, Any]:
    """In-process, a finished job from the job database alone, as client/local.py's status
    answers it, in its wire form; Fallback for anything else (a running job needs systemd: the
    full CLI asks)."""
    from .queuestore import Queue
    from .store import Store
    from .wire.jobs import job_to_dict

    store = Store().open()
    try:
        job, _ = store.get(store.resolve(job_id, None))  # root: every job
        attempt, attempts = Queue(store).attempts(job.id)  # of a --retry job, as Manager.status
    except Exception:
        raise Fallback from None
    finally:
        store.close()
    if not job.outcome.state.finished:
        raise Fallback
    if attempts:
        from dataclasses import replace

        job = replace(job, attempt=attempt, attempts=attempts)
    return job_to_dict(job)


def list_(args: list[str]) -> int:
    given, extra = _flags(
        args, {"--json": "json", "--all": "all", "-a": "all", "--wide": "wide", "-w": "wide"}
    )
    if extra:
        raise Fallback
    (text,) = ask_readonly(daemon_bus(), "List", [given["all"]])
    jobs = json_loads(text)  # as status: jobrund's job_to_dict of each
    if given["json"]:
        import json

        print(json.dumps(jobs, indent=2))  # as wire/jobs.py's jobs_json
    else:
        from .render import list_table

        list_table(jobs, wide=given["wide"])
    return 0


# jobrund's Logs pipe (wire/logs.py, whose imports cost ~40 ms): a frame's header, END, and the
# terminator of each record kind (LINE_BREAKS' order: newline, nul, line-max, eof, pid-change).
FRAME = "!BQHI"
FRAME_END = 100
TERMINATORS = (b"\n", b"\0", b"", b"", b"")
MAX_BUFFERED = 1 << 20


def _one_id(
    args: list[str], names: tuple[str, ...], valid: Callable[[str], bool]
) -> tuple[str, str | None]:
    """The one job ID in `args` and the value of its one option `names` (None if not given, a
    value `valid` accepts); Fallback for anything else, or an option given twice: the full CLI
    decides."""
    ids: list[str] = []
    value: str | None = None
    i = 0
    while i < len(args):
        if args[i] in names and i + 1 < len(args) and valid(args[i + 1]):
            if value is not None:
                raise Fallback
            value = args[i + 1]
            i += 1
        elif args[i].startswith("-"):
            raise Fallback
        else:
            ids.append(args[i])
        i += 1
    if len(ids) != 1:
        raise Fallback
    return ids[0], value


def logs(args: list[str]) -> int:
    """`logs ID` and `logs --tail N ID` of a job whose output fits MAX_BUFFERED: all of it is
    read before the first byte is printed, so that anything else (more output, an error, jobrund
    going away mid-stream) can still go to the full CLI, which reads it again from the start."""
    import struct

    job_id, given = _one_id(args, ("--tail", "-n"), lambda t: t.isascii() and t.isdigit())
    tail = None if given is None else int(given)
    from .client.blocking import Variant
    from .errors import JobrunError

    options = {"follow": Variant("b", False), "batch_cursors": Variant("b", True)}
    if tail is not None:
        options["tail"] = Variant("x", tail)
    bus = daemon_bus()
    try:
        try:
            (index,) = call(bus, "Logs", [job_id, options])
        except JobrunError:
            raise Fallback from None
        fd = bus.take_fd(index)
    finally:
        bus.close()
    header = struct.Struct(FRAME)
    out: list[bytes] = []
    data, at, ended = b"", 0, False
    with open(fd, "rb", buffering=0) as pipe:
        while not ended:
            chunk = pipe.read(1 << 16)
            if not chunk or len(data) > MAX_BUFFERED:
                raise Fallback  # jobrund went away (the full CLI resumes), or too much to hold
            data += chunk
            while len(data) - at >= header.size:
                kind, _, clen, mlen = header.unpack_from(data, at)
                stop = at + header.size + clen + mlen
                if stop > len(data):
                    break  # the rest of the frame is still to come
                if kind >= len(TERMINATORS):
                    if kind != FRAME_END:
                        raise Fallback  # an error: the full CLI says it
                    ended = True
                    break
                out.append(data[stop - mlen : stop] + TERMINATORS[kind])
                at = stop
    try:
        sys.stdout.buffer.write(b"".join(out))
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # as cli/logs.py: `jobrun logs ID | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def start(args: list[str]) -> int:
    """`start` through jobrund. What the full CLI checks before it sends a Start is checked
    here only as far as it is cheap: where the options may be wrong, jobrund's answer tells
    (it checks them all again, properties.build_spec), and a refused start, which started
    nothing, goes to the full CLI, which says what is wrong in its own words."""
    values, name, command = _start_options(args)
    if command and "/" in command[0] and not command[0].startswith("/"):
        command[0] = os.path.abspath(command[0])  # as cli/settings.py's parse
    if not command:
        raise Fallback  # the full CLI's usage error
    if values["workdir"] is None:
        try:
            values["workdir"] = os.getcwd()
        except OSError:
            raise Fallback from None
    if not _paths_pass(values["workdir"], values["writable"] or []):
        raise Fallback
    from .errors import InvalidArgument, JobrunError, PermissionDenied

    options = {k: _variant(v) for k, v in values.items() if v is not None and v != []}
    if name is not None:
        options["name"] = _variant(name)
    bus = daemon_bus()
    global _sent
    _sent = True
    try:
        (text,) = call(bus, "Start", [command, options])
    except (InvalidArgument, PermissionDenied):
        # Refused before anything was recorded or started (a bad value, jobrund's limits, or
        # polkit's no, which jobrund asks before it looks at the values): the full CLI checks
        # the values first, as it always does, and reports what it finds.
        _sent = False
        raise Fallback from None
    except JobrunError as e:
        return _failed(e)
    finally:
        bus.close()
    print(started_id(text))
    return 0


def started_id(text: str) -> str:
    """The ID of the job in Start's reply (wire/jobs.py's `job_json`, "id" first), read without
    json where it has that shape (json imports re: ~5 ms of a ~45 ms start); json otherwise."""
    head = '{"id": "'
    job_id = text[len(head) : len(head) + 10]
    if (
        text.startswith(head)
        and text[len(head) + 10 : len(head) + 12] == '",'  # so job_id has ten characters
        and all(c in "0123456789abcdefghijklmnopqrstuvwxyz" for c in job_id)
    ):
        return job_id
    return str(json_loads(text)["id"])


def _paths_pass(workdir: str, writable: list[str]) -> bool:
    """Whether properties.check_paths passes these, for certain: -C an absolute directory,
    each --writable there; for root (whose job may run as a dynamic UID), every directory from
    / to -C open to others (a superset of the way check_paths looks at)."""
    if not (workdir.startswith("/") and os.path.isdir(workdir)):
        return False
    if not all(os.path.exists(path) for path in writable):
        return False
    if os.geteuid() == 0:
        path = workdir
        while True:
            try:
                if not os.stat(path).st_mode & 0o001:
                    return False
            except OSError:
                return False
            if path == "/":
                break
            path = os.path.dirname(path)
    return True


def stop(args: list[str]) -> int:
    """`stop ID` and `stop --timeout SECONDS ID` (-t; SECONDS plain digits) through jobrund."""
    job_id, given = _one_id(args, ("--timeout", "-t"), _seconds)
    timeout = None if given is None else float(given)
    from .errors import JobrunError

    bus = daemon_bus()
    global _sent
    _sent = True
    try:
        text, was_running = call(bus, "Stop", [job_id, -1.0 if timeout is None else timeout])
    except JobrunError as e:
        return _failed(e)
    finally:
        bus.close()
    job = json_loads(text)
    if was_running:  # as cli/jobs.py's stop
        _say(f"jobrun: job {job['id']} {job['state']}")
    else:
        _say(f"jobrun: job {job['id']} had already finished ({job['state']})")
    return 0


def _seconds(text: str) -> bool:
    """Whether click's float parses `text` as this plain decimal number (else: the full CLI)."""
    whole, _, fraction = text.partition(".")
    return text.isascii() and whole.isdigit() and (fraction.isdigit() or "." not in text)


def _say(line: str) -> None:
    """A line to stderr, as cli/common.py's err prints one made of job IDs, states and words
    (rich, with markup and highlighting off, prints such text as it is)."""
    sys.stderr.write(line + "\n")


def _failed(e: JobrunError) -> int:
    """A JobrunError as the full CLI reports it (cli/common.py's fail): its exit status."""
    from .cli.common import err

    err(f"jobrun: {e.message}")
    if e.hint:
        err(f"  hint: {e.hint}")
    return e.exit_code


def _start_options(args: list[str]) -> tuple[dict[str, Any], str | None, list[str]]:
    """The settings (by field: text, a switch's bool, a list for repeatable ones, None where
    not given), the name and the command, as click parses `start`'s options generated from the
    settings table (cli/settings.py): options first, the command from the first argument that
    is not one, or after `--`."""
    from .start_flags import FIELDS, SWITCHES, TAKES_VALUE

    values: dict[str, Any] = dict.fromkeys(FIELDS)
    name = None
    seen = set()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return values, name, args[i + 1 :]
        if not arg.startswith("-") or arg == "-":
            return values, name, args[i:]
        # click: "--opt=VALUE" or "--opt VALUE"; a short option's value follows it ("-C DIR";
        # the attached "-CDIR" is left to the full CLI)
        flag, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag in SWITCHES and not eq:
            values[SWITCHES[flag][0]] = SWITCHES[flag][1]
        elif flag in TAKES_VALUE:
            field, repeat = TAKES_VALUE[flag]
            if not eq:
                if i + 1 == len(args) or args[i + 1].startswith("-"):
                    raise Fallback
                i += 1
                value = args[i]
            if repeat:
                values[field] = [*(values[field] or []), value]
            elif field in seen:
                raise Fallback  # given twice: the full CLI decides
            elif field == "name":
                name = value
            else:
                values[field] = value
            seen.add(field)
        else:
            raise Fallback
        i += 1
    return values, name, []


def _variant(value: Any) -> Any:
    """A setting's value as Start's options carry it (as wire/dbus.py's `variant`)."""
    from .client.blocking import Variant

    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, list):
        return Variant("as", [str(v) for v in value])
    return Variant("s", str(value))


COMMANDS = {"status": status, "list": list_, "logs": logs, "start": start, "stop": stop}
