"""The gRPC backend: a remote jobrund's API with mutual TLS 1.3 (daemon/grpc.py serves it).

Where to connect is the caller's (target.py, from the command line or a context).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, JobrunError, RemoteUnavailable, error_from_name
from .backend import RESUME_RETRIES, Backend, resume_after

if TYPE_CHECKING:
    from grpclib.client import Channel

    from ..model import Job
    from ..processes import Claim
    from ..queuestore import Group
    from ..schedule import Schedule
    from .backend import Argv, Batch, Jobs, Samples, Schedules

    Groups = list[Group]
    from .target import Remote


class RemoteBackend(Backend):
    """jobrund's gRPC API on another host."""

    mode = "remote"

    def __init__(self, target: Remote, channel: Channel) -> None:
        self.target = target
        self.channel = channel
        self._feeds: set[asyncio.Task[None]] = set()  # stdin streamed to jobs (Run)

    @classmethod
    async def open(cls, target: Remote) -> RemoteBackend:
        try:
            from grpclib.client import Channel
        except ImportError as e:
            raise RemoteUnavailable(
                "--remote needs the grpclib and protobuf packages",
                "apt-get install python3-grpclib python3-protobuf (docs/REMOTE.md)",
            ) from e
        from .. import tls

        ctx = tls.client_context(target.cert, target.key, target.ca)
        return cls(target, Channel(target.host, target.port, ssl=ctx))

    def _failed(self, e: BaseException, stream: Any = None) -> JobrunError:
        """The JobrunError of a failed call: the one jobrund named in the call's trailing
        metadata (`stream`'s), or what its status or the connection's failure says."""
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        from ..wire.proto import ERROR_KEY

        if isinstance(e, GRPCError):
            meta: Any = (stream.trailing_metadata if stream is not None else None) or {}
            name = meta.get(ERROR_KEY)
            if e.status is Status.UNAVAILABLE and not name:
                return RemoteUnavailable(
                    f"{self.target.address}: {e.message or 'unavailable'}",
                    "is jobrund running there with its remote API on?",
                )
            return error_from_name(name or f"grpc.{e.status.name}", e.message or e.status.name)
        return RemoteUnavailable(
            f"connection to {self.target.address} failed: {type(e).__name__}: {e}".rstrip(": "),
            "the server refuses a certificate it does not trust, an expired one or TLS below "
            "1.3; check --cert, --key and --ca",
        )

    async def _unary(self, method: str, request: Any, reply_type: type) -> Any:
        from grpclib.client import UnaryUnaryMethod
        from grpclib.exceptions import GRPCError

        from ..wire.proto import SERVICE

        call: UnaryUnaryMethod[Any, Any] = UnaryUnaryMethod(
            self.channel, f"/{SERVICE}/{method}", type(request), reply_type
        )
        try:
            async with call.open() as stream:
                try:
                    await stream.send_message(request, end=True)
                    return await stream.recv_message()
                except GRPCError as e:
                    raise self._failed(e, stream) from e
        except JobrunError:
            raise
        except Exception as e:  # ssl.SSLError (an OSError), h2's and grpclib's protocol errors
            raise self._failed(e) from e

    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None, tty: int | None = None) -> Job:  # fmt: skip
        """`stdin`: a descriptor whose bytes the job reads, streamed to jobrund (the Run call)
        until its end of file, the job's end, or close(). A terminal (`tty`) is refused."""
        import dataclasses

        if tty is not None:
            raise no_pty_error()

        from ..properties import build_spec
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto, options_to_proto

        spec = build_spec(command, name=name, **values)  # parsed here, checked again there
        req = pb.StartRequest(command=command, options=options_to_proto(dataclasses.asdict(spec)))
        if name is not None:
            req.name = name
        if stdin is not None:
            return await self._run(req, stdin)
        reply = await self._unary("Start", req, pb.StartResponse)
        return job_from_proto(reply.job)

    async def _run(self, req: Any, fd: int) -> Job:
        from grpclib.client import StreamStreamMethod
        from grpclib.exceptions import GRPCError

        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import SERVICE, job_from_proto

        call: StreamStreamMethod[pb.RunRequest, pb.RunResponse] = StreamStreamMethod(
            self.channel, f"/{SERVICE}/Run", pb.RunRequest, pb.RunResponse
        )
        started: asyncio.Future[Job] = asyncio.get_running_loop().create_future()

        async def feed() -> None:
            try:
                async with call.open() as stream:
                    try:
                        await stream.send_message(pb.RunRequest(start=req))
                        reply = await stream.recv_message()
                        if reply is None:
                            raise EOFError("jobrund ended the call without an answer")
                        started.set_result(job_from_proto(reply.job))
                        async for chunk in _chunks(fd):
                            await stream.send_message(pb.RunRequest(stdin=chunk))
                        await stream.end()
                        while await stream.recv_message() is not None:
                            pass
                    except GRPCError as e:
                        raise self._failed(e, stream) from e
            except Exception as e:
                if started.done():
                    return  # the job runs on; its stdin has ended early, which it sees as EOF
                err = e if isinstance(e, JobrunError) else self._failed(e)
                started.set_exception(err)

        task = asyncio.create_task(feed())
        self._feeds.add(task)
        task.add_done_callback(self._feeds.discard)
        try:
            return await asyncio.shield(started)
        except BaseException:
            task.cancel()
            raise

    async def start_scope(self, command: list[str], name: str | None, values: dict[str, Any],
                          claim: Claim) -> Job:  # fmt: skip
        raise no_scope_error()

    async def report_exit(self, job_id: str, exit_code: int | None, signum: int | None) -> Job:
        raise no_scope_error()

    async def stop(self, job_id: str, timeout: float | None) -> tuple[Job, bool]:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto

        req = pb.StopRequest(id=job_id)
        if timeout is not None:
            req.timeout = timeout
        reply = await self._unary("Stop", req, pb.StopResponse)
        return job_from_proto(reply.job), reply.was_running

    async def kill(self, job_id: str, signum: int) -> tuple[Job, bool]:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto

        reply = await self._unary("Kill", pb.KillRequest(id=job_id, signal=signum), pb.KillResponse)
        return job_from_proto(reply.job), reply.was_running

    async def status(self, job_id: str) -> Job:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto

        reply = await self._unary("Status", pb.StatusRequest(id=job_id), pb.StatusResponse)
        return job_from_proto(reply.job)

    async def pause(self, job_id: str) -> Job:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto

        reply = await self._unary("Pause", pb.PauseRequest(id=job_id), pb.PauseResponse)
        return job_from_proto(reply.job)

    async def resume(self, job_id: str) -> Job:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto

        reply = await self._unary("Resume", pb.ResumeRequest(id=job_id), pb.ResumeResponse)
        return job_from_proto(reply.job)

    async def set_limits(self, job_id: str, values: dict[str, Any]) -> Job:
        from ..properties import build_changes
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto, options_to_proto

        changes = build_changes(values)  # parsed here (sizes, percents), checked again there
        req = pb.SetRequest(id=job_id, options=options_to_proto(changes))
        reply = await self._unary("Set", req, pb.SetResponse)
        return job_from_proto(reply.job)

    async def list(self, all: bool) -> Jobs:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import job_from_proto

        reply = await self._unary("List", pb.ListRequest(all=all), pb.ListResponse)
        return [job_from_proto(j) for j in reply.jobs]

    async def usage(self) -> Samples:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.usage import sample_from_proto

        reply = await self._unary("Usage", pb.UsageRequest(), pb.UsageResponse)
        return [sample_from_proto(s) for s in reply.samples]

    async def schedule(self, command: Argv, name: str | None, values: dict[str, Any],
                       when: dict[str, Any]) -> Schedule:  # fmt: skip
        import dataclasses

        from ..properties import build_spec
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import options_to_proto
        from ..wire.schedules_proto import schedule_from_proto, when_to_proto

        spec = build_spec(command, name=name, **values)  # checked here too, as start does
        start = pb.StartRequest(command=command, options=options_to_proto(dataclasses.asdict(spec)))
        if name is not None:
            start.name = name
        req = pb.ScheduleRequest(start=start)
        when_to_proto(req, when)
        reply = await self._unary("Schedule", req, pb.ScheduleResponse)
        return schedule_from_proto(reply.schedule)

    async def schedules(self) -> Schedules:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.schedules_proto import schedule_from_proto

        reply = await self._unary("ListSchedules", pb.ListSchedulesRequest(),
                                  pb.ListSchedulesResponse)  # fmt: skip
        return [schedule_from_proto(s) for s in reply.schedules]

    async def show_schedule(self, schedule_id: str) -> Schedule:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.schedules_proto import schedule_from_proto

        reply = await self._unary("ShowSchedule", pb.ScheduleIdRequest(id=schedule_id),
                                  pb.ScheduleResponse)  # fmt: skip
        return schedule_from_proto(reply.schedule)

    async def remove_schedule(self, schedule_id: str) -> Schedule:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.schedules_proto import schedule_from_proto

        reply = await self._unary("RemoveSchedule", pb.ScheduleIdRequest(id=schedule_id),
                                  pb.ScheduleResponse)  # fmt: skip
        return schedule_from_proto(reply.schedule)

    async def groups(self) -> Groups:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import group_from_proto

        reply = await self._unary("Groups", pb.GroupsRequest(), pb.GroupsResponse)
        return [group_from_proto(g) for g in reply.groups]

    async def set_group(self, name: str, options: dict[str, str]) -> Group:
        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import group_from_proto

        request = pb.GroupSetRequest(name=name, options=options)
        reply = await self._unary("GroupSet", request, pb.GroupSetResponse)
        return group_from_proto(reply.group)

    async def wait(self, job_id: str) -> Job:
        """Poll the job's status until it has ended. Once jobrund has answered, a dropped
        connection (jobrund restarted) is asked again, as a follower resumes: the job goes on."""
        delay = 0.05
        job = await self.status(job_id)
        lost = 0
        while not job.state.finished:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                job = await self.status(job_id)
                lost = 0
            except RemoteUnavailable:
                lost += 1
                if lost > RESUME_RETRIES:
                    raise
        return job

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
        """The job's records, one list per message; resumed after the last cursor if the
        connection drops mid-stream (jobrund restarted)."""

        def read(
            after_cursor: str | None, tail: int | None, since: datetime | None
        ) -> AsyncGenerator[Batch | None, None]:
            from ..v1 import jobrun_pb2 as pb

            req = pb.LogsRequest(id=job_id, follow=follow)
            if after_cursor is not None:
                req.after_cursor = after_cursor
            elif tail is not None:
                req.tail = tail
            elif since is not None:
                req.since.FromDatetime(since)
            return self._read_logs(req)

        return resume_after(
            read, RemoteUnavailable, after_cursor=after_cursor, tail=tail, since=since
        )

    async def _read_logs(self, req: Any) -> AsyncGenerator[Batch | None, None]:
        """One Logs call: the records of each message; its failures as JobrunErrors
        (RemoteUnavailable: the connection is gone). It never says it is open (resume_after's
        None): TLS 1.3 tells a client that its certificate was refused only after the request
        went out, and that must be reported at once, not asked again."""
        from grpclib.client import UnaryStreamMethod
        from grpclib.exceptions import GRPCError

        from ..v1 import jobrun_pb2 as pb
        from ..wire.proto import SERVICE, record_from_proto

        call: UnaryStreamMethod[pb.LogsRequest, pb.LogsResponse] = UnaryStreamMethod(
            self.channel, f"/{SERVICE}/Logs", pb.LogsRequest, pb.LogsResponse
        )
        try:
            async with call.open() as stream:
                await stream.send_message(req, end=True)
                try:
                    async for reply in stream:
                        yield [record_from_proto(r) for r in reply.records]
                except GRPCError as e:
                    raise self._failed(e, stream) from e
        except JobrunError:
            raise
        except Exception as e:  # ssl.SSLError (an OSError), h2's and grpclib's protocol errors
            raise self._failed(e) from e

    async def close(self) -> None:
        for task in list(self._feeds):
            task.cancel()
        await asyncio.gather(*self._feeds, return_exceptions=True)
        close_channel(self.channel)


