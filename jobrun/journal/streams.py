"""Knowing when journald has written all of a stopped unit's output: `Streams.drained`.

A job's unit can be dead while its output still sits in the stdout socket, not yet read by
journald (systemd issue #28650; here `seq 1000000` exits after 0.1 s and journald needs seconds),
or while the connection itself still waits in the socket's accept queue (journald busy, or being
socket-activated). Reading the journal once the unit has ended therefore loses the tail.
`journalctl --sync` (root only) replies from a low-priority event, i.e. once no stream at all has
unread data: any busy job postpones that indefinitely. What journald offers instead: a state file
per stdout stream, `/run/systemd/journal.<ns>/streams/<dev>:<ino>`, written once the stream's
header has been read and naming its unit (`UNIT=`), removed after the stream hit EOF and its last
line was written to the journal. With the unit dead nobody writes to the stream any more, so "no
state file names the unit" means "all is written" -- provided journald has accepted the stream and
read its header. That gap is closed by a probe: we connect to the same socket and send a header of
our own. The accept queue is FIFO, and journald serves sources of equal priority oldest-pending
first (sd-event), so once our probe's state file exists, the job's stream has had its first read,
which holds its header. Then: wait until no state file names the unit, read to the end, stop.
The state files are root's (0600): other readers end after a quiet spell instead, which is not
exact.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

from .reader import JournalUnavailable

__all__ = ["Streams"]

# Polling journald's stream state files at the end: first quickly, then at this pace.
_STREAMS_POLL_LAST = 0.05
# How long journald may take to accept our probe (it may be starting up); then we give up.
_PROBE_TIMEOUT = 30.0


class Streams:
    """journald's stdout streams of a namespace: the probe and the per-stream state files."""

    def __init__(self, namespace: str) -> None:
        # RuntimeDirectory=systemd/journal.%i of systemd-journald@.service
        self.runtime_dir = Path("/run/systemd") / f"journal.{namespace}"

    def state_files(self) -> Iterator[str]:
        """The stream state files' contents. They are root's (0600): PermissionError otherwise."""
        # os.path, not pathlib: pathlib interns every part of a path, and the name of each
        # stream is new, so under load (hundreds of streams, read while followers end) the
        # interpreter's table of interned strings would grow for good.
        streams = os.path.join(self.runtime_dir, "streams")
        try:
            names = os.listdir(streams)
        except FileNotFoundError:
            return
        for name in names:
            try:
                with open(os.path.join(streams, name), errors="replace") as f:
                    yield f.read()
            except FileNotFoundError:
                continue  # that stream ended while we looked

    async def _probe(self) -> None:
        """Connect a stream of our own and return once journald has read its header."""
        loop = asyncio.get_running_loop()
        nonce = f"jobrun-probe-{secrets.token_hex(8)}"
        needle = f"\nIDENTIFIER={nonce}\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, str(self.runtime_dir / "stdout"))
            except (FileNotFoundError, ConnectionRefusedError):
                return  # nobody listens, so no connection can be waiting there either
            # The stream protocol's header: identifier, unit, priority, level prefix, forward to
            # syslog, kmsg, console. No line follows, so nothing is written to the journal.
            await loop.sock_sendall(sock, f"{nonce}\n\n6\n0\n0\n0\n0\n".encode())
            try:
                async with asyncio.timeout(_PROBE_TIMEOUT):
                    delay = 0.0005
                    while True:
                        try:
                            if any(needle in text for text in self.state_files()):
                                return
                        except PermissionError:
                            # journald shuts its sending side down on accept: EOF means accepted.
                            await loop.sock_recv(sock, 1)
                            raise
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _STREAMS_POLL_LAST)
            except TimeoutError:
                raise JournalUnavailable(
                    f"the journald of {self.runtime_dir.name} did not take a stream "
                    f"within {_PROBE_TIMEOUT:.0f} s",
                    hint="systemctl status systemd-journald@jobrun.service",
                ) from None

    async def drained(self, unit: str) -> bool:
        """Wait until journald has written all output of `unit`, which must have stopped.

        True once that is certain; False (early) if the state files cannot be read (not root).
        """
        try:
            await self._probe()
            line = f"\nUNIT={unit}\n"
            delay = 0.0005
            while any(line in text for text in self.state_files()):
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STREAMS_POLL_LAST)
        except PermissionError:
            return False
        return True
