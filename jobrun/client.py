"""How the CLI reaches jobs: through jobrund on the system bus, or in-process as root.

Both backends answer with the same JSON-shaped dicts (model.job_to_dict), so the CLI prints the
same thing whichever path it took. JOBRUN_MODE=auto|daemon|local picks the path (default auto:
jobrund when the bus can reach or activate it, else in-process when root).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from . import dbus_api as api
from .errors import InvalidArgument, PermissionDenied, SystemdUnavailable
from .model import flatten, job_to_dict

if TYPE_CHECKING:
    from dbus_fast import Message, Variant
    from dbus_fast.aio import MessageBus

    from .journal import Record

    Batch = list[Record]  # `list` is a method name in the classes below

MODES = ("auto", "daemon", "local")
MAX_PENDING_CALLS = 64  # per bus connection (dbus-daemon allows 128)
PIPE_SIZE = 1 << 20  # of the pipe jobrund sends output through
RESUME_RETRIES = 50  # asking jobrund again after it went away mid-stream (~2 min in all)


class Backend(Protocol):
    """What the CLI does with jobs, wherever they run. In `logs`/`log_batches`, cursors=False
    lets a backend leave out the cursor of records but the last of each batch (as "")."""

    mode: str

    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None) -> dict[str, Any]: ...  # fmt: skip
    async def stop(self, job_id: str, timeout: float | None) -> tuple[dict[str, Any], bool]: ...
    async def kill(self, job_id: str, signum: int) -> tuple[dict[str, Any], bool]: ...
    async def status(self, job_id: str) -> dict[str, Any]: ...
    async def list(self, all: bool) -> list[dict[str, Any]]: ...
    async def wait(self, job_id: str) -> dict[str, Any]: ...
    def logs(
        self,
        job_id: str,
        *,
        follow: bool = False,
        after_cursor: str | None = None,
        tail: int | None = None,
        since: datetime | None = None,
        cursors: bool = True,
    ) -> AsyncGenerator[Record, None]: ...
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


class LocalBackend:
    """The library in this process (root only). The Manager (and with it the bus) is opened on
    first need: the status of a finished job comes from the job database alone."""

    mode = "local"

    def __init__(self, manager: Any = None) -> None:
        self._manager = manager

    @classmethod
    async def open(cls) -> LocalBackend:
        if os.geteuid() != 0:
            raise PermissionDenied(
                "jobrun runs jobs in-process only as root, and jobrund is not reachable",
                "run it as root, or install jobrun's package (it brings jobrund)",
            )
        return cls()

    async def _m(self) -> Any:
        if self._manager is None:
            from .manager import Manager

            # No Subscribe: start needs no signals; stop and wait subscribe when they need to.
            self._manager = await Manager.open(subscribe=False)
        return self._manager

    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None) -> dict[str, Any]:  # fmt: skip
        from .journald_conf import ensure
        from .properties import build_spec

        spec = build_spec(command, name=name, **values)
        ensure()  # no rate limit in the journal namespace, or no job (journald_conf.py)
        m = await self._m()
        return job_to_dict(await m.start(spec, stdin=stdin))

    async def stop(self, job_id: str, timeout: float | None) -> tuple[dict[str, Any], bool]:
        job, was_running = await (await self._m()).stop(job_id, timeout=timeout)
        return job_to_dict(job), was_running

    async def kill(self, job_id: str, signum: int) -> tuple[dict[str, Any], bool]:
        job, was_running = await (await self._m()).kill(job_id, signum=signum)
        return job_to_dict(job), was_running

    async def status(self, job_id: str) -> dict[str, Any]:
        if self._manager is None:
            from .store import Store

            store = Store().open()
            try:
                job, _ = store.get(store.resolve(job_id, None))  # root: every job
            finally:
                store.close()
            if job.outcome.state.finished:
                return job_to_dict(job)
        return job_to_dict(await (await self._m()).status(job_id))

    async def list(self, all: bool) -> list[dict[str, Any]]:
        return [job_to_dict(j) for j in await (await self._m()).list(all=all)]

    async def wait(self, job_id: str) -> dict[str, Any]:
        return job_to_dict(await (await self._m()).wait(job_id))

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
        if self._manager is not None:
            await self._manager.close()


def _variant(value: Any) -> Variant:
    from dbus_fast import Variant

    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, list | tuple):
        return Variant("as", [str(v) for v in value])
    return Variant("s", str(value))


class DaemonBackend:
    """jobrund over the system bus."""

    mode = "daemon"

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._changed = asyncio.Event()
        # dbus-daemon fails calls beyond 128 awaiting a reply on one connection (LimitsExceeded):
        # a program that calls concurrently waits here instead.
        self._in_flight = asyncio.Semaphore(MAX_PENDING_CALLS)
        bus.add_message_handler(self._on_message)

    async def call(
        self, member: str, body: list[Any], unix_fds: list[int] | None = None
    ) -> list[Any]:
        from dbus_fast import Message, MessageFlag, MessageType

        sig_in, _ = api.METHODS[member]
        msg = Message(
            destination=api.BUS_NAME,
            path=api.PATH,
            interface=api.INTERFACE,
            member=member,
            signature=sig_in,
            body=body,
            flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION,
            unix_fds=unix_fds or [],
        )
        try:
            async with self._in_flight:
                reply = await self.bus.call(msg)
        except (OSError, EOFError) as e:
            raise SystemdUnavailable(f"lost the system bus: {e!r}") from e
        if reply is None:
            raise SystemdUnavailable("no reply from jobrund")
        if reply.message_type == MessageType.ERROR:
            text = str(reply.body[0]) if reply.body else ""
            if reply.error_name == "org.freedesktop.DBus.Error.ServiceUnknown":
                raise SystemdUnavailable(
                    "jobrund is not reachable on the system bus",
                    "is the package installed? systemctl status jobrund",
                )
            raise api.error_from_dbus(reply.error_name, text)
        return list(reply.body)

    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None) -> dict[str, Any]:  # fmt: skip
        from dbus_fast import Variant

        options = {k: _variant(v) for k, v in values.items() if v is not None and v != []}
        if name is not None:
            options["name"] = Variant("s", name)
        if stdin is not None:
            options[api.STDIN_OPTION] = Variant("h", 0)  # an index into the message's fds
        (job,) = await self.call(
            "Start", [command, options], unix_fds=None if stdin is None else [stdin]
        )
        return dict(json.loads(job))

    async def stop(self, job_id: str, timeout: float | None) -> tuple[dict[str, Any], bool]:
        job, was_running = await self.call("Stop", [job_id, -1.0 if timeout is None else timeout])
        return dict(json.loads(job)), bool(was_running)

    async def kill(self, job_id: str, signum: int) -> tuple[dict[str, Any], bool]:
        job, was_running = await self.call("Kill", [job_id, int(signum)])
        return dict(json.loads(job)), bool(was_running)

    async def status(self, job_id: str) -> dict[str, Any]:
        (job,) = await self.call("Status", [job_id])
        return dict(json.loads(job))

    async def list(self, all: bool) -> list[dict[str, Any]]:
        (jobs,) = await self.call("List", [all])
        return list(json.loads(jobs))

    def _on_message(self, msg: Message) -> bool:
        from dbus_fast import MessageType

        if msg.message_type == MessageType.SIGNAL and msg.member in (
            "JobChanged",
            "NameOwnerChanged",
        ):
            self._changed.set()
        return False

    async def wait(self, job_id: str) -> dict[str, Any]:
        await self.call("Subscribe", [])
        # jobrund restarting loses our subscription: notice its name changing owner.
        from .bus import call_bus_daemon

        await call_bus_daemon(
            self.bus,
            "AddMatch",
            "s",
            [f"type='signal',member='NameOwnerChanged',arg0='{api.BUS_NAME}'"],
        )
        while True:
            self._changed.clear()
            job = await self.status(job_id)
            if job["state"] != "running":
                return job
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=2.0)
            if not self._changed.is_set():
                continue
            with contextlib.suppress(Exception):
                await self.call("Subscribe", [])

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
        """Frames from jobrund's pipe as Records (see `log_batches`)."""
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
        """Frames from jobrund's pipe as lists of Records, as many as each read of the pipe
        brought. If jobrund goes away mid-stream (restart, crash), ask again after the last
        cursor received: no gap, no duplicate. Without `cursors`, jobrund sends a cursor with the
        last record of each of its writes only, and records carry "" as theirs."""
        from dbus_fast import Variant

        from .journal import LineBreak, Record

        breaks = list(LineBreak)
        header = api.FRAME.size
        unpack = api.FRAME.unpack_from
        retries = 0
        while True:
            options: dict[str, Variant] = {"follow": Variant("b", follow)}
            if not cursors:
                options["batch_cursors"] = Variant("b", True)
            if after_cursor is not None:
                options["after_cursor"] = Variant("s", after_cursor)
            elif tail is not None:
                options["tail"] = Variant("x", tail)
            elif since is not None:
                options["since_usec"] = Variant("x", int(since.timestamp() * 1e6))
            try:
                reader = await self._open_logs(job_id, options)
            except SystemdUnavailable:
                if after_cursor is None or retries >= RESUME_RETRIES:
                    raise
                retries += 1
                await asyncio.sleep(0.1 * retries)
                continue
            buf = b""
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break  # jobrund went away: resume after the last cursor
                buf = buf + data if buf else data
                batch: Batch = []
                at = 0
                end = len(buf)
                # Records after the last one with a cursor wait in buf for theirs: what is
                # yielded always ends at a cursor to resume after.
                done_at, done_len = 0, 0
                while end - at >= header:
                    kind, usec, clen, mlen = unpack(buf, at)
                    stop = at + header + clen + mlen
                    if stop > end:
                        break
                    if kind == api.FRAME_END or kind == api.FRAME_ERROR:
                        if batch:
                            yield batch
                        if kind == api.FRAME_END:
                            return
                        text = buf[at + header + clen : stop].decode(errors="replace")
                        name, _, text = text.partition("\0")
                        raise api.error_from_dbus(name, text)
                    cursor = buf[at + header : at + header + clen].decode() if clen else ""
                    batch.append(
                        Record(
                            usec,
                            cursor,
                            buf[at + header + clen : stop],
                            breaks[kind],
                        )
                    )
                    at = stop
                    if clen:
                        done_at, done_len = at, len(batch)
                buf = buf[done_at:]
                if done_len:
                    del batch[done_len:]
                    retries = 0
                    after_cursor, tail, since = batch[-1].cursor, None, None
                    yield batch
            if retries >= RESUME_RETRIES:
                raise SystemdUnavailable("jobrund went away while sending output, and stays away")
            retries += 1

    async def _open_logs(self, job_id: str, options: dict[str, Variant]) -> asyncio.StreamReader:
        from dbus_fast import Message, MessageType

        sig_in, _ = api.METHODS["Logs"]
        async with self._in_flight:
            reply = await self.bus.call(
                Message(
                    destination=api.BUS_NAME,
                    path=api.PATH,
                    interface=api.INTERFACE,
                    member="Logs",
                    signature=sig_in,
                    body=[job_id, options],
                )
            )
        if reply is None or reply.message_type == MessageType.ERROR:
            body = reply.body if reply is not None else []
            name = reply.error_name if reply is not None else None
            if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                        "org.freedesktop.DBus.Error.NoReply"):  # fmt: skip
                raise SystemdUnavailable("jobrund is not reachable on the system bus")
            raise api.error_from_dbus(name, str(body[0]) if body else "")
        fd = reply.unix_fds[reply.body[0]]
        for other in reply.unix_fds:
            if other != fd:
                os.close(other)
        # A pipe holds 64 KiB by default: jobrund would wait for us (and we for it) every ~400
        # records. 1 MiB (pipe-max-size's default, allowed to anyone) lets both sides run.
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 22, loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", 0)
        )
        return reader

    async def close(self) -> None:
        self.bus.disconnect()


async def _daemon_reachable(bus: MessageBus) -> bool:
    from dbus_fast import MessageType

    from .bus import call_bus_daemon

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


def mode() -> str:
    m = os.environ.get("JOBRUN_MODE", "auto")
    if m not in MODES:
        raise InvalidArgument(f"JOBRUN_MODE must be one of {', '.join(MODES)}, not {m!r}")
    return m


async def open_backend() -> Backend:
    m = mode()
    if m == "local":
        return await LocalBackend.open()
    from .bus import connect_system_bus

    bus = await connect_system_bus()
    if m == "daemon" or await _daemon_reachable(bus):
        return DaemonBackend(bus)
    bus.disconnect()
    return await LocalBackend.open()
