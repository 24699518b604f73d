"""The D-Bus backend: jobrund on the system bus, for users who are not root."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import dbus_api as api
from ..aio import wait_event
from ..errors import SERVICE_UNKNOWN, SystemdUnavailable, error_from_name, reply_error
from .backend import Backend, resume_after

if TYPE_CHECKING:
    from dbus_fast import Message, Variant
    from dbus_fast.aio import MessageBus

    from ..model import Job
    from ..processes import Claim
    from ..queuestore import Group
    from ..schedule import Schedule
    from .backend import Batch, Jobs, Samples, Schedules

    Groups = list[Group]

MAX_PENDING_CALLS = 64  # per bus connection (dbus-daemon allows 128)
PIPE_SIZE = 1 << 20  # of the pipe jobrund sends output through
_UNREACHABLE = (SERVICE_UNKNOWN, "org.freedesktop.DBus.Error.NoReply")


class DaemonBackend(Backend):
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
        """A method of jobrund's (dbus_api.METHODS): its reply's body, or the error it stands
        for."""
        from dbus_fast import Message, MessageFlag, MessageType

        msg = Message(
            destination=api.BUS_NAME,
            path=api.PATH,
            interface=api.INTERFACE,
            member=member,
            signature=api.METHODS[member].sig_in,
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
            raise reply_error(reply.error_name, reply.body)
        return list(reply.body)

    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None, tty: int | None = None) -> Job:  # fmt: skip
        from ..wire.dbus import start_options
        from ..wire.jobs import job_from_json

        options = start_options(name, values, stdin is not None, tty is not None)
        fds = [fd for fd in (stdin, tty) if fd is not None]
        (job,) = await self.call("Start", [command, options], unix_fds=fds)
        return job_from_json(job)

    async def start_scope(self, command: list[str], name: str | None, values: dict[str, Any],
                          claim: Claim) -> Job:  # fmt: skip
        from ..wire.dbus import start_options
        from ..wire.jobs import job_from_json

        options = start_options(name, values, False)
        body = [command, options, claim.pid, claim.start_time, 0]
        (job,) = await self.call("StartScope", body, unix_fds=[claim.pidfd])
        return job_from_json(job)

    async def report_exit(self, job_id: str, exit_code: int | None, signum: int | None) -> Job:
        from ..wire.jobs import job_from_json

        body = [job_id, -1 if exit_code is None else exit_code, signum or 0]
        (job,) = await self.call("ReportScopeExit", body)
        return job_from_json(job)

    async def schedule(self, command: list[str], name: str | None, values: dict[str, Any],
                       when: dict[str, Any]) -> Schedule:  # fmt: skip
        from ..wire.dbus import start_options
        from ..wire.schedules import schedule_from_json, when_options

        options = start_options(name, values, False) | when_options(when)
        (text,) = await self.call("Schedule", [command, options])
        return schedule_from_json(text)

    async def schedules(self) -> Schedules:
        from ..wire.schedules import schedules_from_json

        (text,) = await self.call("ListSchedules", [])
        return schedules_from_json(text)

    async def show_schedule(self, schedule_id: str) -> Schedule:
        from ..wire.schedules import schedule_from_json

        (text,) = await self.call("ShowSchedule", [schedule_id])
        return schedule_from_json(text)

    async def remove_schedule(self, schedule_id: str) -> Schedule:
        from ..wire.schedules import schedule_from_json

        (text,) = await self.call("RemoveSchedule", [schedule_id])
        return schedule_from_json(text)

    async def stop(self, job_id: str, timeout: float | None) -> tuple[Job, bool]:
        from ..wire.jobs import job_from_json

        job, was_running = await self.call("Stop", [job_id, -1.0 if timeout is None else timeout])
        return job_from_json(job), bool(was_running)

    async def kill(self, job_id: str, signum: int) -> tuple[Job, bool]:
        from ..wire.jobs import job_from_json

        job, was_running = await self.call("Kill", [job_id, int(signum)])
        return job_from_json(job), bool(was_running)

    async def status(self, job_id: str) -> Job:
        from ..wire.jobs import job_from_json

        (job,) = await self.call("Status", [job_id])
        return job_from_json(job)

    async def pause(self, job_id: str) -> Job:
        from ..wire.jobs import job_from_json

        (job,) = await self.call("Pause", [job_id])
        return job_from_json(job)

    async def resume(self, job_id: str) -> Job:
        from ..wire.jobs import job_from_json

        (job,) = await self.call("Resume", [job_id])
        return job_from_json(job)

    async def set_limits(self, job_id: str, values: dict[str, Any]) -> Job:
        from ..wire.dbus import variant
        from ..wire.jobs import job_from_json

        options = {k: variant(v) for k, v in values.items() if v is not None}
        (job,) = await self.call("Set", [job_id, options])
        return job_from_json(job)

    async def list(self, all: bool) -> Jobs:
        from ..wire.jobs import jobs_from_json

        (jobs,) = await self.call("List", [all])
        return jobs_from_json(jobs)

    async def usage(self) -> Samples:
        from ..wire.usage import samples_from_json

        (samples,) = await self.call("Usage", [])
        return samples_from_json(samples)

    async def groups(self) -> Groups:
        from ..wire.groups import groups_from_json

        (groups,) = await self.call("Groups", [])
        return groups_from_json(groups)

    async def set_group(self, name: str, options: dict[str, str]) -> Group:
        import json

        from dbus_fast import Variant as V

        from ..wire.groups import group_from_dict

        body = {k: V("s", v) for k, v in options.items()}
        (group,) = await self.call("GroupSet", [name, body])
        return group_from_dict(json.loads(group))

    def _on_message(self, msg: Message) -> bool:
        from dbus_fast import MessageType

        if msg.message_type == MessageType.SIGNAL and msg.member in (
            "JobChanged",
            "NameOwnerChanged",
        ):
            self._changed.set()
        return False

    async def wait(self, job_id: str) -> Job:
        await self.call("Subscribe", [])
        # jobrund restarting loses our subscription: notice its name changing owner.
        from ..bus import call_bus_daemon

        await call_bus_daemon(
            self.bus,
            "AddMatch",
            "s",
            [f"type='signal',member='NameOwnerChanged',arg0='{api.BUS_NAME}'"],
        )
        while True:
            self._changed.clear()
            job = await self.status(job_id)
            if job.state.finished:
                return job
            if not await wait_event(self._changed, 2.0):
                continue
            with contextlib.suppress(Exception):
                await self.call("Subscribe", [])

    def log_batches(
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
        brought; resumed after the last cursor if jobrund goes away mid-stream (restart,
        crash). Without `cursors`, jobrund sends a cursor with the last record of each of its
        writes only, and records carry "" as theirs."""

        def read(
            after_cursor: str | None, tail: int | None, since: datetime | None
        ) -> AsyncGenerator[Batch | None, None]:
            from ..wire.dbus import logs_options

            return self._read_logs(job_id, logs_options(follow, after_cursor, tail, since, cursors))

        return resume_after(
            read, SystemdUnavailable, after_cursor=after_cursor, tail=tail, since=since
        )

    async def _read_logs(
        self, job_id: str, options: dict[str, Variant]
    ) -> AsyncGenerator[Batch | None, None]:
        """One Logs call's pipe: None once it is open, then lists of Records;
        SystemdUnavailable if it ends before jobrund said the stream is complete."""
        from ..wire.logs import FrameReader

        reader = await self._open_logs(job_id, options)
        yield None
        frames = FrameReader()
        while True:
            data = await reader.read(1 << 20)
            if not data:
                # (what the caller sees once resume_after gives up)
                raise SystemdUnavailable("jobrund went away while sending output, and stays away")
            batch = frames.feed(data)
            if batch:
                yield batch
            if frames.error is not None:
                raise frames.error
            if frames.ended:
                return

    async def _open_logs(self, job_id: str, options: dict[str, Variant]) -> asyncio.StreamReader:
        from dbus_fast import Message, MessageType

        async with self._in_flight:
            reply = await self.bus.call(
                Message(
                    destination=api.BUS_NAME,
                    path=api.PATH,
                    interface=api.INTERFACE,
                    member="Logs",
                    signature=api.METHODS["Logs"].sig_in,
                    body=[job_id, options],
                )
            )
        if reply is None or reply.message_type == MessageType.ERROR:
            body = reply.body if reply is not None else []
            name = reply.error_name if reply is not None else None
            if name in _UNREACHABLE:
                raise SystemdUnavailable("jobrund is not reachable on the system bus")
            raise error_from_name(name, str(body[0]) if body else "")
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