STDIN_CHUNK = 64 << 10  # bytes per RunRequest: the most jobrund takes (remote.MAX_STDIN)


async def _chunks(fd: int) -> AsyncGenerator[bytes, None]:
    """What fd holds, read without blocking the loop: a pipe or socket is waited on; a regular
    file or a device (epoll takes neither) answers at once."""
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        while data := os.read(fd, STDIN_CHUNK):
            yield data
        return
    loop = asyncio.get_running_loop()
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                data = os.read(fd, STDIN_CHUNK)
            except BlockingIOError:
                readable: asyncio.Future[None] = loop.create_future()
                loop.add_reader(fd, _wake, readable)
                try:
                    await readable
                finally:
                    loop.remove_reader(fd)
                continue
            if not data:
                return
            yield data
    finally:
        os.set_blocking(fd, blocking)


def close_channel(channel: Any) -> None:
    """Close a grpclib channel at once. grpclib closes the TLS transport gracefully, which
    finishes only on later turns of the event loop; a loop that ends first leaks the socket.
    Nothing is in flight when this is called: abort."""
    protocol = getattr(channel, "_protocol", None)
    connection = getattr(getattr(protocol, "processor", None), "connection", None)
    transport = getattr(connection, "_transport", None)
    channel.close()
    if transport is not None:
        transport.abort()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def no_scope_error() -> InvalidArgument:
    return InvalidArgument(
        "--scope runs the command here, as your own process: a remote jobrund has no process "
        "of yours to put in a scope",
        "drop --remote/--context to run it on this host, or drop --scope to run a job there",
    )


def no_pty_error() -> InvalidArgument:
    return InvalidArgument(
        "--pty gives the job a terminal of this host: a remote jobrund cannot open one here",
        "drop --remote/--context to run it on this host, or drop --pty to run a job there",
    )
