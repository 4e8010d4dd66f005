"""lazystream's settings: one typed, documented object, read from the environment.

Every field has a default that works for the local demo and can be overridden with a ``LAZYSTREAM_``
environment variable named after the field (``kafka_bootstrap`` → ``LAZYSTREAM_KAFKA_BOOTSTRAP``).
Invalid values fail at start, naming the variable, rather than surfacing later as a broker error.
The SlimeBoot-compatible ``lazyload`` module keys join this object with the domain core.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "LAZYSTREAM_"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the setting and the environment variable."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Runtime settings of a lazystream worker and of the CLI commands that talk to Kafka or Kubernetes."""

    app_id: str = "lazystream"
    """Faust application id: the consumer group, and the prefix of the changelog topics."""

    kafka_bootstrap: str = "127.0.0.1:19092"
    """Comma-separated ``host:port`` list of Kafka brokers."""

    access_topic: str = "lazystream-access"
    """Topic that Fluent Bit (or the global-sidecar) writes access-log records to."""

    edges_topic: str = "lazystream-edges"
    """Topic of learned-state changes, keyed by fence (the table's only input)."""

    dead_letter_topic: str = "lazystream-dead-letter"
    """Topic receiving records that cannot be parsed, with the reason."""

    topic_partitions: int = 4
    """Partitions of lazystream's topics when it creates them (faust needs the table's changelog to match)."""

    topic_replication: int = 1
    """Replication factor of lazystream's topics when it creates them."""

    data_dir: Path = Path("lazystream-data")
    """Per-worker directory of the RocksDB tables; two workers on one host need two directories."""

    rocksdb_block_cache_bytes: int = 16 * 1024 * 1024
    """RocksDB block cache per table partition (faust's default of 2 GiB per partition is far too much)."""

    web_host: str = "127.0.0.1"
    """Address the worker's HTTP endpoint binds to (``0.0.0.0`` in a container, so probes reach it)."""

    web_port: int = 6066
    """Port of the worker's HTTP endpoint (health and, later, the admin API)."""

    kubeconfig: Path | None = None
    """Kubeconfig to use; None means in-cluster config, then ``$KUBECONFIG``/``~/.kube/config``."""

    def __post_init__(self) -> None:
        for name in ("access_topic", "edges_topic", "dead_letter_topic"):
            value = getattr(self, name)
            if not _TOPIC_NAME.match(value):
                raise SettingsError(f"{_env(name)}: {value!r} is not a valid Kafka topic name")
        for server in self.kafka_bootstrap.split(","):
            if not _HOST_PORT.match(server.strip()):
                raise SettingsError(f"{_env('kafka_bootstrap')}: {server!r} is not host:port")
        for name in ("topic_partitions", "topic_replication", "rocksdb_block_cache_bytes"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env(name)}: must be at least 1, got {getattr(self, name)}")
        if not 0 < self.web_port < 65536:
            raise SettingsError(f"{_env('web_port')}: {self.web_port} is not a TCP port")

    @property
    def broker_url(self) -> str:
        """The bootstrap list in faust's ``kafka://`` URL form."""
        return ";".join(f"kafka://{s.strip()}" for s in self.kafka_bootstrap.split(","))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``LAZYSTREAM_*`` variables; explicit ``overrides`` win over the environment."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(_env(field.name))
            if raw is not None:
                values[field.name] = _coerce(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _env(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    """Convert an environment string to the field's type (annotations are strings here)."""
    kind = str(type_name)
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{_env(name)}: {raw!r} is not an integer") from None
    if kind.startswith("Path"):
        return Path(raw) if raw else None
    return raw
