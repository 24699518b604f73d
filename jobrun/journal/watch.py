"""`Watch`: the one inotify instance on a namespace's journal for all its followers on a loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, ClassVar

from .reader import JournalUnavailable, NamespaceDirs, open_reader

__all__ = ["Watch"]

log = logging.getLogger(__name__)

# Without an inotify instance to be had: wake followers this often, and try for one this often.
_POLL = 0.1
_POLL_RETRY = 5.0


def _watch_fd(reader: Any) -> int:
    """sd_journal_get_fd: an inotify instance watching the reader's directories and files."""
    fd: int = reader.fileno()
    return fd


class Watch:
    """The one inotify instance of a namespace's journal for all followers on an event loop.

    A reader that watches the journal itself costs inotify instances (sd_journal_get_fd), of
    which root has 128 (`fs.inotify.max_user_instances`, shared by every root process of the
    host), and jobrund follows hundreds of jobs at once. Followers' handles therefore have no
    inotify of their own: one unfiltered handle per namespace and event loop watches the files,
    wakes every follower when the journal changes, and counts the changes of the set of files
    (`generation`: rotation, vacuum), which a handle without inotify never notices itself. A
    follower that sees the count change opens its handles afresh after its last record.

    Where no inotify instance (or watch) is to be had at all, following must not fail: the watch
    then polls, waking the followers every `_POLL` seconds and comparing the namespace's journal
    files, and tries for an inotify instance again every `_POLL_RETRY` seconds.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _all: ClassVar[dict[tuple[asyncio.AbstractEventLoop, str], Watch]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, namespace: str) -> None:
        self._loop = loop
        self._namespace = namespace
        self.generation = 0
        self._wakers: set[asyncio.Event] = set()  # one per follower: its users
        self._reader: Any = None
        self._fd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._dirs = NamespaceDirs(namespace)
        if not self._watch():
            self._poller = loop.create_task(self._poll())

    @classmethod
    def acquire(cls, namespace: str, wake: asyncio.Event) -> Watch:
        """The namespace's watch on the running loop (created on first use); `wake` is set
        whenever the journal changes, until `release`."""
        loop = asyncio.get_running_loop()
        with cls._lock:
            w = cls._all.get((loop, namespace))
            if w is None:
                w = cls._all[loop, namespace] = cls(loop, namespace)
            w._wakers.add(wake)
        return w

    def release(self, wake: asyncio.Event) -> None:
        with self._lock:
            self._wakers.discard(wake)
            if self._wakers:
                return
            del self._all[self._loop, self._namespace]
        self._unwatch()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    def _watch(self, *, quiet: bool = False) -> bool:
        """Watch with an inotify instance; False if none can be had (the reason logged)."""
        self._dirs = NamespaceDirs(self._namespace)
        try:
            reader = open_reader(self._namespace)
        except JournalUnavailable as e:
            if not quiet:
                log.warning("%s: following by polling every %.1f s", e.message, _POLL)
            return False
        try:
            fd = _watch_fd(reader)
        except OSError as e:
            reader.close()
            if not quiet:
                log.warning(
                    "cannot watch the journal (%s; fs.inotify.max_user_instances, "
                    "max_user_watches): following by polling every %.1f s",
                    e,
                    _POLL,
                )
            return False
        self._loop.add_reader(fd, self._changed)
        self._reader, self._fd = reader, fd
        return True

    def _unwatch(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._fd = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _wake(self, files_changed: bool) -> None:
        if files_changed:
            self.generation += 1
        for wake in self._wakers:
            wake.set()

    def _changed(self) -> None:
        from systemd import journal

        try:
            files_changed = self._reader.process() == journal.INVALIDATE
        except OSError:
            files_changed = True
        if self._dirs.appeared():
            # The namespace's directory appeared: only a new handle watches it (NamespaceDirs).
            self._unwatch()
            if not self._watch():
                self._poller = self._loop.create_task(self._poll())
            files_changed = True
        self._wake(files_changed)

    async def _poll(self) -> None:
        files = self._dirs.files()
        since_try = 0.0
        while True:
            await asyncio.sleep(_POLL)
            since_try += _POLL
            if since_try >= _POLL_RETRY:
                since_try = 0.0
                if self._watch(quiet=True):
                    log.warning("watching the journal again: polling ends")
                    self._poller = None
                    self._wake(True)  # files may have come or gone meanwhile
                    return
            now = self._dirs.files()
            changed, files = now != files, now
            if self._dirs.appeared():
                self._dirs = NamespaceDirs(self._namespace)
                changed = True
            self._wake(changed)

    def timeout(self) -> float | None:
        """When sd_journal wants to be asked again even without an inotify event (network fs)."""
        if self._reader is None:
            return None  # polling: the poller wakes the followers
        ms: int = self._reader.get_timeout_ms()
        return None if ms < 0 else ms / 1000
