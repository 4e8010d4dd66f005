"""``FenceSink``: the coalescing, idempotent writer of each fence's ServiceFence status and Sidecar.

Why it looks like this:

- Delivery is at-least-once, so a write is never "the change"; it is the *full* desired object, computed at
  write time by ``compute(key)`` and applied with server-side apply under one field manager. Replaying a
  record, or scheduling a fence twice, can only rewrite the same content.
- The sink owns a fence's ``status`` and its Sidecar, and never a fence's spec: status goes through the
  ``status`` subresource (which ignores anything else), and both applies force ownership, so a foreign
  writer's conflicting field is taken back rather than blocking us with a 409.
- A write that would not change anything is skipped: when the caller's watch cache (``Observed``) already
  shows the desired content, or, without an observation, when this sink itself last applied exactly that
  content. An observation that differs always wins, so a foreign edit is repaired on the next schedule.
- Records arrive in bursts; a fence is written at most once per coalescing interval: a leading write as soon
  as possible, then at most one trailing write at the end of the interval with whatever is desired then.
- The Kubernetes client is synchronous: every request runs in a bounded thread pool that ``stop()`` shuts
  down, so the event loop (faust's agents) never waits on the API server.

This module is plain asyncio; it does not know about faust (the stream layer calls ``schedule``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from lazystream.domain.cluster import ObjectKey
from lazystream.kube.cleanup import delete_sidecar_if_ours
from lazystream.kube.client import FIELD_MANAGER
from lazystream.kube.errors import describe, error_label, retry_after, retryable
from lazystream.kube.pools import shutdown_pool
from lazystream.runtime.backoff import Backoff
from lazystream.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

FENCE_API_VERSION = "microservice.slime.io/v1alpha1"
FENCE_KIND = "ServiceFence"
SIDECAR_API_VERSION = "networking.istio.io/v1alpha3"
SIDECAR_KIND = "Sidecar"
SWEEP_WRITES = 1
"""Writes of a sweep in flight at once (:meth:`FenceSink.sweep`)."""
SWEEP_DUTY = 0.25
"""The share of the event loop's time a sweep's computes may take: after each swept fence the next waits
three times as long as its compute took. Computed back to back, the 5k fences of a 10k-fence run's worker
kept the loop's thread busy for 15 s, and the worker's other threads (the sink's requests, faust's
consumer) waited for the GIL behind it: a host learned meanwhile reached its Sidecar after 6.3 s instead of
0.4 s. A sweep is a safety net; it can take a minute."""

Kind = Literal["status", "sidecar"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Desired:
    """What a fence's objects should be, computed from state at write time."""

    status: dict[str, Any] | None
    """The fence's full desired ``status`` (``domains``, ``metricStatus``); None: do not write status."""
    sidecar: dict[str, Any] | None
    """The full desired Sidecar object; None: there should be no Sidecar (a disabled or deleted fence, or
    one that selects no workload): an observed one that lazystream wrote is deleted."""


@dataclass(frozen=True, slots=True)
class Observed:
    """What the caller's watch cache last saw of the fence's objects, for no-op detection.

    Giving an ``Observed`` means "this is the server's copy": a None field then means the object (or the
    fence's status) is absent, so a desired one is written. Return no ``Observed`` at all (None) when
    nothing is known; the sink then compares with what it last applied itself.
    """

    status: dict[str, Any] | None
    """The fence's ``status`` as seen."""
    sidecar: dict[str, Any] | None
    """The Sidecar as seen: at least ``metadata.labels``, ``metadata.ownerReferences`` and ``spec``."""


Compute = Callable[[ObjectKey], tuple[Desired, Observed | None] | None]
"""``compute(key)``: the fence's desired objects and what was observed, or None when the fence is gone or out
of scope. Called on the event loop when a write starts, so it must be fast (no I/O)."""


def canonical(value: Any) -> bytes:
    """Canonical JSON: equal content gives equal bytes whatever the key order."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _sidecar_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a Sidecar the sink owns and compares: labels, ownerReferences and spec."""
    meta = obj.get("metadata") or {}
    return {
        "labels": dict(meta.get("labels") or {}),
        "ownerReferences": list(meta.get("ownerReferences") or []),
        "spec": obj.get("spec") or {},
    }


