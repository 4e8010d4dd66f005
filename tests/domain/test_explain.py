""" "Explain fence": every Sidecar host with its reasons, consistent with what the worker renders."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.explain import (
    FenceExplanation,
    Reason,
    Rejection,
    explain_fence,
    iso_time,
    rejections_for,
)
from lazystream.domain.fences import (
    AliasRule,
    DomainStatus,
    FenceOptions,
    compute_domains,
    expire_transitions,
    fence_from_object,
)
from lazystream.domain.learned import LearnedHost
from lazystream.domain.sidecars import render_sidecar
from lazystream.testing import ClusterBuilder

NOW = 1_800_000_000.0
FQDN = "{}.{}.svc.cluster.local"


def fence_obj(name: str = "productpage", namespace: str = "default", labels: Any = None, **spec: Any) -> dict:
    return {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": name, "namespace": namespace, "uid": "u1", "labels": labels or {}},
        "spec": {"enable": True, "workloadSelector": {"fromService": True}, **spec},
    }


def mesh() -> ClusterBuilder:
    b = ClusterBuilder()
    for name in ("productpage", "details", "reviews", "ratings"):
        b.service(name)
    b.service("reviews-v2")
    b.service("db", "data", labels={"tier": "db"})
    b.service("cache", "data", labels={"tier": "cache"})
    b.service("billing", "pay")
    b.virtual_service("reviews-route", hosts=["reviews"], destinations=["reviews", "reviews-v2"])
    b.virtual_service(
        "billing-out", "pay", hosts=["billing"], destinations=["billing", FQDN.format("details", "default")]
    )
    return b.global_sidecar()


def whys(explanation: FenceExplanation, host: str) -> list[tuple[str, str]]:
    entry = next(h for h in explanation.hosts if h.host == host)
    return [(w.reason.value, w.detail) for w in entry.why]


def host(explanation: FenceExplanation, name: str) -> Any:
    return next(h for h in explanation.hosts if h.host == name)


def test_each_source_of_a_host_is_named() -> None:
    cluster = mesh().build()
    options = FenceOptions(
        stable_hosts=("istio-egress.istio-system.svc.cluster.local",),
        domain_aliases=(
            AliasRule(
                re.compile(r"(?P<service>[^\.]+)\.(?P<namespace>[^\.]+)\.svc\.cluster\.local$"),
                ("$namespace.$service.mailsaas",),
            ),
        ),
    )
    fence = fence_from_object(
        fence_obj(
            host={FQDN.format("details", "default"): {"stable": {}}, "pay/*": {}},
            labelSelector=[{"selector": {"tier": "db"}}],
            namespaceSelector=["pay"],
        )
    )
    learned = {
        FQDN.format("reviews", "default"): LearnedHost(NOW - 600, NOW - 60, 7),
        FQDN.format("details", "default"): LearnedHost(NOW - 300, NOW - 30, 2),
    }
    out = explain_fence(fence, learned, cluster, options, NOW)

    details, billing = FQDN.format("details", "default"), FQDN.format("billing", "pay")
    assert whys(out, details) == [
        ("static", "spec.host (stable)"),
        ("learned", "observed in access logs or metrics"),
        # a VirtualService of the pay namespace routes billing there
        ("virtualService", f"route destination of VirtualService pay/billing-out for {billing} (in pay/*)"),
    ]
    assert host(out, details).learned == LearnedHost(NOW - 300, NOW - 30, 2)
    assert whys(out, "default.details.mailsaas") == [("alias", f"alias of {details} (general.domainAliases)")]
    reviews = FQDN.format("reviews", "default")
    assert whys(out, reviews) == [("learned", "observed in access logs or metrics")]
    assert whys(out, FQDN.format("reviews-v2", "default")) == [
        ("virtualService", f"route destination of VirtualService default/reviews-route for {reviews}")
    ]
    assert whys(out, FQDN.format("db", "data")) == [
        ("labelSelector", "Service data/db matches spec.labelSelector")
    ]
    assert FQDN.format("cache", "data") not in {h.host for h in out.hosts}
    assert whys(out, "pay/*") == [
        ("namespace", "spec.host (the whole namespace)"),
        ("namespaceSelector", "spec.namespaceSelector"),
    ]
    assert whys(out, "istio-egress.istio-system.svc.cluster.local") == [
        ("stableHost", "general.stableHost (every Sidecar)")
    ]
    assert [w[0] for w in whys(out, "istio-system/*")] == ["mesh"]
    assert [w[0] for w in whys(out, "mesh-operator/*")] == ["mesh"]
    assert out.learned_source == "table"
    assert not out.auto_created


def test_explained_hosts_are_exactly_the_sidecar_egress_hosts() -> None:
    """The explanation covers every host of the Sidecar the worker renders, and nothing else."""
    cluster = mesh().build()
    options = FenceOptions(cluster_gs_namespace="gs", stable_hosts=("ext.example.com", "shared/*"))
    obj = fence_obj(
        host={"pay/*": {}, FQDN.format("ratings", "default"): {}},
        labelSelector=[{"selector": {"tier": "cache"}}],
    )
    fence = fence_from_object(obj)
    learned = {FQDN.format("reviews", "default"): LearnedHost(NOW, NOW, 1)}
    out = explain_fence(fence, learned, cluster, options, NOW)
    domains = compute_domains(fence, learned, cluster, options, NOW)
    sidecar = render_sidecar(fence, domains, cluster, options)
    assert sidecar is not None
    egress = {h.removeprefix("*/") for h in sidecar["spec"]["egress"][0]["hosts"]}
    assert {h.host for h in out.hosts if h.in_sidecar} == egress
    assert all(h.why for h in out.hosts)


def test_learned_state_without_times_comes_from_the_status() -> None:
    cluster = mesh().build()
    obj = fence_obj()
    obj["status"] = {"metricStatus": {'{destination_service="details.default.svc.cluster.local"}': "1"}}
    out = explain_fence(fence_from_object(obj), None, cluster, FenceOptions(), NOW)
    details = host(out, FQDN.format("details", "default"))
    assert [w.reason for w in details.why] == [Reason.LEARNED]
    assert details.learned is None
    assert out.learned_source == "status"
    data = out.to_dict()
    entry = next(h for h in data["hosts"] if h["host"] == FQDN.format("details", "default"))
    assert "firstSeen" not in entry


def test_deadline_passed_and_expiring_hosts() -> None:
    """A passed deadline is EXPIRE (not in the Sidecar); a host that is in the fence's status but no longer
    generated is EXPIREWAIT (still in the Sidecar) with the reason 'expiring'."""
    cluster = mesh().build()
    obj = fence_obj(
        host={FQDN.format("ratings", "default"): {"deadline": {"expire": {"seconds": int(NOW) - 10}}}}
    )
    gone = FQDN.format("reviews", "default")
    obj["status"] = {"domains": {gone: {"hosts": [gone, FQDN.format("reviews-v2", "default")]}}}
    fence = fence_from_object(obj)
    out = explain_fence(fence, {}, cluster, FenceOptions(), NOW)
    ratings = host(out, FQDN.format("ratings", "default"))
    assert ratings.status is DomainStatus.EXPIRE
    assert not ratings.in_sidecar
    assert ratings.why[0].detail == f"spec.host (deadline {iso_time(NOW - 10)})"
    reviews = host(out, gone)
    assert reviews.status is DomainStatus.EXPIREWAIT
    assert reviews.in_sidecar
    assert [w.reason for w in reviews.why] == [Reason.EXPIRING]
    assert host(out, FQDN.format("reviews-v2", "default")).status is DomainStatus.EXPIREWAIT
    # the same transition the worker applies
    domains, _ = expire_transitions(
        compute_domains(fence, {}, cluster, FenceOptions(), NOW), fence.domains, {}, NOW, 10.0
    )
    assert domains[gone].status is DomainStatus.EXPIREWAIT


def test_disabled_and_auto_created_fence() -> None:
    cluster = mesh().build()
    obj = fence_obj(labels={"app.kubernetes.io/created-by": "fence-controller"})
    obj["spec"]["enable"] = False
    out = explain_fence(
        fence_from_object(obj),
        {FQDN.format("details", "default"): LearnedHost(NOW, NOW, 1)},
        cluster,
        FenceOptions(),
        NOW,
    )
    assert out.auto_created
    assert not out.enabled
    assert not any(h.in_sidecar for h in out.hosts)
    # disabled: learned hosts are what the status kept (none), as the worker computes it
    assert FQDN.format("details", "default") not in {h.host for h in out.hosts}


def test_rejections_for_one_fence_newest_first() -> None:
    recent: OrderedDict[tuple[str, str], str] = OrderedDict()
    recent[("default/productpage", "evil.example")] = "rejected_not_admitted"
    recent[("default/other", "x.example")] = "rejected_not_admitted"
    recent[("default/productpage", "global-sidecar.mesh-operator.svc.cluster.local")] = (
        "rejected_global_sidecar_host"
    )
    assert rejections_for(ObjectKey("default", "productpage"), recent) == [
        Rejection("global-sidecar.mesh-operator.svc.cluster.local", "rejected_global_sidecar_host"),
        Rejection("evil.example", "rejected_not_admitted"),
    ]


def test_json_form() -> None:
    cluster: ClusterState = mesh().build()
    learned = {FQDN.format("details", "default"): LearnedHost(NOW - 1.5, NOW, 3)}
    out = explain_fence(
        fence_from_object(fence_obj()),
        learned,
        cluster,
        FenceOptions(),
        NOW,
        [Rejection("evil.example", "rejected_not_admitted")],
    )
    data = out.to_dict()
    assert data["fence"] == "default/productpage"
    assert data["rejected"] == [{"host": "evil.example", "reason": "rejected_not_admitted"}]
    assert data["hosts"][0] == {
        "host": FQDN.format("details", "default"),
        "status": "ACTIVE",
        "inSidecar": True,
        "why": [{"reason": "learned", "detail": "observed in access logs or metrics"}],
        "firstSeen": "2027-01-15T07:59:58.500Z",
        "lastSeen": "2027-01-15T08:00:00.000Z",
        "count": 3,
    }
    # namespace entries come last, as in the Sidecar
    assert [h["host"] for h in data["hosts"]][-2:] == ["istio-system/*", "mesh-operator/*"]
