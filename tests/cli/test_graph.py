"""`lazystream graph --from FILE`: the dependency graph of what `lazystream render` wrote."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from lazystream.cli import main
from lazystream.domain.render import RenderOptions, render
from tests.domain.test_fences import NOW, TUTORIAL_LINES, tutorial_cluster


def test_graph_of_a_render_output(tmp_path: Path) -> None:
    items = render(
        tutorial_cluster().objects(), [x.encode() for x in TUTORIAL_LINES], RenderOptions(), NOW
    ).items
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(items))
    dot = CliRunner().invoke(main, ["graph", "--from", str(rendered)])
    assert dot.exit_code == 0, dot.output
    # the fence and the host of one service are one node
    assert '"default/productpage" -> "default/details";' in dot.output
    assert '"default/productpage" -> "default/reviews";' in dot.output
    assert '  subgraph "cluster_default" {' in dot.output
    assert '-> "details.default.svc.cluster.local"' not in dot.output
    mermaid = CliRunner().invoke(main, ["graph", "--from", str(rendered), "-o", "mermaid", "-n", "default"])
    assert mermaid.output.startswith('flowchart LR\n  subgraph ns0["default"]\n')
    svg = CliRunner().invoke(main, ["graph", "--from", str(rendered), "-o", "svg"]).output
    assert svg.startswith("<svg")
    assert "legend" in svg
    empty = CliRunner().invoke(main, ["graph", "--from", str(rendered), "-n", "elsewhere"])
    assert (
        empty.output == "digraph lazystream {\n  rankdir=LR;\n  node [fontname=Helvetica, fontsize=10];\n}\n"
    )
