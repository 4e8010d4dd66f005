"""What a record is, who calls and what is called, one rule per case, expectations written by hand against
the bookinfo mesh of
``lazystream.testing.bookinfo`` (productpage 10.244.0.15, details .12, reviews .13, ratings .14, reviews-v2
.23 without a fence, the global-sidecar in mesh-operator at 10.244.9.9)."""

from __future__ import annotations

import orjson
import pytest

from lazystream.domain.autofence import AutoFenceOptions
from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.records import AccessRecord, parse_record
from lazystream.domain.resolution import (
    ObservationKind,
    Outcome,
    ResolveOptions,
    UpstreamCluster,
    may_hold,
    parse_cluster,
    resolve,
)
from lazystream.testing import bookinfo, envoy_json, fluent_bit_cri, global_sidecar_record, istio_text_line

GS = "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local"
FALLBACK, DIRECT = ObservationKind.FALLBACK, ObservationKind.DIRECT
PRODUCTPAGE_POD = {"namespace": "default", "pod": "productpage-v1-0", "labels": {"app": "productpage"}}
GS_POD = {
    "namespace": "mesh-operator",
    "pod": "global-sidecar-5b7c9d-abcde",
    "labels": {"app": "global-sidecar"},
}
REVIEWS_POD = {"namespace": "default", "pod": "reviews-v1-0", "labels": {"app": "reviews"}}


def text(
    authority: str = "details:9080", cluster: str = "inbound|80||", peer: str = "10.244.0.15:51234"
) -> bytes:
    return istio_text_line(
        authority=authority, upstream_cluster=cluster, downstream_remote_address=peer
    ).encode()


def with_pod(
    pod: dict, authority: str = "details:9080", cluster: str = GS, peer: str = "10.244.0.15:1"
) -> bytes:
    line = istio_text_line(authority=authority, upstream_cluster=cluster, downstream_remote_address=peer)
    return fluent_bit_cri(line, **pod)


def gs_record(**kwargs) -> bytes:
    return orjson.dumps(global_sidecar_record(**kwargs))


@pytest.fixture(scope="module")
def mesh() -> ClusterState:
    return bookinfo().build()


def run(
    message: bytes, cluster: ClusterState, **options
) -> tuple[Outcome, list[tuple[str, str, ObservationKind]]]:
    record = parse_record(message)
    assert isinstance(record, AccessRecord), record
    result = resolve(record, cluster, ResolveOptions(**options))
    return result.outcome, [(str(e.fence), e.host, e.kind) for e in result.edges]


LEARNED = Outcome.LEARNED
DETAILS = "details.default.svc.cluster.local"


