"""Thread pools for the synchronous Kubernetes client, shut down without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor


async def shutdown_pool(executor: ThreadPoolExecutor, name: str) -> None:
    """Join the pool's threads without blocking the loop: a short-lived thread of our own waits for them
    (the loop's default executor would itself leave threads behind, which the tests' leak guards catch)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def joined() -> None:
        if not done.done():
            done.set_result(None)

    def join() -> None:
        try:
            executor.shutdown(wait=True, cancel_futures=True)
        finally:
            loop.call_soon_threadsafe(joined)

    joiner = threading.Thread(target=join, name=name, daemon=True)
    joiner.start()
    await asyncio.shield(done)
    # it has reported: only its last instructions are left, so this join is immediate
    joiner.join(timeout=1.0)
