"""The loop every leader duty runs: a pass at the start of a term, after each change, and on a timer."""

from __future__ import annotations

import asyncio
from contextlib import suppress

SETTLE_SECONDS = 0.2
"""Pause after a pass, so a burst of changes (a namespace relabel touches every Service) makes one pass."""


class LeaderDuty:
    """Base of the leader's duties (autoFence, the fallback objects): ``run()`` while this worker leads,
    cancelled the moment it stops leading; :meth:`poke` asks for a pass from any thread."""

    def __init__(self, resync_seconds: float) -> None:
        self.resync_seconds = resync_seconds
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def poke(self) -> None:
        """Ask for a pass soon; callable from any thread (watch threads), a no-op while not leading."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    async def run(self) -> None:
        """Reconcile until cancelled (when leadership ends)."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self.on_term_start()
        try:
            while True:
                self._wake.clear()
                await self.reconcile()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.resync_seconds)
                    await asyncio.sleep(SETTLE_SECONDS)
                    continue
                self.on_resync()
        finally:
            self._loop = self._wake = None

    def on_term_start(self) -> None:
        """Forget what an earlier term knew: another leader may have changed everything since."""

    def on_resync(self) -> None:
        """Called when a pass is due to the timer rather than a change."""

    async def reconcile(self) -> None:
        raise NotImplementedError