@pytest.mark.parametrize(
    ("message", "outcome", "edges"),
    [
        # what a record is
        pytest.param(
            text(), LEARNED, [("default/productpage", DETAILS, FALLBACK)], id="gs-inbound-no-pod-metadata"
        ),
        pytest.param(
            with_pod(GS_POD, cluster="inbound|80||", peer="10.244.0.15:1"),
            LEARNED,
            [("default/productpage", DETAILS, FALLBACK)],
            id="gs-inbound-with-gs-pod-metadata-source-is-the-peer",
        ),
        pytest.param(
            with_pod(REVIEWS_POD, cluster="inbound|9080||", peer="10.244.0.15:1"),
            Outcome.IGNORED_INBOUND,
            [],
            id="inbound-of-an-ordinary-pod",
        ),
        pytest.param(
            with_pod(PRODUCTPAGE_POD, authority="ratings:9080", peer="10.244.0.99:1"),
            LEARNED,
            [("default/productpage", "ratings.default.svc.cluster.local", FALLBACK)],
            id="caller-sidecar-to-gs-source-from-pod-metadata",
        ),
        pytest.param(
            text(authority="ratings:9080", cluster=GS),
            LEARNED,
            [("default/productpage", "ratings.default.svc.cluster.local", FALLBACK)],
            id="caller-sidecar-to-gs-without-metadata-source-from-ip",
        ),
        pytest.param(
            text(authority="reviews:9080", cluster="outbound|9080||reviews.default.svc.cluster.local"),
            LEARNED,
            [("default/productpage", "reviews.default.svc.cluster.local", DIRECT)],
            id="direct-call",
        ),
        pytest.param(
            text(authority="reviews:9080", cluster="outbound_.9080_._.reviews.default.svc.cluster.local;"),
            LEARNED,
            [("default/productpage", "reviews.default.svc.cluster.local", DIRECT)],
            id="direct-call-alt-stat-name-cluster",
        ),
        pytest.param(text(cluster="PassthroughCluster"), Outcome.IGNORED_PASSTHROUGH, [], id="passthrough"),
        pytest.param(text(cluster="BlackHoleCluster"), Outcome.IGNORED_BLACKHOLE, [], id="blackhole"),
        pytest.param(text(cluster="some_cluster"), Outcome.IGNORED_UNKNOWN_CLUSTER, [], id="unknown-cluster"),
        pytest.param(
            text(cluster="sideways|80||x"), Outcome.IGNORED_UNKNOWN_CLUSTER, [], id="unknown-direction"
        ),
        pytest.param(text(authority="10.96.0.20:9080"), Outcome.IGNORED_IP_AUTHORITY, [], id="ip-authority"),
        pytest.param(text(authority="-"), Outcome.IGNORED_EMPTY_AUTHORITY, [], id="empty-authority"),
        # who is calling
        pytest.param(text(peer="10.1.2.3:5"), Outcome.IGNORED_NO_SOURCE, [], id="ip-in-no-endpoints"),
        pytest.param(text(peer="not-an-ip"), Outcome.IGNORED_NO_SOURCE, [], id="peer-not-an-ip"),
        pytest.param(
            text(peer="10.244.0.23:5"),
            Outcome.HELD_NO_FENCE,
            [("default/reviews-v2", DETAILS, FALLBACK)],  # kept for a fence created later
            id="source-service-without-fence",
        ),
        pytest.param(
            gs_record(peer_address="10.244.0.14:40000", authority="reviews"),
            LEARNED,
            [("default/ratings", "reviews.default.svc.cluster.local", FALLBACK)],
            id="lazystream-gs-record-peer-ip",
        ),
        pytest.param(
            gs_record(
                peer_address="127.0.0.6:40000",
                peer_principal="spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
            ),
            LEARNED,
            [("default/ratings", DETAILS, FALLBACK)],
            id="lazystream-gs-record-behind-sidecar-by-principal",
        ),
        pytest.param(
            gs_record(peer_address="127.0.0.6:40000"),
            Outcome.IGNORED_NO_SOURCE,
            [],
            id="loopback-peer-no-principal",
        ),
        # what is called: completion
        pytest.param(
            text(authority="details.default"), LEARNED, [("default/productpage", DETAILS, FALLBACK)], id="a.b"
        ),
        pytest.param(
            text(authority="details.default.svc:9080"),
            LEARNED,
            [("default/productpage", DETAILS, FALLBACK)],
            id="a.b.svc",
        ),
        pytest.param(
            text(authority="DETAILS.default.svc.cluster.local."),
            LEARNED,
            [("default/productpage", DETAILS, FALLBACK)],
            id="fqdn-upper-case-trailing-dot",
        ),
        pytest.param(
            text(authority="details.other"), Outcome.REJECTED_NOT_ADMITTED, [], id="a.b-unknown-service"
        ),
        pytest.param(
            text(authority="details.other.svc"), Outcome.REJECTED_NOT_ADMITTED, [], id="a.b.svc-unknown"
        ),
        # what is called: admission
        pytest.param(
            text(authority="www.example.org"),
            LEARNED,
            [("default/productpage", "www.example.org", FALLBACK)],
            id="service-entry-exact",
        ),
        pytest.param(
            text(authority="api.example.com:443"),
            LEARNED,
            [("default/productpage", "api.example.com", FALLBACK)],
            id="service-entry-wildcard",
        ),
        pytest.param(
            text(authority="api.partner.io"),
            LEARNED,
            [("default/productpage", "api.partner.io", FALLBACK)],
            id="virtual-service-host",
        ),
        pytest.param(
            text(authority="example.com"),
            Outcome.REJECTED_NOT_ADMITTED,
            [],
            id="wildcard-parent-not-admitted",
        ),
        pytest.param(text(authority="evil.com"), Outcome.REJECTED_NOT_ADMITTED, [], id="random-host"),
        pytest.param(
            text(authority="un_der.score"), Outcome.REJECTED_INVALID_HOST, [], id="invalid-dns-name"
        ),
        pytest.param(
            text(authority="global-sidecar.mesh-operator"),
            Outcome.REJECTED_GLOBAL_SIDECAR,
            [],
            id="global-sidecar-itself",
        ),
    ],
)
def test_rules(mesh: ClusterState, message: bytes, outcome: Outcome, edges: list) -> None:
    assert run(message, mesh) == (outcome, edges)


