"""cancel_and_wait: a task that swallows a cancellation (as ``wait_for`` can on Python 3.11) still ends."""

from __future__ import annotations

import asyncio
import time

from lazystream.runtime.tasks import cancel_and_wait


async def test_a_task_that_swallows_cancellations_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    await cancel_and_wait(task, recancel_s=0.05)
    assert task.cancelled()
    assert swallowed == 3
    assert time.monotonic() - started < 5


async def test_a_plain_cancel_of_such_a_task_is_not_enough() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        await asyncio.sleep(30)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done  # the situation cancel_and_wait exists for
    await cancel_and_wait(task, recancel_s=0.05)
    assert task.done()


async def test_a_task_that_failed_or_finished_is_left_as_it_is() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert isinstance(task.exception(), ValueError)
