"""The API-server sink: writes each fence's status and Sidecar, coalesced, idempotent, never blocking.

decisions §1: delivery is at-least-once, so the sink applies the *full* desired object computed from state
with server-side apply (one field manager), skips the write when the object already has that content, and
writes a fence's objects at most once per coalescing interval. The Kubernetes client is synchronous: every
call runs in a small thread pool, so the event loop (faust's agents) never waits on the API server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from lazystream.domain.cluster import ObjectKey
from lazystream.kube.client import FIELD_MANAGER, dynamic_client

log = logging.getLogger(__name__)
RETRYABLE = {409, 429, 500, 502, 503, 504}
FENCE_API = ("microservice.slime.io/v1alpha1", "ServiceFence")
SIDECAR_API = ("networking.istio.io/v1alpha3", "Sidecar")
OBSERVATION_LAG = 2.0
"""Seconds the watch cache may lag behind our own write before a difference counts as a foreign edit."""


@dataclass(frozen=True, slots=True)
class Desired:
    status: dict[str, Any] | None
    """The fence's full desired ``status``; None: leave it."""
    sidecar: dict[str, Any] | None
    """The full desired Sidecar; None: none to apply."""


@dataclass(frozen=True, slots=True)
class Observed:
    """What the watch cache last saw, for no-op detection and repairing foreign edits."""

    status: dict[str, Any] | None = None
    sidecar: dict[str, Any] | None = None


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def sidecar_content(sidecar: dict[str, Any] | None) -> bytes | None:
    """The parts of a Sidecar lazystream owns: labels, owner references and spec."""
    if sidecar is None:
        return None
    meta = sidecar.get("metadata") or {}
    return canonical([meta.get("labels") or {}, meta.get("ownerReferences") or [], sidecar.get("spec")])


Compute = Callable[[ObjectKey], "tuple[Desired, Observed] | None"]


class FenceSink:
    """Coalescing, idempotent writer of fence status and Sidecars (see the module docstring)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        compute: Compute,
        coalesce_seconds: float = 0.5,
        concurrency: int = 8,
        field_manager: str = FIELD_MANAGER,
        max_attempts: int = 6,
    ) -> None:
        self.api = api
        self.compute = compute
        self.coalesce_seconds = coalesce_seconds
        self.concurrency = concurrency
        self.field_manager = field_manager
        self.max_attempts = max_attempts
        self.writes_total: Counter[str] = Counter()
        self._pending: set[ObjectKey] = set()
        self._tasks: dict[ObjectKey, asyncio.Task[None]] = {}
        self._last_write: dict[ObjectKey, float] = {}
        self._applied: dict[tuple[ObjectKey, str], tuple[bytes, float]] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._resources: dict[tuple[str, str], Any] = {}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._semaphore = asyncio.Semaphore(self.concurrency)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="lazystream-sink")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is pending once more (bounded by ``timeout``), then release the threads."""
        self._stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def schedule(self, key: ObjectKey) -> None:
        """Ask for ``key`` to be written (coalesced); call on the event loop."""
        if self._loop is None or (self._stopping and key not in self._tasks):
            return
        self._pending.add(key)
        if key not in self._tasks:
            self._tasks[key] = self._loop.create_task(self._run(key), name=f"lazystream-sink:{key}")

    def schedule_threadsafe(self, key: ObjectKey) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.schedule, key)

    async def wait_idle(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while self._tasks:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _run(self, key: ObjectKey) -> None:
        """One fence's writer: a leading write, then at most one more per interval while scheduled."""
        try:
            while key in self._pending:
                wait = self._last_write.get(key, 0.0) + self.coalesce_seconds - time.monotonic()
                if wait > 0 and not self._stopping:
                    await asyncio.sleep(wait)
                self._pending.discard(key)
                assert self._semaphore is not None  # noqa: S101 - started before scheduling
                async with self._semaphore:
                    await self._write(key)
                self._last_write[key] = time.monotonic()
        finally:
            self._tasks.pop(key, None)

    async def _write(self, key: ObjectKey) -> None:
        try:
            planned = self.compute(key)
        except Exception:
            log.exception("computing fence %s failed", key)
            self.writes_total["error:compute"] += 1
            return
        if planned is None:
            return
        desired, observed = planned
        if desired.status is not None:
            content = canonical(desired.status)
            seen = None if observed.status is None else canonical(observed.status)
            if self._needed(key, "status", content, seen):
                body = {
                    "apiVersion": FENCE_API[0],
                    "kind": FENCE_API[1],
                    "metadata": _name(key),
                    "status": desired.status,
                }
                await self._apply(key, "status", content, body)
            else:
                self.writes_total["status:unchanged"] += 1
        if desired.sidecar is not None:
            content_sc = sidecar_content(desired.sidecar)
            assert content_sc is not None  # noqa: S101
            if self._needed(key, "sidecar", content_sc, sidecar_content(observed.sidecar)):
                await self._apply(key, "sidecar", content_sc, desired.sidecar)
            else:
                self.writes_total["sidecar:unchanged"] += 1

    def _needed(self, key: ObjectKey, kind: str, content: bytes, seen: bytes | None) -> bool:
        if seen == content:
            return False
        applied = self._applied.get((key, kind))
        if applied is None or applied[0] != content:
            return True
        # we applied exactly this; the cache may simply not have seen it yet — unless it has had time to
        return seen is not None and time.monotonic() - applied[1] > OBSERVATION_LAG

    async def _apply(self, key: ObjectKey, kind: str, content: bytes, body: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(self.max_attempts):
            try:
                await loop.run_in_executor(self._executor, self._apply_sync, kind, key, body)
            except ApiException as exc:
                if exc.status == 404:
                    self.writes_total[f"{kind}:gone"] += 1
                    return
                if exc.status not in RETRYABLE:
                    log.error("writing %s of fence %s refused: %s %s", kind, key, exc.status, exc.reason)
                    self.writes_total[f"error:{exc.status}"] += 1
                    return
                outcome = "conflict" if exc.status == 409 else str(exc.status)
                self.writes_total[f"{kind}:{outcome}"] += 1
            except (HTTPError, OSError) as exc:
                self.writes_total[f"error:{type(exc).__name__}"] += 1
                log.warning("writing %s of fence %s failed (%s), retrying", kind, key, type(exc).__name__)
            else:
                self._applied[(key, kind)] = (content, time.monotonic())
                self.writes_total[f"{kind}:applied"] += 1
                return
            if self._stopping:
                return
            await asyncio.sleep(min(10.0, 0.2 * 2**attempt) * (0.5 + random.random()))  # noqa: S311
        self.writes_total["error:gave_up"] += 1
        if self._loop is not None and not self._stopping:  # not lost: try again later
            self._loop.call_later(5.0, self.schedule, key)

    def _resource(self, api: tuple[str, str]) -> Any:
        if api not in self._resources:
            self._resources[api] = dynamic_client(self.api).resources.get(api_version=api[0], kind=api[1])
        return self._resources[api]

    def _apply_sync(self, kind: str, key: ObjectKey, body: dict[str, Any]) -> None:
        common = {"name": key.name, "namespace": key.namespace, "field_manager": self.field_manager}
        if kind == "status":
            self._resource(FENCE_API).status.server_side_apply(body=body, force_conflicts=True, **common)
        else:
            self._resource(SIDECAR_API).server_side_apply(body=body, force_conflicts=True, **common)


def _name(key: ObjectKey) -> dict[str, str]:
    return {"name": key.name, "namespace": key.namespace}
