"""The operations commands: ``tail``, ``replay``, ``topics create|describe|scale`` and ``graph``.

Registered on :data:`lazystream.cli.common.main` (:mod:`lazystream.cli` imports this module). They are
thin: the work is in :mod:`lazystream.ops` (Kafka), :mod:`lazystream.kube.snapshot` (API server reads)
and the domain core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from lazystream.cli.common import config_option, kubeconfig_option, load, main, print_table
from lazystream.config import Config, ConfigError
from lazystream.domain.messages import TopicKind, one_line

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def bootstrap_option(func: F) -> F:
    return click.option(
        "--kafka-bootstrap",
        help="Kafka brokers, host:port[,host:port] (kafka.bootstrap) [env: LAZYSTREAM_KAFKA_BOOTSTRAP].",
    )(func)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; an :class:`~lazystream.kafka.clients.OpsError` becomes a clean command error, and so
    does a ``kafka.security`` file that cannot be used (a configuration error, found when the clients are
    built)."""
    from lazystream.kafka.clients import OpsError

    try:
        return asyncio.run(coro)
    except OpsError as exc:
        raise click.ClickException(str(exc)) from exc
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _config(config_file: Path | None, kafka_bootstrap: str | None) -> Config:
    return load(config_file, {"kafka.bootstrap": kafka_bootstrap})


def _since(value: str | None) -> float | None:
    from lazystream.ops.timespec import TimeSpecError, parse_since

    if value is None:
        return None
    try:
        return parse_since(value, time.time())
    except TimeSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _kind(config: Config, topic: str) -> TopicKind:
    from lazystream.ops.topics import topic_names

    names = topic_names(config)
    for kind, name in names.items():
        if topic in (kind.value, name):
            return kind
    choices = ", ".join(f"{k.value} ({n})" for k, n in names.items())
    raise click.BadParameter(f"{topic!r} is not one of lazystream's topics: {choices}", param_hint="TOPIC")


# -- tail ------------------------------------------------------------------------------------------------


@main.command()
@click.argument("topic")
@config_option
@bootstrap_option
@click.option(
    "--since", help="Start at this time: a duration back (90s, 15m, 2h, 1d), ISO 8601 or Unix seconds."
)
@click.option("--from-beginning", is_flag=True, help="Start at the first retained record.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records until interrupted.")
@click.option("--key", help="Only records with this key (a fence, namespace/name, on edges and changelog).")
@click.option("--partition", type=click.IntRange(min=0), help="Only this partition.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after printing this many records.")
@click.option(
    "--last",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Without --since or --from-beginning: start this many records before each partition's end.",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output."
)
def tail(
    topic: str,
    config_file: Path | None,
    kafka_bootstrap: str | None,
    since: str | None,
    from_beginning: bool,
    follow: bool,
    key: str | None,
    partition: int | None,
    limit: int | None,
    last: int,
    output: str,
) -> None:
    """Print records of one of lazystream's topics, decoded, one per line.

    TOPIC is access, edges, dead-letter or changelog (the learned-state table's changelog), or the topic's
    configured name. Access records are parsed as the worker parses them; edges show the learned-state
    change; dead letters their reason; the changelog each fence's learned hosts with their counts. Each
    line starts with the record's Kafka timestamp and partition@offset; -o json prints one JSON object per
    line instead. tail reads with no consumer group: it never joins or moves the worker's group.
    """
    from lazystream.ops.tail import Tailed, TailRequest
    from lazystream.ops.tail import tail as run_tail

    if since is not None and from_beginning:
        raise click.UsageError("give --since or --from-beginning, not both")
    config = _config(config_file, kafka_bootstrap)
    kind = _kind(config, topic)
    if key is not None and kind in (TopicKind.ACCESS, TopicKind.DEAD_LETTER):
        raise click.UsageError(
            f"--key selects edges and changelog records by fence; {kind.value} records carry no key",
            ctx=click.get_current_context(),
        )
    request = TailRequest(
        kind=kind,
        since=_since(since),
        from_beginning=from_beginning,
        follow=follow,
        key=key,
        partition=partition,
        limit=limit,
        last=last,
    )

    def emit(record: Tailed) -> None:
        if output == "json":
            click.echo(json.dumps(record.as_json(), ensure_ascii=False))
        else:
            where = f"p{record.partition}@{record.offset}"
            click.echo(f"{_time(record.timestamp)} {where}  {one_line(kind, record.decoded)}")

    with contextlib.suppress(KeyboardInterrupt):  # --follow ends with ^C
        _run(run_tail(config, request, emit))


