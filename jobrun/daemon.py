"""jobrund: jobrun's manager on the system bus, for users who are not root.

Identity comes from the bus (the sender's uid, asked of the bus itself), authorization from polkit
(jobrun's own actions, polkit/), limits from the admin's config (config.py). Jobs of a non-root
caller run as that caller (User=); nothing in the API can choose another user. A job someone may
not see answers "not found", exactly like a job that does not exist.

Requests are dispatched from a raw message handler rather than dbus-fast's ServiceInterface, so
each handler sees the message (sender, flags) and in-flight work is bounded: at most MAX_ACTIVE
requests run at once and at most MAX_QUEUED wait; beyond that a caller gets a Busy error at once
instead of the daemon growing without bound. A waiting request is only its message in a queue,
served by at most MAX_ACTIVE worker tasks: under load thousands wait (systemd starts some 16
units/s here), and with a task of its own each cost 3.4 KB instead of 1.9 KB, at the peak of
jobrund's memory, which CPython's allocator keeps once reached (docs/RELIABILITY.md).

Those bounds are shared fairly between users, so that one user at their limit leaves the others'
latency untouched: each uid has a queue of its own and may hold at most PER_UID_QUEUED requests
(waiting or being served), PER_UID_ACTIVE workers and PER_UID_STREAMS log streams; workers take
the uids with waiting requests in turn (round robin), one request each. A request is queued
under its sender's uid, asked of the bus once per connection (a user's many connections are one
user). root is exempt from the per-uid bounds (not from the turns): it is the admin, and can stop
jobrund anyway.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import pwd
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus

from . import dbus_api as api
from . import polkit
from .admission import admit
from .bus import call_bus_daemon, connect_system_bus
from .config import Config
from .errors import Busy, InvalidArgument, JobrunError, PermissionDenied
from .journal import JournalUnavailable, LineBreak
from .manager import Caller, Manager
from .model import UNIT_PREFIX, job_to_dict
from .store import Store

log = logging.getLogger("jobrund")

MAX_ACTIVE = 64
MAX_QUEUED = 4096
MAX_STREAMS = 4096  # log streams at once (each holds a pipe and a journal reader)
# A user's share: 16 of the 64 workers leave 48 free for everyone else, so another user's request
# starts at once while up to three users are at their limit; 512 of the 4096 waiting slots let
# eight users fill theirs before anyone is refused; 256 streams follow as many running jobs as the
# default running_jobs cap allows (config.py).
PER_UID_ACTIVE = 16
PER_UID_QUEUED = 512
PER_UID_STREAMS = 256
# Requests of a connection whose uid the bus has not told yet: dbus-daemon's own limit of calls
# awaiting a reply per connection (max_replies_per_connection), so a client within the bus's
# limits is never refused for being new.
PER_CONNECTION_UNKNOWN = 128
_BREAK_CODES = {b: i for i, b in enumerate(LineBreak)}
_UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/" + UNIT_PREFIX.replace("-", "_2d")


def _busy_user() -> Busy:
    return Busy(
        f"you have {PER_UID_QUEUED} requests waiting, the most jobrund holds for one user",
        "wait for their answers before sending more",
    )


class Daemon:
    def __init__(self, bus: MessageBus, manager: Manager, config: Config) -> None:
        self.bus = bus
        self.manager = manager
        self.config = config
        self._workers = 0
        self._queued = 0  # accepted and not yet answered: in a uid's queue, or being served
        self._unknown: dict[str, list[Message]] = {}  # sender → requests waiting for its uid
        self._unknown_held = 0
        self._waiting: dict[int, collections.deque[Message]] = {}  # uid → its waiting requests
        self._held: collections.Counter[int] = collections.Counter()  # uid → waiting + served
        self._active: collections.Counter[int] = collections.Counter()  # uid → being served
        self._turns: collections.deque[int] = collections.deque()  # uids a worker may serve next
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[None]] = set()
        self._streams_of: collections.Counter[int] = collections.Counter()
        self._uids: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._subscribers: dict[str, Caller] = {}
        self._last_state: dict[str, str] = {}
        self._announcing: dict[str, bool] = {}  # job ID -> changed again since its read began
        self._handlers: dict[str, Callable[[Message, Caller], Awaitable[tuple[str, list[Any]]]]]
        self._handlers = {
            "Start": self.start,
            "Stop": self.stop,
            "Kill": self.kill,
            "Status": self.status,
            "List": self.list_jobs,
            "Logs": self.logs,
            "Subscribe": self.subscribe,
            "Whoami": self.whoami,
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
        if msg.interface not in (api.INTERFACE, None) or msg.member not in self._handlers:
            return False  # dbus-fast answers Peer calls and UnknownMethod
        sig_in, _ = api.METHODS[msg.member]
        if msg.signature != sig_in:
            self._error(
                msg, InvalidArgument(f"{msg.member} takes ({sig_in}), not ({msg.signature})")
            )
            return True
        sender = msg.sender or ""
        uid = self._uids.get(sender)
        if uid is not None:
            self._admit(uid, msg)
            return True
        # Whose request this is decides its queue: ask the bus, once per connection.
        # Held apart (counted in _unknown_held, not _queued) so that a burst of new connections
        # cannot fill the queue before their uids say whose they are.
        pending = self._unknown.get(sender)
        if pending is None:
            if self._unknown_held >= MAX_QUEUED:
                self._error(msg, Busy("jobrund is busy", "try again in a moment"))
                return True
            pending = self._unknown[sender] = []
            self._spawn(self._identify(sender))
        if len(pending) >= PER_CONNECTION_UNKNOWN:
            self._error(msg, _busy_user())
            return True
        pending.append(msg)
        self._unknown_held += 1
        return True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _identify(self, sender: str) -> None:
        try:
            uid: int | None = await self._uid_of(sender)
        except Exception:  # the bus gone: nobody to answer either
            log.exception("cannot ask the bus who %s is", sender)
            uid = None
        pending = self._unknown.pop(sender, [])
        self._unknown_held -= len(pending)
        for msg in pending:
            if uid is None:
                self._error(msg, PermissionDenied("cannot tell who is asking"))
            else:
                self._admit(uid, msg)

    async def _uid_of(self, sender: str) -> int | None:
        uid = self._uids.get(sender)
        if uid is None:
            reply = await call_bus_daemon(self.bus, "GetConnectionUnixUser", "s", [sender])
            if reply is None or reply.message_type == MessageType.ERROR:
                return None
            uid = self._uids[sender] = int(reply.body[0])
            while len(self._uids) > 4096:
                self._uids.popitem(last=False)
        return uid

    def _admit(self, uid: int, msg: Message) -> None:
        """Queue a request of `uid`, or answer Busy if the uid holds its share already."""
        if self._queued >= MAX_QUEUED:
            self._error(msg, Busy("jobrund is busy", "try again in a moment"))
            return
        if uid != 0 and self._held[uid] >= PER_UID_QUEUED:
            self._error(msg, _busy_user())
            return
        self._queued += 1
        self._held[uid] += 1
        self._waiting.setdefault(uid, collections.deque()).append(msg)
        self._take_turn(uid)
        if self._turns and self._workers < MAX_ACTIVE:
            self._workers += 1
            self._spawn(self._work())

    def _take_turn(self, uid: int) -> None:
        """Put `uid` in line for a worker, if it waits and may have one more."""
        share = MAX_ACTIVE if uid == 0 else PER_UID_ACTIVE
        if self._waiting.get(uid) and self._active[uid] < share and uid not in self._turns:
            self._turns.append(uid)  # a few uids at most: the `in` is cheap

    async def _work(self) -> None:
        """Serve the uids in line, one request of each in turn, oldest first, until none is."""
        try:
            while self._turns:
                uid = self._turns.popleft()
                waiting = self._waiting[uid]
                msg = waiting.popleft()
                self._active[uid] += 1
                self._take_turn(uid)  # its next request: after the others in line
                try:
                    await self._dispatch(msg)
                except Exception:  # the reply could not be sent (the bus gone): serve the rest
                    log.exception("answering %s failed", msg.member)
                finally:
                    self._queued -= 1
                    self._active[uid] -= 1
                    self._held[uid] -= 1
                    if not self._held[uid]:
                        del self._held[uid], self._active[uid], self._waiting[uid]
                    else:
                        self._take_turn(uid)
        finally:
            self._workers -= 1

    async def _dispatch(self, msg: Message) -> None:
        try:
            caller = await self._caller(msg)
            sig_out, body = await self._handlers[msg.member or ""](msg, caller)
            fds: list[int] = []
            if sig_out == "h":  # D-Bus carries fds out of band; the body holds an index
                fds, body = [body[0]], [0]
            reply = Message.new_method_return(msg, sig_out, body, unix_fds=fds)
        except JobrunError as e:
            reply = Message.new_error(msg, e.dbus_name, api.error_text(e))
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
            for fd in msg.unix_fds:
                os.close(fd)  # what a caller sent: systemd holds its own copy of what it needs

    def _error(self, msg: Message, e: JobrunError) -> None:
        self.bus.send(Message.new_error(msg, e.dbus_name, api.error_text(e)))

    async def _caller(self, msg: Message) -> Caller:
        uid = await self._uid_of(msg.sender or "")
        if uid is None:
            raise PermissionDenied("cannot tell who is asking")
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            raise PermissionDenied(f"uid {uid} has no user name on this host") from None
        if uid == 0:
            return Caller(0, user, admin=True)
        admin = await polkit.check(self.bus, msg.sender or "", polkit.ACTION_MANAGE_ALL)
        return Caller(uid, user, admin=admin)

    async def _require(self, msg: Message, action: str, what: str) -> None:
        if msg.sender is None:
            raise PermissionDenied("no sender")
        interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
        if not await polkit.check(self.bus, msg.sender, action, interactive):
            raise PermissionDenied(f"not authorized to {what}", f"polkit action {action}")

    async def _require_manage(self, msg: Message, caller: Caller) -> None:
        if caller.uid != 0 and not caller.admin:
            await self._require(msg, polkit.ACTION_MANAGE_OWN, "manage jobs")

    # -- verbs ------------------------------------------------------------------------------

    async def start(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        command, options = msg.body
        if caller.uid != 0:
            await self._require(msg, polkit.ACTION_START, "start jobs")
        # The caller's own descriptor, for a job running as the caller (or, for root, as its
        # dynamic UID): it gives the job nothing the caller could not give it.
        stdin = api.stdin_of(options, msg.unix_fds)
        spec, slice_limits = await admit(
            self.config, self.manager, api.decode_start(command, options), caller
        )
        job = await self.manager.start(spec, caller, slice_limits, stdin=stdin)
        return "s", [json.dumps(job_to_dict(job))]

    async def stop(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        job_id, timeout = msg.body
        await self._require_manage(msg, caller)
        job, was_running = await self.manager.stop(
            job_id, caller, timeout=None if timeout < 0 else timeout
        )
        return "sb", [json.dumps(job_to_dict(job)), was_running]

    async def kill(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        job_id, signum = msg.body
        await self._require_manage(msg, caller)  # as Stop: the caller's own jobs, or an admin
        job, was_running = await self.manager.kill(job_id, caller, signum)
        return "sb", [json.dumps(job_to_dict(job)), was_running]

    async def status(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        await self._require_manage(msg, caller)
        job = await self.manager.status(msg.body[0], caller)
        return "s", [json.dumps(job_to_dict(job))]

    async def list_jobs(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        await self._require_manage(msg, caller)
        jobs = await self.manager.list(caller, all=bool(msg.body[0]))
        return "s", [json.dumps([job_to_dict(j) for j in jobs])]

    async def logs(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        """The read end of a pipe carrying the job's output as frames (dbus_api.FRAME).

        A pipe rather than signals or a method per batch: the kernel buffers and paces it, the
        client reads at its own speed, and its closing the pipe ends our work."""
        job_id, options = msg.body
        await self._require_manage(msg, caller)
        kwargs = api.decode_logs_options(options)
        job = await self.manager.status(job_id, caller)  # not found → error now, not in the pipe
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
        return "h", [r]

    def _stream_done(self, task: asyncio.Task[None], uid: int) -> None:
        self._streams.discard(task)
        self._streams_of[uid] -= 1
        if not self._streams_of[uid]:
            del self._streams_of[uid]

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
                        writer.write(api.pack_records(batch, _BREAK_CODES, batch_cursors))
                        if transport.get_write_buffer_size() > 1 << 20:
                            await writer.drain()
                writer.write(api.pack_frame(api.FRAME_END))
            except OSError as e:  # e.g. EMFILE: out of inotify instances or file descriptors
                err = JournalUnavailable(f"cannot read the journal: {e}", "try again later")
                writer.write(
                    api.pack_frame(
                        api.FRAME_ERROR,
                        message=f"{err.dbus_name}\0{api.error_text(err)}".encode(),
                    )
                )
            except JobrunError as e:
                writer.write(
                    api.pack_frame(
                        api.FRAME_ERROR, message=f"{e.dbus_name}\0{api.error_text(e)}".encode()
                    )
                )
            await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader went away: nothing more to do
        except Exception:
            log.exception("log stream of job %s failed", job_id)
        finally:
            writer.close()

    async def subscribe(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        await self._require_manage(msg, caller)
        if msg.sender:
            self._subscribers[msg.sender] = caller
        return "", []

    async def whoami(self, msg: Message, caller: Caller) -> tuple[str, list[Any]]:
        return "sb", [caller.user, caller.admin]

    # -- JobChanged -------------------------------------------------------------------------

    def on_signal(self, msg: Message) -> None:
        """A signal of systemd or the bus, as Systemd passes them on (never a forged one)."""
        if msg.member == "NameOwnerChanged" and msg.signature == "sss" and msg.body[2] == "":
            self._subscribers.pop(msg.body[0], None)
            self._uids.pop(msg.body[0], None)
            return
        job_id = None
        if msg.member == "JobRemoved" and len(msg.body) == 4:
            unit = str(msg.body[2])
            if unit.startswith(UNIT_PREFIX) and unit.endswith(".service"):
                job_id = unit[len(UNIT_PREFIX) : -len(".service")]
        elif msg.member == "PropertiesChanged":
            path = msg.path or ""
            if path.startswith(_UNIT_PATH_PREFIX):
                job_id = path[len(_UNIT_PATH_PREFIX) :].removesuffix("_2eservice")
        if not job_id or not self._subscribers:
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


async def serve() -> None:
    with contextlib.ExitStack() as stack:
        await _serve(stack)


async def _serve(stack: contextlib.ExitStack) -> None:
    config = Config.load()
    server_tls = None
    if config.remote is not None:  # the gRPC API (its imports only where it is configured)
        from . import remote as remote_api

        server_tls = remote_api.server_tls(config.remote)  # a bad CA or CRL: no start at all
    bus = await connect_system_bus()
    manager = await Manager.open(Store())
    daemon = Daemon(bus, manager, config)
    bus.add_message_handler(daemon.on_message)
    # Signals reach the daemon only through the systemd client's filter, which passes on only
    # those of systemd and of the bus: a signal forged by another user is dropped there.
    stack.enter_context(manager.systemd.listen(daemon.on_signal))
    await manager.systemd.watch_bus_names()
    await bus.request_name(api.BUS_NAME)
    remote = None
    if config.remote is not None:
        remote = await remote_api.serve(manager, config, server_tls)
    log.info("jobrund ready on the system bus as %s (config: %s)", api.BUS_NAME, config.source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = loop.create_task(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopper = loop.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("jobrund stopping; running jobs keep running")
    if remote is not None:
        remote.close()
        await remote.wait_closed()
    # Log streams end without their end frame (clients ask again after their last cursor), not
    # with the end their feeds would report once the manager closes them.
    for task in list(daemon._streams):
        task.cancel()
    await asyncio.gather(*daemon._streams, return_exceptions=True)
    bus.disconnect()
    await manager.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    try:
        asyncio.run(serve())
    except JobrunError as e:
        log.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    main()
