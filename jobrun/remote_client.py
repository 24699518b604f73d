"""The CLI's third backend: a remote jobrund over gRPC with mutual TLS 1.3 (remote.py serves it).

Where to connect comes from the command line (`jobrun --remote HOST:PORT --cert … --key … --ca …`)
or from a named context in ~/.config/jobrun/config.toml ($XDG_CONFIG_HOME):

    context = "lab"                 # used when --remote and --context are not given
    [contexts.lab]
    remote = "jobs.lab.example:7443"
    cert = "~/.config/jobrun/alice.crt"
    key = "~/.config/jobrun/alice.key"
    ca = "~/.config/jobrun/ca.crt"

Options on the command line win over the context's. The backend answers with the same dicts as
the others (model.job_to_dict), so every command prints the same.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tomllib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument, JobrunError, RemoteUnavailable
from .model import flatten

if TYPE_CHECKING:
    from grpclib.client import Channel

    from .journal import Record

    Batch = list[Record]  # `list` is a method name in the class below

RESUME_RETRIES = 50  # following again after a dropped connection (jobrund restarted), ~2 min


@dataclass(frozen=True)
class Target:
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


def resolve_target(
    remote: str | None = None,
    context: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    ca: str | None = None,
) -> Target | None:
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
    return Target(host.strip("[]"), int(port), **files)  # type: ignore[arg-type]


class RemoteBackend:
    """jobrund's gRPC API on another host."""

    mode = "remote"

    def __init__(self, target: Target, channel: Channel) -> None:
        self.target = target
        self.channel = channel
        self._feeds: set[asyncio.Task[None]] = set()  # stdin streamed to jobs (Run)

    @classmethod
    async def open(cls, target: Target) -> RemoteBackend:
        try:
            from grpclib.client import Channel
        except ImportError as e:
            raise RemoteUnavailable(
                "--remote needs the grpclib and protobuf packages",
                "pip install 'jobrun[remote]' (docs/REMOTE.md)",
            ) from e
        from . import tls

        ctx = tls.client_context(target.cert, target.key, target.ca)
        return cls(target, Channel(target.host, target.port, ssl=ctx))

    def _failed(self, e: BaseException) -> JobrunError:
        from grpclib.const import Status
        from grpclib.exceptions import GRPCError

        from . import dbus_api as api

        if isinstance(e, GRPCError):
            if e.status is Status.UNAVAILABLE and not getattr(e, "_jobrun_name", None):
                return RemoteUnavailable(
                    f"{self.target.address}: {e.message or 'unavailable'}",
                    "is jobrund running there with its remote API on?",
                )
            name = getattr(e, "_jobrun_name", None)
            return api.error_from_dbus(name or f"grpc.{e.status.name}", e.message or e.status.name)
        return RemoteUnavailable(
            f"connection to {self.target.address} failed: {type(e).__name__}: {e}".rstrip(": "),
            "the server refuses a certificate it does not trust, an expired one or TLS below "
            "1.3; check --cert, --key and --ca",
        )

    async def _unary(self, method: str, request: Any, reply_type: type) -> Any:
        from grpclib.client import UnaryUnaryMethod
        from grpclib.exceptions import GRPCError

        from .remote_wire import ERROR_KEY, SERVICE

        call: UnaryUnaryMethod[Any, Any] = UnaryUnaryMethod(
            self.channel, f"/{SERVICE}/{method}", type(request), reply_type
        )
        try:
            async with call.open() as stream:
                try:
                    await stream.send_message(request, end=True)
                    return await stream.recv_message()
                except GRPCError as e:
                    meta: Any = stream.trailing_metadata or {}
                    e._jobrun_name = meta.get(ERROR_KEY)  # type: ignore[attr-defined]
                    raise
        except (GRPCError, OSError, EOFError) as e:  # ssl.SSLError is an OSError
            raise self._failed(e) from e
        except Exception as e:  # h2 and grpclib protocol errors: the connection was dropped
            if isinstance(e, JobrunError):
                raise
            raise self._failed(e) from e

    async def start(self, command: list[str], name: str | None, values: dict[str, Any],
                    stdin: int | None = None) -> dict[str, Any]:  # fmt: skip
        """`stdin`: a descriptor whose bytes the job reads, streamed to jobrund (the Run call)
        until its end of file, the job's end, or close()."""
        import dataclasses

        from .properties import build_spec
        from .remote_wire import job_from_proto, options_to_proto
        from .v1 import jobrun_pb2 as pb

        spec = build_spec(command, name=name, **values)  # parsed here, checked again there
        req = pb.StartRequest(command=command, options=options_to_proto(dataclasses.asdict(spec)))
        if name is not None:
            req.name = name
        if stdin is not None:
            return await self._run(req, stdin)
        reply = await self._unary("Start", req, pb.StartResponse)
        return job_from_proto(reply.job)

    async def _run(self, req: Any, fd: int) -> dict[str, Any]:
        from grpclib.client import StreamStreamMethod
        from grpclib.exceptions import GRPCError

        from .remote_wire import ERROR_KEY, SERVICE, job_from_proto
        from .v1 import jobrun_pb2 as pb

        call: StreamStreamMethod[pb.RunRequest, pb.RunResponse] = StreamStreamMethod(
            self.channel, f"/{SERVICE}/Run", pb.RunRequest, pb.RunResponse
        )
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

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
                        meta: Any = stream.trailing_metadata or {}
                        e._jobrun_name = meta.get(ERROR_KEY)  # type: ignore[attr-defined]
                        raise
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

    async def stop(self, job_id: str, timeout: float | None) -> tuple[dict[str, Any], bool]:
        from .remote_wire import job_from_proto
        from .v1 import jobrun_pb2 as pb

        req = pb.StopRequest(id=job_id)
        if timeout is not None:
            req.timeout = timeout
        reply = await self._unary("Stop", req, pb.StopResponse)
        return job_from_proto(reply.job), reply.was_running

    async def kill(self, job_id: str, signum: int) -> tuple[dict[str, Any], bool]:
        from .remote_wire import job_from_proto
        from .v1 import jobrun_pb2 as pb

        reply = await self._unary("Kill", pb.KillRequest(id=job_id, signal=signum), pb.KillResponse)
        return job_from_proto(reply.job), reply.was_running

    async def status(self, job_id: str) -> dict[str, Any]:
        from .remote_wire import job_from_proto
        from .v1 import jobrun_pb2 as pb

        reply = await self._unary("Status", pb.StatusRequest(id=job_id), pb.StatusResponse)
        return job_from_proto(reply.job)

    async def list(self, all: bool) -> list[dict[str, Any]]:
        from .remote_wire import job_from_proto
        from .v1 import jobrun_pb2 as pb

        reply = await self._unary("List", pb.ListRequest(all=all), pb.ListResponse)
        return [job_from_proto(j) for j in reply.jobs]

    async def wait(self, job_id: str) -> dict[str, Any]:
        """Poll the job's status until it has ended. Once jobrund has answered, a dropped
        connection (jobrund restarted) is asked again, as a follower resumes: the job goes on."""
        delay = 0.05
        job = await self.status(job_id)
        lost = 0
        while job["state"] == "running":
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
        """The job's records (see `log_batches`)."""
        return flatten(
            self.log_batches(
                job_id, follow=follow, after_cursor=after_cursor, tail=tail, since=since
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
        """The job's records, one list per message; a follower whose connection drops asks
        again after the last cursor it got (no gap, no duplicate), as the D-Bus backend does."""
        from grpclib.client import UnaryStreamMethod
        from grpclib.exceptions import GRPCError

        from .remote_wire import ERROR_KEY, SERVICE, record_from_proto
        from .v1 import jobrun_pb2 as pb

        call: UnaryStreamMethod[pb.LogsRequest, pb.LogsResponse] = UnaryStreamMethod(
            self.channel, f"/{SERVICE}/Logs", pb.LogsRequest, pb.LogsResponse
        )
        retries = 0
        while True:
            req = pb.LogsRequest(id=job_id, follow=follow)
            if after_cursor is not None:
                req.after_cursor = after_cursor
            elif tail is not None:
                req.tail = tail
            elif since is not None:
                req.since.FromDatetime(since)
            try:
                async with call.open() as stream:
                    await stream.send_message(req, end=True)
                    try:
                        async for reply in stream:
                            retries = 0
                            if reply.records:
                                after_cursor, tail, since = reply.records[-1].cursor, None, None
                                yield [record_from_proto(r) for r in reply.records]
                    except GRPCError as e:
                        meta: Any = stream.trailing_metadata or {}
                        e._jobrun_name = meta.get(ERROR_KEY)  # type: ignore[attr-defined]
                        raise
                return
            except GRPCError as e:
                err = self._failed(e)
                if not isinstance(err, RemoteUnavailable):
                    raise err from e
                failure: Exception = e
            except (OSError, EOFError) as e:
                failure = e
            except Exception as e:
                if isinstance(e, JobrunError):
                    raise
                failure = e
            # Dropped: resume after the last record we got, if we got any; else report.
            if after_cursor is None or retries >= RESUME_RETRIES:
                raise self._failed(failure) from failure
            retries += 1
            await asyncio.sleep(min(0.1 * retries, 2.0))

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