# -- replay ----------------------------------------------------------------------------------------------


@main.command()
@config_option
@bootstrap_option
@kubeconfig_option
@click.option("--since", help="Re-process records from this time: a duration back, ISO 8601 or Unix seconds.")
@click.option("--from-beginning", is_flag=True, help="Re-process every retained record.")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    type=click.Choice(["access", "edges"]),
    help="Topics whose group offsets move (repeatable; default: access). Edges replay re-applies learned-"
    "state changes; it is only meaningful when the edges topic was not scaled since --since.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Move nothing: show the offsets that would move and, by running the domain core over the access "
    "records against the API server's cluster, the fences that would change.",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=float,
    default=0.0,
    help="After moving, follow the group until the workers (started by you) have re-processed everything, "
    "with a progress bar, at most this many seconds.",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output."
)
def replay(
    config_file: Path | None,
    kafka_bootstrap: str | None,
    kubeconfig: Path | None,
    since: str | None,
    from_beginning: bool,
    topics: tuple[str, ...],
    dry_run: bool,
    wait_seconds: float,
    output: str,
) -> None:
    """Re-process retained records: move the worker group's offsets back to --since or the beginning.

    Use it after an outage or a fix (for example to parsing or resolution) to run records the workers
    already consumed through them again. Every worker must be stopped: the command refuses while the
    consumer groups (kafka.appId, and <appId>-ingest for the access topic) have live members. Start the
    workers afterwards; they resume from the moved offsets. Replaying over current state changes nothing
    (the table and the sink skip no-op writes); replaying into empty state rebuilds what the records imply.
    """
    from lazystream.ops import replay as ops_replay

    if (since is None) == (not from_beginning):
        raise click.UsageError("give exactly one of --since or --from-beginning")
    config = _config(config_file, kafka_bootstrap)
    kinds = [TopicKind(t) for t in topics or ("access",)]
    at = _since(since)
    plan = _run(ops_replay.plan_replay(config, kinds, at, require_idle=not dry_run))
    moves = ops_replay.summarize_moves(plan)
    result: dict[str, Any] = {"groups": plan.groups, "since": at, "records": plan.records, "moves": moves}
    if dry_run:
        result["liveMembers"] = _live_members(config)
        try:
            changes = _preview(config, kubeconfig, plan, output == "text")
        except Exception as exc:  # the offsets part of the dry run stands on its own
            result["changes"], result["clusterError"] = None, f"{type(exc).__name__}: {exc}"
        else:
            result["changes"] = ops_replay.changes_as_dicts(changes)
    else:
        _run(ops_replay.apply_replay(config, plan))
    if output == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        _print_replay(result, dry_run)
    if wait_seconds > 0 and not dry_run and plan.records:
        _follow_replay(config, plan, wait_seconds)


def _live_members(config: Config) -> int:
    from lazystream.kafka.clients import admin_client
    from lazystream.ops import kafka

    async def count() -> int:
        async with admin_client(config) as admin:
            groups = (config.kafka.app_id, config.kafka.ingest_group)
            return sum([len((await kafka.describe_group(admin, group)).members) for group in groups])

    return _run(count())


def _preview(config: Config, kubeconfig: Path | None, plan: Any, show_progress: bool) -> list[Any]:
    from lazystream.config.options import in_scope, render_options
    from lazystream.domain.replay import preview
    from lazystream.kube.client import api_client
    from lazystream.kube.informers import ALL_KINDS
    from lazystream.kube.snapshot import list_objects
    from lazystream.ops.replay import read_records

    records = _run(read_records(config, plan, config.topics.access))
    with api_client(kubeconfig or config.kube.kubeconfig) as api:
        objects = list_objects(api, [k for k in ALL_KINDS if k != "Sidecar"])
    options = render_options(config)
    if show_progress and records:
        changes = []
        with click.progressbar(length=len(records), label="replaying (dry run)", file=sys.stderr) as bar:
            changes = preview(objects, records, options, time.time(), lambda k: in_scope(config, k))
            bar.update(len(records))
        return changes
    return preview(objects, records, options, time.time(), lambda k: in_scope(config, k))


