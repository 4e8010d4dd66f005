"""The offline commands: ``config show`` (the effective configuration) and ``render`` (the objects
lazystream would write for an access log and a cluster dump)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import yaml

from lazystream.cli.common import config_option, load, main, print_table
from lazystream.config import ConfigError


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_option
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True, help="Format."
)
@click.option(
    "--origin",
    is_flag=True,
    help="A table instead: each setting, its value and where it came from (file:line, environment variable, "
    "option or default).",
)
def config_show(config_file: Path | None, output: str, origin: bool) -> None:
    """Print the effective configuration: every setting, after the file and the environment.

    \b
    Examples:
      lazystream config show --config lazyload.yaml
      lazystream config show --origin | grep -v default     # what is set, and where
      LAZYSTREAM_WEB_PORT=7000 lazystream config show -o json
    """
    if not origin:
        config = load(config_file)
        if output == "json":
            click.echo(json.dumps(config.to_dict(), indent=2, default=str))
        else:
            click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), nl=False)
        return
    from lazystream.config import load_config_with_origins

    try:
        config, origins = load_config_with_origins(config_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    values = config.to_dict()
    rows = [(key, _shown(_at(values, key)), origins[key]) for key in sorted(origins)]
    if output == "json":
        click.echo(
            json.dumps([{"key": k, "value": _at(values, k), "from": o} for k, _, o in rows], default=str)
        )
        return
    print_table(["SETTING", "VALUE", "FROM"], rows)


def _at(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_time(value: str | None) -> float:
    if value is None:
        return time.time()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither Unix seconds nor ISO 8601", param_hint="--now"
        ) from None


@main.command()
@click.option(
    "--access-log",
    "access_log",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Access-log records, one per line, in any format lazystream reads.",
)
@click.option(
    "--cluster",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Kubernetes objects: a multi-document YAML file or a directory of them (List kinds unwrapped).",
)
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Output format.",
)
@click.option("--now", help="Evaluate deadlines at this time (Unix seconds or ISO 8601; default: now).")
def render(access_log: Path, cluster: Path, config_file: Path | None, output: str, now: str | None) -> None:
    """Print what lazystream would write for a cluster and its access logs, without a cluster or Kafka.

    Every resulting ServiceFence (with its status), Sidecar and EnvoyFilter, ordered by kind, namespace and
    name; the fences are those in --cluster plus those autoFence would create. It runs the worker's code.
    A count of records by outcome goes to standard error.
    """
    from lazystream.config.options import render_options
    from lazystream.domain.cluster import ClusterObjectError
    from lazystream.domain.render import render as render_objects
    from lazystream.inputs import InputError, numbered_access_log, read_cluster

    config = load(config_file)
    try:
        found = read_cluster(cluster)
        lines = list(numbered_access_log(access_log))
        records = [record for _, record in lines]
        result = render_objects(found.objects, records, render_options(config), _parse_time(now))
    except (InputError, ClusterObjectError) as exc:
        raise click.ClickException(str(exc)) from exc
    for warning in found.warnings():
        click.echo(f"warning: {warning}", err=True)
    dead = [f"line {lines[i][0]}: {reason}" for i, reason in result.dead_letters]
    if records and len(result.dead_letters) == len(records):
        raise click.ClickException(
            f"{access_log}: none of its {len(records)} records is an access log record lazystream reads "
            f"({'; '.join(dead[:3])})"
        )
    if output == "json":
        click.echo(json.dumps({"items": result.items}, indent=2))
    else:
        click.echo(yaml.safe_dump_all(result.items, sort_keys=False, default_flow_style=False), nl=False)
    summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(result.outcomes.items()))
    click.echo(f"records: {summary or 'none'}", err=True)
    if dead:
        more = sum(n for o, n in result.outcomes.items() if o.startswith("dead_letter")) - len(dead[:10])
        click.echo(f"dead letters: {', '.join(dead[:10])}{f' and {more} more' if more > 0 else ''}", err=True)
