"""The ``lazystream`` command: one entry point wiring the configuration, the stream app and Kubernetes I/O."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from lazystream import __version__, logs
from lazystream.config import CONFIG_ENV, Config, ConfigError, LogSettings, load_config

F = TypeVar("F", bound=Callable[..., Any])


def kubeconfig_option(func: F) -> F:
    return click.option(
        "--kubeconfig",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="KUBECONFIG",
        help="Kubeconfig file (default: in-cluster, then $KUBECONFIG / ~/.kube/config).",
    )(func)


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar=CONFIG_ENV,
        help=f"YAML configuration: a SlimeBoot or a lazyload module body [env: {CONFIG_ENV}].",
    )(func)


def load(config_file: Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The configuration from the file, the environment and options; a bad value exits naming its key.

    Warnings about unknown or deprecated keys are printed to standard error.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = load_config(config_file, overrides=overrides)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        finally:
            for warning in caught:
                click.echo(f"warning: {warning.message}", err=True)
    logs.configure(config.global_.log, stream=sys.stderr)  # global.log: level, rotation, format
    for chatty in ("aiokafka", "kubernetes"):  # their INFO lines are noise around a command's output
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    return config


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print ``rows`` as an aligned plain-text table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


LOG_LEVELS = [name for name in logs.SLIME_LEVELS if name]
"""``--loglevel`` takes Slime's (logrus's) level names, as ``global.log.logLevel`` does."""


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="lazystream")
def main() -> None:
    """lazystream: lazy loading for Istio meshes, as a Kafka stream processor.

    Learns which services each workload calls from access logs on Kafka and keeps each workload's
    ServiceFence and Istio Sidecar in step. The configuration comes from a YAML file (--config: a SlimeBoot
    or a lazyload module body), LAZYSTREAM_<SECTION>_<FIELD> environment variables and options, each
    overriding the one before; `lazystream config show` prints the result.

    \b
    Examples:
      lazystream worker --config lazyload.yaml
      lazystream render --access-log access.log --cluster cluster/ -o yaml
      lazystream explain shop/cart              # asks the worker that holds the fence
      lazystream tail access --since 5m --limit 20
      lazystream topics describe
      eval "$(lazystream completion bash)"      # shell completion (bash, zsh, fish)
    """


@main.command()
@config_option
@click.option(
    "--kafka-bootstrap",
    help="Kafka brokers, host:port[,host:port] (kafka.bootstrap) [env: LAZYSTREAM_KAFKA_BOOTSTRAP].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="This worker's RocksDB directory (tables.dataDir) [env: LAZYSTREAM_TABLES_DATA_DIR].",
)
@click.option(
    "--web-port", type=int, help="Port of the worker's HTTP endpoint (web.port) [env: LAZYSTREAM_WEB_PORT]."
)
@click.option(
    "--loglevel",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Log level, in Slime's names (default: global.log.logLevel, else info). Logs go to standard "
    "output, or with global.log.logRotate to a rotating file (global.log.logRotateConfig).",
)
def worker(
    config_file: Path | None,
    kafka_bootstrap: str | None,
    data_dir: Path | None,
    web_port: int | None,
    loglevel: str | None,
) -> None:
    """Run a stream worker until interrupted (SIGINT / SIGTERM).

    The worker joins the consumer group kafka.appId (LAZYSTREAM_KAFKA_APP_ID), learns dependencies from the
    access topic into its RocksDB table (via the edges topic, keyed by fence), watches the cluster, and
    keeps each fence's status and Sidecar in the API server in step. It logs its counters every 5 s.
    """
    from lazystream.kafka_security import KafkaAccessError
    from lazystream.worker import run as run_worker

    config = load(
        config_file, {"kafka.bootstrap": kafka_bootstrap, "tables.dataDir": data_dir, "web.port": web_port}
    )
    try:
        run_worker(config, loglevel)
    except ConfigError as exc:  # a kafka.security file, read when the clients are built
        raise click.UsageError(str(exc)) from exc
    except KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("global-sidecar")
@config_option
@kubeconfig_option
@click.option("--port", type=int, help="The proxy's own port (globalSidecar.port, default 80).")
@click.option("--probe-port", type=int, help="Health port (globalSidecar.probePort, default 18181).")
@click.option(
    "--ports-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The ConfigMap-mounted wormhole ports file, YAML `wormholePorts: [...]` (globalSidecar.portsFile).",
)
@click.option(
    "--records",
    type=click.Choice(["stdout", "forward", "none"]),
    help="Where per-request records go (globalSidecar.records, default stdout).",
)
@click.option("--forward-host", help="Fluent Bit forward input host (globalSidecar.forwardHost).")
@click.option("--forward-port", type=int, help="Fluent Bit forward input port (globalSidecar.forwardPort).")
@click.option(
    "--service-cache/--no-service-cache",
    default=None,
    help="Complete short names only for Services that exist (watches Services; globalSidecar.serviceCache).",
)
@click.option(
    "--event-loop",
    type=click.Choice(["uvloop", "asyncio"]),
    help="The event loop the proxy runs on: uvloop (libuv's, fast; the default) or asyncio (the standard "
    "library's) (globalSidecar.eventLoop).",
)
@click.option(
    "--loglevel",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Log level (logs go to standard error; records, with --records stdout, to standard output).",
)
def global_sidecar(
    config_file: Path | None,
    kubeconfig: Path | None,
    port: int | None,
    probe_port: int | None,
    ports_file: Path | None,
    records: str | None,
    forward_host: str | None,
    forward_port: int | None,
    service_cache: bool | None,
    event_loop: str | None,
    loglevel: str,
) -> None:
    """Run the global-sidecar: the proxy that carries calls to services a workload's Sidecar lacks.

    Workloads' sidecars send such calls here (the fallback EnvoyFilter), with the headers Slime-Orig-Dest
    (the address the caller dialled) and Slime-Source-Ns (the caller's namespace). The proxy completes a
    short Host in that namespace, dials the original destination (or the Host, when the header is absent)
    over pooled keep-alive connections, and relays the response; a failing upstream is answered 502, one
    that runs out of time 504, a malformed Slime-Orig-Dest 400. Requests are parsed strictly before any
    byte goes upstream: a malformed or ambiguous one is refused (400, 408, 413, 417, 431, 501 or 505) and
    its connection closed; the limits and timeouts are globalSidecar settings. It listens on its port and
    on every wormhole port of the ports file (reloaded on change). Each request yields one JSON record
    (peer address, X-Forwarded-For, Slime-Source-Ns, client certificate principal, authority, original
    destination, status, duration) on standard output or to Fluent Bit's forward input, from where
    lazystream's worker learns the caller's dependency. It runs on uvloop's event loop unless told otherwise
    (--event-loop asyncio). Settings: the globalSidecar section, LAZYSTREAM_GLOBAL_SIDECAR_<FIELD>, these
    options.
    """
    from lazystream.globalsidecar.app import run as run_global_sidecar

    config = load(
        config_file,
        {
            "globalSidecar.port": port,
            "globalSidecar.probePort": probe_port,
            "globalSidecar.portsFile": ports_file,
            "globalSidecar.records": records,
            "globalSidecar.forwardHost": forward_host,
            "globalSidecar.forwardPort": forward_port,
            "globalSidecar.serviceCache": service_cache,
            "globalSidecar.eventLoop": event_loop,
            "kube.kubeconfig": kubeconfig,
        },
    )
    logging.getLogger().setLevel(logs.level_of(loglevel))
    try:
        run_global_sidecar(config.global_sidecar, config.kube, config.fence.cluster_domain)
    except PermissionError as exc:
        raise click.ClickException(str(exc)) from exc


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


@main.group()
def crds() -> None:
    """Install the CustomResourceDefinitions lazystream needs (its ServiceFence; Istio's come with Istio)."""


@crds.command("apply")
@kubeconfig_option
@click.option(
    "--from",
    "--dir",
    "sources",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A CRD manifest file, or a directory of them (repeatable; default: the deploy/crds directory of "
    "this installation, lazystream's ServiceFence).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Also replace CRDs that lazystream does not own (e.g. Istio's, or Slime's ServiceFence). Without "
    "it they are left as they are and listed as such.",
)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for Established."
)
def crds_apply(kubeconfig: Path | None, sources: tuple[Path, ...], overwrite: bool, timeout: float) -> None:
    """Create the CRDs that are missing, update lazystream's own, and wait until each is Established.

    A CRD already installed by someone else (Istio's installer, Slime's chart) is never changed unless
    --overwrite is given: another schema would change what the API server accepts for every user of it.

    \b
    Examples:
      lazystream crds apply
      lazystream crds apply --from istio-crds.yaml --from deploy/crds
    """
    from lazystream.kube import crds as crd_io
    from lazystream.kube.client import api_client

    try:
        manifests = crd_io.load_crds(*(sources or (crd_io.default_crd_dir(),)))
        with api_client(kubeconfig) as api:
            statuses = crd_io.apply_crds(api, manifests, overwrite=overwrite, timeout=timeout)
    except crd_io.CRDError as exc:
        raise click.ClickException(str(exc)) from exc
    print_table(
        ["CRD", "KIND", "VERSIONS", "ACTION", "ESTABLISHED"],
        [
            (
                s.name,
                s.kind,
                ",".join(s.versions),
                _crd_action(s),
                "yes" if s.established else "no",
            )
            for s in statuses
        ],
    )


@main.command()
@kubeconfig_option
@config_option
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Only this namespace (repeatable). Default: every namespace.",
)
@click.option("--yes", is_flag=True, help="Do it without asking.")
def uninstall(
    kubeconfig: Path | None, config_file: Path | None, namespaces: tuple[str, ...], yes: bool
) -> None:
    """Switch lazy loading off: remove every object lazystream wrote, in a safe order.

    Stop the workers first (e.g. scale the StatefulSet to 0), or they write the objects again. The
    objects are found from the API server, by lazystream's field manager (sink.fieldManager) in their
    managedFields, so nothing depends on a worker's memory. Order: Sidecars first, so
    workloads get the full mesh config back; then the ServiceFences lazystream created (created-by label);
    then the fallback EnvoyFilters; last the global-sidecar Services and ConfigMaps only lazystream wrote.
    Manual ServiceFences stay; lazystream's status fields are removed from them.
    """
    from lazystream.kube.cleanup import remove_everything
    from lazystream.kube.client import api_client

    config = load(config_file)
    where = ", ".join(namespaces) if namespaces else "every namespace"
    if not yes:
        click.confirm(f"Remove every object lazystream wrote in {where}?", abort=True, err=True)
    rows: list[tuple[str, str]] = []

    def step(what: str, key: object) -> None:
        rows.append((what, str(key)))
        click.echo(f"{what}: {key}", err=True)

    with api_client(kubeconfig or config.kube.kubeconfig) as api:
        done = remove_everything(
            api,
            field_manager=config.sink.field_manager,
            namespaces=namespaces or None,
            on_step=step,
        )
    print_table(["REMOVED", "OBJECT"], rows or [("nothing", "-")])
    click.echo(
        f"{len(done.sidecars)} Sidecars, {len(done.fences)} ServiceFences, {len(done.envoy_filters)} "
        f"EnvoyFilters, {len(done.global_sidecar)} global-sidecar Services/ConfigMaps removed; "
        f"status given back on {len(done.statuses)} manual ServiceFences"
    )


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
    from lazystream.domain.cluster import ClusterObjectError
    from lazystream.domain.render import render as render_objects
    from lazystream.inputs import InputError, numbered_access_log, read_cluster
    from lazystream.options import render_options

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


WORKER_SELECTOR = "app=lazystream"
"""The labels of the worker pods (deploy/'s StatefulSet)."""


def _ask_workers(
    path: str,
    *,
    admin_url: str | None,
    config: Config,
    method: str = "GET",
    token: str | None = None,
    owner: bool = False,
) -> tuple[int, dict[str, Any], str]:
    """Ask a worker's admin API: at ``--admin-url`` when given, else through the API server's proxy to the
    worker pods (labels :data:`WORKER_SELECTOR` in the Lease's namespace), else at the configured
    ``web.host:web.port``. With ``owner``, the answer of the worker that holds the fence's learned state
    (``learnedSource: table``) is preferred. Returns the status, the JSON body and whom it came from."""
    if admin_url:
        base = _admin_url(admin_url, config)
        return (*_admin_request(f"{base}/{path}", method, token), base)
    from kubernetes.config import ConfigException

    from lazystream.admin import TOKEN_HEADER
    from lazystream.kube.client import api_client
    from lazystream.kube.workers import NoWorkers, find_workers, proxy

    headers = {TOKEN_HEADER: token} if token else {}

    try:
        with api_client(config.kube.kubeconfig) as api:
            pods = find_workers(api, config.lease_namespace, WORKER_SELECTOR, config.web.port)
            answers: list[tuple[int, dict[str, Any], str]] = []
            for pod in pods:
                status, body = proxy(api, pod, path, method=method, headers=headers)
                answers.append((status, body, f"pod {pod.namespace}/{pod.name}"))
                holds = not owner or status != 200 or body.get("learnedSource") == "table"
                if status < 500 and holds:  # an answer that asking another worker would not improve
                    return answers[-1]
            answered = [a for a in answers if a[0] < 500]
            return (answered or answers)[0]
    except (ConfigException, NoWorkers, OSError):
        base = _admin_url(None, config)  # no cluster or no worker pods: a worker on this machine
        return (*_admin_request(f"{base}/{path}", method, token), base)


def _admin_url(admin_url: str | None, config: Config) -> str:
    if admin_url:
        return admin_url.rstrip("/")
    web = config.web
    host = "127.0.0.1" if web.host in ("0.0.0.0", "::", "") else web.host  # noqa: S104 - a comparison
    return f"http://{host}:{web.port}"


def _fence_ref(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not (sep and namespace and name) or "/" in name:
        raise click.BadParameter(f"{value!r} is not NAMESPACE/NAME", param_hint="FENCE")
    return namespace, name


def _admin_token(token: str | None, config: Config) -> str | None:
    """``--token``, else the token of the kubeconfig's current user (or the pod's ServiceAccount)."""
    if token:
        return token
    from lazystream.kube.client import bearer_token

    return bearer_token(config.kube.kubeconfig)


def _admin_request(url: str, method: str = "GET", token: str | None = None) -> tuple[int, dict[str, Any]]:
    """One request to the admin API; its status and JSON body (HTTP errors carry JSON too)."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise click.UsageError(f"--admin-url must be an http(s) URL, got {url!r}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - checked above
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {"error": exc.reason}
        return int(exc.code), body
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        reason = getattr(reason, "strerror", None) or str(reason)
        raise click.ClickException(
            f"cannot reach the admin API at {url}: {reason} (is a worker running there? give --admin-url or "
            "LAZYSTREAM_ADMIN_URL, or a kubeconfig to find the worker pods)"
        ) from exc


def admin_url_option(func: F) -> F:
    return click.option(
        "--admin-url",
        envvar="LAZYSTREAM_ADMIN_URL",
        help="Base URL of a worker's admin API [env: LAZYSTREAM_ADMIN_URL; default: the worker pods "
        f"({WORKER_SELECTOR} in the Lease's namespace) through the API server's proxy, else web.host and "
        "web.port of the configuration].",
    )(func)


def token_option(func: F) -> F:
    return click.option(
        "--token",
        envvar="LAZYSTREAM_ADMIN_TOKEN",
        help="Bearer token for the admin API's writes; the worker asks the API server whether its user may "
        "update ServiceFences there [env: LAZYSTREAM_ADMIN_TOKEN; default: the kubeconfig's token, or the "
        "pod's ServiceAccount token].",
    )(func)


def _why_text(why: Sequence[Mapping[str, str]], wide: bool) -> str:
    """The reasons of a host; with ``wide`` their details too (a table of them runs to 200 columns)."""
    if not wide:
        return ", ".join(dict.fromkeys(str(w.get("reason")) for w in why))
    return "; ".join(
        f"{w.get('reason')} ({w.get('detail')})" if w.get("detail") else str(w.get("reason")) for w in why
    )


def _seen(value: str | None) -> str:
    """An ISO 8601 UTC time as ``2026-12-07 10:00:00 UTC`` (to the second: a table is read, not parsed)."""
    return f"{value.replace('T', ' ').removesuffix('Z')[:19]} UTC" if value else "-"


@main.command()
@click.argument("fence", metavar="NAMESPACE/NAME")
@admin_url_option
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option("--wide", is_flag=True, help="The table with each reason's detail (which rule, which object).")
def explain(fence: str, admin_url: str | None, config_file: Path | None, output: str, wide: bool) -> None:
    """Explain a fence: each host of its Sidecar and why it is there, asked of a running worker.

    Reasons: static (spec.host), namespace (spec.host ns/*), namespaceSelector, labelSelector, learned (from
    access logs or metrics, with first and last observation and count when the worker holds the fence's
    learned state), alias (general.domainAliases), virtualService (a route destination of a host of the
    fence), stableHost, mesh (in every Sidecar) and expiring (no longer generated, EXPIREWAIT). Recently
    rejected hosts (not admitted, invalid) follow, with their reason.
    """
    namespace, name = _fence_ref(fence)
    status, body, via = _ask_workers(
        f"fences/{namespace}/{name}/explain", admin_url=admin_url, config=load(config_file), owner=True
    )
    if status != 200:
        raise click.ClickException(f"{body.get('error') or f'HTTP {status}'} (asked {via})")
    if output == "json":
        click.echo(json.dumps(body, indent=2))
        return
    if output == "yaml":
        click.echo(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), nl=False)
        return
    state = "enabled" if body.get("enabled") else "disabled"
    made = "auto-created" if body.get("autoCreated") else "manual"
    sources = {"table": "learned state with times", "status": "learned hosts from status.metricStatus"}
    source = sources.get(str(body.get("learnedSource")), "")
    click.echo(f"ServiceFence {body.get('fence')} ({state}, {made}; {source}; from {via})")
    if body.get("noSidecar"):
        click.echo(f"No Sidecar: {body['noSidecar']}")
    print_table(
        ["HOST", "STATUS", "SIDECAR", "WHY", "FIRST SEEN", "LAST SEEN", "COUNT"],
        [
            (
                h["host"],
                h["status"],
                "yes" if h.get("inSidecar") else "no",
                _why_text(h.get("why") or [], wide),
                _seen(h.get("firstSeen")),
                _seen(h.get("lastSeen")),
                h.get("count", "-"),
            )
            for h in body.get("hosts") or []
        ],
    )
    rejected = body.get("rejected") or []
    click.echo("")
    if rejected:
        click.echo("Recently rejected hosts:")
        print_table(["HOST", "REASON"], [(r["host"], r["reason"]) for r in rejected])
    else:
        click.echo("No recently rejected hosts.")
    left_out = body.get("leftOut") or []
    if left_out:
        click.echo("")
        click.echo("Left out of the Sidecar (Istio's validation would refuse the whole Sidecar):")
        print_table(["HOST", "REASON"], [(r["host"], r["reason"]) for r in left_out])


@main.command()
@click.argument("target", metavar="NAMESPACE[/NAME]")
@admin_url_option
@token_option
@config_option
def reset(target: str, admin_url: str | None, token: str | None, config_file: Path | None) -> None:
    """Forget what a fence (NAMESPACE/NAME) or every fence of a namespace (NAMESPACE) has learned.

    Slime's svfReset: a reset message goes onto the edges topic for each fence, through a running worker's
    admin API; the Sidecars shrink to their static hosts once the worker has applied it.
    """
    if "/" in target:
        namespace, name = _fence_ref(target)
        path = f"fences/{namespace}/{name}/reset"
    else:
        path = f"namespaces/{target}/reset"
    config = load(config_file)  # once: its warnings are printed once
    status, body, via = _ask_workers(
        path, admin_url=admin_url, config=config, method="POST", token=_admin_token(token, config)
    )
    if status != 202:
        raise click.ClickException(f"{body.get('error') or f'HTTP {status}'} (asked {via})")
    fences = body.get("reset") or []
    click.echo(f"reset {len(fences)} fence(s): {', '.join(fences) or 'none'}")


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, choices).

    \b
    Examples:
      eval "$(lazystream completion bash)"             # in ~/.bashrc
      lazystream completion fish > ~/.config/fish/completions/lazystream.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # click knows the three shells offered
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(main, {}, "lazystream", "_LAZYSTREAM_COMPLETE").source())


def _crd_action(status: Any) -> str:
    """What ``crds apply`` did to one CRD, naming the owner of one it left alone or overwrote."""
    if status.action == "left alone":
        return f"left alone (owned by {status.owner}; --overwrite replaces it)"
    if status.action == "updated" and status.owner not in ("", "lazystream"):
        return f"overwritten (was owned by {status.owner})"
    return str(status.action)


def run() -> None:
    """Console entry point with logging set up for the CLI commands."""
    logs.configure(LogSettings(), stream=sys.stderr)  # until a command has read global.log
    main(prog_name="lazystream")


from lazystream.cli import ops  # noqa: E402, F401 - registers tail, replay, topics and graph on main
