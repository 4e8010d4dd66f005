"""The learned dependency graph, for people who would rather look than read: ``lazystream graph``.

An edge is a dependency a fence has learned (its ``status.metricStatus``) or declares (``spec.host``, drawn
dashed). A node is a service, whichever way it is named: the fence ``shop/cart`` and the host
``cart.shop.svc.<cluster domain>`` (or ``cart.shop`` once the service is known) are one node, so chains of
calls can be followed. Hosts that name no Service (ServiceEntry and external names, wildcards) and declared
``namespace/*`` are nodes of their own. Nodes are grouped by namespace. Three renderings: Graphviz DOT,
Mermaid, and a self-contained SVG laid out here (:mod:`lazystream.domain.graph_layout`), so that a picture
needs neither Graphviz nor a browser-side renderer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from xml.sax.saxutils import escape

from lazystream.domain.fences import learned_from_metric_status
from lazystream.domain.graph_layout import (
    CLUSTER_PAD,
    FONT_SIZE,
    MARGIN,
    TEXT_PAD,
    Box,
    Layout,
    LayoutNode,
    Route,
    layout,
    text_width,
)
from lazystream.domain.hosts import service_fqdn, split_service_fqdn


class EdgeKind(StrEnum):
    LEARNED = "learned"
    DECLARED = "declared"


@dataclass(frozen=True, order=True, slots=True)
class Edge:
    source: str
    """The fence, ``namespace/name`` (in a :class:`Graph`: a node id)."""
    target: str
    """The host (FQDN, or ``namespace/*`` for a declared namespace; in a :class:`Graph`: a node id)."""
    kind: EdgeKind


def edges_from_fences(fences: Iterable[Mapping[str, Any]], namespace: str | None = None) -> list[Edge]:
    """The graph's edges, sorted, from ServiceFence objects (Kubernetes JSON); ``namespace`` keeps the
    fences of that namespace only."""
    out: set[Edge] = set()
    for fence in fences:
        meta = fence.get("metadata") or {}
        ns, name = meta.get("namespace", "default"), meta.get("name")
        if not name or (namespace is not None and ns != namespace):
            continue
        source = f"{ns}/{name}"
        for host in learned_from_metric_status((fence.get("status") or {}).get("metricStatus")):
            out.add(Edge(source, host, EdgeKind.LEARNED))
        for host in (fence.get("spec") or {}).get("host") or {}:
            edge = Edge(source, str(host), EdgeKind.DECLARED)
            if Edge(source, str(host), EdgeKind.LEARNED) not in out:
                out.add(edge)
    learned = {(e.source, e.target) for e in out if e.kind is EdgeKind.LEARNED}
    return sorted(e for e in out if e.kind is EdgeKind.LEARNED or (e.source, e.target) not in learned)


def fence_names(fences: Iterable[Mapping[str, Any]], namespace: str | None = None) -> list[str]:
    """``namespace/name`` of each fence (of ``namespace`` only, if given), sorted: every fence is a node,
    even one that has learned nothing yet."""
    out: set[str] = set()
    for fence in fences:
        meta = fence.get("metadata") or {}
        ns, name = meta.get("namespace", "default"), meta.get("name")
        if name and (namespace is None or ns == namespace):
            out.add(f"{ns}/{name}")
    return sorted(out)


_ID_PART = re.compile(r"[^*:/]+")


class NodeKind(StrEnum):
    FENCED = "fenced"
    """A Service with a ServiceFence: its calls are learned."""
    SERVICE = "service"
    """A Service of the mesh that has no fence (here: only ever called)."""
    NAMESPACE = "namespace"
    """A declared ``namespace/*``: every host of that namespace."""
    EXTERNAL = "external"
    """A host that names no Service: a ServiceEntry or external name, a wildcard."""


@dataclass(frozen=True, order=True, slots=True)
class Node:
    id: str
    """``namespace/name`` for a Service, ``namespace/*`` for a namespace, the host itself otherwise
    (``host:`` first if it has a slash: the three never collide)."""
    kind: NodeKind
    namespace: str | None
    """The namespace it is grouped in; None for external hosts."""
    label: str
    """What its box says: the Service's name inside its namespace's box, the whole name otherwise."""
    names: tuple[str, ...]
    """Every name it goes by in the input (for the tooltip)."""


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: tuple[Node, ...]
    """Sorted by namespace (external last), then id."""
    edges: tuple[Edge, ...]
    """Between node ids, sorted; a pair both learned and declared is learned."""

    def node(self, node_id: str) -> Node:
        return self._by_id()[node_id]

    def _by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    @property
    def namespaces(self) -> list[str]:
        return sorted({n.namespace for n in self.nodes if n.namespace is not None})


def build_graph(
    edges: Iterable[Edge], cluster_domain: str = "cluster.local", fences: Iterable[str] = ()
) -> Graph:
    """One node per service: fences (the edges' sources and ``fences``) and the hosts that name them.

    A host is a Service when it is ``name.ns.svc.<cluster_domain>``, a single label (completed in the
    caller's namespace, as Sidecars do), or ``name.ns`` / ``name.ns.svc`` naming a Service seen in its full
    form or as a fence (an unknown ``name.ns`` may well be an external name). ``ns/*`` is that namespace;
    everything else is an external host.
    """
    edges = list(edges)
    fenced = set(fences) | {e.source for e in edges}
    known: set[tuple[str, str]] = set()  # (namespace, name)
    for f in fenced:
        ns, _, name = f.partition("/")
        known.add((ns, name))
    for e in edges:
        split = split_service_fqdn(e.target, cluster_domain)
        if split is not None:
            known.add((split[1], split[0]))

    def service_of(host: str, caller_ns: str) -> tuple[str, str] | None:
        if "/" in host:
            ns, _, name = host.partition("/")
            ok = _ID_PART.fullmatch(ns) and (name == "*" or _ID_PART.fullmatch(name))
            return (ns, name) if ok else None
        split = split_service_fqdn(host, cluster_domain)
        if split is not None:
            return split[1], split[0]
        labels = host.split(".")
        if len(labels) == 1 and host and host != "*":
            return caller_ns, host
        dotted = len(labels) == 2 or (len(labels) == 3 and labels[2] == "svc")
        return (labels[1], labels[0]) if dotted and (labels[1], labels[0]) in known else None

    names: dict[str, set[str]] = {}
    info: dict[str, tuple[NodeKind, str | None, str]] = {}

    def add(text: str, caller_ns: str) -> str:
        service = service_of(text, caller_ns)
        entry: tuple[NodeKind, str | None, str]
        if service is None:
            # "*/x" or "a/b/c": an id no namespace/name can have
            node_id, entry = text if "/" not in text else f"host:{text}", (NodeKind.EXTERNAL, None, text)
        else:
            ns, name = service
            node_id = f"{ns}/{name}"
            if name == "*":
                entry = (NodeKind.NAMESPACE, ns, f"{ns}/*")
            else:
                kind = NodeKind.FENCED if node_id in fenced else NodeKind.SERVICE
                entry = (kind, ns, name)
                names.setdefault(node_id, set()).add(service_fqdn(name, ns, cluster_domain))
        info[node_id] = entry
        names.setdefault(node_id, set()).add(text)
        return node_id

    for f in fenced:
        add(f, "")
    pairs: dict[tuple[str, str], EdgeKind] = {}
    for e in edges:
        source = add(e.source, "")
        target = add(e.target, source.partition("/")[0])
        if pairs.get((source, target)) is not EdgeKind.LEARNED:
            pairs[(source, target)] = e.kind
    nodes = sorted(
        (Node(i, kind, ns, label, tuple(sorted(names[i]))) for i, (kind, ns, label) in info.items()),
        key=lambda n: (n.namespace is None, n.namespace or "", n.id),
    )
    return Graph(tuple(nodes), tuple(sorted(Edge(s, t, k) for (s, t), k in pairs.items())))


def graph_from_fences(
    fences: Iterable[Mapping[str, Any]], namespace: str | None = None, cluster_domain: str = "cluster.local"
) -> Graph:
    """The graph of ServiceFence objects (Kubernetes JSON): their edges and every fence as a node."""
    fences = list(fences)
    return build_graph(edges_from_fences(fences, namespace), cluster_domain, fence_names(fences, namespace))


# -- DOT and Mermaid ---------------------------------------------------------------------------------------

_STYLE = {
    NodeKind.FENCED: ("#dbe8fb", "#3b6db3"),
    NodeKind.SERVICE: ("#ffffff", "#6b778a"),
    NodeKind.NAMESPACE: ("#fff4d6", "#a07800"),
    NodeKind.EXTERNAL: ("#fde3dc", "#b5523b"),
}
_DOT_SHAPE = {
    NodeKind.FENCED: 'shape=box, style="rounded,filled"',
    NodeKind.SERVICE: 'shape=box, style="rounded"',
    NodeKind.NAMESPACE: 'shape=box, style="dashed,filled"',
    NodeKind.EXTERNAL: 'shape=ellipse, style="filled"',
}


def _dot(text: str) -> str:
    """A DOT quoted string: backslashes (label escapes such as ``\\N``), quotes, line breaks neutralised."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", " ").replace("\n", " ") + '"'


def _title(node: Node) -> str:
    return " = ".join(node.names)


def to_dot(graph: Graph) -> str:
    """Graphviz DOT, left to right, a ``cluster_<namespace>`` subgraph per namespace."""
    lines = ["digraph lazystream {", "  rankdir=LR;", "  node [fontname=Helvetica, fontsize=10];"]

    def node_line(n: Node, indent: str) -> str:
        fill, stroke = _STYLE[n.kind]
        return (
            f"{indent}{_dot(n.id)} [label={_dot(n.label)}, {_DOT_SHAPE[n.kind]}, "
            f'fillcolor="{fill}", color="{stroke}", tooltip={_dot(_title(n))}];'
        )

    for ns in graph.namespaces:
        lines.append(f"  subgraph {_dot('cluster_' + ns)} {{")
        lines.append(f'    label={_dot(ns)}; style="rounded"; color="#aab4c3";')
        lines += [node_line(n, "    ") for n in graph.nodes if n.namespace == ns]
        lines.append("  }")
    lines += [node_line(n, "  ") for n in graph.nodes if n.namespace is None]
    for e in graph.edges:
        style = " [style=dashed]" if e.kind is EdgeKind.DECLARED else ""
        lines.append(f"  {_dot(e.source)} -> {_dot(e.target)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '"#&<>`\\'}
_MERMAID_SHAPE = {
    NodeKind.FENCED: ("[", "]"),
    NodeKind.SERVICE: ("(", ")"),
    NodeKind.NAMESPACE: ("[[", "]]"),
    NodeKind.EXTERNAL: ("([", "])"),
}


def _mermaid(text: str) -> str:
    """A Mermaid quoted label: quotes, entity and markup characters as numeric entity codes."""
    return '"' + "".join(_MERMAID_ESCAPES.get(c, " " if c in "\r\n" else c) for c in text) + '"'


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart, left to right, a ``subgraph`` per namespace; ids are generated (``n0``...)."""
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]

    def node_line(n: Node, indent: str) -> str:
        left, right = _MERMAID_SHAPE[n.kind]
        return f"{indent}{ids[n.id]}{left}{_mermaid(n.label)}{right}"

    for i, ns in enumerate(graph.namespaces):
        lines.append(f"  subgraph ns{i}[{_mermaid(ns)}]")
        lines += [node_line(n, "    ") for n in graph.nodes if n.namespace == ns]
        lines.append("  end")
    lines += [node_line(n, "  ") for n in graph.nodes if n.namespace is None]
    for e in graph.edges:
        arrow = "-.->" if e.kind is EdgeKind.DECLARED else "-->"
        lines.append(f"  {ids[e.source]} {arrow} {ids[e.target]}")
    for kind, (fill, stroke) in _STYLE.items():
        members = [ids[n.id] for n in graph.nodes if n.kind is kind]
        if members:
            lines.append(f"  classDef {kind} fill:{fill},stroke:{stroke}")
            lines.append(f"  class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


# -- SVG ---------------------------------------------------------------------------------------------------

LEARNED_COLOR = "#3d434b"
DECLARED_COLOR = "#8a6d1f"
CLUSTER_FILL = "#f4f6f9"
CLUSTER_STROKE = "#aab4c3"
LEGEND_HEIGHT = 78.0
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(text: str) -> str:
    """Text for XML content or a double-quoted attribute: characters XML 1.0 forbids become U+FFFD."""
    return escape(_XML_INVALID.sub("\ufffd", text), {'"': "&quot;"})


def node_layout(graph: Graph) -> Layout:
    """Where :func:`to_svg` draws each node, namespace box and edge (the test checks the picture by it)."""
    nodes = [LayoutNode(n.id, n.namespace, text_width(n.label) + 2 * TEXT_PAD) for n in graph.nodes]
    return layout(nodes, [(e.source, e.target) for e in graph.edges])


def _node_svg(kind: NodeKind, box: Box, label: str, title: str) -> list[str]:
    fill, stroke = _STYLE[kind]
    rx = box.height / 2 if kind is NodeKind.EXTERNAL else 4
    dash = ' stroke-dasharray="4,3"' if kind is NodeKind.NAMESPACE else ""
    width = 1.6 if kind is NodeKind.FENCED else 1.2
    return [
        f'<g class="node {kind}"><title>{_xml(title)}</title>',
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{box.height:.1f}" '
        f'rx="{rx:.1f}" fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}/>',
        f'<text x="{box.x + TEXT_PAD:.1f}" y="{box.center[1] + FONT_SIZE * 0.35:.1f}">{_xml(label)}</text>',
        "</g>",
    ]


def _path(points: tuple[tuple[float, float], ...]) -> str:
    """Straight along a column a placeholder crosses, an S-curve (horizontal tangents) between columns."""
    (x0, y0), rest = points[0], points[1:]
    out = [f"M {x0:.1f} {y0:.1f}"]
    for x1, y1 in rest:
        if abs(y1 - y0) < 0.05:
            out.append(f"L {x1:.1f} {y1:.1f}")
        else:
            mid = (x0 + x1) / 2
            out.append(f"C {mid:.1f} {y0:.1f} {mid:.1f} {y1:.1f} {x1:.1f} {y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(out)


def _edge_svg(kind: EdgeKind, d: str, title: str) -> str:
    color, marker = (DECLARED_COLOR, "declared") if kind is EdgeKind.DECLARED else (LEARNED_COLOR, "learned")
    dash = ' stroke-dasharray="6,4"' if kind is EdgeKind.DECLARED else ""
    return (
        f'<path class="edge {kind}" d="{d}" fill="none" stroke="{color}" stroke-width="1.3"{dash} '
        f'marker-end="url(#{marker})"><title>{_xml(title)}</title></path>'
    )


def _legend(x: float, y: float) -> tuple[list[str], float]:
    """The legend's elements at ``(x, y)``, and its width."""
    row1: list[tuple[str, EdgeKind | NodeKind]] = [
        ("learned (status.metricStatus)", EdgeKind.LEARNED),
        ("declared (spec.host)", EdgeKind.DECLARED),
    ]
    row2: list[tuple[str, EdgeKind | NodeKind]] = [
        ("fenced service", NodeKind.FENCED),
        ("service without a fence", NodeKind.SERVICE),
        ("external host", NodeKind.EXTERNAL),
        ("declared namespace", NodeKind.NAMESPACE),
    ]
    out: list[str] = []
    widths = []
    for r, row in enumerate((row1, row2)):
        cx = x + 12
        cy = y + 40 + r * 26
        for text, kind in row:
            if isinstance(kind, EdgeKind):
                out.append(_edge_svg(kind, f"M {cx:.1f} {cy:.1f} L {cx + 34:.1f} {cy:.1f}", text))
                swatch = 42.0
            else:
                sample = {NodeKind.NAMESPACE: "ns/*", NodeKind.EXTERNAL: "host"}.get(kind, "svc")
                w = text_width(sample) + 2 * TEXT_PAD
                out += _node_svg(kind, Box(cx, cy - 10, w, 20), sample, text)
                swatch = w + 8
            out.append(f'<text x="{cx + swatch:.1f}" y="{cy + 4:.1f}">{_xml(text)}</text>')
            cx += swatch + text_width(text) + 22
        widths.append(cx - x)
    width = max(widths)
    frame = (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{LEGEND_HEIGHT:.1f}" rx="6" '
        f'fill="white" stroke="{CLUSTER_STROKE}"/>'
        f'<text x="{x + 12:.1f}" y="{y + 18:.1f}" font-weight="bold">legend</text>'
        f'<text x="{x + 70:.1f}" y="{y + 18:.1f}" fill="#555">grey boxes: namespaces</text>'
    )
    return [frame, *out], width


def to_svg(graph: Graph) -> str:
    """A self-contained SVG: namespace boxes, calls flowing left to right, a legend underneath."""
    lay = node_layout(graph)
    legend_y = lay.height
    legend, legend_width = _legend(MARGIN, legend_y)
    width = math.ceil(max(lay.width, legend_width + 2 * MARGIN))
    height = math.ceil(legend_y + LEGEND_HEIGHT + MARGIN)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, \'DejaVu Sans\', sans-serif" '
        f'font-size="{FONT_SIZE:g}">',
        "<title>lazystream dependency graph</title>",
        "<defs>",
        *(
            f'<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{color}"/></marker>'
            for name, color in (("learned", LEARNED_COLOR), ("declared", DECLARED_COLOR))
        ),
        "</defs>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for ns, box in lay.groups.items():
        out.append(
            f'<g class="namespace"><rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
            f'height="{box.height:.1f}" rx="8" fill="{CLUSTER_FILL}" stroke="{CLUSTER_STROKE}"/>'
            f'<text x="{box.x + CLUSTER_PAD:.1f}" y="{box.y + 15:.1f}" font-weight="bold" fill="#4a5566">'
            f"{_xml(ns)}</text></g>"
        )
    for i, e in enumerate(graph.edges):
        title = f"{e.source} -> {e.target} ({e.kind})"
        route: Route | None = lay.routes.get(i)
        if route is None:  # a service calling itself: a loop over its box
            box = lay.boxes[e.source]
            x1, x0, top = box.right - 8, box.right - 24, box.y
            d = f"M {x0:.1f} {top:.1f} C {x0:.1f} {top - 16:.1f} {x1:.1f} {top - 16:.1f} {x1:.1f} {top:.1f}"
        else:
            d = _path(route.points)
        out.append(_edge_svg(e.kind, d, title))
    for n in graph.nodes:
        out += _node_svg(n.kind, lay.boxes[n.id], n.label, _title(n))
    out += legend
    out.append("</svg>")
    return "\n".join(out) + "\n"


RENDERERS: Mapping[str, Callable[[Graph], str]] = {"dot": to_dot, "mermaid": to_mermaid, "svg": to_svg}