def test_an_ip_in_several_services_charges_every_fenced_one() -> None:
    mesh = (
        bookinfo()
        .service("shared-a", ips=["10.244.5.5"])
        .service("shared-b", ips=["10.244.5.5"])
        .service("shared-c", ips=["10.244.5.5"])
        .fence("shared-a")
        .fence("shared-b")
        .fence("shared-c", enable=False)
        .build()
    )
    assert run(text(peer="10.244.5.5:1"), mesh) == (
        LEARNED,
        [
            ("default/shared-a", DETAILS, FALLBACK),
            ("default/shared-b", DETAILS, FALLBACK),
            ("default/shared-c", DETAILS, FALLBACK),  # disabled: held for when it is enabled
        ],
    )


def test_disabled_fence_holds_its_edges() -> None:
    """A disabled fence learns nothing now, but its edges are kept for when it is enabled again."""
    mesh = bookinfo().fence("productpage", enable=False).build()
    assert run(text(), mesh) == (Outcome.HELD_NO_FENCE, [("default/productpage", DETAILS, FALLBACK)])


def test_fence_status_changes_keep_cached_resolutions_and_spec_changes_do_not() -> None:
    """Every learned host is followed by a status write to its fence: those must not empty the memo the
    resolver caches outcomes in, while enabling, disabling or deleting the fence must take effect."""
    mesh = bookinfo().build()
    fence = {
        "apiVersion": "microservice.slime.io/v1alpha1",
        "kind": "ServiceFence",
        "metadata": {"name": "productpage", "namespace": "default"},
        "spec": {"enable": True},
    }
    assert run(text(), mesh)[0] is LEARNED
    cached = len(mesh.memo)
    assert cached > 0
    mesh.apply({**fence, "status": {"domains": {DETAILS: {"hosts": [DETAILS]}}}})
    assert len(mesh.memo) == cached
    assert run(text(), mesh)[0] is LEARNED

    mesh.apply({**fence, "spec": {"enable": False}})
    assert run(text(), mesh)[0] is Outcome.HELD_NO_FENCE
    mesh.apply(fence)
    assert run(text(), mesh)[0] is LEARNED
    mesh.delete("ServiceFence", "default", "productpage")
    assert run(text(), mesh)[0] is Outcome.HELD_NO_FENCE
    mesh.delete("ServiceFence", "default", "productpage")  # absent: a no-op


def test_short_domain_adds_the_short_form_only_when_the_expansion_is_admitted(mesh: ClusterState) -> None:
    assert run(text(authority="details:9080"), mesh, enable_short_domain=True) == (
        LEARNED,
        [("default/productpage", DETAILS, FALLBACK), ("default/productpage", "details", FALLBACK)],
    )
    assert run(text(authority="www.example.org"), mesh, enable_short_domain=True) == (
        LEARNED,
        [("default/productpage", "www.example.org", FALLBACK)],
    )
    assert run(text(authority="nosuch"), mesh, enable_short_domain=True) == (
        Outcome.REJECTED_NOT_ADMITTED,
        [],
    )


def test_cluster_domain_is_configurable() -> None:
    mesh = bookinfo(cluster_domain="corp.example").build()
    gs = "outbound|9080||global-sidecar.mesh-operator.svc.corp.example"
    assert run(text(authority="details", cluster=gs), mesh, cluster_domain="corp.example") == (
        LEARNED,
        [("default/productpage", "details.default.svc.corp.example", FALLBACK)],
    )


