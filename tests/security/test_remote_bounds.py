"""Issue: over the remote API too, one caller at their limits leaves the others untouched.

The gRPC server wraps every call in `CallerBounds.call` (jobrun/daemon/grpc.py, `_serve`), keyed
by the caller's identity: these tests drive that object with calls held at a gate.
"""

from __future__ import annotations

import asyncio

import pytest

from jobrun.daemon.grpc import CallerBounds
from jobrun.errors import Busy

pytestmark = pytest.mark.unit


async def _hold(bounds: CallerBounds, who: str, gate: asyncio.Event, entered: list[str],
                stream: bool = False) -> None:  # fmt: skip
    async with bounds.call(who, stream=stream):
        entered.append(who)
        await gate.wait()


async def test_a_caller_beyond_their_calls_gets_busy_and_others_are_served_at_once() -> None:
    bounds = CallerBounds(held=3, active=1, streams=2)
    gate, entered = asyncio.Event(), list[str]()
    alice = [asyncio.create_task(_hold(bounds, "remote:alice", gate, entered)) for _ in range(3)]
    await asyncio.sleep(0)
    assert entered == ["remote:alice"]  # one worked on, two waiting for alice's only slot
    with pytest.raises(Busy):
        async with bounds.call("remote:alice"):
            pass
    # bob is neither refused nor queued behind alice's waiting calls.
    async with asyncio.timeout(1):
        async with bounds.call("remote:bob"):
            pass
    gate.set()
    await asyncio.gather(*alice)
    assert entered == ["remote:alice"] * 3
    assert bounds.counts == {} and bounds.slots == {}  # nothing kept for callers who left


async def test_log_streams_are_bounded_per_caller_and_take_no_call_slot() -> None:
    bounds = CallerBounds(held=3, active=1, streams=2)
    gate, entered = asyncio.Event(), list[str]()
    streams = [
        asyncio.create_task(_hold(bounds, "remote:alice", gate, entered, stream=True))
        for _ in range(2)
    ]
    await asyncio.sleep(0)
    assert entered == ["remote:alice"] * 2  # streams do not wait for the single call slot
    with pytest.raises(Busy):
        async with bounds.call("remote:alice", stream=True):
            pass
    async with asyncio.timeout(1):
        async with bounds.call("remote:alice"):  # her other calls still go through
            pass
        async with bounds.call("remote:bob", stream=True):
            pass
    gate.set()
    await asyncio.gather(*streams)
    async with bounds.call("remote:alice", stream=True):  # room again once they ended
        pass
    assert bounds.counts == {}
