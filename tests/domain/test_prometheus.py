"""Prometheus query templating, answer parsing and admission."""

from __future__ import annotations

import pytest

from lazystream.domain.cluster import ClusterState, ObjectKey
from lazystream.domain.prometheus import PrometheusError, admit, hosts_in_response, render_query
from lazystream.testing import ClusterBuilder

FENCE = ObjectKey("shop", "productpage")


def vector(*labels: dict[str, str]) -> dict:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [1.0, "7"]} for m in labels]},
    }


def test_slimes_templating() -> None:
    query = 'sum(istio_requests_total{source_app="$source_app",ns="$namespace"})by(destination_service)'
    assert render_query(query, FENCE) == (
        'sum(istio_requests_total{source_app="productpage",ns="shop"})by(destination_service)'
    )


def test_hosts_are_the_single_host_label_of_vector_samples() -> None:
    body = vector(
        {"destination_service": "details.shop.svc.cluster.local"},
        {"request_host": "reviews.shop.svc.cluster.local"},
        {"destination_service": "x.shop.svc.cluster.local", "code": "200"},  # several labels: Slime skips it
        {"other": "y"},
    )
    assert hosts_in_response(body) == {"details.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}


def test_non_vector_results_name_no_host() -> None:
    assert (
        hosts_in_response({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}})
        == set()
    )


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "errorType": "bad_data", "error": "parse error"},
        {**vector(), "warnings": ["partial response"]},
        {"status": "success"},
        [],
        None,
    ],
)
def test_failures_raise(body: object) -> None:
    with pytest.raises(PrometheusError):
        hosts_in_response(body)


def test_admission_as_for_access_log_hosts() -> None:
    builder = ClusterBuilder().service("details", "shop").service("global-sidecar", "mesh-operator")
    cluster = ClusterState.from_objects(builder.objects(), "cluster.local")
    excluded = frozenset({"global-sidecar.mesh-operator.svc.cluster.local"})
    hosts = [
        "details.shop.svc.cluster.local",
        "DETAILS.shop.svc.cluster.local.",
        "details",  # completed in the fence's namespace
        "evil.example.net",
        "10.0.0.1",
        "unknown",
        "global-sidecar.mesh-operator.svc.cluster.local",
    ]
    assert admit(hosts, FENCE, cluster, excluded) == {"details.shop.svc.cluster.local"}
