"""Fence computation and Sidecar rendering. Golden cases are transcribed by hand from Slime's lazyload
tutorial (lazyload_tutorials_zh.md); the rest checks each rule of docs/design.md's "Fences"."""

from __future__ import annotations

import re

import pytest

from lazystream.domain.cluster import ClusterState
from lazystream.domain.fences import (
    AliasRule,
    Domain,
    DomainStatus,
    FenceOptions,
    Origin,
    aliases,
    compute_domains,
    expire_transitions,
    fence_from_object,
    learned_from_metric_status,
    render_status,
)
from lazystream.domain.records import AccessRecord, parse_record
from lazystream.domain.resolution import ResolveOptions, resolve
from lazystream.domain.sidecars import egress_hosts, render_sidecar
from lazystream.testing import ClusterBuilder

NOW = 1_800_000_000.0
OPTIONS = FenceOptions()


def fence(name: str = "productpage", namespace: str = "default", **spec) -> dict:
    return {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1"},
        "spec": {"enable": True, "workloadSelector": {"fromService": True}, **spec},
    }


def tutorial_cluster() -> ClusterBuilder:
    """Bookinfo as in the tutorial: default namespace, no VirtualServices, productpage fenced."""
    b = ClusterBuilder()
    for i, name in enumerate(["productpage", "details", "reviews", "ratings"]):
        ip = f"172.17.0.{11 + i}"
        b.service(name, ips=[ip]).pod(f"{name}-v1-0", labels={"app": name, "version": "v1"}, ip=ip)
    b.global_sidecar()
    return b.add(fence())


# The tutorial's first visit (lazyload_tutorials_zh.md "首次访问观察"): productpage calls details and reviews
# through the global-sidecar; the global-sidecar's inbound lines name productpage's IP as the peer.
TUTORIAL_LINES = [
    '[2021-12-23T06:24:55.527Z] "GET /details/0 HTTP/1.1" 200 - via_upstream - "-" 0 178 12 12 "-" '
    '"curl/7.52.1" "1b0b5f1e-8a5c-9f4e-b6a4-1f2d3c4b5a69" "details:9080" "172.17.0.12:9080" inbound|80|| '
    "127.0.0.6:33011 172.17.0.9:80 172.17.0.11:40210 - default",
    '[2021-12-23T06:24:55.559Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 295 30 30 "-" '
    '"curl/7.52.1" "2c1c6a2f-9b6d-0a5f-c7b5-2a3e4d5c6b70" "reviews:9080" "172.17.0.13:9080" inbound|80|| '
    "127.0.0.6:33013 172.17.0.9:80 172.17.0.11:40212 - default",
]


def learn(lines: list[str], cluster: ClusterState) -> list[str]:
    hosts = []
    for line in lines:
        record = parse_record(line.encode())
        assert isinstance(record, AccessRecord)
        hosts += [e.host for e in resolve(record, cluster, ResolveOptions()).edges]
    return hosts


