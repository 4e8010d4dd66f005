"""``WorkQueue``: which fence is reconciled when, in the shape of controller-runtime's rate-limited queue.

A key is scheduled whenever its desired objects may have changed; the queue decides when its handler runs:

- **Coalescing.** A key runs at most once per ``coalesce_seconds``: a leading run as soon as a slot is free,
  then at most one trailing run at the end of the interval, with whatever is desired then. Bursts of records
  become one write.
- **Per key exclusive.** Never two runs of one key at once; a schedule during a run asks for one more.
- **Bounded.** At most ``concurrency`` runs at a time.
- **Retry later.** A run that says so (the API server is down, the state is being recovered) is scheduled
  again after ``retry_later_seconds``: a long outage is neither a tight loop nor a lost key.
- **Sweeps behind schedules.** A sweep (every key, at start, after a rebalance, every few minutes) feeds its
  keys one at a time and only while slots are free, paced to a share of the loop's time, so a key that just
  changed never waits behind thousands that did not.

Plain asyncio, generic over the key: it knows nothing of Kubernetes, faust or fences.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lazystream.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

SWEEP_RUNS = 1
"""Runs of a sweep in flight at once."""
SWEEP_DUTY = 0.25
"""The share of the event loop's time a sweep's runs may take: after each swept key the next waits three
times as long as the handler reported (:attr:`Outcome.loop_seconds`). A sweep is a safety net; it may take
a minute, while the loop's other work (the agents, the client threads waiting for the GIL) may not wait."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run of the handler asks of the queue."""

    retry_later: bool = False
    """Run the key again after ``retry_later_seconds``."""
    wrote: bool = True
    """False when nothing was sent (the key is gone or not ours): its next run need not wait for the end of
    a coalescing interval, so a key that comes back is handled at once."""
    loop_seconds: float = 0.0
    """Event-loop time the run took (its computation, not its I/O): what paces sweeps."""


Handler = Callable[[K], Awaitable[Outcome]]


