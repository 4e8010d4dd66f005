"""Leader election with a ``coordination.k8s.io/v1`` Lease: exactly one worker does cluster-wide work.
Auto-fences, fallback EnvoyFilters, global-sidecar ports and Prometheus polling have one
writer at a time, the leader. The protocol is client-go's (``tools/leaderelection``), re-implemented here:

- **Acquire**: a candidate reads the Lease every ``retry_period`` (with jitter). It takes the Lease when it
  does not exist (create), has no holder (released), or has not changed for the holder's
  ``leaseDurationSeconds`` *as measured by this candidate's own monotonic clock since it last saw the
  Lease change*. Clocks are never compared across machines: ``renewTime`` is informative only, so a
  candidate that starts fresh waits one full duration before taking over a Lease it has never seen renewed.
- **Renew**: the leader writes ``renewTime`` every ``retry_period``. Every write is a replace carrying the
  ``resourceVersion`` that was read (optimistic concurrency): of two candidates racing for a free or expired
  Lease, the API server lets one write succeed and answers the other 409 Conflict.
- **Lose**: the leader stops its leader work when it sees another holder in the Lease, or when no renewal
  succeeded for ``renew_deadline`` since the *start* of the last successful one, whether or not a request
  is still pending. ``renew_deadline < lease_duration`` means it has stopped before anyone else may start.
- **Release**: a clean shutdown first stops the leader work, then writes the Lease with no holder and a
  one-second duration, so another candidate takes over at its next attempt instead of after the duration.

Leader work is a coroutine (``lead``) run as a task while leading and cancelled the moment leadership is
lost; work that must not act after a loss can also check :attr:`LeaderElector.is_leader` (which looks at
the renew deadline itself, not only at the loop's last decision) right before each write.

The Kubernetes client is synchronous: every request runs in the elector's own small thread pool with a
request timeout, so the event loop never waits on the API server, and ``stop()`` joins the threads.

API::

    elector = LeaderElector(api_client, LeaseSettings(namespace="mesh-operator", name="lazystream-leader"),
                            identity="worker-0_1a2b", lead=do_leader_work, on_change=callback)
    await elector.start()          # campaigns in a background task; returns at once
    elector.is_leader              # True while this worker leads (and its renew deadline has not passed)
    elector.holder                 # holderIdentity last seen in the Lease ("" when free, None before a read)
    await elector.wait_leading(timeout) -> bool
    await elector.stop()           # cancels the leader work, releases the Lease if held, joins threads
    elector.terms                  # list[Term]: when this elector led (monotonic start, end, end reason)
    elector.counters               # Counter: "acquired", "renewed", "conflict", "error:<status>", ...
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lazystream.config import Config
from lazystream.kube.errors import describe, error_label
from lazystream.kube.pools import shutdown_pool
from lazystream.runtime.backoff import jittered
from lazystream.runtime.tasks import cancel_and_wait

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2
"""Candidates wait ``retry_period`` times a random factor in [1, 1.2) between attempts (client-go's)."""
RELEASED_LEASE_SECONDS = 1
"""``leaseDurationSeconds`` written on release (client-go's): nobody holds it, any candidate may take it."""
_T = TypeVar("_T")


def default_identity() -> str:
    """``<hostname>_<random>``: the pod name in Kubernetes, and unique per process start, so a restarted
    worker never mistakes the Lease of its previous life for its own."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:10]}"


def micro_time(moment: float) -> str:
    """A Kubernetes ``MicroTime`` (RFC 3339 with microseconds, UTC) for Unix seconds ``moment``."""
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Where the Lease is and the election's timing (see the module docstring for the rules)."""

    namespace: str
    name: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > JITTER_FACTOR * self.retry_period > 0:
            raise ValueError(
                "need lease_duration > renew_deadline > 1.2 x retry_period > 0, got "
                f"{self.lease_duration}, {self.renew_deadline}, {self.retry_period}"
            )

    @classmethod
    def from_config(cls, config: Config) -> LeaseSettings:
        """From the ``leaderElection`` section (the namespace defaulting to ``global.slimeNamespace``)."""
        section = config.leader_election
        return cls(
            namespace=config.lease_namespace,
            name=section.lease_name,
            lease_duration=section.lease_duration_seconds,
            renew_deadline=section.renew_deadline_seconds,
            retry_period=section.retry_period_seconds,
        )


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A Lease as the election reads it. ``resource_version`` is None for a Lease not created yet."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str | None = None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=(obj.get("metadata") or {}).get("resourceVersion"),
        )

    @property
    def observed(self) -> tuple[Any, ...]:
        """What a candidate compares to see whether the Lease changed (not the resourceVersion: a write by
        someone else that changes nothing of the election is not a renewal)."""
        return (
            self.holder,
            self.lease_duration_seconds,
            self.acquire_time,
            self.renew_time,
            self.transitions,
        )

    def body(self, settings: LeaseSettings) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time is not None:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time is not None:
            spec["renewTime"] = self.renew_time
        metadata: dict[str, Any] = {"name": settings.name, "namespace": settings.namespace}
        if self.resource_version is not None:
            metadata["resourceVersion"] = self.resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