def test_tutorial_first_visit_status_and_sidecar() -> None:
    cluster = tutorial_cluster().build()
    learned = learn(TUTORIAL_LINES, cluster)
    svf = fence_from_object(fence())
    domains = compute_domains(svf, learned, cluster, OPTIONS, NOW)
    assert render_status(domains, learned) == {
        "domains": {
            "details.default.svc.cluster.local": {"hosts": ["details.default.svc.cluster.local"]},
            "reviews.default.svc.cluster.local": {"hosts": ["reviews.default.svc.cluster.local"]},
        },
        "metricStatus": {
            '{destination_service="details.default.svc.cluster.local"}': "1",
            '{destination_service="reviews.default.svc.cluster.local"}': "1",
        },
    }
    assert render_sidecar(svf, domains, cluster, OPTIONS) == {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "Sidecar",
        "metadata": {
            "name": "productpage",
            "namespace": "default",
            "ownerReferences": [
                {
                    "apiVersion": "microservice.slime.io/v1alpha1",
                    "kind": "ServiceFence",
                    "name": "productpage",
                    "uid": "uid-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "egress": [
                {
                    "hosts": [
                        "*/details.default.svc.cluster.local",
                        "*/reviews.default.svc.cluster.local",
                        "istio-system/*",
                        "mesh-operator/*",
                    ]
                }
            ],
            "workloadSelector": {"labels": {"app": "productpage"}},
        },
    }


def test_a_new_fence_renders_only_the_default_namespaces() -> None:
    # Slime's testdata autofence.base.expect.sidecar.yaml
    cluster = tutorial_cluster().build()
    svf = fence_from_object(fence())
    sidecar = render_sidecar(svf, compute_domains(svf, [], cluster, OPTIONS, NOW), cluster, OPTIONS)
    assert sidecar is not None
    assert sidecar["spec"]["egress"] == [{"hosts": ["istio-system/*", "mesh-operator/*"]}]


def test_static_hosts_namespace_wildcards_and_strategies() -> None:
    # tutorial "静态服务依赖": spec.host with a service host, an external host and "<ns>/*"
    spec = {
        "host": {
            "reviews.default.svc.cluster.local": {"stable": {}},
            "www.netease.com": {},
            "test/*": {},
            "old.default.svc.cluster.local": {"deadline": {"expire": {"seconds": int(NOW - 1)}}},
            "soon.default.svc.cluster.local": {"deadline": {"expire": {"seconds": str(int(NOW + 60))}}},
            "auto.default.svc.cluster.local": {"auto": {"duration": {"seconds": 30}}},
        },
        "RecentlyCalled": None,
    }
    cluster = tutorial_cluster().build()
    svf = fence_from_object(fence(**spec))
    domains = compute_domains(svf, [], cluster, OPTIONS, NOW)
    assert {k: (d.hosts, d.status, d.origin) for k, d in domains.items()} == {
        "reviews.default.svc.cluster.local": (
            ("reviews.default.svc.cluster.local",),
            DomainStatus.ACTIVE,
            Origin.STATIC,
        ),
        "www.netease.com": (("www.netease.com",), DomainStatus.ACTIVE, Origin.STATIC),
        "test/*": ((), DomainStatus.ACTIVE, Origin.NAMESPACE),
        "old.default.svc.cluster.local": (
            ("old.default.svc.cluster.local",),
            DomainStatus.EXPIRE,
            Origin.STATIC,
        ),
        "soon.default.svc.cluster.local": (
            ("soon.default.svc.cluster.local",),
            DomainStatus.ACTIVE,
            Origin.STATIC,
        ),
        "auto.default.svc.cluster.local": (
            ("auto.default.svc.cluster.local",),
            DomainStatus.ACTIVE,
            Origin.STATIC,
        ),
    }
    # the deadline takes effect when it passes, given the clock
    later = compute_domains(svf, [], cluster, OPTIONS, NOW + 61)
    assert later["soon.default.svc.cluster.local"].status is DomainStatus.EXPIRE
    hosts = egress_hosts(svf, domains, OPTIONS)
    assert hosts == [
        "*/auto.default.svc.cluster.local",
        "*/reviews.default.svc.cluster.local",
        "*/soon.default.svc.cluster.local",
        "*/www.netease.com",
        "istio-system/*",
        "mesh-operator/*",
        "test/*",
    ]
    assert render_status(domains, [])["domains"]["old.default.svc.cluster.local"] == {
        "hosts": ["old.default.svc.cluster.local"],
        "status": "EXPIRE",
    }


def test_auto_strategy_expires_after_duration_since_recently_called() -> None:
    spec = {
        "host": {
            "a.default.svc.cluster.local": {
                "auto": {"duration": {"seconds": 30}},
                "RecentlyCalled": {"seconds": int(NOW - 31)},
            }
        }
    }
    svf = fence_from_object(fence(**spec))
    domains = compute_domains(svf, [], ClusterState(), OPTIONS, NOW)
    assert domains["a.default.svc.cluster.local"].status is DomainStatus.EXPIRE


def test_stable_wins_over_deadline() -> None:
    spec = {"host": {"a.b": {"stable": {}, "deadline": {"expire": {"seconds": 1}}}}}
    domains = compute_domains(fence_from_object(fence(**spec)), [], ClusterState(), OPTIONS, NOW)
    assert domains["a.b"].status is DomainStatus.ACTIVE


def test_namespace_selector_adds_namespace_wildcards() -> None:
    # spec.namespaceSelector works (Slime ignores it)
    svf = fence_from_object(fence(namespaceSelector=["shop", "payments"]))
    domains = compute_domains(svf, [], tutorial_cluster().build(), OPTIONS, NOW)
    assert sorted(domains) == ["payments/*", "shop/*"]
    assert all(d.origin is Origin.NAMESPACE for d in domains.values())


def test_label_selector_or_of_ands_including_the_fences_own_service() -> None:
    cluster = (
        tutorial_cluster()
        .service("web", "shop", labels={"tier": "front", "team": "a"})
        .service("api", "shop", labels={"tier": "back", "team": "a"})
        .service("db", "shop", labels={"tier": "back", "team": "b"})
        .service("productpage-extra", labels={"app": "productpage"})
        .build()
    )
    spec = {
        "labelSelector": [
            {"selector": {"team": "a", "tier": "back"}},
            {"selector": {"app": "productpage"}},
            {"selector": {}},
        ]
    }
    domains = compute_domains(fence_from_object(fence(**spec)), [], cluster, OPTIONS, NOW)
    assert sorted(domains) == [
        "api.shop.svc.cluster.local",
        "productpage-extra.default.svc.cluster.local",
        "productpage.default.svc.cluster.local",
    ]
    assert {d.origin for d in domains.values()} == {Origin.LABEL_SELECTOR}


def test_earlier_writers_win_and_an_expired_static_host_hides_the_learned_one() -> None:
    spec = {"host": {"details.default.svc.cluster.local": {"deadline": {"expire": {"seconds": 1}}}}}
    domains = compute_domains(
        fence_from_object(fence(**spec)),
        ["details.default.svc.cluster.local"],
        tutorial_cluster().build(),
        OPTIONS,
        NOW,
    )
    assert domains["details.default.svc.cluster.local"].status is DomainStatus.EXPIRE
    assert domains["details.default.svc.cluster.local"].origin is Origin.STATIC


def test_virtual_service_expansion_merges_and_follows_deletion() -> None:
    # Slime's README example: c routes to d, so d joins c's domain
    builder = (
        tutorial_cluster()
        .virtual_service("c-1", hosts=["reviews"], destinations=["reviews", "reviews-v2"])
        .virtual_service("c-2", "other", hosts=["reviews.default.svc.cluster.local"], destinations=["canary"])
    )
    cluster = builder.build()
    learned = ["reviews.default.svc.cluster.local"]
    domains = compute_domains(fence_from_object(fence()), learned, cluster, OPTIONS, NOW)
    assert domains["reviews.default.svc.cluster.local"].hosts == (
        "reviews.default.svc.cluster.local",
        "canary.other.svc.cluster.local",
        "reviews-v2.default.svc.cluster.local",
    )
    cluster.delete("VirtualService", "other", "c-2")
    domains = compute_domains(fence_from_object(fence()), learned, cluster, OPTIONS, NOW)
    assert domains["reviews.default.svc.cluster.local"].hosts == (
        "reviews.default.svc.cluster.local",
        "reviews-v2.default.svc.cluster.local",
    )


def test_namespace_wildcard_lists_virtual_service_destinations_outside_the_namespace() -> None:
    cluster = (
        tutorial_cluster()
        .service("front", "shop")
        .virtual_service(
            "front", "shop", hosts=["front"], destinations=["front-v2", "edge.gateway.svc.cluster.local"]
        )
        .build()
    )
    domains = compute_domains(fence_from_object(fence(host={"shop/*": {}})), [], cluster, OPTIONS, NOW)
    assert domains["shop/*"].hosts == ("edge.gateway.svc.cluster.local",)


TUTORIAL_ALIAS = AliasRule(
    re.compile(r"(?P<service>[^\.]+)\.(?P<namespace>[^\.]+)\.svc\.cluster\.local$"),
    ("$namespace.$service.mailsaas",),
)


def test_domain_alias_tutorial_example() -> None:
    # tutorial "自定义服务依赖别名": details.default.svc.cluster.local also yields default.details.mailsaas
    options = FenceOptions(domain_aliases=(TUTORIAL_ALIAS,))
    assert aliases("details.default.svc.cluster.local", options.domain_aliases) == [
        "details.default.svc.cluster.local",
        "default.details.mailsaas",
    ]
    cluster = tutorial_cluster().build()
    svf = fence_from_object(fence())
    domains = compute_domains(svf, ["details.default.svc.cluster.local"], cluster, options, NOW)
    assert domains["default.details.mailsaas"] == Domain(
        ("default.details.mailsaas",),
        DomainStatus.ACTIVE,
        Origin.LEARNED,
        "details.default.svc.cluster.local",
    )
    assert "*/default.details.mailsaas" in egress_hosts(svf, domains, options)


def test_aliases_apply_only_on_exactly_one_match() -> None:
    rule = AliasRule(re.compile(r"a"), ("x",))
    assert aliases("banana", (rule,)) == ["banana"]
    assert aliases("bxb", (AliasRule(re.compile(r"x"), ("${0}y", "")),)) == ["bxb", "xy"]


def test_expirewait_lasts_one_full_refresh_period() -> None:
    old = {
        "gone.default.svc.cluster.local": Domain(("gone.default.svc.cluster.local",), DomainStatus.ACTIVE),
        "kept.default.svc.cluster.local": Domain(("kept.default.svc.cluster.local",)),
        "expired.x": Domain(("expired.x",), DomainStatus.EXPIRE),
    }
    new = {"kept.default.svc.cluster.local": Domain(("kept.default.svc.cluster.local",))}
    domains, since = expire_transitions(new, old, {}, NOW, 10.0)
    assert domains["gone.default.svc.cluster.local"].status is DomainStatus.EXPIREWAIT
    assert "expired.x" not in domains
    assert since == {"gone.default.svc.cluster.local": NOW}
    # still there 9.9 s later, gone at the first tick a full period later
    domains2, since2 = expire_transitions(new, domains, since, NOW + 9.9, 10.0)
    assert domains2["gone.default.svc.cluster.local"].status is DomainStatus.EXPIREWAIT
    domains3, _ = expire_transitions(new, domains2, since2, NOW + 10.0, 10.0)
    assert "gone.default.svc.cluster.local" not in domains3
    # the Sidecar keeps EXPIREWAIT hosts and drops EXPIRE ones
    svf = fence_from_object(fence())
    assert "*/gone.default.svc.cluster.local" in egress_hosts(svf, domains, OPTIONS)
    assert "*/expired.x" not in egress_hosts(svf, old, OPTIONS)


@pytest.mark.parametrize(
    ("options", "extra"),
    [
        (FenceOptions(), []),
        (FenceOptions(cluster_gs_namespace="gs-system"), ["*/global-sidecar.gs-system.svc.cluster.local"]),
        (FenceOptions(global_sidecar_mode="namespace"), ["*/global-sidecar.default.svc.cluster.local"]),
        (FenceOptions(istio_namespace="mesh", slime_namespace="mesh"), None),
    ],
)
def test_global_sidecar_and_default_namespaces(options: FenceOptions, extra: list[str] | None) -> None:
    hosts = egress_hosts(fence_from_object(fence()), {}, options)
    if extra is None:
        assert hosts == ["*/global-sidecar.mesh-operator.svc.cluster.local", "mesh/*"]
    else:
        assert hosts == sorted([*extra, "istio-system/*", "mesh-operator/*"])


def test_stable_hosts_are_in_every_sidecar() -> None:
    options = FenceOptions(stable_hosts=("ratings.default.svc.cluster.local", "infra/*"))
    hosts = egress_hosts(fence_from_object(fence()), {}, options)
    assert hosts == ["*/ratings.default.svc.cluster.local", "infra/*", "istio-system/*", "mesh-operator/*"]


def test_workload_selector_priority_and_missing_service() -> None:
    cluster = tutorial_cluster().service("selectorless", selector={}).build()
    labelled = fence_from_object(
        fence(workloadSelector={"labels": {"app": "x", "v": "1"}, "fromService": True})
    )
    assert render_sidecar(labelled, {}, cluster, OPTIONS)["spec"]["workloadSelector"] == {
        "labels": {"app": "x", "v": "1"}
    }
    from_service = fence_from_object(fence("details"))
    assert render_sidecar(from_service, {}, cluster, OPTIONS)["spec"]["workloadSelector"] == {
        "labels": {"app": "details"}
    }
    assert render_sidecar(fence_from_object(fence("missing")), {}, cluster, OPTIONS) is None
    assert render_sidecar(fence_from_object(fence("selectorless")), {}, cluster, OPTIONS) is None
    legacy = fence_from_object(fence("legacy", workloadSelector=None))
    assert render_sidecar(legacy, {}, cluster, FenceOptions(service_label="name"))["spec"][
        "workloadSelector"
    ] == {"labels": {"name": "legacy"}}


def test_disabled_fence_has_no_sidecar_and_revision_label_is_inherited() -> None:
    cluster = tutorial_cluster().build()
    disabled = fence()
    disabled["spec"]["enable"] = False
    assert render_sidecar(fence_from_object(disabled), {}, cluster, OPTIONS) is None
    revisioned = fence()
    revisioned["metadata"]["labels"] = {"istio.io/rev": "canary", "team": "a"}
    sidecar = render_sidecar(fence_from_object(revisioned), {}, cluster, OPTIONS)
    assert sidecar["metadata"]["labels"] == {"istio.io/rev": "canary"}


def test_metric_status_is_read_as_slime_reads_it() -> None:
    assert learned_from_metric_status(
        {
            '{destination_service="details.default.svc.cluster.local"}': "1",
            '{request_host="api.example.com:443"}': "3",
            '{destination_service="a",source_app="b"}': "1",
            '{other="x"}': "1",
        }
    ) == ["details.default.svc.cluster.local", "api.example.com"]


def test_fence_objects_read_status_and_reject_bad_fields() -> None:
    obj = fence()
    obj["status"] = {
        "domains": {"a.b": {"hosts": ["a.b"], "status": "EXPIREWAIT"}, "c.d": {"hosts": ["c.d"]}},
        "metricStatus": {'{destination_service="c.d"}': "1"},
    }
    svf = fence_from_object(obj)
    assert svf.domains == {"a.b": Domain(("a.b",), DomainStatus.EXPIREWAIT), "c.d": Domain(("c.d",))}
    assert svf.learned == ("c.d",)
    from lazystream.domain.cluster import ClusterObjectError

    bad = fence(host={"a": {"deadline": {"expire": {"seconds": "soon"}}}})
    with pytest.raises(ClusterObjectError, match=r"deadline\.expire\.seconds"):
        fence_from_object(bad)
