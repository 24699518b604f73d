"""jobrund's D-Bus service: jobrun's manager on the system bus, for users who are not root.

Identity comes from the bus (the sender's uid, asked of the bus itself), authorization from polkit
(jobrun's own actions, polkit/), limits from the admin's config (config.py). Jobs of a non-root
caller run as that caller (User=); nothing in the API can choose another user. A job someone may
not see answers "not found", exactly like a job that does not exist.

Requests are dispatched from a raw message handler rather than dbus-fast's ServiceInterface, so
each handler sees the message (sender, flags), and in-flight work is bounded and shared fairly
between users (fairshare.py). One table, dbus_api.METHODS, names the handler (its verb) of each
method; admission.py decides who may call it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from .. import dbus_api as api
from ..bus import call_bus_daemon
from ..config import Config
from ..dispatch import Dispatcher
from ..errors import (
    Busy,
    InvalidArgument,
    JobrunError,
    PermissionDenied,
    StateError,
    error_text,
)
from ..journal import JournalUnavailable
from ..manager import Caller, Manager
from ..model import UNIT_PREFIX
from ..processes import Claim
from ..properties import for_scope
from ..scopes import require_journal_output
from ..wire import dbus as wire
from ..wire.groups import decode_group_options, group_to_dict, groups_json
from ..wire.jobs import job_json, jobs_json
from ..wire.logs import pack_end, pack_error, pack_records
from .admission import admit, admit_change, admit_start, authorized_dbus_caller
from .fairshare import MAX_STREAMS, PER_UID_STREAMS, FairShare
from .schedule_verbs import ScheduleVerbs
from .schedules import Scheduler

log = logging.getLogger("jobrund")

_UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/" + UNIT_PREFIX.replace("-", "_2d")

Handler = Callable[[Message, Caller], Awaitable[list[Any]]]


class Daemon(ScheduleVerbs, FairShare):
    def __init__(
        self,
        bus: MessageBus,
        manager: Manager,
        config: Config,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        super().__init__(bus)
        self.manager = manager
        self.dispatcher = dispatcher
        self.config = config
        self.scheduler = Scheduler(manager, config, dispatcher)
        self._streams: set[asyncio.Task[None]] = set()
        self._streams_of: collections.Counter[int] = collections.Counter()
        self._subscribers: dict[str, Caller] = {}
        self._last_state: dict[str, str] = {}
        self._announcing: dict[str, bool] = {}  # job ID -> changed again since its read began
        # Descriptors received, by number: dbus-fast may attach those of one message to another
        # read with it from the same socket read, so one is closed when the last call holding it
        # is done, not when the first is (that closed a StartScope's pidfd under its feet).
        self._fds_held: collections.Counter[int] = collections.Counter()
        self._handlers: dict[str, Handler] = {
            m.name: getattr(self, m.verb) for m in api.METHODS.values()
        }

    # -- dispatch ---------------------------------------------------------------------------

    def on_message(self, msg: Message) -> bool:
        # Signals are not taken from this connection: anyone may send one to it. Those of
        # systemd and the bus come through Systemd's filter (on_signal).
        if msg.message_type != MessageType.METHOD_CALL or msg.path != api.PATH:
            return False
        if msg.interface == "org.freedesktop.DBus.Introspectable" and msg.member == "Introspect":
            self.bus.send(Message.new_method_return(msg, "s", [api.introspection_xml()]))
            return True
        method = api.METHODS.get(msg.member or "")
        if msg.interface not in (api.INTERFACE, None) or method is None:
            return False  # dbus-fast answers Peer calls and UnknownMethod
        self._fds_held.update(msg.unix_fds)
        if msg.signature != method.sig_in:
            self._error(
                msg, InvalidArgument(f"{msg.member} takes ({method.sig_in}), not ({msg.signature})")
            )
            return True
        self.enqueue(msg)
        return True

    def _error(self, msg: Message, e: JobrunError) -> None:
        """Answer a call that is not dispatched (bad signature, busy): what it sent is let go."""
        super()._error(msg, e)
        self._release_fds(msg)

    def _release_fds(self, msg: Message) -> None:
        """Close what a caller sent once no call holds it (systemd keeps its own copies)."""
        for fd in msg.unix_fds:
            self._fds_held[fd] -= 1
            if self._fds_held[fd] <= 0:
                del self._fds_held[fd]
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _dispatch(self, msg: Message) -> None:
        try:
            method = api.METHODS[msg.member or ""]
            interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
            caller = await self._caller(msg, method.verb, interactive)
            body = await self._handlers[method.name](msg, caller)
            fds: list[int] = []
            if method.sig_out == "h":  # D-Bus carries fds out of band; the body holds an index
                fds, body = [body[0]], [0]
            reply = Message.new_method_return(msg, method.sig_out, body, unix_fds=fds)
        except JobrunError as e:
            reply = Message.new_error(msg, e.dbus_name, error_text(e))
        except Exception:
            log.exception("%s failed", msg.member)
            reply = Message.new_error(
                msg, "org.jobrun.Error.Failed", "internal error in jobrund (see its log)"
            )
        try:
            if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                await self.bus.send(reply)  # done once written to the socket
        finally:
            for fd in reply.unix_fds:
                os.close(fd)  # passed to the caller; our copy is no longer needed
            self._release_fds(msg)

    async def _caller(self, msg: Message, verb: str, interactive: bool) -> Caller:
        """Who asks, authorized by polkit for the method `verb` (PermissionDenied if not)."""
        uid = await self._uid_of(msg.sender or "")
        if uid is None:
            raise PermissionDenied("cannot tell who is asking")
        return await authorized_dbus_caller(self.bus, msg.sender, uid, verb, interactive)

    # -- verbs: each answers the body of its method's reply ---------------------------------

    async def start(self, msg: Message, caller: Caller) -> list[Any]:
        command, options = msg.body
        # The caller's own descriptor, for a job running as the caller (or, for root, as its
        # dynamic UID): it gives the job nothing the caller could not give it.
        stdin = wire.stdin_of(options, msg.unix_fds)
        # `run --pty`: the caller's pseudo-terminal, checked to be theirs (pty.py)
        tty = wire.stdin_of(options, msg.unix_fds, wire.TTY_OPTION)
        caller, spec, slice_limits = await admit_start(
            self.config,
            self.manager,
            wire.decode_start(command, options),
            caller,
            self.bus,
            msg.sender or "",
        )
        # Through the dispatcher: a job of the queue (--group, --after, --retry) waits there.
        submit = self.dispatcher.submit if self.dispatcher else self.manager.start
        job = await submit(spec, caller, slice_limits, stdin=stdin, tty=tty)
        return [job_json(job)]

    async def start_scope(self, msg: Message, caller: Caller) -> list[Any]:
        """`run --scope`: the caller's own child, named by PID, start time and pidfd, in a new
        scope job (processes.py says what proves it is the caller's)."""
        command, options, pid, start_time, fd_index = msg.body
        if not 0 <= fd_index < len(msg.unix_fds):
            raise InvalidArgument("StartScope's pidfd names no descriptor sent with the call")
        parent = await self._pid_of(msg.sender or "")
        spec = wire.decode_start(command, options, scope=True)
        spec, slice_limits = await admit(self.config, self.manager, spec, caller)
        claim = Claim(pid, start_time, msg.unix_fds[fd_index])
        job = await self.manager.start_scope(for_scope(spec), claim, parent, caller, slice_limits)
        return [job_json(job)]

    async def _pid_of(self, sender: str) -> int:
        reply = await call_bus_daemon(self.bus, "GetConnectionUnixProcessID", "s", [sender])
        if reply is None or reply.message_type == MessageType.ERROR:
            raise PermissionDenied("cannot tell which process is asking")
        return int(reply.body[0])

    async def report_scope_exit(self, msg: Message, caller: Caller) -> list[Any]:
        job_id, exit_code, signum = msg.body
        job = await self.manager.report_exit(
            job_id, caller, None if exit_code < 0 else exit_code, signum or None
        )
        self._job_changed(job.id)  # systemd may have nothing left to signal of the scope
        return [job_json(job)]

    async def stop(self, msg: Message, caller: Caller) -> list[Any]:
        job_id, timeout = msg.body
        job, was_running = await self.manager.stop(
            job_id, caller, timeout=None if timeout < 0 else timeout
        )
        return [job_json(job), was_running]

    async def kill(self, msg: Message, caller: Caller) -> list[Any]:
        job_id, signum = msg.body
        job, was_running = await self.manager.kill(job_id, caller, signum)
        return [job_json(job), was_running]

    async def status(self, msg: Message, caller: Caller) -> list[Any]:
        job = await self.manager.status(msg.body[0], caller)
        return [job_json(job)]

    async def pause(self, msg: Message, caller: Caller) -> list[Any]:
        return [job_json(await self.manager.pause(msg.body[0], caller))]

    async def resume(self, msg: Message, caller: Caller) -> list[Any]:
        return [job_json(await self.manager.resume(msg.body[0], caller))]

    async def set_limits(self, msg: Message, caller: Caller) -> list[Any]:
        job_id, options = msg.body
        changes = wire.decode_set(options)
        job = await self.manager.status(job_id, caller)  # another's job: not found, before caps
        admit_change(self.config, changes, caller)
        return [job_json(await self.manager.set_limits(job.id, changes, caller))]

    async def list_jobs(self, msg: Message, caller: Caller) -> list[Any]:
        jobs = await self.manager.list(caller, all=bool(msg.body[0]))
        return [jobs_json(jobs)]

    async def logs(self, msg: Message, caller: Caller) -> list[Any]:
        """The read end of a pipe carrying the job's output as frames (wire/logs.py).

        A pipe rather than signals or a method per batch: the kernel buffers and paces it, the
        client reads at its own speed, and its closing the pipe ends our work."""
        job_id, options = msg.body
        kwargs = wire.decode_logs_options(options)
        job = await self.manager.status(job_id, caller)  # not found → error now, not in the pipe
        require_journal_output(job)
        if len(self._streams) >= MAX_STREAMS:
            raise Busy("jobrund is serving too many log streams", "try again in a moment")
        if caller.uid != 0 and self._streams_of[caller.uid] >= PER_UID_STREAMS:
            raise Busy(
                f"you have {PER_UID_STREAMS} log streams open, the most jobrund serves one user",
                "close one first",
            )
        try:
            r, w = os.pipe()
        except OSError as e:  # EMFILE: out of file descriptors (LimitNOFILE)
            raise Busy(f"jobrund cannot open another log stream: {e}", "try again later") from e
        task = asyncio.get_running_loop().create_task(self._pump(job.id, caller, kwargs, w))
        self._streams.add(task)
        self._streams_of[caller.uid] += 1
        task.add_done_callback(lambda t: self._stream_done(t, caller.uid))
        return [r]

    def _stream_done(self, task: asyncio.Task[None], uid: int) -> None:
        self._streams.discard(task)
        self._streams_of[uid] -= 1
        if not self._streams_of[uid]:
            del self._streams_of[uid]

    async def end_streams(self) -> None:
        """End every log stream without its end frame: their clients ask again after their last
        cursor (jobrund is stopping)."""
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)

    async def _pump(self, job_id: str, caller: Caller, kwargs: dict[str, Any], fd: int) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(fd, "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        try:
            try:
                # One write per batch of records (the frames are the same as one per record).
                batch_cursors = kwargs.pop("batch_cursors", False)
                batches = self.manager.log_batches(job_id, caller, **kwargs)
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        writer.write(pack_records(batch, batch_cursors))
                        if transport.get_write_buffer_size() > 1 << 20:
                            await writer.drain()
                writer.write(pack_end())
            except OSError as e:  # e.g. EMFILE: out of inotify instances or file descriptors
                writer.write(
                    pack_error(
                        JournalUnavailable(f"cannot read the journal: {e}", "try again later")
                    )
                )
            except JobrunError as e:
                writer.write(pack_error(e))
            await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader went away: nothing more to do
        except Exception:
            log.exception("log stream of job %s failed", job_id)
        finally:
            writer.close()

    async def subscribe(self, msg: Message, caller: Caller) -> list[Any]:
        if msg.sender:
            self._subscribers[msg.sender] = caller
        return []

    async def usage(self, msg: Message, caller: Caller) -> list[Any]:
        from ..wire.usage import samples_json

        return [samples_json(await self.manager.usage(caller))]

    async def group_set(self, msg: Message, caller: Caller) -> list[Any]:
        name, options = msg.body
        values = {k: v.value if hasattr(v, "value") else v for k, v in options.items()}
        group = await self._dispatcher().set_group(
            caller, name, owners_may_set=self.config.owners_may_set, **decode_group_options(values)
        )
        return [json.dumps(group_to_dict(group))]

    async def groups(self, msg: Message, caller: Caller) -> list[Any]:
        return [groups_json(self._dispatcher().groups(caller))]

    def _dispatcher(self) -> Dispatcher:
        if self.dispatcher is None:
            raise StateError("this jobrund keeps no queue")
        return self.dispatcher

    async def whoami(self, msg: Message, caller: Caller) -> list[Any]:
        return [caller.user, caller.admin]

    # -- JobChanged -------------------------------------------------------------------------

    def on_signal(self, msg: Message) -> None:
        """A signal of systemd or the bus, as Systemd passes them on (never a forged one)."""
        if msg.member == "NameOwnerChanged" and msg.signature == "sss" and msg.body[2] == "":
            self._subscribers.pop(msg.body[0], None)
            self.forget(msg.body[0])
            return
        job_id = None
        if msg.member == "JobRemoved" and len(msg.body) == 4:
            unit = str(msg.body[2])
            if unit.startswith(UNIT_PREFIX) and unit.endswith((".service", ".scope")):
                job_id = unit[len(UNIT_PREFIX) :].removesuffix(".service").removesuffix(".scope")
        elif msg.member == "PropertiesChanged":
            path = msg.path or ""
            if path.startswith(_UNIT_PATH_PREFIX):
                job_id = path[len(_UNIT_PATH_PREFIX) :]
                job_id = job_id.removesuffix("_2eservice").removesuffix("_2escope")
        if job_id:
            self._job_changed(job_id)

    def _job_changed(self, job_id: str) -> None:
        """Announce the job's state to its subscribers, if it changed."""
        if not self._subscribers:
            return
        if job_id in self._announcing:
            # systemd sends a burst of signals per change of a unit: one status read in flight
            # per job, and one more after it if anything changed meanwhile, is enough to
            # announce every state the job ends up in (without it, a load of jobs had
            # hundreds of status reads of the same jobs in flight at once).
            self._announcing[job_id] = True
            return
        self._announcing[job_id] = False
        task = asyncio.get_running_loop().create_task(self._announce_changes(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce_changes(self, job_id: str) -> None:
        try:
            while True:
                self._announcing[job_id] = False
                await self._announce(job_id)
                if not self._announcing[job_id]:
                    return
        finally:
            del self._announcing[job_id]

    async def _announce(self, job_id: str) -> None:
        try:
            job = await self.manager.status(job_id, Caller(0, "root", admin=True))
        except JobrunError:
            return
        state = job.state.value
        if self._last_state.get(job.id) == state:
            return
        self._last_state[job.id] = state
        if len(self._last_state) > 10000:
            self._last_state.pop(next(iter(self._last_state)))
        for sender, caller in list(self._subscribers.items()):
            if caller.admin or caller.uid == job.uid:
                # Unicast: a broadcast would tell every user that the job exists.
                self.bus.send(
                    Message(
                        message_type=MessageType.SIGNAL,
                        destination=sender,
                        path=api.PATH,
                        interface=api.INTERFACE,
                        member="JobChanged",
                        signature="ss",
                        body=[job.id, state],
                    )
                )
