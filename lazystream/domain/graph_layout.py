"""A layered (Sugiyama-style) layout for ``lazystream graph``'s SVG, in pure Python.

Calls flow left to right: cycles are broken by reversing the back edges of a deterministic depth-first
search, each node's column is its longest path from the callers, edges spanning several columns pass
through placeholder vertices, and barycenter sweeps order each column to reduce crossings. Nodes are
grouped (by namespace): a group's vertices are contiguous in every column and each group owns a horizontal
band, so group boxes never overlap. The same input always gives the same geometry.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FONT_SIZE = 12.0
NODE_HEIGHT = 24.0
TEXT_PAD = 9.0
NODE_GAP = 14.0
DUMMY_GAP = 12.0
LAYER_GAP = 110.0
CLUSTER_PAD = 14.0
CLUSTER_LABEL = 22.0
BAND_GAP = 24.0
MARGIN = 16.0
SWEEPS = 12
POSITION_PASSES = 8
PARALLEL_OFFSET = 4.0

# advance widths (em) of DejaVu Sans, the widest common sans-serif: a label measured with them fits in
# Helvetica and Arial too
_EM = {
    **dict.fromkeys("il.:;'|!,", 0.32),
    **dict.fromkeys("fjtI/-()[]", 0.39),
    "r": 0.42,
    **dict.fromkeys('sczJ*_"', 0.55),
    **dict.fromkeys("kvxy", 0.6),
    **dict.fromkeys("abdeghnopqu0123456789#$?", 0.64),
    **dict.fromkeys("wAKVXYZ", 0.82),
    **dict.fromkeys("mMW", 1.0),
}


def text_width(text: str, size: float = FONT_SIZE) -> float:
    """The width of ``text`` at ``size`` px, measured generously so that it fits any common sans font."""
    return sum(_EM.get(c, 0.76 if c.isupper() else 0.7) for c in text) * size


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.width / 2, self.y + self.height / 2)

    def overlaps(self, other: Box) -> bool:
        return (
            self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom
        )


@dataclass(frozen=True, slots=True)
class LayoutNode:
    id: str
    group: str | None
    """The band it is drawn in (a namespace); None: the ungrouped band, drawn last."""
    width: float


@dataclass(frozen=True, slots=True)
class Route:
    points: tuple[tuple[float, float], ...]
    """From the source box's side to the target box's side, through the columns it crosses."""
    back: bool
    """Drawn against the flow: the edge reversed to break a cycle."""


@dataclass(frozen=True, slots=True)
class Layout:
    layers: tuple[tuple[str, ...], ...]
    """The node ids of each column, top to bottom."""
    boxes: Mapping[str, Box]
    groups: Mapping[str, Box]
    """The box of each named group, around its nodes."""
    routes: Mapping[int, Route]
    """By index in the edge list given; self edges have none."""
    crossings: int
    """Edge crossings between adjacent columns (placeholders included), as ordered."""
    width: float
    height: float


def layout(nodes: Sequence[LayoutNode], edges: Sequence[tuple[str, str]]) -> Layout:
    """Place ``nodes`` (in a deterministic order) and route ``edges`` (pairs of node ids)."""
    n = len(nodes)
    index = {node.id: i for i, node in enumerate(nodes)}
    pairs = sorted({(index[s], index[t]) for s, t in edges if s != t})
    back = _back_edges(n, pairs)
    dag = sorted({(v, u) if (u, v) in back else (u, v) for u, v in pairs})
    layer = _longest_path_layers(n, dag)

    # vertices: the nodes, then one placeholder per column an edge passes through
    v_layer = list(layer)
    v_group: list[str | None] = [node.group for node in nodes]
    chains: dict[tuple[int, int], list[int]] = {}
    for u, v in dag:
        chain = [u]
        for column in range(layer[u] + 1, layer[v]):
            v_layer.append(column)
            v_group.append(nodes[u].group)
            chain.append(len(v_layer) - 1)
        chains[(u, v)] = [*chain, v]
    count = len(v_layer)
    preds: list[list[int]] = [[] for _ in range(count)]
    succs: list[list[int]] = [[] for _ in range(count)]
    for chain in chains.values():
        for a, b in itertools.pairwise(chain):
            succs[a].append(b)
            preds[b].append(a)

    names = sorted({g for g in v_group if g is not None})
    first = {g: min(layer[i] for i in range(n) if nodes[i].group == g) for g in names}
    ranks = {g: r for r, g in enumerate(sorted(names, key=lambda g: (first[g], g)))}
    ranks_none = len(names)
    columns = max(v_layer, default=-1) + 1
    orders = _order(count, v_layer, v_group, preds, succs, columns, ranks, ranks_none)
    crossings = _crossings(orders[0], succs)

    # columns: x; bands: y
    real = [v < n for v in range(count)]
    col_width = [0.0] * columns
    for i, node in enumerate(nodes):
        col_width[layer[i]] = max(col_width[layer[i]], node.width)
    col_x: list[float] = []
    x = MARGIN + CLUSTER_PAD
    for w in col_width:
        col_x.append(x)
        x += max(w, 20.0) + LAYER_GAP
    order = orders[0]
    rank_of = orders[1]

    def key_rank(g: str | None) -> int:
        return ranks_none if g is None else rank_of[g]

    band_order = sorted({*v_group}, key=lambda g: key_rank(g))
    extent = [NODE_HEIGHT / 2 + NODE_GAP / 2 if real[v] else DUMMY_GAP / 2 for v in range(count)]
    y = [0.0] * count
    band_box: dict[str | None, tuple[float, float]] = {}
    cursor = MARGIN
    for g in band_order:
        top = cursor + (CLUSTER_LABEL if g is not None else 0.0)
        per_col = [[v for v in col if v_group[v] == g] for col in order]
        inner = max((sum(2 * extent[v] for v in col) for col in per_col), default=0.0)
        for col in per_col:
            c = top + (inner - sum(2 * extent[v] for v in col)) / 2
            for v in col:
                y[v] = c + extent[v]
                c += 2 * extent[v]
        band_box[g] = (top, top + inner)
        cursor = top + inner + (CLUSTER_PAD / 2 if g is not None else 0.0) + BAND_GAP
    height = cursor - BAND_GAP + MARGIN

    for p in range(POSITION_PASSES):
        last = p == POSITION_PASSES - 1
        cols = range(columns) if p % 2 == 0 else range(columns - 1, -1, -1)
        for c in cols:
            for g in band_order:
                col = [v for v in order[c] if v_group[v] == g]
                if not col:
                    continue
                want = []
                for v in col:
                    near = preds[v] + succs[v] if last else (preds[v] if p % 2 == 0 else succs[v])
                    want.append(sum(y[w] for w in near) / len(near) if near else y[v])
                lo, hi = band_box[g]
                for v, new in zip(col, _place(want, [extent[v] for v in col], lo, hi), strict=True):
                    y[v] = new

    boxes = {
        node.id: Box(col_x[layer[i]], y[i] - NODE_HEIGHT / 2, node.width, NODE_HEIGHT)
        for i, node in enumerate(nodes)
    }
    groups: dict[str, Box] = {}
    for g in names:
        members = [boxes[node.id] for node in nodes if node.group == g]
        left = min(b.x for b in members) - CLUSTER_PAD
        right = max(col_x[layer[i]] + col_width[layer[i]] for i in range(n) if nodes[i].group == g)
        right = max(right + CLUSTER_PAD, left + text_width(g) + 2 * CLUSTER_PAD)
        top, bottom = band_box[g]
        groups[g] = Box(
            left, top - CLUSTER_LABEL, right - left, bottom - top + CLUSTER_LABEL + CLUSTER_PAD / 2
        )
    width = max([x - LAYER_GAP + CLUSTER_PAD + MARGIN, *(b.right + MARGIN for b in groups.values())])

    routes: dict[int, Route] = {}
    for i, (s, t) in enumerate(edges):
        u, v = index[s], index[t]
        if u == v:
            continue
        is_back = (u, v) in back
        chain = chains[(v, u) if is_back else (u, v)]
        points: list[tuple[float, float]] = []
        for k, w in enumerate(chain):
            if w < n:
                box = boxes[nodes[w].id]
                points.append((box.right if k == 0 else box.x, box.center[1]))
            else:
                points += [(col_x[v_layer[w]], y[w]), (col_x[v_layer[w]] + col_width[v_layer[w]], y[w])]
        shared = (v, u) in pairs
        offset = (PARALLEL_OFFSET if is_back else -PARALLEL_OFFSET) if shared else 0.0
        points = [(px, py + offset) for px, py in points]
        routes[i] = Route(tuple(reversed(points)) if is_back else tuple(points), is_back)

    layers = tuple(tuple(nodes[v].id for v in col if v < n) for col in order)
    return Layout(layers, boxes, groups, routes, crossings, width, height)


def _back_edges(n: int, pairs: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """The edges that close a cycle in a depth-first search from the callers (nodes nobody calls) first,
    in index order: reversing them leaves a DAG."""
    succ: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for u, v in pairs:
        succ[u].append(v)
        indegree[v] += 1
    state = [0] * n  # 0 unseen, 1 on the stack, 2 done
    back: set[tuple[int, int]] = set()
    for root in [v for v in range(n) if indegree[v] == 0] + list(range(n)):
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, 0)]
        while stack:
            u, i = stack[-1]
            if i < len(succ[u]):
                stack[-1] = (u, i + 1)
                v = succ[u][i]
                if state[v] == 0:
                    state[v] = 1
                    stack.append((v, 0))
                elif state[v] == 1:
                    back.add((u, v))
            else:
                state[u] = 2
                stack.pop()
    return back


def _longest_path_layers(n: int, dag: Sequence[tuple[int, int]]) -> list[int]:
    succ: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for u, v in dag:
        succ[u].append(v)
        indegree[v] += 1
    layer = [0] * n
    ready = [v for v in range(n) if indegree[v] == 0]
    heapq.heapify(ready)
    while ready:
        u = heapq.heappop(ready)
        for v in succ[u]:
            layer[v] = max(layer[v], layer[u] + 1)
            indegree[v] -= 1
            if indegree[v] == 0:
                heapq.heappush(ready, v)
    return layer


def _order(
    count: int,
    v_layer: Sequence[int],
    v_group: Sequence[str | None],
    preds: Sequence[Sequence[int]],
    succs: Sequence[Sequence[int]],
    columns: int,
    ranks: Mapping[str, int],
    ranks_none: int,
) -> tuple[list[list[int]], dict[str, int]]:
    """Barycenter sweeps, down then up, with the groups' band order revised between them; the ordering
    with the fewest crossings wins (the first one found, on ties)."""
    rank = dict(ranks)

    def group_rank(v: int) -> int:
        g = v_group[v]
        return ranks_none if g is None else rank[g]

    order: list[list[int]] = [[] for _ in range(columns)]
    for v in range(count):
        order[v_layer[v]].append(v)
    for col in order:
        col.sort(key=lambda v: (group_rank(v), v))
    pos = [0] * count

    def index_all() -> None:
        for col in order:
            for i, v in enumerate(col):
                pos[v] = i

    index_all()
    best = ([list(col) for col in order], dict(rank))
    best_crossings = _crossings(order, succs)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        for c in range(1, columns) if down else range(columns - 2, -1, -1):
            near = preds if down else succs
            other = len(order[c - 1 if down else c + 1]) or 1
            scale = other / (len(order[c]) or 1)

            def bary(v: int, near: Sequence[Sequence[int]] = near, scale: float = scale) -> float:
                ws = near[v]
                return sum(pos[w] for w in ws) / len(ws) if ws else pos[v] * scale

            order[c].sort(key=lambda v: (group_rank(v), bary(v), pos[v]))
            for i, v in enumerate(order[c]):
                pos[v] = i
        if not down and rank:
            # a band goes where the other bands' vertices it is linked to are, on average
            where: dict[str, list[float]] = {g: [] for g in rank}
            for v in range(count):
                g = v_group[v]
                if g is None:
                    continue
                for w in (*preds[v], *succs[v]):
                    if v_group[w] != g:
                        where[g].append((pos[w] + 0.5) / len(order[v_layer[w]]))
            total = len(rank) + 1
            value = {g: sum(ws) / len(ws) if ws else (rank[g] + 0.5) / total for g, ws in where.items()}
            rank = {g: r for r, g in enumerate(sorted(rank, key=lambda g: (value[g], rank[g], g)))}
            for col in order:
                col.sort(key=lambda v: (group_rank(v), pos[v]))
            index_all()
        now = _crossings(order, succs)
        if now < best_crossings:
            best, best_crossings = ([list(col) for col in order], dict(rank)), now
    return best


def _crossings(order: Sequence[Sequence[int]], succs: Sequence[Sequence[int]]) -> int:
    """Crossings between each pair of adjacent columns: inversions of the segments' end positions, counted
    with a Fenwick tree."""
    total = 0
    for c in range(len(order) - 1):
        nxt = {v: i for i, v in enumerate(order[c + 1])}
        ends = [nxt[w] for v in order[c] for w in sorted(succs[v], key=lambda w: nxt[w])]
        tree = [0] * (len(order[c + 1]) + 1)
        for seen, e in enumerate(ends):
            # segments already seen that end below e
            i, below = e + 1, 0
            while i > 0:
                below += tree[i]
                i -= i & -i
            total += seen - below
            i = e + 1
            while i < len(tree):
                tree[i] += 1
                i += i & -i
    return total


def _place(want: Sequence[float], extent: Sequence[float], lo: float, hi: float) -> list[float]:
    """Centres as near ``want`` as the order, the spacing (``extent`` each side) and ``[lo, hi]`` allow:
    the mean of a push-down and a push-up pass, both of which satisfy every constraint."""
    k = len(want)
    low = [lo + extent[0]]
    for i in range(1, k):
        low.append(low[-1] + extent[i - 1] + extent[i])
    high = [hi - extent[-1]]
    for i in range(k - 2, -1, -1):
        high.append(high[-1] - extent[i + 1] - extent[i])
    high.reverse()
    clamped = [min(max(w, a), b) for w, a, b in zip(want, low, high, strict=True)]
    down = list(clamped)
    for i in range(1, k):
        down[i] = max(down[i], down[i - 1] + extent[i - 1] + extent[i])
    up = list(clamped)
    for i in range(k - 2, -1, -1):
        up[i] = min(up[i], up[i + 1] - extent[i + 1] - extent[i])
    return [(a + b) / 2 for a, b in zip(down, up, strict=True)]