class Conflict(Exception):
    """The Lease changed since it was read (409), or was created by another candidate meanwhile."""


class LeaseStore(Protocol):
    """The three requests of an election (blocking; the elector runs them in its thread pool)."""

    def get(self) -> LeaseRecord | None: ...
    def create(self, record: LeaseRecord) -> LeaseRecord: ...
    def replace(self, record: LeaseRecord) -> LeaseRecord: ...


class KubeLeaseStore:
    """The Lease in the API server, read and written as raw JSON (no client models, no datetime parsing)."""

    def __init__(self, api_client: client.ApiClient, settings: LeaseSettings, request_timeout: float) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.settings = settings
        self.request_timeout = request_timeout

    def get(self) -> LeaseRecord | None:
        try:
            response = self.api.read_namespaced_lease(
                self.settings.name,
                self.settings.namespace,
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return LeaseRecord.from_object(orjson.loads(response.data))

    def create(self, record: LeaseRecord) -> LeaseRecord:
        try:
            response = self.api.create_namespaced_lease(
                self.settings.namespace,
                replace(record, resource_version=None).body(self.settings),
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict("the Lease was created by another candidate") from None
            raise
        return LeaseRecord.from_object(orjson.loads(response.data))

    def replace(self, record: LeaseRecord) -> LeaseRecord:
        try:
            response = self.api.replace_namespaced_lease(
                self.settings.name,
                self.settings.namespace,
                record.body(self.settings),
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict("the Lease changed since it was read") from None
            raise
        return LeaseRecord.from_object(orjson.loads(response.data))


@dataclass
class Term:
    """One period of leadership of this elector, in ``time.monotonic()`` seconds (comparable across
    processes of one machine, which is what tests use)."""

    started: float
    ended: float | None = None
    reason: str = ""
    """Why it ended: ``released``, ``lost:<holder>`` (another holder seen), ``renew-deadline``,
    ``lead-failed``."""


Lead = Callable[[], Awaitable[None]]
"""The leader work: started as a task when leadership is acquired, cancelled when it is lost."""
OnChange = Callable[[bool], None]
"""``on_change(leading)``: called on the event loop right after leadership is gained or lost (after the
leader work was cancelled). It must not block."""


@dataclass
class _Observation:
    record: LeaseRecord | None = None
    at: float = 0.0
    """Monotonic time at which ``record`` was first seen (the start of the holder's validity)."""


@dataclass
class LeaderElector:
    """Campaigns for the Lease in the background; runs ``lead`` while leading. See the module docstring."""

    api_client: client.ApiClient | None
    settings: LeaseSettings
    identity: str = field(default_factory=default_identity)
    lead: Lead | None = None
    on_change: OnChange | None = None
    store: LeaseStore | None = None
    """The Lease's requests; default :class:`KubeLeaseStore` over ``api_client`` (tests wrap it)."""
    request_timeout: float | None = None
    """Timeout of one request; default half the renew deadline, so a hung request leaves time to retry."""
    clock: Callable[[], float] = time.time
    """Wall clock for the Lease's ``acquireTime``/``renewTime`` (informative: never used to decide)."""

    counters: Counter[str] = field(default_factory=Counter)
    terms: list[Term] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("identity must not be empty")
        if self.request_timeout is None:
            self.request_timeout = self.settings.renew_deadline / 2
        if self.store is None:
            if self.api_client is None:
                raise ValueError("give an api_client or a store")
            self.store = KubeLeaseStore(self.api_client, self.settings, self.request_timeout)
        self._observed = _Observation()
        self._leading = False
        self._valid_until = 0.0
        self._lead_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._attempt_lock = threading.Lock()
        self._leading_event = asyncio.Event()
        self._release_pending = False

    # -- state --------------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this worker leads now: the loop's decision, and the renew deadline not passed (checked
        here too, so a caller about to write cannot act on a leadership that has just run out)."""
        return self._leading and time.monotonic() < self._valid_until

    @property
    def holder(self) -> str | None:
        """The ``holderIdentity`` last read from the Lease: ``""`` when free, None before the first read
        (or when the Lease does not exist)."""
        record = self._observed.record
        return None if record is None else record.holder

    async def wait_leading(self, timeout: float | None = None) -> bool:
        """Wait until this worker leads; False when ``timeout`` passes first."""
        try:
            await asyncio.wait_for(self._leading_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start campaigning in a background task (returns at once)."""
        if self._task is not None:
            raise RuntimeError("LeaderElector is running already")
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lazystream-leader")
        self._task = asyncio.create_task(self._run(), name=f"leader-election:{self.identity}")

    async def stop(self, release: bool = True) -> None:
        """Stop: cancel the leader work (and wait for it), then release the Lease if this worker holds it
        (unless ``release`` is False: a crash-like stop, for tests), and join the threads."""
        if self._task is None:
            return
        task, self._task = self._task, None
        await cancel_and_wait(task)
        was_leading = self._leading or self._release_pending
        self._release_pending = False
        await self._step_down("released" if release else "stopped")
        if release and was_leading:
            await self._release()
        await self._shutdown_executor()

    async def __aenter__(self) -> LeaderElector:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- the loop -----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        assert self.request_timeout is not None  # noqa: S101 - set in __post_init__
        while True:
            if self._release_pending:  # the leader work failed: give the Lease up before anything else
                self._release_pending = False
                await self._release()
            started = time.monotonic()
            # A read and a write; a leader waits no longer than its renew deadline, so that a hung request
            # cannot keep it leading (the abandoned thread ends within its request timeout).
            bound = self.request_timeout * 2 + 1.0
            if self._leading:
                bound = min(bound, max(0.0, self._valid_until - started))
            try:
                held = await asyncio.wait_for(self._call(self._try_acquire_or_renew), bound)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                held = False
                self.counters[error_label(exc)] += 1
                log.warning("leader election: %s: %s", self.identity, describe(exc))
            if self._release_pending:
                continue  # the leader work failed during the attempt: release first, lead again later
            if held:
                self._valid_until = started + settings.renew_deadline
                if self._leading:
                    self.counters["renewed"] += 1
                else:
                    self._step_up()
            elif self._leading:
                holder = self.holder
                if holder and holder != self.identity:
                    await self._step_down(f"lost:{holder}")
            await self._pause()

    async def _pause(self) -> None:
        """Sleep until the next attempt; a leader also wakes at its renew deadline, to step down on time."""
        if self._leading:
            delay = min(self.settings.retry_period, max(0.0, self._valid_until - time.monotonic()))
        else:
            delay = jittered(self.settings.retry_period, 1.0, JITTER_FACTOR)
        await asyncio.sleep(delay)
        if self._leading and time.monotonic() >= self._valid_until:
            await self._step_down("renew-deadline")

    def _try_acquire_or_renew(self) -> bool:
        """Blocking: read the Lease, decide, write it back with the resourceVersion read. Attempts are
        serialised (an abandoned one finishes before the next starts), so observations stay in order."""
        with self._attempt_lock:
            return self._try_acquire_or_renew_locked()

    def _try_acquire_or_renew_locked(self) -> bool:
        store = self.store
        assert store is not None  # noqa: S101 - set in __post_init__
        now = self.clock()
        # whole seconds, rounded up: others must never wait less than this leader's renew deadline
        duration = max(1, math.ceil(self.settings.lease_duration))
        current = store.get()
        if current is None:
            record = LeaseRecord(self.identity, duration, micro_time(now), micro_time(now), 0)
            try:
                created = store.create(record)
            except Conflict:
                self.counters["conflict"] += 1
                return False
            self._observe(created)
            self.counters["acquired"] += 1
            return True
        self._observe(current)
        if current.holder and current.holder != self.identity:
            waited = time.monotonic() - self._observed.at
            if waited < (current.lease_duration_seconds or self.settings.lease_duration):
                return False  # held, and renewed recently enough as this candidate has seen it
        if current.holder == self.identity:
            record = replace(current, lease_duration_seconds=duration, renew_time=micro_time(now))
        else:
            record = replace(
                current,
                holder=self.identity,
                lease_duration_seconds=duration,
                acquire_time=micro_time(now),
                renew_time=micro_time(now),
                transitions=current.transitions + 1,
            )
        try:
            written = store.replace(record)
        except Conflict:
            self.counters["conflict"] += 1
            return False
        if current.holder != self.identity:
            self.counters["acquired"] += 1
        self._observe(written)
        return True

    def _observe(self, record: LeaseRecord) -> None:
        """Remember ``record``; the moment it was first seen starts the holder's validity."""
        previous = self._observed.record
        if previous is None or previous.observed != record.observed:
            self._observed = _Observation(record, time.monotonic())
        else:
            self._observed = _Observation(record, self._observed.at)

    def _step_up(self) -> None:
        self._leading = True
        self.terms.append(Term(started=time.monotonic()))
        self._leading_event.set()
        log.info("leader election: %s leads (Lease %s/%s)", self.identity, *self._lease_name())
        if self.lead is not None:
            self._lead_task = asyncio.create_task(self._run_lead(self.lead), name="leader-work")
        self._notify(True)

    async def _run_lead(self, lead: Lead) -> None:
        try:
            await lead()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A failed leader must not keep a Lease it does nothing with: step down and release, so that a
            # healthy worker (or this one, afresh) takes over.
            log.exception("leader election: the leader work of %s failed; releasing the Lease", self.identity)
            self.counters["lead-failed"] += 1
            self._lead_task = None  # this task is finishing: _step_down must not wait for itself
            # The campaign loop releases the Lease (it alone writes the Lease while running, so a renewal
            # cannot slip in after the release and leave this worker leading a Lease with no holder).
            self._release_pending = True
            await self._step_down("lead-failed")

    async def _step_down(self, reason: str) -> None:
        """Stop leading now: cancel the leader work and wait for it, then tell ``on_change``."""
        task, self._lead_task = self._lead_task, None
        if task is not None and task is not asyncio.current_task():
            await cancel_and_wait(task)
        if not self._leading:
            return
        self._leading = False
        self._valid_until = 0.0
        self._leading_event.clear()
        self.terms[-1].ended = time.monotonic()
        self.terms[-1].reason = reason
        self.counters[f"stepped-down:{reason.partition(':')[0]}"] += 1
        log.warning("leader election: %s stopped leading (%s)", self.identity, reason)
        self._notify(False)

    def _notify(self, leading: bool) -> None:
        if self.on_change is not None:
            try:
                self.on_change(leading)
            except Exception:
                log.exception("leader election: on_change(%s) failed", leading)

    async def _release(self) -> None:
        """Give the Lease up (only if this worker still holds it): no holder, a one-second duration."""

        def release() -> bool:
            store = self.store
            assert store is not None  # noqa: S101 - set in __post_init__
            with self._attempt_lock:
                return release_locked(store)

        def release_locked(store: LeaseStore) -> bool:
            current = store.get()
            if current is None or current.holder != self.identity:
                return False
            now = micro_time(self.clock())
            store.replace(
                replace(
                    current,
                    holder="",
                    lease_duration_seconds=RELEASED_LEASE_SECONDS,
                    acquire_time=now,
                    renew_time=now,
                )
            )
            return True

        try:
            if await self._call(release):
                self.counters["released"] += 1
                log.info("leader election: %s released the Lease", self.identity)
        except Exception as exc:  # the Lease then expires after its duration: slower, still correct
            self.counters[error_label(exc)] += 1
            log.warning("leader election: %s could not release the Lease: %s", self.identity, describe(exc))

    # -- threads ------------------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], _T]) -> _T:
        executor = self._executor
        if executor is None:
            raise RuntimeError("LeaderElector is not started")
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def _shutdown_executor(self) -> None:
        """Join the pool's threads without blocking the loop (a request in flight ends within its
        timeout)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await shutdown_pool(executor, "lazystream-leader-shutdown")

    def _lease_name(self) -> tuple[str, str]:
        return self.settings.namespace, self.settings.name