def test_namespace_mode_global_sidecars() -> None:
    mesh = bookinfo().global_sidecar("default", ip="10.244.8.8").build()
    options = {"global_sidecar_namespaces": frozenset({"default"})}
    local_gs = "outbound|80||global-sidecar.default.svc.cluster.local"
    assert run(text(cluster=local_gs), mesh, **options)[0] is LEARNED
    assert run(text(authority="global-sidecar"), mesh, **options) == (Outcome.REJECTED_GLOBAL_SIDECAR, [])
    # the cluster-mode global-sidecar is an ordinary destination in namespace mode
    assert run(text(cluster=GS), mesh, **options) == (LEARNED, [("default/productpage", DETAILS, DIRECT)])


def test_results_carry_details_for_explain(mesh: ClusterState) -> None:
    record = parse_record(text(authority="evil.com"))
    assert isinstance(record, AccessRecord)
    result = resolve(record, mesh, ResolveOptions())
    assert result.host == "evil.com"
    assert result.sources == (ObjectKey("default", "productpage"),)
    assert "ServiceEntry" in result.detail
    learned = resolve(parse_record(text()), mesh, ResolveOptions())  # type: ignore[arg-type]
    assert learned.event_time == 1764237600.5
    assert learned.edges[0].source == ObjectKey("default", "productpage")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "outbound|9080||details.default.svc.cluster.local",
            UpstreamCluster("outbound", "9080", "", DETAILS),
        ),
        (
            "outbound|9080|v1|details.default.svc.cluster.local",
            UpstreamCluster("outbound", "9080", "v1", DETAILS),
        ),
        ("inbound|80||", UpstreamCluster("inbound", "80", "", "")),
        (
            "outbound_.9080_.v1_.details.default.svc.cluster.local",
            UpstreamCluster("outbound", "9080", "v1", DETAILS),
        ),
        ("inbound_.80_._.", UpstreamCluster("inbound", "80", "", "")),
        ("PassthroughCluster", None),
        ("outbound|9080|details", None),
    ],
)
def test_parse_cluster(name: str, expected: UpstreamCluster | None) -> None:
    assert parse_cluster(name) == expected


def test_envoy_json_and_text_resolve_alike(mesh: ClusterState) -> None:
    assert run(envoy_json(upstream_cluster="inbound|80||"), mesh) == run(text(), mesh)


def test_a_due_auto_fence_counts_as_fenced_before_it_exists() -> None:
    """autoFence would create productpage's fence: its records are learned before the leader writes it."""
    cluster = bookinfo().build()
    cluster.delete("ServiceFence", "default", "productpage")
    autofence = AutoFenceOptions(enabled=True, default_fence=True, excluded_namespaces=frozenset())
    assert ObjectKey("default", "productpage") not in cluster.fences
    assert run(text(), cluster, autofence=autofence) == (
        LEARNED,
        [("default/productpage", DETAILS, FALLBACK)],
    )
    assert run(text(), cluster)[0] is Outcome.HELD_NO_FENCE  # autoFence off: held for a later fence


def test_held_state_matters_while_its_fence_or_its_caller_exists() -> None:
    cluster = bookinfo().fence("orphan").build()
    options = ResolveOptions()
    assert may_hold(ObjectKey("default", "orphan"), cluster, options)  # a fence, without a Service
    assert may_hold(ObjectKey("default", "reviews-v2"), cluster, options)  # a Service without a fence
    assert not may_hold(ObjectKey("default", "deleted"), cluster, options)  # neither: dropped


def test_callers_outside_the_namespace_scope_are_not_held() -> None:
    """No fence of this controller's can want them (a white list that leaves their namespace out)."""
    cluster = bookinfo().build()
    cluster.delete("ServiceFence", "default", "productpage")
    assert run(text(), cluster, white_namespaces=frozenset({"shop"}))[0] is Outcome.IGNORED_OUT_OF_SCOPE
    assert run(text(), cluster, black_namespaces=frozenset({"default"}))[0] is Outcome.IGNORED_OUT_OF_SCOPE
    assert run(text(), cluster, white_namespaces=frozenset({"default"}))[0] is Outcome.HELD_NO_FENCE
    fenced = bookinfo().build()  # an existing fence learns whatever the scope says (as before)
    assert run(text(), fenced, white_namespaces=frozenset({"shop"}))[0] is LEARNED
