"""Where the CLI's jobs are (a remote jobrund, jobrund on this host, or this process), and the
backend that reaches them; `jobrun doctor` reports the same choice.

A remote comes from the command line (`jobrun --remote HOST:PORT --cert … --key … --ca …`) or
from a named context in ~/.config/jobrun/config.toml ($XDG_CONFIG_HOME):

    context = "lab"                 # used when --remote and --context are not given
    [contexts.lab]
    remote = "jobs.lab.example:7443"
    cert = "~/.config/jobrun/alice.crt"
    key = "~/.config/jobrun/alice.key"
    ca = "~/.config/jobrun/ca.crt"

Options on the command line win over the context's. On this host, JOBRUN_MODE=auto|daemon|local
picks the path (default auto: jobrund when the bus can reach or activate it, else in-process
when root).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import dbus_api as api
from ..errors import InvalidArgument

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

    from .backend import Backend

MODES = ("auto", "daemon", "local")


@dataclass(frozen=True)
class Remote:
    """A remote jobrund's gRPC API, and the files to reach it with."""

    host: str
    port: int
    cert: str
    key: str
    ca: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "jobrun" / "config.toml"


def resolve_remote(
    remote: str | None = None,
    context: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    ca: str | None = None,
) -> Remote | None:
    """Where to connect, or None for this host. InvalidArgument if something is missing."""
    path = config_file()
    values: dict[str, Any] = {}
    if context is not None or remote is None:
        try:
            data = tomllib.loads(path.read_text())
        except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
            if context is not None:  # asked for by name: say why it is not there
                raise InvalidArgument(
                    f"no context {context!r}: cannot read {path}: {e.strerror}"
                ) from e
            data = {}  # (a HOME that is not this user's, e.g. under sudo or setpriv)
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"cannot read {path}: {e}") from e
        name = context if context is not None else data.get("context")
        if name is not None:
            contexts = data.get("contexts", {})
            if not isinstance(contexts, dict) or name not in contexts:
                raise InvalidArgument(
                    f"no context {name!r} in {path}", "add a [contexts.NAME] table (jobrun(1))"
                )
            values = dict(contexts[name])
            unknown = set(values) - {"remote", "cert", "key", "ca"}
            if unknown:
                raise InvalidArgument(f"{path}: unknown key(s) in contexts.{name}: {unknown}")
    remote = remote or values.get("remote")
    if remote is None:
        if cert or key or ca:
            raise InvalidArgument("--cert, --key and --ca go with --remote HOST:PORT")
        return None
    host, _, port = str(remote).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"--remote takes HOST:PORT, not {remote!r}")
    files = {"cert": cert, "key": key, "ca": ca}
    for k, v in files.items():
        v = v or values.get(k)
        if not v:
            raise InvalidArgument(
                f"--remote needs --{k} (or `{k}` in a context of {path})",
                "make test certificates with `jobrun certs` (jobrun(1))",
            )
        files[k] = os.path.expanduser(str(v))
    return Remote(host.strip("[]"), int(port), **files)  # type: ignore[arg-type]


def mode() -> str:
    """JOBRUN_MODE: how to reach jobs on this host."""
    m = os.environ.get("JOBRUN_MODE", "auto")
    if m not in MODES:
        raise InvalidArgument(f"JOBRUN_MODE must be one of {', '.join(MODES)}, not {m!r}")
    return m


def through_daemon(wanted: str, reachable: bool) -> bool:
    """Whether jobs on this host go through jobrund (else in-process), for a JOBRUN_MODE and
    whether jobrund is reachable."""
    return wanted == "daemon" or (wanted == "auto" and reachable)


async def daemon_reachable(bus: MessageBus) -> bool:
    """Whether jobrund runs, or the bus would start it."""
    from dbus_fast import MessageType

    from ..bus import call_bus_daemon

    for member in ("NameHasOwner", "ListActivatableNames"):
        asks_name = member == "NameHasOwner"
        reply = await call_bus_daemon(
            bus, member, "s" if asks_name else "", [api.BUS_NAME] if asks_name else []
        )
        if reply is None or reply.message_type == MessageType.ERROR:
            continue
        value = reply.body[0]
        if value is True or (isinstance(value, list) and api.BUS_NAME in value):
            return True
    return False


async def connect(remote: Remote | None) -> Backend:
    """The backend for `remote` (None: this host, as JOBRUN_MODE says)."""
    if remote is not None:
        from .remote import RemoteBackend

        return await RemoteBackend.open(remote)
    from .local import LocalBackend

    wanted = mode()
    if wanted == "local":
        return await LocalBackend.open()
    from ..bus import connect_system_bus

    bus = await connect_system_bus()
    if through_daemon(wanted, wanted == "daemon" or await daemon_reachable(bus)):
        from .dbus import DaemonBackend

        return DaemonBackend(bus)
    bus.disconnect()
    return await LocalBackend.open()