def _sidecar_matches(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """Whether the observed Sidecar already has the desired spec, labels and ownerReferences.

    Labels compare as "every desired label is there with its value": other managers may add labels, which an
    apply of ours would never remove, so requiring equality would rewrite the object forever.
    """
    if observed is None:
        return False
    want, seen = _sidecar_view(desired), _sidecar_view(observed)
    if canonical(want["spec"]) != canonical(seen["spec"]):
        return False
    if canonical(want["ownerReferences"]) != canonical(seen["ownerReferences"]):
        return False
    return all(seen["labels"].get(k) == v for k, v in want["labels"].items())


def _discard(response: Any) -> None:
    """Read an answer the sink does not need and give its connection back to the pool.

    The applies ask for the raw answer: parsing it into the dynamic client's objects took 0.8 ms of the
    GIL per 50-host status (measured), time the event loop's agents waited for."""
    response.drain_conn()
    response.release_conn()


class NotReady(Exception):
    """Raised by ``compute`` when it cannot decide now (its state is being moved or recovered): the fence
    is tried again later instead of being dropped."""


class _Gone(Exception):
    """The fence (or its namespace) does not exist: writing is pointless until it is scheduled again."""


class _GiveUp(Exception):
    """Every attempt failed with a transient error: the fence is scheduled again later."""


class FenceSink:
    """Writes fences' status and Sidecars to the API server: coalesced, idempotent, bounded, off-loop.

    Use from one event loop: ``await start()``, then ``schedule(key)`` whenever a fence's desired objects may
    have changed (``schedule_threadsafe`` from watch threads), ``sweep(keys)`` to check many fences in the
    background, and ``await stop()`` at shutdown.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        compute: Compute,
        coalesce_seconds: float = 0.5,
        concurrency: int = 8,
        field_manager: str = FIELD_MANAGER,
        max_retries: int = 6,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        retry_later_seconds: float = 30.0,
        request_timeout: float = 15.0,
        drain_timeout: float = 10.0,
        on_applied: Callable[[ObjectKey, Kind, dict[str, Any]], None] | None = None,
    ) -> None:
        """``max_retries`` counts attempts per object per write; after the last one fails the fence is
        scheduled again ``retry_later_seconds`` later, so a long outage is neither a tight loop nor a lost
        fence. ``request_timeout`` bounds every request, so no worker thread can hang past ``stop()``."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_retries < 1:
            raise ValueError("max_retries must be at least 1")
        self._api = api_client
        self._compute = compute
        self.coalesce_seconds = coalesce_seconds
        self.concurrency = concurrency
        self.field_manager = field_manager
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_later_seconds = retry_later_seconds
        self.request_timeout = request_timeout
        self.drain_timeout = drain_timeout

        self.writes_total: Counter[str] = Counter()
        """Outcomes by ``<kind>:<outcome>`` (``sidecar:applied``, ``status:unchanged``, ``status:gone``,
        ``status:conflict``, ``sidecar:retry``, ...) and ``error:<HTTP status or exception class>``."""
        self.on_applied = on_applied
        """Called with each object the API server holds as desired after a write (applied, or found
        unchanged): the produce-to-Sidecar latency metric watches Sidecars through it."""
        self.in_flight = 0
        """Fences being written right now (holding a concurrency slot)."""
        self.peak_in_flight = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._dynamic: DynamicClient | None = None
        self._fence_status: Any = None
        self._sidecars: Any = None
        self._semaphore = asyncio.Semaphore(concurrency)
        self._running = False
        self._stopping = False

        self._dirty: set[ObjectKey] = set()
        """Fences scheduled and not yet picked up by a write."""
        self._sweeping: dict[ObjectKey, None] = {}
        """Fences of a sweep not yet scheduled, in order: fed in one at a time, while a slot is free
        (:meth:`sweep`)."""
        self._swept: set[ObjectKey] = set()
        """Fences the sweep scheduled whose write has not ended yet (at most ``SWEEP_WRITES``)."""
        self._sweep_cost = 0.0
        """Seconds the swept fences' computes took since the sweep last paused (:data:`SWEEP_DUTY`)."""
        self._sweep_not_before = 0.0
        """Loop time before which the sweep schedules no further fence."""
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._active: dict[ObjectKey, asyncio.Task[None]] = {}
        """One task per fence being written (waiting for a slot or writing): never two for one fence."""
        self._timers: dict[ObjectKey, asyncio.TimerHandle] = {}
        """Trailing writes waiting for the end of their fence's coalescing interval."""
        self._not_before: dict[ObjectKey, float] = {}
        """Loop time before which a fence's next write may not start (end of its interval, or retry-later)."""
        self._last_applied: dict[tuple[ObjectKey, Kind], bytes] = {}
        """Digest of the canonical JSON this sink last applied successfully, per fence and kind (a digest:
        the documents of 10k fences with 50 hosts each would hold about 100 MB)."""

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the worker pool, resolve the two resources (discovery is I/O: in the pool), and write any
        fence scheduled before the start."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="lazystream-sink"
        )
        self._stopping = False
        try:
            await self._call(self._resolve_resources)
        except BaseException:
            await self._shutdown_executor()
            raise
        self._running = True
        for key in list(self._dirty):
            self._kick(key)
        self._feed()

    def _resolve_resources(self) -> None:
        dynamic = DynamicClient(self._api)
        self._dynamic = dynamic
        self._fence_status = dynamic.resources.get(api_version=FENCE_API_VERSION, kind=FENCE_KIND).status
        self._sidecars = dynamic.resources.get(api_version=SIDECAR_API_VERSION, kind=SIDECAR_KIND)

    async def stop(self, timeout: float | None = None) -> None:
        """Write every pending fence once more (ignoring the coalescing interval), wait up to ``timeout``
        (default ``drain_timeout``) for writes in flight, cancel what is left, and shut the pool down."""
        if not self._running:
            return
        drain = self.drain_timeout if timeout is None else timeout
        self._stopping = True
        self._sweeping.clear()  # a sweep only checks: the next worker's start sweeps again
        self._swept.clear()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for key, timer in list(self._timers.items()):
            timer.cancel()
            del self._timers[key]
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
            log.warning("sink stop: %d fence writes did not finish in %.1f s", len(leftover), drain)
            await asyncio.gather(*(cancel_and_wait(task) for task in leftover))
        if self._dirty:
            log.warning("sink stop: %d scheduled fences not written", len(self._dirty))
        self._running = False
        await self._shutdown_executor()

    async def _shutdown_executor(self) -> None:
        """Join the pool's threads without blocking the loop: a short-lived thread of our own waits for them
        (the loop's default executor would itself leave threads behind)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await shutdown_pool(executor, "lazystream-sink-shutdown")

    # -- scheduling -----------------------------------------------------------------------------------------

    def schedule(self, key: ObjectKey) -> None:
        """Ask for the fence's objects to be written (from the event loop). Cheap and idempotent: repeated
        calls within a coalescing interval collapse into one trailing write."""
        if self._stopping:
            return
        self._sweeping.pop(key, None)  # written now: the sweep need not come back to it
        self._dirty.add(key)
        if self._running:
            self._kick(key)

    def sweep(self, keys: Iterable[ObjectKey]) -> None:
        """Ask for every fence of ``keys`` to be written again, behind whatever :meth:`schedule` asks for.

        Why not ``schedule`` each: the worker sweeps all its fences (thousands) at start, after a
        rebalance and every few minutes, and most are unchanged. Scheduled at once, they would all wait for
        a slot ahead of a fence that just learned a host, which then waited for seconds. So a sweep's fences
        are scheduled one at a time (``SWEEP_WRITES``), and only while fewer than ``concurrency`` writes
        are pending: computing an unchanged fence of 50 hosts takes milliseconds on the event loop, and
        eight of them in every turn of the loop delayed each step of a new edge's way to its Sidecar. One at a
        time back to back still held the GIL from the worker's other threads, so the sweep is also paced
        (:data:`SWEEP_DUTY`)."""
        if self._stopping:
            return
        for key in keys:
            if key not in self._dirty:
                self._sweeping[key] = None
        self._feed()

    def _feed(self) -> None:
        """Schedule swept fences while a slot is free (called whenever a write ends), paced to
        :data:`SWEEP_DUTY` of the loop's time."""
        loop = self._loop
        while (
            loop is not None
            and self._running
            and not self._stopping
            and self._sweeping
            and len(self._swept) < SWEEP_WRITES
            and len(self._active) < self.concurrency
        ):
            wait = self._sweep_not_before - loop.time()
            if wait > 0:
                if self._sweep_timer is None:
                    self._sweep_timer = loop.call_later(wait, self._on_sweep_timer)
                return
            key = next(iter(self._sweeping))
            self._swept.add(key)
            self.schedule(key)  # takes it off the sweep; starts its write (or arms its timer)

    def _on_sweep_timer(self) -> None:
        self._sweep_timer = None
        self._feed()

    def schedule_threadsafe(self, key: ObjectKey) -> None:
        """``schedule`` from another thread (watch threads of the cluster cache)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("FenceSink is not started")
        try:
            loop.call_soon_threadsafe(self.schedule, key)
        except RuntimeError:
            # the loop is closed: the worker is shutting down and a late watch event has nowhere to go
            log.debug("sink: schedule of %s after the event loop closed, dropped", key)

    def _kick(self, key: ObjectKey) -> None:
        """Start the fence's write now, or arm one timer for the end of its interval; nothing when a write or
        a timer is already there (either picks the fence up)."""
        if key in self._active or key in self._timers or key not in self._dirty:
            return
        loop = self._loop
        assert loop is not None  # noqa: S101 - only called once started
        wait = self._not_before.get(key, 0.0) - loop.time()
        if wait > 0 and not self._stopping:
            self._timers[key] = loop.call_later(wait, self._on_timer, key)
            return
        self._not_before.pop(key, None)
        self._active[key] = loop.create_task(self._write(key), name=f"lazystream-sink {key}")

    def _on_timer(self, key: ObjectKey) -> None:
        self._timers.pop(key, None)
        self._kick(key)

    def idle(self) -> bool:
        """Nothing scheduled (not even a trailing or retry-later write, nor a swept fence) and nothing in
        flight."""
        return not (self._dirty or self._active or self._timers or self._sweeping)

    @property
    def sweep_pending(self) -> int:
        """Fences of the sweeps asked for whose write has not ended yet (0 once every sweep is through): how
        an operator, or a benchmark, sees a ``POST /sweep`` finish."""
        return len(self._sweeping) + len(self._swept)

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until :meth:`idle` (tests, shutdown checks); False when ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                log.info(
                    "sink not idle after %.1f s: %d scheduled, %d in flight, %d to sweep",
                    timeout,
                    len(self._dirty),
                    len(self._active),
                    len(self._sweeping),
                )
                return False
            await asyncio.sleep(0.01)
        return True

    # -- writing --------------------------------------------------------------------------------------------

    async def _write(self, key: ObjectKey) -> None:
        """One write of one fence: wait for a slot, compute at that moment, apply status then Sidecar."""
        loop = asyncio.get_running_loop()
        retry_later = False
        try:
            async with self._semaphore:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    # picked up: schedules from now on ask for another (trailing) write
                    self._dirty.discard(key)
                    self._not_before[key] = loop.time() + self.coalesce_seconds
                    retry_later = await self._write_fence(key)
                finally:
                    self.in_flight -= 1
        finally:
            self._active.pop(key, None)
            if key in self._swept:
                self._swept.discard(key)
                pause = self._sweep_cost * (1 - SWEEP_DUTY) / SWEEP_DUTY
                self._sweep_not_before = loop.time() + pause
                self._sweep_cost = 0.0
        if retry_later and not self._stopping:
            self._dirty.add(key)
            self._not_before[key] = loop.time() + self.retry_later_seconds
        if key in self._dirty:
            self._kick(key)
        self._feed()

    async def _write_fence(self, key: ObjectKey) -> bool:
        """Apply what ``compute`` asks for; True when the fence should be tried again later."""
        started = time.perf_counter()
        try:
            computed = self._compute(key)
        except NotReady:
            self.writes_total["fence:not_ready"] += 1
            return True
        except Exception as exc:
            self.writes_total[error_label(exc)] += 1
            log.exception("sink: computing fence %s failed", key)
            return False
        finally:
            if key in self._swept:
                self._sweep_cost += time.perf_counter() - started
        if computed is None:
            self.writes_total["fence:skipped"] += 1
            self._forget(key)
            # nothing was sent: a fence that comes back is written at once, and memory stays bounded
            self._not_before.pop(key, None)
            return False
        desired, observed = computed
        try:
            if desired.status is not None:
                status_matches = None
                if observed is not None:
                    status_matches = observed.status is not None and canonical(observed.status) == canonical(
                        desired.status
                    )
                await self._apply(key, "status", desired.status, status_matches, self._apply_status)
            if desired.sidecar is not None:
                sidecar_matches = (
                    None if observed is None else _sidecar_matches(desired.sidecar, observed.sidecar)
                )
                await self._apply(key, "sidecar", desired.sidecar, sidecar_matches, self._apply_sidecar)
            elif observed is not None and observed.sidecar is not None:
                return await self._remove_sidecar(key)
        except _Gone:
            self._forget(key)
            return False
        except _GiveUp:
            return True
        return False

    async def _apply(
        self,
        key: ObjectKey,
        kind: Kind,
        content: dict[str, Any],
        observed_matches: bool | None,
        apply: Callable[[ObjectKey, dict[str, Any]], None],
    ) -> None:
        """Apply one object unless it is known to be there already, retrying transient failures.

        ``observed_matches``: True/False when the watch cache saw the server's copy equal/different, None
        when nothing was observed (then this sink's own last-applied content decides)."""
        wanted = hashlib.blake2b(canonical(content), digest_size=16).digest()
        if observed_matches is True or (
            observed_matches is None and self._last_applied.get((key, kind)) == wanted
        ):
            self._last_applied[(key, kind)] = wanted
            self.writes_total[f"{kind}:unchanged"] += 1
            self._notify(key, kind, content)
            return
        backoff = Backoff(self.backoff_initial, self.backoff_max, jitter_low=0.5, jitter_high=1.0)
        for attempt in range(1, self.max_retries + 1):
            try:
                await self._call(apply, key, content)
            except Exception as exc:
                if isinstance(exc, ApiException) and exc.status == 404:
                    self.writes_total[f"{kind}:gone"] += 1
                    log.info("sink: %s of fence %s not written: %s", kind, key, describe(exc))
                    raise _Gone from None
                if isinstance(exc, ApiException) and exc.status == 409:
                    self.writes_total[f"{kind}:conflict"] += 1
                if not retryable(exc):
                    self.writes_total[error_label(exc)] += 1
                    log.error("sink: %s of fence %s rejected: %s", kind, key, describe(exc))
                    # the same content would be rejected again: wait for the fence to change
                    return
                if attempt == self.max_retries or self._stopping:
                    self.writes_total[error_label(exc)] += 1
                    log.error(
                        "sink: %s of fence %s failed after %d attempts, trying again later: %s",
                        kind,
                        key,
                        attempt,
                        describe(exc),
                    )
                    raise _GiveUp from None
                self.writes_total[f"{kind}:retry"] += 1
                await asyncio.sleep(max(backoff.next(), retry_after(exc) or 0.0))
            else:
                self._last_applied[(key, kind)] = wanted
                self.writes_total[f"{kind}:applied"] += 1
                self._notify(key, kind, content)
                return

    async def _remove_sidecar(self, key: ObjectKey) -> bool:
        """Delete the fence's Sidecar if lazystream wrote it (decided from the server's managedFields, not
        from memory); True when it should be tried again later."""
        try:
            deleted = await self._call(delete_sidecar_if_ours, self._api, key, self.field_manager)
        except Exception as exc:
            self.writes_total[error_label(exc)] += 1
            log.warning("sink: Sidecar of fence %s not deleted, trying again later: %s", key, describe(exc))
            return retryable(exc)
        self._last_applied.pop((key, "sidecar"), None)
        self.writes_total["sidecar:deleted" if deleted else "sidecar:foreign"] += 1
        if deleted:
            log.info("sink: deleted the Sidecar of fence %s (the fence wants none)", key)
        return False

    def _notify(self, key: ObjectKey, kind: Kind, content: dict[str, Any]) -> None:
        """Tell ``on_applied``; an observer's failure never fails a write."""
        if self.on_applied is None:
            return
        try:
            self.on_applied(key, kind, content)
        except Exception:
            log.exception("sink: the on_applied observer failed for %s of %s", kind, key)

    def _forget(self, key: ObjectKey) -> None:
        """Drop what is remembered of a fence that is gone, so memory stays bounded and a fence recreated
        under the same name is written in full."""
        self._last_applied.pop((key, "status"), None)
        self._last_applied.pop((key, "sidecar"), None)

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking client call in the sink's pool."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("FenceSink is not started")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    # -- the two requests (run in the pool) -----------------------------------------------------------------

    def _apply_status(self, key: ObjectKey, status: dict[str, Any]) -> None:
        """Server-side apply of the fence's ``status`` subresource; the body never carries spec."""
        body = {
            "apiVersion": FENCE_API_VERSION,
            "kind": FENCE_KIND,
            "metadata": {"name": key.name, "namespace": key.namespace},
            "status": status,
        }
        answer = self._fence_status.server_side_apply(
            body=body,
            name=key.name,
            namespace=key.namespace,
            field_manager=self.field_manager,
            force_conflicts=True,
            serialize=False,
            _request_timeout=self.request_timeout,
        )
        _discard(answer)

    def _apply_sidecar(self, key: ObjectKey, sidecar: dict[str, Any]) -> None:
        """Server-side apply of the whole Sidecar, forcing ownership: the sink owns it."""
        meta = sidecar.get("metadata") or {}
        answer = self._sidecars.server_side_apply(
            body=sidecar,
            name=meta.get("name", key.name),
            namespace=meta.get("namespace", key.namespace),
            field_manager=self.field_manager,
            force_conflicts=True,
            serialize=False,
            _request_timeout=self.request_timeout,
        )
        _discard(answer)