def _print_replay(result: dict[str, Any], dry_run: bool) -> None:
    print_table(
        ["TOPIC", "PARTITION", "COMMITTED", "TARGET", "END", "RECORDS"],
        [
            (
                m["topic"],
                m["partition"],
                "-" if m["committed"] is None else m["committed"],
                m["target"],
                m["end"],
                m["records"],
            )
            for m in result["moves"]
        ],
    )
    verb = "would re-process" if dry_run else "will re-process"
    click.echo(f"groups {', '.join(result['groups'])}: workers {verb} {result['records']} records")
    if not dry_run:
        click.echo("offsets moved; start the workers to replay")
        return
    if result.get("liveMembers"):
        click.echo(f"note: the group has {result['liveMembers']} live member(s); a real replay would refuse")
    if result.get("clusterError"):
        click.echo(f"fence changes not computed: cannot read the API server ({result['clusterError']})")
        return
    changes = result.get("changes") or []
    if not changes:
        click.echo("no fence would change")
        return
    print_table(
        ["FENCE", "NEW HOSTS", "STATUS CHANGES"],
        [
            (c["fence"], ",".join(c["newHosts"]) or "-", "yes" if c["statusChanges"] else "no")
            for c in changes
        ],
    )


def _follow_replay(config: Config, plan: Any, seconds: float) -> None:
    from lazystream.ops.replay import wait_caught_up

    with click.progressbar(length=plan.records, label="replaying", file=sys.stderr) as bar:
        shown = 0

        def progress(done: int, total: int) -> None:
            nonlocal shown
            bar.update(done - shown)
            shown = done

        finished = _run(wait_caught_up(config, plan, progress, seconds))
    if not finished:
        raise click.ClickException(f"the workers had not re-processed every record after {seconds:.0f} s")


# -- topics ----------------------------------------------------------------------------------------------


@main.group()
def topics() -> None:
    """lazystream's Kafka topics: create them, describe offsets and lag, scale partitions."""


@topics.command("create")
@config_option
@bootstrap_option
def topics_create(config_file: Path | None, kafka_bootstrap: str | None) -> None:
    """Create the access, edges, dead-letter and changelog topics with topics.partitions and
    topics.replication (the changelog compacted, as faust declares it). Existing topics are reported and left
    as they are."""
    from lazystream.ops.topics import create_topics

    config = _config(config_file, kafka_bootstrap)
    rows = _run(create_topics(config))
    print_table(
        ["TOPIC", "KIND", "PARTITIONS", "REPLICAS", "ACTION"],
        [(r.name, r.kind.value, r.partitions, r.replication, r.action) for r in rows],
    )


@topics.command("describe")
@config_option
@bootstrap_option
@click.option(
    "--scan",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Records per partition read (from the end) to count keys by namespace; 0 skips it.",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output."
)
def topics_describe(config_file: Path | None, kafka_bootstrap: str | None, scan: int, output: str) -> None:
    """Partitions, offsets and the workers' lag per topic; the consumer groups' members and their
    partitions (faust's group kafka.appId, which reads edges, and <appId>-ingest, which reads access);
    how the fence-keyed topics' keys spread by namespace."""
    from lazystream.ops.topics import describe

    config = _config(config_file, kafka_bootstrap)
    desc = _run(describe(config, scan))
    data = {
        "groups": [
            {
                "name": group.group,
                "state": group.state,
                "members": [
                    {"clientId": m.client_id, "host": m.host, "assignment": m.assignment}
                    for m in group.members
                ],
            }
            for group in desc.groups
        ],
        "topics": [
            {
                "name": t.name,
                "kind": t.kind.value,
                "exists": t.exists,
                "replication": t.replication,
                "lag": t.lag,
                "partitions": [
                    {
                        "partition": p.partition,
                        "leader": p.leader,
                        "beginning": p.beginning,
                        "end": p.end,
                        "committed": p.committed,
                        "lag": p.lag,
                    }
                    for p in t.partitions
                ],
            }
            for t in desc.topics
        ],
        "keys": {
            name: [
                {
                    "namespace": k.namespace,
                    "fences": k.fences,
                    "records": k.records,
                    "partitions": list(k.partitions),
                }
                for k in rows
            ]
            for name, rows in desc.keys.items()
        },
    }
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    rows: list[tuple[object, ...]] = []
    for t in desc.topics:
        if not t.exists:
            rows.append((t.name, t.kind.value, "-", "-", "-", "-", "-", "missing"))
        for p in t.partitions:
            rows.append(
                (
                    t.name,
                    t.kind.value,
                    p.partition,
                    p.leader,
                    p.beginning,
                    p.end,
                    "-" if p.committed is None else p.committed,
                    "-" if p.lag is None else p.lag,
                )
            )
    print_table(["TOPIC", "KIND", "PARTITION", "LEADER", "BEGIN", "END", "COMMITTED", "LAG"], rows)
    click.echo()
    for group in desc.groups:
        click.echo(f"group {group.group}: {group.state}, {len(group.members)} member(s)")
        for m in group.members:
            owned = "; ".join(
                f"{topic} {','.join(map(str, ps))}" for topic, ps in sorted(m.assignment.items())
            )
            click.echo(f"  {m.client_id}@{m.host}: {owned or '(no partitions)'}")
    for name, keys in desc.keys.items():
        click.echo()
        click.echo(f"keys of {name} by namespace (last {scan} records per partition):")
        print_table(
            ["NAMESPACE", "FENCES", "RECORDS", "PARTITIONS"],
            [(k.namespace, k.fences, k.records, ",".join(map(str, k.partitions))) for k in keys],
        )


