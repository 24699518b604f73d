"""A small asyncio client for systemd's manager API on the system bus (dbus-fast, raw messages).

Raw `Message` calls instead of introspected proxies: introspecting systemd costs a round trip and
parsing a large XML document per process, which a CLI pays on every invocation.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from .bus import call_bus_daemon, connect_system_bus
from .errors import PermissionDenied, SystemdError, SystemdUnavailable

DEST = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
SCOPE = "org.freedesktop.systemd1.Scope"
PROPS = "org.freedesktop.DBus.Properties"
BUS_NAME = "org.freedesktop.DBus"  # the sender of the bus's own signals (dbus-daemon sets it)

NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
NO_SUCH_PROCESS = "org.freedesktop.systemd1.NoSuchProcess"
# Errors from the bus itself, not from systemd: the call may or may not have been carried out.
# (Under load the bus answers "Message recipient disconnected from message bus without replying".)
NO_ANSWER = (
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.Disconnected",
    "org.freedesktop.DBus.Error.Timeout",
    "org.freedesktop.DBus.Error.TimedOut",
)
MAX_PENDING_CALLS = 64
# systemd jobs (start, stop) this connection has queued and systemd has not finished. For each,
# PID 1 tracks the requester with a match rule of its own on the bus, and dbus-daemon allows it
# 512 (max_match_rules_per_connection): past that PID 1's AddMatch fails, sd-bus drops its bus
# connection ("Got disconnect on API bus"), and every call in flight fails with "Message recipient
# disconnected from message bus without replying" (some 2,000 queued starts get there).
MAX_QUEUED_JOBS = 256
# With every slot taken this long, ask systemd which of our jobs it still has (ListJobs): a
# JobRemoved lost (a bus reconnect) must not keep a slot forever.
_RECONCILE_AFTER = 5.0
ACCESS_DENIED = (
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
)


def unwrap(value: Any) -> Any:
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class Systemd:
    """Connection to systemd. `await Systemd.connect()`; use as an async context manager."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._job_waiters: dict[str, asyncio.Future[str]] = {}
        # JobRemoved can arrive before the caller of StartTransientUnit or StopUnit has handled
        # the reply naming the job: while such calls are in flight (`_queuing`), results of jobs
        # nobody waits for yet are kept here until their caller takes them (the last 1,024 at
        # most: jobs of other clients are never taken, and every result kept for good would hold
        # memory that outlives a load).
        self._removed: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._queuing = 0
        self._listeners: list[Callable[[Message], None]] = []
        # The unique name that owns DEST now. Any peer may send a signal to our connection
        # (unicast, past every match rule), and the bus sets its true sender: only signals sent
        # by this name are systemd's, only those sent by BUS_NAME the bus's.
        self._owner: str | None = None
        self._owner_changes = 0
        self._subscribed = False
        self._subscribing = asyncio.Lock()
        # dbus-daemon allows 128 pending calls per connection and fails the rest with
        # LimitsExceeded: many concurrent callers (followers, jobrund's clients) wait here instead.
        self._in_flight = asyncio.Semaphore(MAX_PENDING_CALLS)
        self._job_slots = asyncio.Semaphore(MAX_QUEUED_JOBS)
        self._queued: set[str] = set()  # paths of our jobs that hold a slot
        bus.add_message_handler(self._on_message)

    @classmethod
    async def connect(cls, bus: MessageBus | None = None) -> Systemd:
        return cls(bus or await connect_system_bus())

    async def __aenter__(self) -> Systemd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.bus.disconnect()

    # -- plumbing ---------------------------------------------------------------------------

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = PATH,
        interface: str = MANAGER,
        unix_fds: list[int] | None = None,
    ) -> list[Any]:
        msg = Message(
            destination=DEST,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
            unix_fds=unix_fds or [],
        )
        try:
            async with self._in_flight:
                reply = await self.bus.call(msg)
        except (OSError, EOFError) as e:
            raise SystemdUnavailable(f"lost the system bus during {member}: {e!r}") from e
        if reply is None:
            raise SystemdUnavailable(f"no reply from systemd to {member}")
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name or "unknown error"
            if reply.error_name in ACCESS_DENIED:
                raise PermissionDenied(
                    f"systemd refused {member}: {text}",
                    "run jobrun as root, or through jobrund",
                )
            raise SystemdError(f"systemd: {text}", dbus_error=reply.error_name)
        return list(reply.body)

    async def _add_match(self, rule: str) -> None:
        await call_bus_daemon(self.bus, "AddMatch", "s", [rule])

    async def subscribe(self) -> None:
        """Ask for JobRemoved and PropertiesChanged signals — before starting anything."""
        async with self._subscribing:  # concurrent callers: one subscription
            if not self._subscribed:
                await self._subscribe()

    async def _subscribe(self) -> None:
        # Who systemd is, and who it becomes (a daemon-reexec reconnects it under a new name):
        # the watch first, so that no change between the question and the watch is missed.
        await self._add_match(
            f"type='signal',sender='{BUS_NAME}',interface='{BUS_NAME}',"
            f"member='NameOwnerChanged',arg0='{DEST}'"
        )
        changes = self._owner_changes
        reply = await call_bus_daemon(self.bus, "GetNameOwner", "s", [DEST])
        if reply is None or reply.message_type != MessageType.METHOD_RETURN:
            raise SystemdUnavailable(
                f"systemd is not on the system bus ({DEST} has no owner)",
                "is systemd the system manager here? `jobrun doctor`",
            )
        # A change seen meanwhile is as new as the reply (it came before it on the socket:
        # same owner) or newer (it came after it, and ran before this coroutine resumed).
        if self._owner_changes == changes:
            self._owner = str(reply.body[0])
        await self._add_match(
            f"type='signal',sender='{DEST}',interface='{MANAGER}',member='JobRemoved'"
        )
        await self._add_match(
            f"type='signal',sender='{DEST}',interface='{PROPS}',member='PropertiesChanged',"
            f"path_namespace='/org/freedesktop/systemd1/unit'"
        )
        await self.call("Subscribe")
        self._subscribed = True

    async def watch_bus_names(self) -> None:
        """Also pass every NameOwnerChanged of the bus to the listeners (jobrund forgets a
        client that has left)."""
        await self._add_match(
            f"type='signal',sender='{BUS_NAME}',interface='{BUS_NAME}',member='NameOwnerChanged'"
        )

    def trusted(self, msg: Message) -> bool:
        """Whether a signal comes from systemd (the current owner of its name) or the bus."""
        if msg.sender == BUS_NAME:
            return msg.interface == BUS_NAME and msg.path == "/org/freedesktop/DBus"
        return msg.sender is not None and msg.sender == self._owner

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL or not self.trusted(msg):
            return False  # a forged signal is dropped here, before any listener sees it
        if msg.sender == BUS_NAME:
            if msg.member == "NameOwnerChanged" and msg.signature == "sss" and msg.body[0] == DEST:
                self._owner = msg.body[2] or None
                self._owner_changes += 1
        elif msg.member == "JobRemoved" and msg.interface == MANAGER and msg.signature == "uoss":
            _, job_path, _, result = msg.body
            was_queued = self._job_done(job_path)
            fut = self._job_waiters.pop(job_path, None)
            if fut is not None and not fut.done():
                fut.set_result(result)
            elif self._queuing and not was_queued:
                self._removed[job_path] = result
                while len(self._removed) > 1024:
                    self._removed.popitem(last=False)
        for listener in list(self._listeners):
            listener(msg)
        return False

    @contextlib.contextmanager
    def listen(self, callback: Callable[[Message], None]) -> Iterator[None]:
        self._listeners.append(callback)
        try:
            yield
        finally:
            self._listeners.remove(callback)

    def expect_job(self, job_path: str) -> asyncio.Future[str]:
        """A future for the result ("done", "failed", "canceled"…) of a systemd job."""
        fut = self._job_waiters.get(job_path)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            if job_path in self._removed:
                fut.set_result(self._removed.pop(job_path))
            else:
                self._job_waiters[job_path] = fut
        return fut

    async def _queue_job(
        self,
        member: str,
        signature: str,
        body: list[Any],
        keep_result: bool = False,
        unix_fds: list[int] | None = None,
    ) -> str:
        """Call a method that queues a systemd job; returns the job's path. At most
        MAX_QUEUED_JOBS of them are unfinished at once: further callers wait here. With
        `keep_result`, the caller asks for the job's result next (expect_job)."""
        while True:
            try:
                async with asyncio.timeout(_RECONCILE_AFTER):
                    await self._job_slots.acquire()
                break
            except TimeoutError:
                await self._reconcile_jobs()
        self._queuing += 1
        try:
            (job,) = await self.call(member, signature, body, unix_fds=unix_fds)
        except BaseException:
            self._job_slots.release()
            raise
        finally:
            self._queuing -= 1
        path = str(job)
        # Without signals there is no JobRemoved to wait for (a CLI that only starts); and the
        # job may be done already (its JobRemoved came before this reply was handled).
        if not self._subscribed or path in self._removed:
            self._job_slots.release()
            if not keep_result:
                self._removed.pop(path, None)
        else:
            self._queued.add(path)  # until its JobRemoved (_on_message)
        return path

    def _job_done(self, path: str) -> bool:
        """Free the slot of one of our jobs; whether it was one."""
        if path not in self._queued:
            return False
        self._queued.discard(path)
        self._job_slots.release()
        return True

    async def _reconcile_jobs(self) -> None:
        """Free the slots of our jobs that systemd no longer has (their JobRemoved lost), and
        end the waits for them."""
        (jobs,) = await self.call("ListJobs")
        live = {str(j[4]) for j in jobs}
        for path in list(self._queued):
            if path not in live:
                self._job_done(path)
                fut = self._job_waiters.pop(path, None)
                if fut is not None and not fut.done():
                    fut.set_result("done")  # its outcome is the unit's, which status asks for

    # -- manager API ------------------------------------------------------------------------

    async def start_transient_unit(
        self,
        name: str,
        properties: list[tuple[str, Variant]],
        unix_fds: list[int] | None = None,
        aux: list[tuple[str, list[tuple[str, Variant]]]] | None = None,
        keep_result: bool = False,
    ) -> str:
        """`unix_fds`: the descriptors that properties of type "h" index (D-Bus passes them
        out of band), e.g. StandardInputFileDescriptor; systemd keeps copies of its own.
        `aux`: units created with it (a timer's service). `keep_result`: as _queue_job's."""
        return await self._queue_job(
            "StartTransientUnit",
            "ssa(sv)a(sa(sv))",
            [name, "fail", properties, aux or []],
            unix_fds=unix_fds,
            keep_result=keep_result,
        )

    async def set_unit_properties(self, name: str, properties: list[tuple[str, Variant]]) -> None:
        """Set properties of a unit, loaded or not, until the next boot (a runtime drop-in)."""
        await self.call("SetUnitProperties", "sba(sv)", [name, True, properties])

    async def stop_unit(self, name: str) -> str:
        return await self._queue_job("StopUnit", "ss", [name, "replace"], keep_result=True)

    async def get_unit(self, name: str) -> str | None:
        """The object path of a loaded unit, or None if systemd has no such unit loaded."""
        try:
            (path,) = await self.call("GetUnit", "s", [name])
        except SystemdError as e:
            if e.dbus_error == NO_SUCH_UNIT:
                return None
            raise
        return str(path)

    async def unit_properties(
        self, path: str, names: Collection[str] | None = None, kind: str = SERVICE
    ) -> dict[str, Any]:
        """Unit and `kind` (Service or Scope) properties of a loaded unit (empty if it went away
        meanwhile): all of them, or those in `names`. A unit has some 350; keeping only those a
        caller reads keeps a daemon answering hundreds of status calls at once from holding
        them all."""
        props: dict[str, Any] = {}
        for interface in (UNIT, kind):
            try:
                (values,) = await self.call("GetAll", "s", [interface], path=path, interface=PROPS)
            except SystemdError as e:
                if e.dbus_error in (
                    NO_SUCH_UNIT,
                    "org.freedesktop.DBus.Error.UnknownObject",
                ):
                    return {}
                raise
            props.update({k: unwrap(v) for k, v in values.items() if names is None or k in names})
        return props

    async def list_units(self, *patterns: str) -> list[tuple[str, str, str, str, str]]:
        """(name, active state, sub state, object path, queued job type or "") of loaded units
        matching any of the globs."""
        (units,) = await self.call("ListUnitsByPatterns", "asas", [[], list(patterns)])
        return [(u[0], u[3], u[4], u[6], u[8] if u[7] else "") for u in units]

    async def freeze_unit(self, name: str) -> None:
        """FreezeUnit: NotSupported where systemd has no cgroup v2 freezer (freezer.py)."""
        await self.call("FreezeUnit", "s", [name])

    async def thaw_unit(self, name: str) -> None:
        await self.call("ThawUnit", "s", [name])

    async def kill_unit(self, name: str, signal: int) -> None:
        await self.call("KillUnit", "ssi", [name, "all", int(signal)])

    async def version(self) -> str:
        (v,) = await self.call("Get", "ss", [MANAGER, "Version"], interface=PROPS)
        return str(unwrap(v))
