"""jobrun.aio.wait_event: woken, timed out, and never deaf to a cancellation."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from jobrun.aio import end_task, wait_event

pytestmark = pytest.mark.unit


def test_woken_and_timed_out() -> None:
    async def main() -> tuple[bool, bool, bool]:
        ev = asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, ev.set)
        woken = await wait_event(ev, 5)
        again = await wait_event(ev, 0)  # set already
        ev.clear()
        return woken, again, await wait_event(ev, 0.01)

    assert asyncio.run(main()) == (True, True, False)


@pytest.mark.parametrize("turns", range(6))
def test_a_cancellation_as_the_event_is_set_ends_the_loop(turns: int) -> None:
    """The shape of jobrund's deadline keeper and dispatcher: a loop that sleeps until woken.
    Cancelled `turns` loop turns after its event is set, it must end (with
    asyncio.wait_for in wait_event's place, some of these cases loop forever)."""

    async def main() -> None:
        ev = asyncio.Event()
        passes = 0

        async def keeper() -> None:
            nonlocal passes
            while True:
                passes += 1
                ev.clear()
                await wait_event(ev, 30)

        task = asyncio.create_task(keeper())
        await asyncio.sleep(0)
        ev.set()
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, f"the loop went on after its cancellation ({passes} passes)"
        assert task.cancelled()

    asyncio.run(main())


def test_end_task_ends_a_loop_that_lost_its_cancellation(caplog: pytest.LogCaptureFixture) -> None:
    """A loop that swallows its first cancellation (as asyncio.wait_for of Python 3.11 can) is
    cancelled again, and said so, instead of keeping its caller waiting forever."""

    async def deaf_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    async def main() -> bool:
        task = asyncio.create_task(deaf_once())
        await asyncio.sleep(0)
        await asyncio.wait_for(end_task(task), 15)
        return task.cancelled()

    assert asyncio.run(main())
    assert "went on after its cancellation" in caplog.text
