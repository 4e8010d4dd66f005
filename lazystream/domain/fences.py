"""Fence computation: from a ServiceFence's spec, its learned hosts and the cluster, the fence's
``status.domains`` and ``status.metricStatus``: Slime's ``genDomains`` and ``updateServicefenceDomain``, with
lazystream's changes (docs/design.md, "Fences").

Pure functions of their inputs and a clock: the worker's sink, ``lazystream render`` and the tests call
the same code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lazystream.domain.cluster import ClusterObjectError, ClusterState, ObjectKey
from lazystream.domain.hosts import service_fqdn
from lazystream.domain.templates import expand_template

METRIC_KEY = 'destination_service="{}"'


class DomainStatus(StrEnum):
    ACTIVE = "ACTIVE"
    EXPIRE = "EXPIRE"
    EXPIREWAIT = "EXPIREWAIT"

    @property
    def number(self) -> int:
        """The value of Slime's protobuf enum (``Destinations.Status``), which Slime's own CRD types as an
        integer."""
        return _STATUS_NUMBERS[self]

    @classmethod
    def read(cls, value: Any) -> DomainStatus:
        """A status as written by lazystream or Slime: its name, or its number (0 or absent: ACTIVE)."""
        if value in (None, "", 0):
            return cls.ACTIVE
        if isinstance(value, int) and not isinstance(value, bool):
            return _STATUS_BY_NUMBER[value]
        return cls(value)


_STATUS_NUMBERS = {DomainStatus.ACTIVE: 0, DomainStatus.EXPIRE: 1, DomainStatus.EXPIREWAIT: 2}
_STATUS_BY_NUMBER = {number: status for status, number in _STATUS_NUMBERS.items()}


class Origin(StrEnum):
    """Why a domain is in a fence ("explain")."""

    STATIC = "static"
    """``spec.host``, as the operator wrote it."""
    NAMESPACE = "namespace"
    """``spec.host`` ``<ns>/*`` or ``spec.namespaceSelector``."""
    LABEL_SELECTOR = "labelSelector"
    """A Service matched by ``spec.labelSelector``."""
    LEARNED = "learned"
    """Observed in access logs or Prometheus."""


@dataclass(frozen=True, slots=True)
class Domain:
    """One ``status.domains`` entry, with why it is there."""

    hosts: tuple[str, ...]
    status: DomainStatus = DomainStatus.ACTIVE
    origin: Origin = Origin.STATIC
    alias_of: str | None = None
    """The host this key is an alias of (``general.domainAliases``), if it is one."""


@dataclass(frozen=True, slots=True)
class Strategy:
    """A ``spec.host`` recycling strategy; precedence stable > deadline > auto, as in Slime."""

    stable: bool = False
    deadline: float | None = None
    """Unix seconds after which the host is EXPIRE."""
    auto_duration: float | None = None
    recently_called: float | None = None

    def status(self, now: float) -> DomainStatus:
        if self.stable:
            return DomainStatus.ACTIVE
        if self.deadline is not None:
            return DomainStatus.EXPIRE if now > self.deadline else DomainStatus.ACTIVE
        if self.auto_duration is not None and self.recently_called is not None:
            expired = now - self.recently_called > self.auto_duration
            return DomainStatus.EXPIRE if expired else DomainStatus.ACTIVE
        return DomainStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class FenceSpec:
    enable: bool = False
    hosts: Mapping[str, Strategy] = field(default_factory=dict)
    namespace_selector: tuple[str, ...] = ()
    label_selector: tuple[Mapping[str, str], ...] = ()
    workload_labels: Mapping[str, str] = field(default_factory=dict)
    from_service: bool = False


@dataclass(frozen=True, slots=True)
class FenceObject:
    """A ServiceFence as fence computation reads it."""

    namespace: str
    name: str
    spec: FenceSpec
    uid: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    domains: Mapping[str, Domain] = field(default_factory=dict)
    """The current ``status.domains`` (previous computation), for the ACTIVE → EXPIREWAIT transition."""
    learned: tuple[str, ...] = ()
    """Hosts of the current ``status.metricStatus`` (what the fence had learned when it was written)."""

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class AliasRule:
    """``general.domainAliases[i]``: a compiled pattern and Go-syntax templates."""

    pattern: re.Pattern[str]
    templates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FenceOptions:
    """The configuration fence computation and rendering read (from ``general`` and ``global``)."""

    cluster_domain: str = "cluster.local"
    istio_namespace: str = "istio-system"
    slime_namespace: str = "mesh-operator"
    stable_hosts: tuple[str, ...] = ()
    domain_aliases: tuple[AliasRule, ...] = ()
    global_sidecar_mode: str = "cluster"
    cluster_gs_namespace: str = "mesh-operator"
    service_label: str = "app"
    """``global.service``: the legacy workload selector key."""
    numeric_domain_status: bool = False
    """Write ``status.domains.*.status`` as Slime's enum number rather than its name: set by the worker when
    the cluster's ServiceFence CRD (Slime's chart) types the field as an integer."""
    refresh_period: float = 10.0
    """Seconds an EXPIREWAIT entry lasts at least (one refresh period)."""


# -- reading ServiceFence objects ---------------------------------------------------------------------


def _seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ClusterObjectError(f"{where}: expected {{seconds, nanos}}")
    seconds = value.get("seconds", 0)
    try:
        return float(int(seconds))
    except (TypeError, ValueError):
        raise ClusterObjectError(f"{where}.seconds: {seconds!r} is not an integer") from None


def strategy_from(value: Any, where: str) -> Strategy:
    if value is None:
        return Strategy()
    if not isinstance(value, Mapping):
        raise ClusterObjectError(f"{where}: expected an object")
    deadline = value.get("deadline") or {}
    auto = value.get("auto") or {}
    return Strategy(
        stable="stable" in value and value["stable"] is not None,
        deadline=_seconds(deadline.get("expire"), f"{where}.deadline.expire") if deadline else None,
        auto_duration=_seconds(auto.get("duration"), f"{where}.auto.duration") if auto else None,
        recently_called=_seconds(value.get("RecentlyCalled"), f"{where}.RecentlyCalled"),
    )


def fence_from_object(obj: Mapping[str, Any]) -> FenceObject:
    """Read a ServiceFence (Kubernetes JSON); :class:`ClusterObjectError` names the bad field."""
    meta = obj.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace", "default")
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise ClusterObjectError("ServiceFence without metadata.name")
    where = f"ServiceFence {namespace}/{name}"
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise ClusterObjectError(f"{where}: spec is not an object")
    hosts = spec.get("host") or {}
    if not isinstance(hosts, Mapping):
        raise ClusterObjectError(f"{where}: spec.host must be a map")
    selectors = []
    for i, item in enumerate(spec.get("labelSelector") or []):
        selector = (item or {}).get("selector") if isinstance(item, Mapping) else None
        if not isinstance(selector, Mapping):
            raise ClusterObjectError(f"{where}: spec.labelSelector[{i}].selector must be a map")
        selectors.append({str(k): str(v) for k, v in selector.items()})
    workload = spec.get("workloadSelector") or {}
    status = obj.get("status") or {}
    return FenceObject(
        namespace=namespace,
        name=name,
        uid=meta.get("uid"),
        labels=dict(meta.get("labels") or {}),
        spec=FenceSpec(
            enable=bool(spec.get("enable", False)),
            hosts={str(h): strategy_from(s, f"{where}: spec.host[{h}]") for h, s in hosts.items()},
            namespace_selector=tuple(str(n) for n in spec.get("namespaceSelector") or []),
            label_selector=tuple(selectors),
            workload_labels={str(k): str(v) for k, v in (workload.get("labels") or {}).items()},
            from_service=bool(workload.get("fromService", False)),
        ),
        domains=_domains_from_status(status.get("domains"), where),
        learned=tuple(learned_from_metric_status(status.get("metricStatus"))),
    )


def _domains_from_status(value: Any, where: str) -> dict[str, Domain]:
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for key, entry in value.items():
        entry = entry or {}
        try:
            status = DomainStatus.read(entry.get("status"))
        except (ValueError, KeyError):
            raise ClusterObjectError(
                f"{where}: status.domains[{key}].status is {entry.get('status')!r}"
            ) from None
        out[str(key)] = Domain(tuple(str(h) for h in entry.get("hosts") or []), status)
    return out


def learned_from_metric_status(value: Any) -> list[str]:
    """Hosts of ``status.metricStatus`` keys, read as Slime reads them: a single
    ``destination_service`` or ``request_host`` label, port dropped."""
    if not isinstance(value, Mapping):
        return []
    hosts = []
    for key in value:
        text = str(key).strip("{}")
        if not text.startswith(("destination_service", "request_host")):
            continue
        parts = text.split('"')
        if len(parts) != 3:
            continue
        host = parts[1].split(":", 1)[0]
        if host:
            hosts.append(host)
    return hosts


# -- computing domains --------------------------------------------------------------------------------


def aliases(host: str, rules: Iterable[AliasRule]) -> list[str]:
    """``host`` followed by its ``general.domainAliases`` results: a rule applies when
    its pattern matches exactly once; empty expansions are skipped."""
    out = [host]
    for rule in rules:
        matches = list(rule.pattern.finditer(host))
        if len(matches) != 1:
            continue
        for template in rule.templates:
            alias = expand_template(template, matches[0])
            if alias and alias not in out:
                out.append(alias)
    return out


def virtual_service_hosts(host: str, cluster: ClusterState) -> tuple[str, ...]:
    """``host`` and the HTTP route destinations of every VirtualService whose hosts match it (several
    VirtualServices merge)."""
    destinations = {d for vs in cluster.virtual_services_for(host) for d in vs.destinations if d != host}
    return (host, *sorted(destinations))


def _namespace_hosts(namespace: str, cluster: ClusterState, options: FenceOptions) -> tuple[str, ...]:
    """For ``<ns>/*``: VirtualService destinations of the namespace's Services outside that namespace."""
    found: set[str] = set()
    for service in cluster.iter_services():
        if service.namespace != namespace:
            continue
        for alias in aliases(cluster.fqdn(service.key), options.domain_aliases):
            for host in virtual_service_hosts(alias, cluster)[1:]:
                labels = host.split(".")
                if len(labels) < 2 or labels[1] != namespace:
                    found.add(host)
    return tuple(sorted(found))


def label_selector_matches(selectors: Iterable[Mapping[str, str]], cluster: ClusterState) -> list[ObjectKey]:
    """Services matching any selector (AND within one; an empty selector matches nothing)."""
    matched: set[ObjectKey] = set()
    for selector in selectors:
        if not selector:
            continue
        keys: set[ObjectKey] | None = None
        for pair in selector.items():
            found = cluster.services_with_label(*pair)
            keys = found if keys is None else keys & found
        matched |= keys or set()
    return sorted(matched)


def compute_domains(
    fence: FenceObject,
    learned: Iterable[str],
    cluster: ClusterState,
    options: FenceOptions,
    now: float,
) -> dict[str, Domain]:
    """``status.domains`` before expiry transitions, in Slime's order: ``spec.host``, namespaces,
    ``labelSelector``, learned hosts. An earlier writer wins."""
    domains: dict[str, Domain] = {}

    def add_host(host: str, status: DomainStatus, origin: Origin) -> None:
        names = aliases(host, options.domain_aliases)
        for alias in names:
            if alias not in domains:
                alias_of = None if alias == host else host
                domains[alias] = Domain(virtual_service_hosts(alias, cluster), status, origin, alias_of)

    def add_namespace(namespace: str) -> None:
        key = f"{namespace}/*"
        if key not in domains:
            domains[key] = Domain(_namespace_hosts(namespace, cluster, options), origin=Origin.NAMESPACE)

    for host, strategy in fence.spec.hosts.items():
        if host.endswith("/*"):
            add_namespace(host[:-2])
        else:
            add_host(host, strategy.status(now), Origin.STATIC)
    for namespace in fence.spec.namespace_selector:
        add_namespace(namespace)
    for key in label_selector_matches(fence.spec.label_selector, cluster):
        add_host(cluster.fqdn(key), DomainStatus.ACTIVE, Origin.LABEL_SELECTOR)
    for host in sorted(set(learned)):
        add_host(host, DomainStatus.ACTIVE, Origin.LEARNED)
    return domains


def expire_transitions(
    domains: dict[str, Domain],
    previous: Mapping[str, Domain],
    expire_wait_since: Mapping[str, float],
    now: float,
    refresh_period: float,
) -> tuple[dict[str, Domain], dict[str, float]]:
    """An ACTIVE entry that is no longer generated becomes EXPIREWAIT and stays so for at least one full
    refresh period; then it goes. Returns the domains and the EXPIREWAIT start times."""
    out = dict(domains)
    since: dict[str, float] = {}
    for key, old in previous.items():
        if key in out:
            continue
        if old.status is DomainStatus.ACTIVE:
            out[key] = Domain(old.hosts, DomainStatus.EXPIREWAIT, old.origin, old.alias_of)
            since[key] = now
        elif old.status is DomainStatus.EXPIREWAIT:
            started = expire_wait_since.get(key, now)
            if now - started < refresh_period:
                out[key] = old
                since[key] = started
    return out, since


# -- rendering status -----------------------------------------------------------------------------------


def metric_status(learned: Iterable[str]) -> dict[str, str]:
    """``status.metricStatus``: ``{destination_service="<host>"}`` → ``"1"``."""
    return {"{" + METRIC_KEY.format(host) + "}": "1" for host in sorted(set(learned))}


def render_status(
    domains: Mapping[str, Domain], learned: Iterable[str], *, numeric: bool = False
) -> dict[str, Any]:
    """The fence's ``status`` as Slime writes it: ACTIVE is the zero value and is left out. ``numeric``:
    a domain's status as its enum number, for a cluster whose ServiceFence CRD is Slime's own (which types
    it as an integer and refuses the name)."""
    rendered = {}
    for key in sorted(domains):
        domain = domains[key]
        entry: dict[str, Any] = {"hosts": list(domain.hosts)}
        if domain.status is not DomainStatus.ACTIVE:
            entry["status"] = domain.status.number if numeric else domain.status.value
        rendered[key] = entry
    status: dict[str, Any] = {}
    metrics = metric_status(learned)
    # protobuf JSON (Slime's encoding) leaves empty maps out; the API server also refuses a null map
    if rendered:
        status["domains"] = rendered
    if metrics:
        status["metricStatus"] = metrics
    return status


def global_sidecar_fqdn(namespace: str, options: FenceOptions) -> str:
    return service_fqdn("global-sidecar", namespace, options.cluster_domain)