class WorkQueue(Generic[K]):
    """Runs ``handler(key)`` for scheduled keys. Use from one event loop: ``start()``, ``schedule(key)``
    (``schedule_threadsafe`` from other threads), ``sweep(keys)``, ``await stop()``."""

    def __init__(
        self,
        handler: Handler[K],
        *,
        coalesce_seconds: float = 0.5,
        concurrency: int = 8,
        retry_later_seconds: float = 30.0,
        drain_timeout: float = 10.0,
        name: str = "lazystream-queue",
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._handler = handler
        self.coalesce_seconds = coalesce_seconds
        self.concurrency = concurrency
        self.retry_later_seconds = retry_later_seconds
        self.drain_timeout = drain_timeout
        self.name = name
        self.in_flight = 0
        """Keys being run right now (holding a slot)."""
        self.peak_in_flight = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore = asyncio.Semaphore(concurrency)
        self._running = False
        self._stopping = False
        self._dirty: set[K] = set()
        """Keys scheduled and not yet picked up by a run."""
        self._sweeping: dict[K, None] = {}
        """Keys of a sweep not yet scheduled, in order (fed in one at a time, while a slot is free)."""
        self._swept: set[K] = set()
        """Keys the sweep scheduled whose run has not ended yet (at most ``SWEEP_RUNS``)."""
        self._sweep_not_before = 0.0
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._active: dict[K, asyncio.Task[None]] = {}
        """One task per key being run (waiting for a slot or running): never two for one key."""
        self._timers: dict[K, asyncio.TimerHandle] = {}
        """Trailing runs waiting for the end of their key's interval (or for retry-later)."""
        self._not_before: dict[K, float] = {}
        """Loop time before which a key's next run may not start."""
        self._at: dict[K, asyncio.TimerHandle] = {}
        """Runs asked for after a delay (:meth:`schedule_after`), one per key."""

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True from the start of :meth:`stop`: a handler retrying an outage should give up now."""
        return self._stopping

    def start(self) -> None:
        """Start running keys (those scheduled before the start too)."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._running = True
        for key in list(self._dirty):
            self._kick(key)
        self._feed()

    async def stop(self, timeout: float | None = None) -> None:
        """Run every scheduled key once more (ignoring the coalescing interval), wait up to ``timeout``
        (default ``drain_timeout``) for runs in flight, and cancel what is left."""
        if not self._running:
            return
        drain = self.drain_timeout if timeout is None else timeout
        self._stopping = True
        self._sweeping.clear()  # a sweep only checks: the next start sweeps again
        self._swept.clear()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for timers in (self._timers, self._at):
            for timer in timers.values():
                timer.cancel()
            timers.clear()
        self._not_before.clear()
        for key in list(self._dirty):
            self._kick(key)
        deadline = time.monotonic() + drain
        while self._active:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.wait(list(self._active.values()), timeout=remaining)
        leftover = list(self._active.values())
        if leftover:
            log.warning("%s stop: %d runs did not finish in %.1f s", self.name, len(leftover), drain)
            await asyncio.gather(*(cancel_and_wait(task) for task in leftover))
        if self._dirty:
            log.warning("%s stop: %d scheduled keys not run", self.name, len(self._dirty))
        self._running = False

    # -- asking for runs ------------------------------------------------------------------------------------

    def schedule(self, key: K) -> None:
        """Ask for a run of ``key`` (from the event loop). Cheap and idempotent: repeated calls within a
        coalescing interval collapse into one trailing run."""
        if self._stopping:
            return
        self._sweeping.pop(key, None)  # run now: the sweep need not come back to it
        self._dirty.add(key)
        if self._running:
            self._kick(key)

    def schedule_threadsafe(self, key: K) -> None:
        """:meth:`schedule` from another thread (watch threads)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"{self.name} is not started")
        try:
            loop.call_soon_threadsafe(self.schedule, key)
        except RuntimeError:
            # the loop is closed: the worker is shutting down and a late event has nowhere to go
            log.debug("%s: schedule of %s after the event loop closed, dropped", self.name, key)

    def schedule_after(self, key: K, delay: float | None) -> None:
        """Ask for a run of ``key`` in ``delay`` seconds (a deadline passing); None cancels the one asked
        for. One such run per key: the latest call wins."""
        old = self._at.pop(key, None)
        if old is not None:
            old.cancel()
        loop = self._loop
        if delay is None or loop is None or self._stopping:
            return
        self._at[key] = loop.call_later(max(0.0, delay), self._on_at, key)

    def sweep(self, keys: Iterable[K]) -> None:
        """Ask for a run of every key of ``keys``, behind whatever :meth:`schedule` asks for: one at a
        time (``SWEEP_RUNS``), only while a slot is free, and paced to :data:`SWEEP_DUTY` of the loop."""
        if self._stopping:
            return
        for key in keys:
            if key not in self._dirty:
                self._sweeping[key] = None
        self._feed()

    # -- what is going on -----------------------------------------------------------------------------------

    def idle(self) -> bool:
        """Nothing scheduled (not even a trailing or retry-later run, nor a swept key) and nothing running.
        Runs asked for after a delay (:meth:`schedule_after`) do not count."""
        return not (self._dirty or self._active or self._timers or self._sweeping)

    @property
    def sweep_pending(self) -> int:
        """Keys of the sweeps asked for whose run has not ended yet (0 once every sweep is through)."""
        return len(self._sweeping) + len(self._swept)

    @property
    def timed(self) -> int:
        """Keys with a run asked for at a later time."""
        return len(self._at)

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until :meth:`idle`; False when ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                log.info(
                    "%s not idle after %.1f s: %d scheduled, %d running, %d to sweep",
                    self.name,
                    timeout,
                    len(self._dirty),
                    len(self._active),
                    len(self._sweeping),
                )
                return False
            await asyncio.sleep(0.01)
        return True

    # -- internals ------------------------------------------------------------------------------------------

    def _feed(self) -> None:
        """Schedule swept keys while a slot is free (called whenever a run ends), paced."""
        loop = self._loop
        while (
            loop is not None
            and self._running
            and not self._stopping
            and self._sweeping
            and len(self._swept) < SWEEP_RUNS
            and len(self._active) < self.concurrency
        ):
            wait = self._sweep_not_before - loop.time()
            if wait > 0:
                if self._sweep_timer is None:
                    self._sweep_timer = loop.call_later(wait, self._on_sweep_timer)
                return
            key = next(iter(self._sweeping))
            self._swept.add(key)
            self.schedule(key)  # takes it off the sweep; starts its run (or arms its timer)

    def _on_sweep_timer(self) -> None:
        self._sweep_timer = None
        self._feed()

    def _on_at(self, key: K) -> None:
        self._at.pop(key, None)
        self.schedule(key)

    def _kick(self, key: K) -> None:
        """Start the key's run now, or arm one timer for the end of its interval; nothing when a run or a
        timer is already there (either picks the key up)."""
        if key in self._active or key in self._timers or key not in self._dirty:
            return
        loop = self._loop
        assert loop is not None  # noqa: S101 - only called once started
        wait = self._not_before.get(key, 0.0) - loop.time()
        if wait > 0 and not self._stopping:
            self._timers[key] = loop.call_later(wait, self._on_timer, key)
            return
        self._not_before.pop(key, None)
        self._active[key] = loop.create_task(self._run(key), name=f"{self.name} {key}")

    def _on_timer(self, key: K) -> None:
        self._timers.pop(key, None)
        self._kick(key)

    async def _run(self, key: K) -> None:
        """One run of one key: wait for a slot, then the handler; then what it asked for."""
        loop = asyncio.get_running_loop()
        outcome = Outcome(wrote=False)
        try:
            async with self._semaphore:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    # picked up: schedules from now on ask for another (trailing) run
                    self._dirty.discard(key)
                    self._not_before[key] = loop.time() + self.coalesce_seconds
                    outcome = await self._handler(key)
                except Exception:
                    log.exception("%s: handling %s failed", self.name, key)
                finally:
                    self.in_flight -= 1
        finally:
            self._active.pop(key, None)
            if key in self._swept:
                self._swept.discard(key)
                pause = outcome.loop_seconds * (1 - SWEEP_DUTY) / SWEEP_DUTY
                self._sweep_not_before = loop.time() + pause
        if not outcome.wrote and not outcome.retry_later:
            self._not_before.pop(key, None)
        if outcome.retry_later and not self._stopping:
            self._dirty.add(key)
            self._not_before[key] = loop.time() + self.retry_later_seconds
        if key in self._dirty:
            self._kick(key)
        self._feed()