@topics.command("scale")
@config_option
@bootstrap_option
@click.option("--partitions", type=click.IntRange(min=2), required=True, help="The new partition count.")
@click.option("--dry-run", is_flag=True, help="Read and report, change nothing.")
def topics_scale(
    config_file: Path | None, kafka_bootstrap: str | None, partitions: int, dry_run: bool
) -> None:
    """Grow the topics to --partitions and carry every fence's learned state to a new table version.

    faust cannot repartition a table online, so this is a migration, run with every worker stopped (it
    refuses otherwise): it reads each fence's learned state (the changelog plus edges not yet consumed),
    grows the access, edges and dead-letter topics, creates the changelog of table version
    tables.version + 1 with the new partition count, and writes each fence's state onto the edges topic
    again, where it lands on the fence's new partition. Then start the workers with tables.version and
    topics.partitions set to the printed values. See "Scaling partitions" in the README.
    """
    from lazystream.ops.topics import scale

    config = _config(config_file, kafka_bootstrap)

    def progress(step: str) -> None:
        click.echo(f"- {step}", err=True)

    plan = _run(scale(config, partitions, dry_run=dry_run, progress=progress))
    hosts = sum(len(s) for s in plan.fences.values())
    click.echo(
        f"{'would carry' if dry_run else 'carried'} {len(plan.fences)} fences ({hosts} learned hosts, "
        f"{plan.pending_edges} unconsumed edges folded in) from {max(plan.partitions_before.values())} to "
        f"{plan.partitions_after} partitions, table version {plan.version_before} -> {plan.version_after} "
        f"({plan.changelog_after})"
    )
    if not dry_run:
        click.echo(
            f"now start the workers with tables.version: {plan.version_after} and topics.partitions: "
            f"{plan.partitions_after} (LAZYSTREAM_TABLES_VERSION={plan.version_after} "
            f"LAZYSTREAM_TOPICS_PARTITIONS={plan.partitions_after})"
        )


# -- graph -----------------------------------------------------------------------------------------------


@main.command()
@config_option
@kubeconfig_option
@click.option("--namespace", "-n", help="Only the fences of this namespace.")
@click.option(
    "--from",
    "from_file",
    type=click.Path(path_type=Path),
    help="Read ServiceFences from YAML (a file or directory, e.g. the output of lazystream render) instead "
    "of the API server.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["dot", "mermaid", "svg"]),
    default="dot",
    show_default=True,
    help="Graphviz DOT, Mermaid flowchart (both with a subgraph per namespace), or a self-contained SVG "
    "picture laid out by lazystream, with a legend.",
)
def graph(
    config_file: Path | None,
    kubeconfig: Path | None,
    namespace: str | None,
    from_file: Path | None,
    output: str,
) -> None:
    """The dependency graph of the ServiceFences (from the API server or a file), calls flowing left to
    right: one node per service (the fence ns/name and its host name.ns.svc.<clusterDomain> are one
    node), grouped in a box per namespace; edges learned (status.metricStatus, solid) or declared in
    spec.host (dashed). Services with a fence, services without one, and external hosts or declared ns/*
    look different; the SVG has a legend."""
    from lazystream.domain.graph import RENDERERS, graph_from_fences

    config = load(config_file)
    if from_file is not None:
        from lazystream.inputs import InputError, load_cluster

        try:
            objects = load_cluster(from_file)
        except InputError as exc:
            raise click.ClickException(str(exc)) from exc
        fences = [o for o in objects if o.get("kind") == "ServiceFence"]
    else:
        from lazystream.kube.client import api_client
        from lazystream.kube.snapshot import list_objects

        with api_client(kubeconfig or config.kube.kubeconfig) as api:
            fences = list_objects(api, ["ServiceFence"], namespace)
    picture = graph_from_fences(fences, namespace, config.fence.cluster_domain)
    click.echo(RENDERERS[output](picture), nl=False)
