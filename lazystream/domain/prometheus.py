"""Prometheus as a source of dependencies (``metricSourceType: prometheus``).

Each handler's PromQL is templated per fence as Slime does (``$namespace`` → the fence's namespace, then
``$source_app`` → its name), run as an instant query, and its vector result read for the
``destination_service`` (or ``request_host``) label. Unlike Slime, several handlers are allowed and their
results are unioned, and the hosts pass the same admission as access-log hosts. A failed
query — an error status, a warning, an unreadable body — fails the fence's whole round: nothing is reported
for it, so learned state stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.hosts import HostProblem, normalize_authority
from lazystream.domain.resolution import admitted, complete_host

SOURCE = "prometheus"
HOST_LABELS = ("destination_service", "request_host")


class PrometheusError(Exception):
    """A query that did not give a usable answer (the round for that fence fails)."""


def render_query(template: str, fence: ObjectKey) -> str:
    """Slime's templating: ``$namespace`` first, then ``$source_app`` (the fence name, which Slime takes
    for the workload's ``app`` label)."""
    return template.replace("$namespace", fence.namespace).replace("$source_app", fence.name)


def hosts_in_response(body: Any) -> set[str]:
    """The hosts of one ``/api/v1/query`` answer: vector samples whose only label is ``destination_service``
    or ``request_host``. Raises :class:`PrometheusError` for an error, a warning or a malformed answer."""
    if not isinstance(body, Mapping):
        raise PrometheusError("the answer is not a JSON object")
    if body.get("status") != "success":
        raise PrometheusError(
            f"{body.get('errorType') or 'error'}: {body.get('error') or body.get('status')}"
        )
    if body.get("warnings"):
        raise PrometheusError(f"warnings: {'; '.join(str(w) for w in body['warnings'])}")
    data = body.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("result"), list):
        raise PrometheusError("the answer has no data.result")
    if data.get("resultType") != "vector":
        return set()  # scalars, matrices and strings name no destination
    hosts = set()
    for sample in data["result"]:
        labels = sample.get("metric") if isinstance(sample, Mapping) else None
        if isinstance(labels, Mapping) and len(labels) == 1:
            (name, value), *_ = labels.items()
            if name in HOST_LABELS and isinstance(value, str):
                hosts.add(value)
    return hosts


def admit(
    hosts: Iterable[str], fence: ObjectKey, cluster: ClusterState, excluded: frozenset[str]
) -> set[str]:
    """The hosts that may enter ``fence``: valid DNS names, completed in the fence's namespace, declared by
    the cluster, and not a global-sidecar (``excluded``)."""
    out = set()
    for raw in hosts:
        host = normalize_authority(raw)
        if isinstance(host, HostProblem):
            continue
        full = complete_host(host, fence.namespace, cluster)
        if full not in excluded and admitted(full, cluster):
            out.add(full)
    return out
