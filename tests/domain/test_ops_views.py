"""The pure parts of the operations commands: message decoding for tail, the graph renderings, the replay
preview and the restore message that carries learned state across a scale."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import orjson

from lazystream.domain import learned
from lazystream.domain.graph import (
    Edge,
    EdgeKind,
    Graph,
    edges_from_fences,
    graph_from_fences,
    to_dot,
    to_mermaid,
    to_svg,
)
from lazystream.domain.learned import LearnedHost
from lazystream.domain.messages import TopicKind, decode, one_line
from lazystream.domain.render import RenderOptions, render
from lazystream.domain.replay import preview
from tests.domain.test_fences import NOW, TUTORIAL_LINES, tutorial_cluster


def test_access_records_decode_to_their_fields() -> None:
    line = TUTORIAL_LINES[0].encode()
    decoded = decode(TopicKind.ACCESS, None, line)
    assert decoded["format"] == "istio-text"
    assert decoded["authority"]
    text = one_line(TopicKind.ACCESS, decoded)
    assert text.startswith("-  [istio-text]")
    assert f"authority={decoded['authority']}" in text
    bad = decode(TopicKind.ACCESS, b"k", b'{"half": ')
    assert one_line(TopicKind.ACCESS, bad).startswith("k  UNREADABLE (invalid_json")


def test_edges_dead_letters_and_changelog_decode() -> None:
    key = b"shop/productpage"
    edge = decode(
        TopicKind.EDGES, key, orjson.dumps(learned.observe("a.shop.svc.cluster.local", "service", 0.0))
    )
    assert one_line(TopicKind.EDGES, edge) == (
        "shop/productpage  observe a.shop.svc.cluster.local (service) at 1970-01-01T00:00:00.000Z"
    )
    state = {"a": LearnedHost(1.0, 2.0, 3), "b": LearnedHost(1.0, 1.0, 1)}
    restore = decode(TopicKind.EDGES, key, orjson.dumps(learned.restore(state, 5.0)))
    assert one_line(TopicKind.EDGES, restore).startswith("shop/productpage  restore a,b at")
    assert one_line(TopicKind.EDGES, decode(TopicKind.EDGES, key, b"[1]")) == (
        "shop/productpage  UNREADABLE (not an object): [1]"
    )
    dead = decode(TopicKind.DEAD_LETTER, None, b"x" * 500, [("lazystream-reason", b"too_large")])
    assert dead["value"] == "x" * 500  # -o json keeps it whole
    assert one_line(TopicKind.DEAD_LETTER, dead).endswith("x" * 200 + "…")
    changelog = decode(TopicKind.CHANGELOG, key, learned.encode_state(state))
    assert changelog["hosts"]["a"] == {"first": 1.0, "last": 2.0, "count": 3}
    assert one_line(TopicKind.CHANGELOG, changelog) == "shop/productpage  2 hosts: a (x3), b (x1)"
    assert (
        one_line(TopicKind.CHANGELOG, decode(TopicKind.CHANGELOG, key, None)) == "shop/productpage  (deleted)"
    )


def test_restore_merges_and_is_idempotent() -> None:
    carried = {"a": LearnedHost(5.0, 50.0, 4), "b": LearnedHost(7.0, 7.0, 1)}
    message = orjson.loads(orjson.dumps(learned.restore(carried, 100.0)))
    assert learned.apply({}, message, 10.0) == carried
    assert learned.apply(carried, message, 10.0) is None  # replaying it changes nothing
    seeded = {"a": LearnedHost(90.0, 90.0, 0)}  # a seed that arrived first
    assert learned.apply(seeded, message, 10.0) == {"a": LearnedHost(5.0, 90.0, 4), "b": carried["b"]}


FENCES = [
    {
        "kind": "ServiceFence",
        "metadata": {"namespace": "shop", "name": "productpage"},
        "spec": {"host": {"static.shop.svc.cluster.local": {}, "details.shop.svc.cluster.local": {}}},
        "status": {
            "metricStatus": {
                '{destination_service="details.shop.svc.cluster.local"}': "1",
                '{destination_service="reviews.shop.svc.cluster.local"}': "1",
            }
        },
    },
    {
        "kind": "ServiceFence",
        "metadata": {"namespace": "billing", "name": "invoices"},
        "status": {"metricStatus": {'{destination_service="tax.billing.svc.cluster.local"}': "1"}},
    },
]


def test_graph_edges_from_fences() -> None:
    assert edges_from_fences(FENCES, "shop") == [
        Edge("shop/productpage", "details.shop.svc.cluster.local", EdgeKind.LEARNED),
        Edge("shop/productpage", "reviews.shop.svc.cluster.local", EdgeKind.LEARNED),
        Edge("shop/productpage", "static.shop.svc.cluster.local", EdgeKind.DECLARED),
    ]
    assert len(edges_from_fences(FENCES)) == 4


def test_graph_renderings() -> None:
    graph = graph_from_fences(FENCES)
    assert [n.id for n in graph.nodes] == [
        "billing/invoices",
        "billing/tax",
        "shop/details",
        "shop/productpage",
        "shop/reviews",
        "shop/static",
    ]
    dot = to_dot(graph)
    assert dot.startswith("digraph lazystream {")
    assert '"shop/productpage" -> "shop/static" [style=dashed];' in dot
    assert '"billing/invoices" -> "billing/tax";' in dot
    assert '  subgraph "cluster_billing" {' in dot
    mermaid = to_mermaid(graph).splitlines()
    assert mermaid[0] == "flowchart LR"
    assert sum("-.->" in line for line in mermaid) == 1
    assert sum("-->" in line for line in mermaid) == 3
    svg = ET.fromstring(to_svg(graph))  # noqa: S314 - our own output; well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    edges = [p for p in svg.iter(f"{ns}path") if "edge" in (p.get("class") or "")]
    assert len(edges) == 4 + 2  # and the legend's two samples
    texts = {t.text for t in svg.iter(f"{ns}text")}
    assert {"productpage", "invoices", "tax", "shop", "billing", "fenced service"} <= texts
    assert sum(1 for p in edges if p.get("stroke-dasharray")) == 1 + 1
    assert ET.fromstring(to_svg(Graph((), ()))).tag == f"{ns}svg"  # noqa: S314 - our own output


def test_replay_preview_reports_new_hosts_then_nothing() -> None:
    objects = tutorial_cluster().objects()
    records = [line.encode() for line in TUTORIAL_LINES]
    changes = preview(objects, records, RenderOptions(), NOW)
    assert [(c.namespace, c.name, c.status_changes) for c in changes] == [("default", "productpage", True)]
    assert changes[0].new_hosts == ("details.default.svc.cluster.local", "reviews.default.svc.cluster.local")
    # the fences as the worker wrote them after those records: replaying them again changes nothing
    rendered = render(objects, records, RenderOptions(), NOW).items
    after = [o for o in objects if o["kind"] != "ServiceFence"] + [
        o for o in rendered if o["kind"] == "ServiceFence"
    ]
    assert preview(after, records, RenderOptions(), NOW) == []
    assert preview(objects, records, RenderOptions(), NOW, in_scope=lambda key: False) == []
