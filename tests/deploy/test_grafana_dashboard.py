"""deploy/grafana/lazystream.json: a well-formed Grafana dashboard whose every expression names metrics the
worker exposes (the real Prometheus evaluates them in tests/integration/test_worker_metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from lazystream.metrics import exposed_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lazystream.json"
METRIC_NAME = re.compile(r"\b(?:lazystream|process)_[a-z0-9_]+\b")
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["title"]
    assert dash["uid"]
    assert isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    occupied: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid)
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
    for panel in panels():
        assert panel["title"]
        assert panel["datasource"]["type"] == "prometheus"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids, panel["title"]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_variable_used_is_defined() -> None:
    dash = dashboard()
    defined = {v["name"] for v in dash["templating"]["list"]}
    used = set(VARIABLE.findall(json.dumps(dash["panels"])))
    for variable in dash["templating"]["list"]:
        used |= set(VARIABLE.findall(json.dumps(variable.get("query", ""))))
    assert used - GRAFANA_VARIABLES <= defined


@pytest.mark.parametrize("expr", expressions())
def test_every_expression_names_an_exposed_metric(expr: str) -> None:
    names = set(METRIC_NAME.findall(expr))
    assert names, f"no metric in {expr}"
    assert names <= exposed_names(), f"unknown metrics {names - exposed_names()} in {expr}"
    assert expr.count("(") == expr.count(")")
    assert expr.count("{") == expr.count("}")


def test_the_dashboard_covers_the_issue() -> None:
    """The issue's list: records by outcome and reason, edges learned, fences, API writes and errors, lag,
    produce-to-Sidecar latency, fallback hit rate per source; and the host limit (issue 11)."""
    used = {name for expr in expressions() for name in METRIC_NAME.findall(expr)}
    for name in (
        "lazystream_access_records_total",
        "lazystream_records_ignored_total",
        "lazystream_records_rejected_total",
        "lazystream_records_dead_lettered_total",
        "lazystream_hosts_learned_total",
        "lazystream_fences_owned",
        "lazystream_api_writes_total",
        "lazystream_api_errors_total",
        "lazystream_consumer_lag",
        "lazystream_produce_to_sidecar_seconds_bucket",
        "lazystream_fallback_records_total",
        "lazystream_fence_hosts_limit_total",
    ):
        assert name in used, name
