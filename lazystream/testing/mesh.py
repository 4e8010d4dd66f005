"""A mesh with everything that makes learning hard, and traffic for it, to compare a run with ``render``.

:class:`MeshScenario` builds, from a seed, a few namespaces of Services with manual fences (one disabled),
fences that autoFence creates (from a Namespace label and from Service labels, one Service opting out), a
ServiceEntry with a wildcard, a VirtualService, and Services that are not fenced at all. Its records mix
every format lazystream reads (lazystream's global-sidecar through Fluent Bit, Envoy's JSON, Istio's text
line, a tailed container log with pod metadata), fallback and direct observations, short, dotted and full
names, with malformed records and hostile Host headers among them. Whatever order a run sees the cluster
and the records in, its end state must be what ``render`` computes from both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from lazystream.domain.autofence import FENCED_LABEL
from lazystream.domain.cluster import ObjectKey
from lazystream.testing.cluster import ClusterBuilder
from lazystream.testing.records import (
    envoy_json,
    fluent_bit,
    fluent_bit_cri,
    global_sidecar_record,
    istio_text_line,
)

EXTERNAL_HOSTS = ("api.payments.example.com", "eu.storage.example.net", "us.storage.example.net")
"""Hosts a ServiceEntry declares (``*.storage.example.net`` as a wildcard)."""
HOSTILE_AUTHORITIES = (
    "evil-{i}.example.com",  # a spray of names no one declares
    "svc-0.{ns}.svc.cluster.local.evil.net",
    "SVC-1.{ns}:80",  # upper case: the same Service, admitted
    "10.0.{b}.{b}:8080",  # an IP literal
    "-",
    "svc-2.{ns}\r\nx-injected: yes",  # header injection attempts are not DNS names
    "{long}.example.com",
    "global-sidecar.mesh-operator.svc.cluster.local",
)
GLOBAL_SIDECAR_CLUSTER = "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local"


@dataclass
class MeshScenario:
    """``namespaces`` namespaces (``<prefix>-<n>``) of ``services`` Services (``svc-<j>``) each."""

    prefix: str
    seed: int = 0
    namespaces: int = 3
    services: int = 8
    rng: random.Random = field(init=False, repr=False)
    spaces: list[str] = field(init=False)
    ips: dict[ObjectKey, str] = field(init=False)

    @property
    def virtual_host(self) -> str:
        """A host only a VirtualService declares (its routes enter the Sidecars of the fences that call
        it, so it is the scenario's own: a VirtualService left by another run must not add to them)."""
        return f"shop.{self.prefix}.example.org"

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - test data, not a secret
        self.spaces = [f"{self.prefix}-{n}"[-63:].lstrip("-") for n in range(self.namespaces)]
        net = f"10.{self.rng.randrange(1, 250)}.{self.rng.randrange(0, 250)}"
        keys = [ObjectKey(ns, f"svc-{j}") for ns in self.spaces for j in range(self.services)]
        if len(keys) > 240:
            raise ValueError("a scenario's Services share one /24: at most 240")
        self.ips = {key: f"{net}.{10 + i}" for i, key in enumerate(keys)}

    # -- the cluster ----------------------------------------------------------------------------------

    @property
    def auto_namespace(self) -> str:
        """Fenced by its Namespace label: autoFence fences every Service there but ``svc-3``."""
        return self.spaces[0]

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        if namespace == self.auto_namespace:
            return {FENCED_LABEL: "true"}
        if namespace == self.spaces[-1] and len(self.spaces) > 2:
            return {FENCED_LABEL: "false"}  # ... but its svc-0 opts in
        return {}

    def service_labels(self, key: ObjectKey) -> dict[str, str]:
        labels = {"app": key.name}
        index = int(key.name.split("-")[1])
        if key.namespace == self.auto_namespace and index == 3:
            labels[FENCED_LABEL] = "false"
        elif key.namespace != self.auto_namespace and index % 3 == 0:
            labels[FENCED_LABEL] = "true"
        return labels

    def manual_fences(self) -> dict[ObjectKey, bool]:
        """Fences a user wrote (key → enabled): autoFence never touches them."""
        out: dict[ObjectKey, bool] = {}
        for ns in self.spaces[1:]:
            out[ObjectKey(ns, "svc-1")] = True
        out[ObjectKey(self.auto_namespace, "svc-2")] = True  # manual, where autoFence would have made one
        if len(self.spaces) > 1 and self.services > 4:
            out[ObjectKey(self.spaces[1], "svc-4")] = False
        return out

    def builder(self, *, fences: bool = True) -> ClusterBuilder:
        """The cluster; without ``fences``, no manual ServiceFence (a test creates them later)."""
        builder = ClusterBuilder()
        for ns in self.spaces:
            builder.namespace(ns, self.namespace_labels(ns))
        for key, ip in self.ips.items():
            builder.service(key.name, key.namespace, labels=self.service_labels(key), ips=[ip])
        builder.service_entry(
            "external", self.auto_namespace, hosts=[EXTERNAL_HOSTS[0], "*.storage.example.net"]
        )
        builder.virtual_service(
            "shop", self.spaces[-1], hosts=[self.virtual_host], destinations=[f"svc-0.{self.spaces[-1]}"]
        )
        if fences:
            for key, enabled in self.manual_fences().items():
                builder.fence(key.name, key.namespace, enable=enabled, workloadSelector={"fromService": True})
                builder.items[-1]["metadata"]["labels"] = {"team": "payments"}
        return builder

    def objects(self, *, namespaces: bool = True, fences: bool = True) -> list[dict[str, Any]]:
        items = self.builder(fences=fences).objects()
        return items if namespaces else [o for o in items if o["kind"] != "Namespace"]

    # -- traffic --------------------------------------------------------------------------------------

    def records(self, count: int, start: float, *, seconds: float = 60.0) -> list[bytes]:
        """``count`` records with event times spread over ``seconds`` from ``start``: about 1 in 40
        malformed, 1 in 15 with a hostile Host header, the rest calls. New dependencies are dealt evenly
        over the first nine tenths of the stream and earlier ones repeat in between, so a run that loses
        records at any moment ends with a dependency missing."""
        calls = [(s, d) for s in self.ips for d in self._destinations(s)]
        self.rng.shuffle(calls)
        rate = min(1.0, len(calls) / max(1.0, 0.9 * count * 37 / 40 * 14 / 15))
        dealt, credit, out = 0, 0.0, []
        for i in range(count):
            t = start + seconds * i / max(1, count)
            if i % 40 == 39:
                out.append(self._malformed(i))
                continue
            if i % 15 == 14:
                source = self.rng.choice(list(self.ips))
                out.append(self._format(i, source, self._hostile(i, source), t))
                continue
            credit += rate
            if (credit >= 1.0 and dealt < len(calls)) or dealt == 0:
                credit -= 1.0
                dealt += 1
                source, authority = calls[dealt - 1]
            else:
                source, authority = calls[self.rng.randrange(dealt)]
            out.append(self._format(i, source, authority, t))
        return out

    def _destinations(self, source: ObjectKey) -> list[str]:
        """One spelling of each host a Service may call, chosen at random: short in its own namespace,
        dotted or full elsewhere, and the external and virtual hosts."""
        out = [*EXTERNAL_HOSTS, self.virtual_host]
        for target in self.ips:
            if target == source:
                continue
            roll = self.rng.random()
            if target.namespace == source.namespace and roll < 0.5:
                out.append(f"{target.name}:9080")  # completed in the caller's namespace
            elif roll < 0.75:
                out.append(f"{target.name}.{target.namespace}:9080")
            else:
                out.append(f"{target.name}.{target.namespace}.svc.cluster.local")
        return out

    def _hostile(self, i: int, source: ObjectKey) -> str:
        template = HOSTILE_AUTHORITIES[(i // 15) % len(HOSTILE_AUTHORITIES)]
        return template.format(i=i, ns=source.namespace, b=i % 250, long="a" * 70)

    def _format(self, i: int, source: ObjectKey, authority: str, t: float) -> bytes:
        peer = f"{self.ips[source]}:{40000 + i % 20000}"
        which = i % 4
        if which == 0:
            record = global_sidecar_record(
                authority=authority, peer_address=peer, source_namespace=source.namespace, time=t
            )
            return fluent_bit(record, timestamp=t)
        if which == 1:  # the global-sidecar's Envoy, JSON encoding, no pod metadata
            return envoy_json(
                authority=authority,
                upstream_cluster="inbound|80||",
                downstream_remote_address=peer,
                start_time=t,
            )
        if which == 2:  # the caller's sidecar, text, routing to the global-sidecar
            return istio_text_line(
                authority=authority,
                upstream_cluster=GLOBAL_SIDECAR_CLUSTER,
                downstream_remote_address=peer,
                start_time=t,
            ).encode()
        line = istio_text_line(  # a direct call, tailed with the caller pod's metadata
            authority=authority,
            upstream_cluster=f"outbound|9080||{_fqdn_of(authority, source)}",
            downstream_remote_address=peer,
            start_time=t,
        )
        return fluent_bit_cri(
            line,
            namespace=source.namespace,
            pod=f"{source.name}-5d8f-x",
            labels={"app": source.name},
            timestamp=t,
        )

    def _malformed(self, i: int) -> bytes:
        kinds = [
            b'{"@timestamp": 1.0, "half": ',
            bytes(self.rng.randrange(256) for _ in range(64)),
            orjson.dumps({"@timestamp": 1.0, "unrelated": i}),
            b"",
        ]
        return kinds[(i // 40) % len(kinds)]


def _fqdn_of(authority: str, source: ObjectKey) -> str:
    """The upstream cluster's host of a direct call: the FQDN a sidecar routed to (anything for hosts
    that are not Services: the record's authority still decides what is learned)."""
    host = authority.split(":", 1)[0].lower()
    labels = host.split(".")
    if len(labels) == 1:
        return f"{host}.{source.namespace}.svc.cluster.local"
    if len(labels) == 2:
        return f"{host}.svc.cluster.local"
    return host or "unknown"
