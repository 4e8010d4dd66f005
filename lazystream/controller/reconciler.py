"""``FenceController``: the reconcile loop of one worker, a work queue of fence keys and ``reconcile(key)``.

``reconcile(key)`` is the whole of "how a fence gets written": compute what the fence's objects should be
from learned state and the cluster (``compute``, the worker's: the domain core decides), write them through
a :class:`FenceWriter` (the Kubernetes sink), and ask for another run when the fence's next ``spec.host``
deadline passes. What wakes a fence is the queue's business: a learned host, a cluster change, a sweep or a
deadline all end in :meth:`FenceController.schedule`.

Why compute at run time rather than at schedule time: delivery is at-least-once and changes come in bursts,
so a run always writes the *full* desired objects of that moment; scheduling twice, or replaying a record,
can only rewrite the same content (which the writer then skips).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from lazystream.controller.queue import Outcome, WorkQueue
from lazystream.domain.cluster import ObjectKey

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Desired:
    """What a fence's objects should be, computed from state at run time."""

    status: dict[str, Any] | None
    """The fence's full desired ``status`` (``domains``, ``metricStatus``); None: do not write status."""
    sidecar: dict[str, Any] | None
    """The full desired Sidecar object; None: there should be no Sidecar (a disabled or deleted fence, or
    one that selects no workload): an observed one that lazystream wrote is deleted."""


@dataclass(frozen=True, slots=True)
class Observed:
    """What the watch cache last saw of the fence's objects, for no-op detection.

    Giving an ``Observed`` means "this is the server's copy": a None field then means the object (or the
    fence's status) is absent, so a desired one is written. Return no ``Observed`` at all (None) when
    nothing is known; the writer then compares with what it last wrote itself.
    """

    status: dict[str, Any] | None
    """The fence's ``status`` as seen."""
    sidecar: dict[str, Any] | None
    """The Sidecar as seen: at least ``metadata.labels``, ``metadata.ownerReferences`` and ``spec``."""


class NotReady(Exception):
    """Raised by ``compute`` when it cannot decide now (its state is being moved or recovered): the fence
    is tried again later instead of being dropped."""


Compute = Callable[[ObjectKey], tuple[Desired, Observed | None] | None]
"""``compute(key)``: the fence's desired objects and what was observed, or None when the fence is gone or out
of scope. Called on the event loop when a run starts, so it must be fast (no I/O)."""


class FenceWriter(Protocol):
    """Where desired objects go (``lazystream.kube.sink.FenceSink``): idempotent, retrying transient
    failures itself."""

    writes_total: Counter[str]
    """Outcomes by ``<kind>:<outcome>`` and ``error:<...>``; the reconciler adds ``fence:<...>``."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def write(
        self, key: ObjectKey, desired: Desired, observed: Observed | None, *, stopping: bool
    ) -> bool:
        """Write what differs; True when the fence should be tried again later (an outage)."""
        ...

    def forget(self, key: ObjectKey) -> None:
        """Drop what is remembered of a fence that is gone."""
        ...


class FenceController:
    """A :class:`WorkQueue` of fence keys whose handler is :meth:`reconcile`.

    Use from one event loop: ``await start()``, ``schedule(key)`` whenever a fence's desired objects may
    have changed (``schedule_threadsafe`` from watch threads), ``sweep(keys)`` to check many fences in the
    background, ``await stop()`` at shutdown."""

    def __init__(
        self,
        compute: Compute,
        writer: FenceWriter,
        *,
        deadline_in: Callable[[ObjectKey], float | None] = lambda key: None,
        coalesce_seconds: float = 0.5,
        concurrency: int = 8,
        retry_later_seconds: float = 30.0,
        drain_timeout: float = 10.0,
    ) -> None:
        """``deadline_in(key)``: seconds until the fence's next deadline takes effect (after its compute),
        or None."""
        self._compute = compute
        self.writer = writer
        self._deadline_in = deadline_in
        self.queue: WorkQueue[ObjectKey] = WorkQueue(
            self.reconcile,
            coalesce_seconds=coalesce_seconds,
            concurrency=concurrency,
            retry_later_seconds=retry_later_seconds,
            drain_timeout=drain_timeout,
            name="lazystream-sink",
        )

    # -- the loop -------------------------------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Outcome:
        """Compute the fence's objects now and write what differs."""
        counters = self.writer.writes_total
        started = time.perf_counter()
        try:
            computed = self._compute(key)
        except NotReady:
            counters["fence:not_ready"] += 1
            return Outcome(retry_later=True, loop_seconds=time.perf_counter() - started)
        except Exception as exc:
            counters[f"error:{type(exc).__name__}"] += 1
            log.exception("sink: computing fence %s failed", key)
            return Outcome(loop_seconds=time.perf_counter() - started)
        cost = time.perf_counter() - started
        if computed is None:
            counters["fence:skipped"] += 1
            self.writer.forget(key)
            self.queue.schedule_after(key, None)
            return Outcome(wrote=False, loop_seconds=cost)
        self.queue.schedule_after(key, self._deadline_in(key))
        desired, observed = computed
        retry_later = await self.writer.write(key, desired, observed, stopping=self.queue.stopping)
        return Outcome(retry_later=retry_later, loop_seconds=cost)

    # -- lifecycle and scheduling (the queue's) -------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer (its connections), then the queue: fences scheduled before now run."""
        await self.writer.start()
        self.queue.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Run every scheduled fence once more, wait up to ``timeout`` for runs in flight, stop the writer."""
        await self.queue.stop(timeout)
        await self.writer.stop()

    def schedule(self, key: ObjectKey) -> None:
        self.queue.schedule(key)

    def schedule_threadsafe(self, key: ObjectKey) -> None:
        self.queue.schedule_threadsafe(key)

    def sweep(self, keys: Iterable[ObjectKey]) -> None:
        self.queue.sweep(keys)

    def idle(self) -> bool:
        return self.queue.idle()

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        return await self.queue.wait_idle(timeout)

    @property
    def sweep_pending(self) -> int:
        return self.queue.sweep_pending

    @property
    def writes_total(self) -> Counter[str]:
        return self.writer.writes_total
