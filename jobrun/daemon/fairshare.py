"""Bounds on jobrund's D-Bus requests, shared fairly between users.

At most MAX_ACTIVE requests run at once and at most MAX_QUEUED wait; beyond that a caller gets a
Busy error at once instead of the daemon growing without bound. A waiting request is only its
message in a queue, served by at most MAX_ACTIVE worker tasks: under load thousands wait (systemd
starts some 16 units/s here), and with a task of its own each cost 3.4 KB instead of 1.9 KB, at
the peak of jobrund's memory, which CPython's allocator keeps once reached (docs/RELIABILITY.md).

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
import logging
from collections.abc import Coroutine
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from ..bus import call_bus_daemon
from ..errors import Busy, JobrunError, PermissionDenied, error_text

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


def _busy_user() -> Busy:
    return Busy(
        f"you have {PER_UID_QUEUED} requests waiting, the most jobrund holds for one user",
        "wait for their answers before sending more",
    )


class FairShare:
    """Requests of jobrund's D-Bus callers, queued by uid and served by a bounded set of
    workers; a subclass answers each (`_dispatch`)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._workers = 0
        self._queued = 0  # accepted and not yet answered: in a uid's queue, or being served
        self._unknown: dict[str, list[Message]] = {}  # sender → requests waiting for its uid
        self._unknown_held = 0
        self._waiting: dict[int, collections.deque[Message]] = {}  # uid → its waiting requests
        self._held: collections.Counter[int] = collections.Counter()  # uid → waiting + served
        self._active: collections.Counter[int] = collections.Counter()  # uid → being served
        self._turns: collections.deque[int] = collections.deque()  # uids a worker may serve next
        self._tasks: set[asyncio.Task[None]] = set()
        self._uids: collections.OrderedDict[str, int] = collections.OrderedDict()

    async def _dispatch(self, msg: Message) -> None:
        raise NotImplementedError

    def enqueue(self, msg: Message) -> None:
        """Take a request (a method call of jobrund's interface, its signature checked): queue
        it under its sender's uid, or answer Busy at once."""
        sender = msg.sender or ""
        uid = self._uids.get(sender)
        if uid is not None:
            self._queue(uid, msg)
            return
        # Whose request this is decides its queue: ask the bus, once per connection.
        # Held apart (counted in _unknown_held, not _queued) so that a burst of new connections
        # cannot fill the queue before their uids say whose they are.
        pending = self._unknown.get(sender)
        if pending is None:
            if self._unknown_held >= MAX_QUEUED:
                self._error(msg, Busy("jobrund is busy", "try again in a moment"))
                return
            pending = self._unknown[sender] = []
            self._spawn(self._identify(sender))
        if len(pending) >= PER_CONNECTION_UNKNOWN:
            self._error(msg, _busy_user())
            return
        pending.append(msg)
        self._unknown_held += 1

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
                self._queue(uid, msg)

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

    def _queue(self, uid: int, msg: Message) -> None:
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

    def _error(self, msg: Message, e: JobrunError) -> None:
        self.bus.send(Message.new_error(msg, e.dbus_name, error_text(e)))

    def forget(self, sender: str) -> None:
        """A connection closed: its uid may be another's next time."""
        self._uids.pop(sender, None)
