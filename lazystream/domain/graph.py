"""The learned dependency graph, for people who would rather look than read: ``lazystream graph``.

Nodes are fences (the workloads, ``namespace/name``) and the hosts they reach; an edge is a dependency a
fence has learned (its ``status.metricStatus``) or declares (``spec.host``, drawn dashed). Three renderings:
Graphviz DOT, Mermaid, and a self-contained SVG drawn here (two columns, callers left, hosts right), so that
a picture needs neither Graphviz nor a browser-side renderer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from xml.sax.saxutils import escape

from lazystream.domain.fences import learned_from_metric_status


class EdgeKind(StrEnum):
    LEARNED = "learned"
    DECLARED = "declared"


@dataclass(frozen=True, order=True, slots=True)
class Edge:
    source: str
    """The fence, ``namespace/name``."""
    target: str
    """The host (FQDN, or ``namespace/*`` for a declared namespace)."""
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


def _nodes(edges: Iterable[Edge]) -> tuple[list[str], list[str]]:
    edges = list(edges)
    sources = sorted({e.source for e in edges})
    targets = sorted({e.target for e in edges} - set(sources))
    return sources, targets


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(edges: Iterable[Edge]) -> str:
    edges = list(edges)
    sources, targets = _nodes(edges)
    lines = ["digraph lazystream {", "  rankdir=LR;", "  node [fontname=Helvetica, fontsize=10];"]
    lines += [f"  {_dot_id(s)} [shape=box];" for s in sources]
    lines += [f"  {_dot_id(t)} [shape=ellipse];" for t in targets]
    for e in edges:
        style = " [style=dashed]" if e.kind is EdgeKind.DECLARED else ""
        lines.append(f"  {_dot_id(e.source)} -> {_dot_id(e.target)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(edges: Iterable[Edge]) -> str:
    edges = list(edges)
    sources, targets = _nodes(edges)
    ids = {name: f"n{i}" for i, name in enumerate([*sources, *targets])}

    def label(text: str) -> str:
        return text.replace('"', "#quot;")

    lines = ["flowchart LR"]
    lines += [f'  {ids[s]}["{label(s)}"]' for s in sources]
    lines += [f'  {ids[t]}(["{label(t)}"])' for t in targets]
    for e in edges:
        arrow = "-.->" if e.kind is EdgeKind.DECLARED else "-->"
        lines.append(f"  {ids[e.source]} {arrow} {ids[e.target]}")
    return "\n".join(lines) + "\n"


ROW = 26
CHAR = 7.2
PAD = 12
GAP = 160


def to_svg(edges: Iterable[Edge]) -> str:
    """Callers in the left column, hosts in the right one, a line per dependency (dashed: declared)."""
    edges = list(edges)
    sources, targets = _nodes(edges)
    left_w = max((len(s) for s in sources), default=0) * CHAR + 2 * PAD
    right_w = max((len(t) for t in targets), default=0) * CHAR + 2 * PAD
    rows = max(len(sources), len(targets), 1)
    width = int(left_w + GAP + right_w + 2 * PAD)
    height = int(rows * ROW + 2 * PAD)
    right_x = PAD + left_w + GAP

    def y(index: int) -> float:
        return PAD + index * ROW + ROW / 2

    pos = {s: (PAD + left_w, y(i)) for i, s in enumerate(sources)}
    pos.update({t: (right_x, y(i)) for i, t in enumerate(targets)})
    # a fence may also be a host's source of truth (a caller reaching another fence's Service host): both
    # columns are keyed by text, so an edge to a fence name ends on its left box
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        "<title>lazystream dependency graph</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for e in edges:
        x1, y1 = pos[e.source]
        x2, y2 = pos[e.target] if e.target in targets else (PAD, pos[e.target][1])
        dash = ' stroke-dasharray="5,4"' if e.kind is EdgeKind.DECLARED else ""
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#555"{dash} '
            f'marker-end="url(#arrow)"><title>{escape(e.source)} -&gt; {escape(e.target)} ({e.kind})'
            "</title></line>"
        )
    for i, s in enumerate(sources):
        out.append(
            f'<rect x="{PAD}" y="{y(i) - ROW / 2 + 3:.1f}" width="{left_w:.1f}" height="{ROW - 6}" rx="4" '
            'fill="#e8f0fe" stroke="#4a6fa5"/>'
        )
        out.append(f'<text x="{PAD + PAD}" y="{y(i) + 4:.1f}">{escape(s)}</text>')
    for i, t in enumerate(targets):
        out.append(f'<text x="{right_x + 4:.1f}" y="{y(i) + 4:.1f}">{escape(t)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


RENDERERS = {"dot": to_dot, "mermaid": to_mermaid, "svg": to_svg}
