"""The worker's end state equals ``render``'s, whatever the order of the cluster's fences and the records.

A worker sees the cluster change while it reads records: the leader creates autoFence's fences some time
after start (or after an election), a user writes a manual fence or labels a Service later, and records of
a caller whose fence is not there yet arrive first. ``render`` sees the end state of the cluster and every
record at once. The property below runs the worker's own pipeline pieces in-process (the ingest's
``Ingest``, the table agent's ``learned.change``, the leader's ``autofence.plan``, the sink's
``FenceComputer``) over a random interleaving, and asks for render's output at the end. The fault suite
(``tests/integration/test_fault_suite.py``) asks the same of real workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lazystream.config import load_config
from lazystream.config.options import autofence_options, fence_options, render_options, resolve_options
from lazystream.controller.compute import FenceComputer
from lazystream.domain import autofence, learned
from lazystream.domain.autofence import FENCED_LABEL
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.render import render
from lazystream.domain.resolution import Outcome
from lazystream.stream.pipeline import DeadLetter, Ingest
from lazystream.testing.mesh import MeshScenario

NOW = 1_800_000_000.0
SCENARIO = MeshScenario("conv", seed=3, namespaces=3, services=5)
RECORDS = SCENARIO.records(500, NOW - 300, seconds=240)
CONFIG = load_config(
    None,
    {
        "LAZYSTREAM_GENERAL_AUTO_FENCE": "true",
        "LAZYSTREAM_GENERAL_WHITE_NAMESPACE_LIST": ",".join(SCENARIO.spaces),
    },
)


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    return ObjectKey(obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


@dataclass
class ModelWorker:
    """One worker's pipeline without Kafka or the API server: the watch cache is a ClusterState, the
    table a dict, the API server's fences a dict the leader and the sink write to."""

    cluster: ClusterState = field(default_factory=ClusterState)
    fences: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    table: dict[bytes, bytes] = field(default_factory=dict)
    ingest: Ingest = field(
        default_factory=lambda: Ingest(
            resolve_options(CONFIG), CONFIG.tables.bucket_seconds, CONFIG.fence.max_record_bytes
        )
    )
    computer: FenceComputer = field(default_factory=lambda: FenceComputer(fence_options(CONFIG), lambda: NOW))
    dead_letters: int = 0

    def see(self, obj: dict[str, Any]) -> None:
        """A watch event: the object as it is now."""
        self.cluster.apply(obj)
        if obj["kind"] == "ServiceFence":
            self.fences[key_of(obj)] = obj

    def read(self, data: bytes, t: float) -> None:
        out = self.ingest.process(data, self.cluster, t)
        if isinstance(out, DeadLetter):
            self.dead_letters += 1
            return
        for edge in out:
            change = learned.change(
                self.table.get(edge.key), _loads(edge.value), CONFIG.tables.bucket_seconds
            )
            if change is not None and not (change.size > CONFIG.fence.max_hosts_per_fence and change.grew):
                self.table[edge.key] = change.encoded
                fence = learned.parse_fence_key(edge.key)
                if fence is not None:
                    self.write(fence)

    def lead(self) -> None:
        """One pass of the leader's autoFence."""
        plan = autofence.plan(self.cluster, list(self.fences.values()), autofence_options(CONFIG))
        for obj in plan.create:
            self.see(obj)
        for key in plan.delete:
            self.fences.pop(key, None)
            self.cluster.delete("ServiceFence", key.namespace, key.name)

    def write(self, key: ObjectKey) -> None:
        """The sink: compute the fence and write its status back (what the next computation reads)."""
        obj = self.fences.get(key)
        if obj is None:
            return
        hosts = learned.decode_state(self.table.get(learned.fence_key(key)))
        plan = self.computer.plan(obj, hosts, self.cluster, None)
        self.see({**obj, "status": plan.status})

    def end_state(self) -> dict[ObjectKey, dict[str, Any]]:
        for key in list(self.fences):
            self.write(key)
        out = {}
        for key, obj in self.fences.items():
            hosts = learned.decode_state(self.table.get(learned.fence_key(key)))
            plan = self.computer.plan(obj, hosts, self.cluster, None)
            out[key] = {"status": plan.status, "sidecar": (plan.sidecar or {}).get("spec")}
        return out


