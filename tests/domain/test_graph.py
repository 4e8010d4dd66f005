"""``lazystream graph``'s model, layout and picture: one node per service, grouped by namespace, a layered
left-to-right layout without needless crossings, and an SVG that renders (checked on the rendered pixels)."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Sequence
from itertools import combinations, pairwise
from typing import Any

from lazystream.domain.graph import (
    Edge,
    EdgeKind,
    Graph,
    NodeKind,
    build_graph,
    graph_from_fences,
    node_layout,
    to_dot,
    to_mermaid,
    to_svg,
)
from lazystream.domain.graph_layout import Layout


def fence(ns: str, name: str, learned: Sequence[str] = (), declared: Sequence[str] = ()) -> dict[str, Any]:
    metric = {f'{{destination_service="{h}"}}': "1" for h in learned}
    return {
        "kind": "ServiceFence",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"host": {key: {} for key in declared}},
        "status": {"metricStatus": metric},
    }


def fqdn(name: str, ns: str) -> str:
    return f"{name}.{ns}.svc.cluster.local"


BOOKINFO = [
    fence("bookinfo", "productpage", [fqdn("details", "bookinfo"), fqdn("reviews", "bookinfo")]),
    fence("bookinfo", "reviews", [fqdn("ratings", "bookinfo")]),
    fence("bookinfo", "details"),
]

# bookinfo; a shop whose checkout chain is four long, with a cycle (cart <-> pricing), a call into
# bookinfo, an external ServiceEntry host, a wildcard and a declared namespace
SCENARIO = [
    *BOOKINFO,
    fence(
        "shop",
        "frontend",
        [fqdn("cart", "shop"), fqdn("reviews", "bookinfo")],
        declared=["search.shop.svc.cluster.local"],
    ),
    fence("shop", "cart", [fqdn("checkout", "shop"), fqdn("pricing", "shop")]),
    fence("shop", "pricing", [fqdn("cart", "shop")]),
    fence("shop", "checkout", ["payments.shop", "api.stripe.com"], declared=["*.tax.example.org"]),
    fence("shop", "payments", [], declared=["ledger/*"]),
]


def test_a_fence_and_its_host_are_one_node_and_a_chain_is_a_path() -> None:
    graph = graph_from_fences(SCENARIO)
    ids = {n.id for n in graph.nodes}
    assert "shop/cart" in ids
    assert not any("cart.shop" in i for i in ids)
    assert graph.node("shop/cart").names == ("cart.shop.svc.cluster.local", "shop/cart")
    succ: dict[str, set[str]] = {}
    for e in graph.edges:
        succ.setdefault(e.source, set()).add(e.target)
    # frontend -> cart -> checkout -> payments -> ledger/*: a path through single nodes ("payments.shop" is
    # the known service shop/payments, not an external name)
    chain = ["shop/frontend", "shop/cart", "shop/checkout", "shop/payments", "ledger/*"]
    for a, b in pairwise(chain):
        assert b in succ[a], (a, b)
    kinds = {n.id: n.kind for n in graph.nodes}
    assert kinds["shop/cart"] is NodeKind.FENCED
    assert kinds["bookinfo/ratings"] is NodeKind.SERVICE
    assert kinds["shop/search"] is NodeKind.SERVICE
    assert kinds["api.stripe.com"] is NodeKind.EXTERNAL
    assert kinds["*.tax.example.org"] is NodeKind.EXTERNAL
    assert kinds["ledger/*"] is NodeKind.NAMESPACE
    assert graph.node("ledger/*").namespace == "ledger"
    assert graph.node("api.stripe.com").namespace is None


def test_host_forms_and_cluster_domain() -> None:
    edges = [
        Edge("a/x", "y", EdgeKind.LEARNED),  # a short name: in the caller's namespace
        Edge("a/x", "z.b.svc.corp.local", EdgeKind.LEARNED),
        Edge("a/x", "z.b", EdgeKind.DECLARED),  # known now: the same node, learned wins
        Edge("a/x", "unknown.io", EdgeKind.DECLARED),  # two labels, no such service: external
        Edge("a/x", "q.b.svc.cluster.local", EdgeKind.LEARNED),  # another cluster domain: external
        Edge("a/x", "*/weird", EdgeKind.DECLARED),
    ]
    graph = build_graph(edges, "corp.local")
    assert [(e.target, e.kind) for e in graph.edges] == [
        ("a/y", EdgeKind.LEARNED),
        ("b/z", EdgeKind.LEARNED),
        ("host:*/weird", EdgeKind.DECLARED),
        ("q.b.svc.cluster.local", EdgeKind.LEARNED),
        ("unknown.io", EdgeKind.DECLARED),
    ]
    assert graph.node("host:*/weird").kind is NodeKind.EXTERNAL


def crossings(lay: Layout, graph: Graph) -> int:
    """Geometric crossings of the routes' segments (polylines through their points): independent of the
    layout's own count."""
    segments = [
        (route.points[k], route.points[k + 1], i)
        for i, route in lay.routes.items()
        for k in range(len(route.points) - 1)
    ]

    def cross(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    count = 0
    for (a, b, i), (c, d, j) in combinations(segments, 2):
        if i == j or {a, b} & {c, d}:
            continue
        e1, e2 = graph.edges[i], graph.edges[j]
        if {e1.source, e1.target} & {e2.source, e2.target}:
            continue  # edges sharing a node meet there, by design
        if cross(a, b, c) * cross(a, b, d) < 0 and cross(c, d, a) * cross(c, d, b) < 0:
            count += 1
    return count


def test_bookinfo_is_drawn_left_to_right_without_crossings() -> None:
    graph = graph_from_fences(BOOKINFO)
    lay = node_layout(graph)
    assert lay.layers == (
        ("bookinfo/productpage",),
        ("bookinfo/details", "bookinfo/reviews"),
        ("bookinfo/ratings",),
    ) or lay.layers == (
        ("bookinfo/productpage",),
        ("bookinfo/reviews", "bookinfo/details"),
        ("bookinfo/ratings",),
    )
    assert lay.crossings == 0
    assert crossings(lay, graph) == 0
    for e in graph.edges:
        assert lay.boxes[e.source].right < lay.boxes[e.target].x  # every call flows right


def test_layout_geometry_of_the_scenario() -> None:
    graph = graph_from_fences(SCENARIO)
    lay = node_layout(graph)
    assert node_layout(graph) == lay  # deterministic
    assert lay.crossings == crossings(lay, graph) == 0
    boxes = list(lay.boxes.values())
    assert not any(a.overlaps(b) for a, b in combinations(boxes, 2))
    clusters = list(lay.groups.values())
    assert set(lay.groups) == {"bookinfo", "shop", "ledger"}
    assert not any(a.overlaps(b) for a, b in combinations(clusters, 2))
    for n in graph.nodes:
        box = lay.boxes[n.id]
        inside = [
            ns
            for ns, c in lay.groups.items()
            if c.x <= box.x and box.right <= c.right and c.y <= box.y and box.bottom <= c.bottom
        ]
        assert inside == ([n.namespace] if n.namespace else []), n.id
    # the cycle cart <-> pricing is drawn both ways, one of them against the flow
    index = {(e.source, e.target): i for i, e in enumerate(graph.edges)}
    there, back = (
        lay.routes[index[("shop/cart", "shop/pricing")]],
        lay.routes[index[("shop/pricing", "shop/cart")]],
    )
    assert there.back != back.back
    assert there.points != tuple(reversed(back.points))


def test_escaping_in_every_rendering() -> None:
    evil = 'a"b<c>&d\\N\n#quot;'
    graph = build_graph([Edge("ns/x", evil, EdgeKind.DECLARED)])
    dot = to_dot(graph)
    assert '"a\\"b<c>&d\\\\N #quot;"' in dot
    mermaid = to_mermaid(graph)
    assert '"a#34;b#60;c#62;#38;d#92;N #35;quot;"' in mermaid
    svg = to_svg(graph)
    assert "a&quot;b&lt;c&gt;&amp;d" in svg
    assert "<c>" not in svg
    ET.fromstring(to_svg(build_graph([Edge("ns/x", "bad\x01host", EdgeKind.LEARNED)])))  # noqa: S314


def test_dot_and_mermaid_group_by_namespace() -> None:
    graph = graph_from_fences(SCENARIO)
    dot = to_dot(graph)
    assert dot.startswith("digraph lazystream {\n  rankdir=LR;")
    assert '  subgraph "cluster_shop" {' in dot
    assert '"shop/frontend" -> "shop/cart";' in dot
    assert '"shop/frontend" -> "shop/search" [style=dashed];' in dot
    assert "cart.shop.svc" not in dot.replace('tooltip="cart.shop.svc.cluster.local = shop/cart"', "")
    mermaid = to_mermaid(graph).splitlines()
    assert mermaid[0] == "flowchart LR"
    assert sum(line.startswith("  subgraph ") for line in mermaid) == 3
    assert sum(line.strip() == "end" for line in mermaid) == 3


# -- the picture ---------------------------------------------------------------------------------------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGBA rows of an 8-bit RGBA, non-interlaced PNG (what resvg writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    stream, chunks = io.BytesIO(data[8:]), b""
    width = height = 0
    while True:
        length, kind = struct.unpack(">I4s", stream.read(8))
        body = stream.read(length)
        stream.read(4)
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, color, interlace) == (8, 6, 0)
        elif kind == b"IDAT":
            chunks += body
        elif kind == b"IEND":
            break
    raw, stride, rows, prev = zlib.decompress(chunks), width * 4, [], bytearray(width * 4)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 4] if i >= 4 else 0
            b, c = prev[i], prev[i - 4] if i >= 4 else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def render_png(svg: str) -> bytes:
    """The real rasteriser (a test dependency: a missing one fails, not skips)."""
    import resvg_py

    return bytes(resvg_py.svg_to_bytes(svg_string=svg, sans_serif_family="DejaVu Sans"))


