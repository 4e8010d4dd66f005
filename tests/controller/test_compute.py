"""FenceComputer: a fence's status and Sidecar from its learned hosts and the cluster, EXPIREWAIT, and the
deadlines and clock-dependent fences it remembers between runs."""

from __future__ import annotations

from lazystream.controller.compute import FenceComputer
from lazystream.domain.fences import FenceOptions
from lazystream.testing import bookinfo

MESH = bookinfo().build()


def test_fence_computer_plans_status_sidecar_and_expirewait() -> None:
    fence = {
        "metadata": {"name": "productpage", "namespace": "default", "uid": "u"},
        "spec": {"enable": True, "workloadSelector": {"fromService": True}},
    }
    clock = iter([100.0, 101.0, 200.0]).__next__
    computer = FenceComputer(FenceOptions(refresh_period=10.0), clock=clock)
    plan = computer.plan(fence, {"details.default.svc.cluster.local"}, MESH, None)
    assert list(plan.status["domains"]) == ["details.default.svc.cluster.local"]
    assert plan.sidecar is not None
    assert "details.default.svc.cluster.local" in plan.hosts
    # the host is gone from learned state: EXPIREWAIT first, gone a full period later
    written = {**fence, "status": plan.status}
    wait = computer.plan(written, set(), MESH, None)
    assert wait.status["domains"]["details.default.svc.cluster.local"]["status"] == "EXPIREWAIT"
    gone = computer.plan({**fence, "status": wait.status}, set(), MESH, None)
    assert "domains" not in gone.status


def test_disabled_fence_keeps_its_status_and_has_no_sidecar() -> None:
    fence = {
        "metadata": {"name": "productpage", "namespace": "default"},
        "spec": {"enable": False},
        "status": {"metricStatus": {'{destination_service="details.default.svc.cluster.local"}': "1"}},
    }
    plan = FenceComputer(FenceOptions()).plan(fence, {"ratings.default.svc.cluster.local"}, MESH, None)
    assert plan.sidecar is None
    assert list(plan.status["metricStatus"]) == ['{destination_service="details.default.svc.cluster.local"}']


def test_fence_computer_reports_the_next_deadline_ahead() -> None:
    fence = {
        "metadata": {"name": "productpage", "namespace": "default"},
        "spec": {
            "enable": True,
            "workloadSelector": {"fromService": True},
            "host": {
                "past.default.svc.cluster.local": {"deadline": {"expire": {"seconds": 50}}},
                "soon.default.svc.cluster.local": {"deadline": {"expire": {"seconds": 130}}},
                "later.default.svc.cluster.local": {"deadline": {"expire": {"seconds": 500}}},
                "kept.default.svc.cluster.local": {"stable": {}, "deadline": {"expire": {"seconds": 120}}},
            },
        },
    }
    now = [100.0]
    computer = FenceComputer(FenceOptions(refresh_period=10.0), clock=lambda: now[0])
    plan = computer.plan(fence, set(), MESH, None)
    key = next(iter(computer.next_deadline))
    assert computer.next_deadline[key] == 130.0  # the stable host's deadline does not count
    assert "soon.default.svc.cluster.local" in plan.hosts
    now[0] = 131.0
    after = computer.plan({**fence, "status": plan.status}, set(), MESH, None)
    assert after.status["domains"]["soon.default.svc.cluster.local"]["status"] == "EXPIRE"
    assert computer.next_deadline[key] == 500.0
    now[0] = 501.0
    computer.plan(fence, set(), MESH, None)
    assert key not in computer.next_deadline
    assert key in computer.timed  # deadlines keep it on the refresh tick too
