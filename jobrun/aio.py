"""asyncio helpers the standard library of Python 3.11 gets subtly wrong.

`asyncio.wait_for(event.wait(), t)` loses a cancellation that arrives in the instant the event
is set (CPython gh-86296, fixed in 3.12): wait_for sees its inner task done and returns its
result instead of raising CancelledError. A loop that waits that way ("sleep until woken or
until t") then goes on forever, and whoever cancelled it (jobrund shutting down) waits forever
for it to end.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set (True) or `timeout` seconds pass (False); a cancellation
    always ends the wait with CancelledError."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=max(0.0, timeout))
    finally:
        waiter.cancel()
    return bool(done)


async def end_task(task: asyncio.Task[None]) -> None:
    """Cancel a loop (one of jobrund's background tasks) and wait until it ended, cancelling it
    again should a cancellation be lost: a loop that goes on must not keep jobrund from
    stopping."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        if not task.done():
            log.error("%s went on after its cancellation; cancelling it again", task.get_coro())
    if not task.cancelled() and task.exception() is not None:
        log.error("%s had failed: %s", task.get_coro(), task.exception())
