"""The ``lazystream`` command: one entry point wiring the configuration, the stream app and Kubernetes I/O.

Commands are grouped by what they work on: :mod:`~lazystream.cli.worker` (the long-running processes),
:mod:`~lazystream.cli.config` (offline: configuration, rendering), :mod:`~lazystream.cli.install` (CRDs,
uninstall, completion), :mod:`~lazystream.cli.admin` (a running worker's admin API) and
:mod:`~lazystream.cli.ops` (Kafka topics, tail, replay, graph). Each registers on
:data:`lazystream.cli.common.main`; importing them here is what puts them on the command.
"""

from __future__ import annotations

import sys

from lazystream.cli import admin, config, install, ops, worker
from lazystream.cli.common import main
from lazystream.config import LogSettings
from lazystream.runtime import logs

__all__ = ["admin", "config", "install", "main", "ops", "run", "worker"]


def run() -> None:
    """Console entry point with logging set up for the CLI commands."""
    logs.configure(LogSettings(), stream=sys.stderr)  # until a command has read global.log
    main(prog_name="lazystream")
