"""Cancelling asyncio tasks for good.

On Python 3.11 ``asyncio.wait_for`` can swallow a cancellation that arrives as its inner future completes
(fixed in 3.12, where ``wait_for`` is built on ``asyncio.timeout``). A loop that awaits ``wait_for`` then
runs on as if never cancelled, and ``task.cancel(); await task`` waits forever: a worker's leader
election did exactly that under load and kept the worker from stopping. Cancelling again until the task
is done is the remedy.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RECANCEL_S = 0.5
"""How long to wait for a cancelled task before cancelling it again."""


async def cancel_and_wait(task: asyncio.Task[Any], *, recancel_s: float = RECANCEL_S) -> None:
    """Cancel ``task`` and wait until it is done, cancelling again every ``recancel_s`` seconds while it
    runs on; its CancelledError is not raised here (other exceptions are not either: the task's owner
    reads them if it cares). A cancellation of the caller itself still propagates."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_s)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
