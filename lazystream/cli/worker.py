"""The long-running commands: ``worker`` (the stream processor) and ``global-sidecar`` (the proxy)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from lazystream.cli.common import config_option, kubeconfig_option, load, main
from lazystream.config import ConfigError
from lazystream.runtime import logs

LOG_LEVELS = [name for name in logs.SLIME_LEVELS if name]
"""``--loglevel`` takes Slime's (logrus's) level names, as ``global.log.logLevel`` does."""


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
    from lazystream.kafka.security import KafkaAccessError
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
    from lazystream.kube.services import start_service_cache

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
        run_global_sidecar(
            config.global_sidecar, config.kube, config.fence.cluster_domain, services=start_service_cache
        )
    except PermissionError as exc:
        raise click.ClickException(str(exc)) from exc