def _loads(value: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(value)
    return loaded


def render_state() -> tuple[dict[ObjectKey, dict[str, Any]], int]:
    result = render(SCENARIO.objects(), RECORDS, render_options(CONFIG), NOW)
    sidecars = {key_of(o): o["spec"] for o in result.items if o["kind"] == "Sidecar"}
    out = {
        key_of(o): {"status": o["status"], "sidecar": sidecars.get(key_of(o))}
        for o in result.items
        if o["kind"] == "ServiceFence"
    }
    dead = sum(n for outcome, n in result.outcomes.items() if str(outcome).startswith("dead_letter"))
    return out, dead


EXPECTED, EXPECTED_DEAD = render_state()
LATE_LABELS = [
    ObjectKey(ns, name)
    for ns in SCENARIO.spaces
    for name in (f"svc-{j}" for j in range(SCENARIO.services))
    if FENCED_LABEL in SCENARIO.service_labels(ObjectKey(ns, name))
]
"""Services whose autoFence label may come late (before it, the Service is not fenced)."""
LATE_FENCES = list(SCENARIO.manual_fences())
"""Manual fences a user may write late."""


@st.composite
def interleavings(draw: st.DrawFn) -> list[tuple[int, str, ObjectKey | None]]:
    """(position in the records, event, key): every late label and manual fence once, the leader's
    autoFence passes zero to three times; events at the same position keep the drawn order."""
    position = st.integers(0, len(RECORDS))
    events: list[tuple[int, str, ObjectKey | None]] = []
    for key in draw(st.lists(st.sampled_from(LATE_LABELS), unique=True)):
        events.append((draw(position), "label", key))
    for key in draw(st.lists(st.sampled_from(LATE_FENCES), unique=True)):
        events.append((draw(position), "fence", key))
    for _ in range(draw(st.integers(0, 3))):
        events.append((draw(position), "lead", None))
    late_namespace = draw(st.booleans())
    if late_namespace:
        events.append((draw(position), "namespace", None))
    return sorted(events, key=lambda e: e[0])


def _late_objects(events: list[tuple[int, str, ObjectKey | None]]) -> tuple[list[dict[str, Any]], dict]:
    """The cluster at start (without what comes late), and the late objects by event."""
    late_labels = {k for _, e, k in events if e == "label"}
    late_fences = {k for _, e, k in events if e == "fence"}
    late_ns = any(e == "namespace" for _, e, _k in events)
    start: list[dict[str, Any]] = []
    later: dict[tuple[str, ObjectKey | None], dict[str, Any]] = {}
    for obj in SCENARIO.objects():
        kind, key = obj["kind"], key_of(obj)
        if kind == "Service" and key in late_labels:
            labels = {k: v for k, v in obj["metadata"]["labels"].items() if k != FENCED_LABEL}
            start.append({**obj, "metadata": {**obj["metadata"], "labels": labels}})
            later[("label", key)] = obj
        elif kind == "ServiceFence" and key in late_fences:
            later[("fence", key)] = obj
        elif kind == "Namespace" and late_ns and obj["metadata"]["name"] == SCENARIO.auto_namespace:
            start.append({**obj, "metadata": {**obj["metadata"], "labels": {}}})
            later[("namespace", None)] = obj
        else:
            start.append(obj)
    return start, later


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings())
def test_end_state_equals_render_whatever_the_order(events: list[tuple[int, str, ObjectKey | None]]) -> None:
    start, later = _late_objects(events)
    worker = ModelWorker()
    for obj in start:
        worker.see(obj)
    pending = list(events)
    for index, data in enumerate([*RECORDS, None]):
        while pending and pending[0][0] == index:
            _, event, key = pending.pop(0)
            if event == "lead":
                worker.lead()
            else:
                worker.see(later[(event, key)])
        if data is not None:
            worker.read(data, NOW - 300 + index)
    worker.lead()  # the leader's pass after the last change (it is poked by every change)
    assert worker.end_state() == EXPECTED
    assert worker.dead_letters == EXPECTED_DEAD


def test_the_scenario_is_not_trivial() -> None:
    """Every kind of fence learns, and the records include what must not be learned."""
    learned_hosts = {k: len(v["status"].get("domains") or {}) for k, v in EXPECTED.items()}
    assert len(EXPECTED) >= 10
    assert min(n for k, n in learned_hosts.items() if k.name != "svc-4") > 3
    assert EXPECTED_DEAD > 0
    outcomes = render(SCENARIO.objects(), RECORDS, render_options(CONFIG), NOW).outcomes
    assert outcomes[Outcome.REJECTED_NOT_ADMITTED]
    assert outcomes[Outcome.HELD_NO_FENCE]


def test_records_before_any_fence_are_not_lost() -> None:
    """The issue's case: every record waits before the leader has created a single fence, and the
    manual fences are written after the last record."""
    start, later = _late_objects([(0, "fence", k) for k in LATE_FENCES])
    worker = ModelWorker()
    for obj in start:
        worker.see(obj)
    for index, data in enumerate(RECORDS):
        worker.read(data, NOW - 300 + index)
    assert worker.ingest.outcomes[Outcome.LEARNED] > 0  # due auto fences count as fenced already
    for obj in later.values():
        worker.see(obj)
    worker.lead()
    assert worker.end_state() == EXPECTED
