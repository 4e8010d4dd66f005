"""What every command shares: the ``main`` group, the ``--config`` and ``--kubeconfig`` options,
loading the configuration, and printing tables.

Command modules import from here and register on :data:`main`; nothing here imports a command module, so
the package has no import circle.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from lazystream import __version__
from lazystream.config import CONFIG_ENV, Config, ConfigError, load_config
from lazystream.runtime import logs

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