def test_the_picture_shows_each_box_where_the_layout_says() -> None:
    from lazystream.domain.graph import _STYLE, CLUSTER_FILL

    graph = graph_from_fences(SCENARIO)
    lay = node_layout(graph)
    svg = to_svg(graph)
    width, height, rows = png_pixels(render_png(svg))
    assert width >= lay.width
    assert height > lay.height

    def pixel(x: float, y: float) -> tuple[int, int, int]:
        row, i = rows[int(y)], int(x) * 4
        return row[i], row[i + 1], row[i + 2]

    def near(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 12) -> bool:
        return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=True))

    colours = {pixel(x, y) for y in range(0, height, 7) for x in range(0, width, 7)}
    assert len(colours) > 8  # not blank
    for n in graph.nodes:
        box = lay.boxes[n.id]
        fill = hex_rgb(_STYLE[n.kind][0])
        cy = box.center[1]
        # the fill on both sides of the label, and no text running over the right end
        assert near(pixel(box.x + 4, cy), fill), n.id
        for y in range(int(box.y + 5), int(box.bottom - 5)):
            assert near(pixel(box.right - 4, y), fill), (n.id, y)
        # and the outside just above the box is not the box
        assert not near(pixel(box.x + box.width / 2, box.y - 3), fill) or n.kind is NodeKind.SERVICE, n.id
    for ns, box in lay.groups.items():
        assert near(pixel(box.x + 4, box.bottom - 4), hex_rgb(CLUSTER_FILL)), ns
