"""lazystream's configuration: one typed, documented, frozen object, from a YAML file and the environment.

Vocabulary (as in kopf): a *setting* is one field; settings are grouped in *sections* (one dataclass each);
the *configuration* is all sections together, :class:`Config`.

**The file** is either a Slime ``SlimeBoot`` object (``apiVersion: config.netease.com/v1alpha1``), whose
lazyload module (the ``spec.module[]`` entry with ``kind: lazyload`` or ``name: lazyload``) is read, or a
bare module body. Either way the ``general``, ``global`` and ``metric`` sections use Slime's keys (camelCase,
spelled exactly as Slime does) and Slime's defaults, so an existing SlimeBoot works as it is. lazystream's
own sections (``kafka``, ``topics``, ``tables``, ``fence``, ``sink``, ``web``, ``kube``, ``leaderElection``,
``values``) sit next to them: in the module entry of a SlimeBoot, or at the top of a bare body.
``metricSourceType`` and ``globalSidecarMode`` may also be given in ``global.misc``, as the lazyload tutorial
does; ``general`` wins when both are set. In a SlimeBoot, the string settings at the top of ``spec`` (e.g.
``namespace``) are also ``.Values`` of dispatch templates, as in Slime's chart; the ``values`` section adds
to them.

**The environment** sets any setting as ``LAZYSTREAM_<SECTION>_<FIELD>``, every part in upper snake case of
the Python attribute: ``LAZYSTREAM_KAFKA_BOOTSTRAP``, ``LAZYSTREAM_GENERAL_AUTO_FENCE=true``,
``LAZYSTREAM_GLOBAL_LOG_LOG_LEVEL=debug``, ``LAZYSTREAM_WEB_PORT=6067``. Booleans are
``true/false/1/0/yes/no/on/off``; a list of strings is a comma-separated list
(``LAZYSTREAM_GENERAL_WORMHOLE_PORT=9080,9090``) or JSON; maps, lists of objects and whole sections are JSON
text (``LAZYSTREAM_METRIC_PROMETHEUS_HANDLERS='{"dest": {"query": "..."}}'``, ``LAZYSTREAM_VALUES='{...}'``).
An empty value makes an optional setting unset. ``LAZYSTREAM_CONFIG`` names the file when no path is given.

**Precedence**: explicit overrides (:func:`load_config`'s ``overrides``, e.g. command-line options) >
environment > file > defaults. A higher source replaces a whole setting; it never merges into a list or a map
(``global.misc`` always keeps Slime's defaults under whatever is given).

**Checks**: unknown keys, deprecated keys and retired environment variables are warned about
(:class:`ConfigWarning`, naming the full key path). Invalid values raise :class:`ConfigError` at start, naming
the key path (``general.dispatches[1].domainRegex: invalid regular expression: ...``), or the environment
variable when the value came from there; errors in the file also give its name and line.

Like the domain code, this package is pure: the standard library, PyYAML (in the generic loader,
:mod:`lazystream.config.loader`) and :mod:`lazystream.domain.templates`; no faust, no Kubernetes client.
It owns what a configuration is and how it is read: this module (the sections and :func:`load_config`),
the generic typed loader (:mod:`~lazystream.config.loader`) and the mapping from a configuration to the
domain core's option records (:mod:`~lazystream.config.options`).
"""

from __future__ import annotations

import os
import re
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from lazystream.config.loader import (
    ConfigError,
    ConfigErrors,
    ConfigWarning,
    Origin,
    Setting,
    Sources,
    build,
    describe,
    encode,
    fail,
    is_dataclass_type,
    meta,
    parse_env,
    read_yaml,
    suggestion,
    walk_settings,
)
from lazystream.domain.templates import (
    RegexError,
    TemplateError,
    check_alias_template,
    compile_re2,
    dispatch_cluster_keys,
    render_dispatch_cluster,
)

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SLIMEBOOT_API_VERSION",
    "SLIME_MISC_DEFAULTS",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "ConfigWarning",
    "Dispatch",
    "DomainAlias",
    "FenceSettings",
    "GeneralSettings",
    "GlobalSettings",
    "GlobalSidecarSettings",
    "KafkaSecuritySettings",
    "KafkaSettings",
    "KubeSettings",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LeaderElectionSettings",
    "LogRotateSettings",
    "LogSettings",
    "MetricSettings",
    "PrometheusHandler",
    "PrometheusSettings",
    "SinkSettings",
    "TablesSettings",
    "TokenBucket",
    "TopicsSettings",
    "WebSettings",
    "env_var_names",
    "load_config",
]

ENV_PREFIX = "LAZYSTREAM_"
CONFIG_ENV = "LAZYSTREAM_CONFIG"
SLIMEBOOT_API_VERSION = "config.netease.com/v1alpha1"

SLIME_MISC_DEFAULTS: Mapping[str, str] = {
    "metrics-addr": ":8080",
    "aux-addr": ":8081",
    "enableLeaderElection": "off",
    "logSourcePort": ":8082",
    "seLabelSelectorKeys": "app",
    "xdsSourceEnableIncPush": "true",
    "pathRedirect": "",
}
"""Slime's defaults for ``global.misc`` (``framework/bootstrap/config.go``); given entries merge over them."""

GlobalSidecarMode = Literal["cluster", "namespace"]
MetricSourceType = Literal["accesslog", "prometheus"]
PartitionKey = Literal["fence", "namespace"]
WriteAuth = Literal["kubernetes", "none"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
LogFormat = Literal["text", "json"]
HandlerType = Literal["Value", "Group"]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


# --- field metadata and checks -----------------------------------------------------------------------------


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_LOG_LEVELS = frozenset({"", "panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"})


def _is_dns_label(value: str) -> bool:
    return _DNS_LABEL.fullmatch(value) is not None


def _is_dns_name(value: str) -> bool:
    return 0 < len(value) <= 253 and all(_is_dns_label(label) for label in value.split("."))


def _check_namespace(key: str, value: str) -> None:
    if not _is_dns_label(value):
        fail(key, f"{value!r} is not a namespace name (a DNS label: a-z, 0-9 and '-', at most 63)")


def _check_positive(key: str, value: float) -> None:
    if not value > 0:
        fail(key, f"must be greater than 0, got {value}")


def _check_at_least(key: str, value: int, minimum: int) -> None:
    if value < minimum:
        fail(key, f"must be at least {minimum}, got {value}")


def _check_port(key: str, value: int) -> None:
    if not 0 < value < 65536:
        fail(key, f"{value} is not a TCP port (1-65535)")


def _check_regex(key: str, pattern: str) -> re.Pattern[str]:
    try:
        return compile_re2(pattern)
    except RegexError as exc:
        fail(key, f"invalid regular expression: {exc}")


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


# --- general: Slime's config.Fence ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Dispatch:
    """A fallback dispatch rule: where calls to hosts a workload cannot see yet go.

    Rules without ``domainRegex`` become virtual hosts of their own; rules with it become routes, tried in
    order, of the catch-all virtual host.
    """

    name: str
    """Name of the rule; also the name of its virtual host, so names must be unique. Required."""

    domains: tuple[str, ...] = ()
    """Envoy virtual-host domains the rule takes (``*.example.com``, ``api.example.com``, ``*``). Ignored, as
    in Slime, when ``domainRegex`` is set; one of the two is required."""

    cluster: str
    """Where matching calls go: ``_GLOBAL_SIDECAR`` (the global-sidecar), ``PassthroughCluster`` (straight
    out), a literal Envoy cluster name (``outbound|80||egress.ns.svc.cluster.local``), or a Helm-style
    template in the simple form ``{{ .Values.<key> }}`` / ``{{ print "outbound|80||" .Values.<key> }}``,
    rendered against the ``values`` section. Required."""

    domain_regex: str = ""
    """RE2 regular expression matched against the ``:authority`` header; empty for a domains rule."""

    def __post_init__(self) -> None:
        if not self.name:
            fail("name", "is required (it names the rule's virtual host)")
        if not self.cluster:
            fail("cluster", "is required (_GLOBAL_SIDECAR, PassthroughCluster or a cluster name)")
        try:
            dispatch_cluster_keys(self.cluster)
        except TemplateError as exc:
            fail("cluster", str(exc))
        if self.domain_regex:
            _check_regex("domainRegex", self.domain_regex)
        elif not self.domains:
            fail("domains", "a dispatch needs domains or a domainRegex")
        for i, domain in enumerate(self.domains):
            if not domain or any(char.isspace() for char in domain):
                fail(f"domains[{i}]", f"{domain!r} is not a domain")


@dataclass(frozen=True, kw_only=True, slots=True)
class DomainAlias:
    """An alias rule: a host matching ``pattern`` exactly once also gets the hosts its templates expand to.

    Example from Slime's tutorial: pattern
    ``(?P<service>[^\\.]+)\\.(?P<namespace>[^\\.]+)\\.svc\\.cluster\\.local$`` with template
    ``$namespace.$service.mailsaas`` adds ``default.details.mailsaas`` next to
    ``details.default.svc.cluster.local``.
    """

    pattern: str
    """RE2 regular expression with named groups ``(?P<name>...)``. Required; must compile."""

    templates: tuple[str, ...] = ()
    """Templates in Go's ``regexp.Expand`` syntax (``$name``, ``${name}``, ``$1``, ``$$``); each must refer
    only to groups of the pattern. At least one is required."""

    def __post_init__(self) -> None:
        if not self.pattern:
            fail("pattern", "is required")
        regex = _check_regex("pattern", self.pattern)
        if not self.templates:
            fail("templates", "at least one template is required")
        for i, template in enumerate(self.templates):
            try:
                check_alias_template(template, regex)
            except TemplateError as exc:
                fail(f"templates[{i}]", str(exc))

    def regex(self) -> re.Pattern[str]:
        """The compiled pattern (Python's spelling of the RE2 pattern)."""
        return compile_re2(self.pattern)


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelSelectorRequirement:
    """One ``matchExpressions`` entry of a Kubernetes label selector."""

    key: str
    """The label key. Required."""

    operator: SelectorOperator
    """``In``, ``NotIn``, ``Exists`` or ``DoesNotExist``. Required."""

    values: tuple[str, ...] = ()
    """Label values: non-empty for ``In`` and ``NotIn``, empty for ``Exists`` and ``DoesNotExist``."""

    def __post_init__(self) -> None:
        if not self.key:
            fail("key", "is required")
        if self.operator in ("In", "NotIn") and not self.values:
            fail("values", f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            fail("values", f"operator {self.operator} takes no values")


@dataclass(frozen=True, kw_only=True, slots=True)
class LabelSelector:
    """A Kubernetes ``LabelSelector``: every ``matchLabels`` pair and every expression must hold."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    """Labels the object must carry with exactly these values."""

    match_expressions: tuple[LabelSelectorRequirement, ...] = ()
    """Set-based requirements, all of which must hold."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GeneralSettings:
    """Slime's ``general`` section, the lazyload module's own settings (``config.Fence``)."""

    wormhole_port: tuple[str, ...] = ()
    """Ports (as strings, as Slime spells them) whose unknown hosts fall back to the global-sidecar; the
    global-sidecar's own port (80) is always added. With ``autoPort``, the starting set. Default: none."""

    auto_port: bool = False
    """Discover HTTP service ports and keep the global-sidecar's Service, ConfigMap and fallback EnvoyFilter
    in step with them, instead of relying on ``wormholePort`` alone. Default: off."""

    cleanup_wormhole_port: bool = False
    """With ``autoPort``, also remove ports no service uses any more (otherwise ports are only added)."""

    auto_fence: bool = False
    """Create and delete ServiceFences for Services by the ``slime.io/serviceFenced`` labels and
    ``defaultFence``. Default: off (fences are created by hand)."""

    default_fence: bool = False
    """With ``autoFence``, whether a Service is fenced when neither its label nor its namespace's decides."""

    namespace: tuple[str, ...] = ()
    """Namespace mode: the namespaces that get their own global-sidecar. Required in namespace mode."""

    global_sidecar_mode: GlobalSidecarMode = field(default="cluster", metadata=meta(empty_is_default=True))
    """``cluster`` (one global-sidecar in ``clusterGsNamespace``) or ``namespace`` (one per namespace in
    ``namespace``). Also read from ``global.misc``. Slime's empty default means ``cluster``."""

    cluster_gs_namespace: str = field(default="mesh-operator", metadata=meta(empty_is_default=True))
    """Namespace of the cluster-mode global-sidecar. Slime's empty default means the chart's namespace,
    ``mesh-operator``."""

    metric_source_type: MetricSourceType = field(default="accesslog", metadata=meta(empty_is_default=True))
    """Where dependencies are learned from: ``accesslog`` (the access topic) or ``prometheus`` (queries of
    ``metric.prometheus``). Also read from ``global.misc``. Slime requires it; like Slime's chart, lazystream
    defaults to ``accesslog``."""

    dispatches: tuple[Dispatch, ...] = ()
    """Fallback dispatch rules, in order."""

    passthrough_by_default: bool = False
    """Send calls that no dispatch takes straight out (``PassthroughCluster``) rather than to the
    global-sidecar. Default: off."""

    domain_aliases: tuple[DomainAlias, ...] = ()
    """Host alias rules. A bad rule fails the configuration at start, naming the rule."""

    stable_host: tuple[str, ...] = ()
    """Hosts added to every Sidecar (``ns/*`` as written, other hosts as ``*/<host>``)."""

    enable_short_domain: bool = False
    """Also record the short host of an access-log record (``reviews`` besides its FQDN)."""

    support_h2: bool = False
    """Count ``http2`` and ``grpc`` service ports as HTTP; the global-sidecar keeps the client's protocol."""

    add_env_header_via_lua: bool = False
    """Set the ``Slime-Source-Ns`` header with a Lua filter instead of ``%ENVIRONMENT(POD_NAMESPACE)%``
    (for Envoy versions that reject the latter)."""

    proxy_version: str = ""
    """RE2 regular expression on the proxy version that the fallback patches apply to; empty means all."""

    fence_label_key_alias: str = ""
    """Workload fences: ``<labelKey>[:<alias>]`` gives each value of the pod label ``labelKey`` a fence named
    ``<alias>-<value>.workload.identity`` (alias default ``app``). Needs ``autoFence``. Empty: off."""

    management_selectors: tuple[LabelSelector, ...] = ()
    """Namespaces in scope: those matching any of these selectors (with ``autoFence``). Empty: all."""

    black_namespace_list: str = ""
    """Comma-separated namespaces out of scope. Exclusive with ``whiteNamespaceList``."""

    white_namespace_list: str = ""
    """Comma-separated namespaces in scope (all others are out). Exclusive with ``blackNamespaceList``."""

    render: str = ""
    """Set by Slime itself (``lazyload``) when its controller renders the global-sidecar chart."""

    disable_ipv4_passthrough: bool = field(
        default=False, metadata=meta(deprecated="it is deprecated in Slime and has no effect")
    )
    """Deprecated in Slime, no effect."""

    def __post_init__(self) -> None:
        for i, port in enumerate(self.wormhole_port):
            if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                fail(f"wormholePort[{i}]", f"{port!r} is not a port number (1-65535)")
        for i, namespace in enumerate(self.namespace):
            _check_namespace(f"namespace[{i}]", namespace)
        _check_namespace("clusterGsNamespace", self.cluster_gs_namespace)
        if self.global_sidecar_mode == "namespace" and not self.namespace:
            fail("namespace", "globalSidecarMode namespace needs at least one namespace here")
        names: dict[str, int] = {}
        for i, dispatch in enumerate(self.dispatches):
            if dispatch.name in names:
                fail(
                    f"dispatches[{i}].name",
                    f"{dispatch.name!r} is already the name of dispatches[{names[dispatch.name]}]",
                )
            names[dispatch.name] = i
        for i, host in enumerate(self.stable_host):
            if not host or any(char.isspace() for char in host):
                fail(f"stableHost[{i}]", f"{host!r} is not a host")
        if self.proxy_version:
            _check_regex("proxyVersion", self.proxy_version)
        if self.fence_label_key_alias:
            key, _, alias = self.fence_label_key_alias.partition(":")
            if not key or (":" in self.fence_label_key_alias and not alias) or ":" in alias:
                fail("fenceLabelKeyAlias", f"{self.fence_label_key_alias!r} is not <labelKey>[:<alias>]")
        for key, listed in (
            ("blackNamespaceList", self.black_namespace_list),
            ("whiteNamespaceList", self.white_namespace_list),
        ):
            for namespace in _comma_list(listed):
                _check_namespace(key, namespace)
        if self.black_namespace_list.strip() and self.white_namespace_list.strip():
            fail(
                "whiteNamespaceList", "whiteNamespaceList and blackNamespaceList exclude each other: set one"
            )

    @property
    def white_namespaces(self) -> frozenset[str]:
        """``whiteNamespaceList`` as a set (empty: no white list)."""
        return frozenset(_comma_list(self.white_namespace_list))

    @property
    def black_namespaces(self) -> frozenset[str]:
        """``blackNamespaceList`` as a set (empty: no black list)."""
        return frozenset(_comma_list(self.black_namespace_list))

    @property
    def fence_label_key(self) -> str:
        """The pod label key of workload fences, or ``""`` when they are off."""
        return self.fence_label_key_alias.partition(":")[0]

    @property
    def fence_label_alias(self) -> str:
        """The prefix of workload fence names (``app`` unless ``fenceLabelKeyAlias`` gives one)."""
        return self.fence_label_key_alias.partition(":")[2] or "app"


# --- global: Slime's framework settings -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenBucket:
    """Client-side rate limit of the Kubernetes client (``global.clientGoTokenBucket``)."""

    qps: int = 0
    """Sustained requests per second; 0 leaves the client's default."""

    burst: int = 0
    """Requests allowed in a burst; 0 leaves the client's default."""

    def __post_init__(self) -> None:
        _check_at_least("qps", self.qps, 0)
        _check_at_least("burst", self.burst, 0)


@dataclass(frozen=True, kw_only=True, slots=True)
class LogRotateSettings:
    """Log file rotation (``global.log.logRotateConfig``), used when ``logRotate`` is on."""

    file_path: str = "/tmp/log/slime.log"  # noqa: S108 - Slime's default, kept for compatibility
    """Log file; Slime's default is ``log/slime.log`` in the system temporary directory."""

    max_size_mb: int = field(default=100, metadata=meta(key="maxSizeMB"))
    """Size in MiB at which the file is rotated."""

    max_backups: int = 10
    """Rotated files kept."""

    max_age_day: int = 10
    """Days a rotated file is kept."""

    compress: bool = False
    """Compress rotated files."""

    def __post_init__(self) -> None:
        _check_at_least("maxSizeMB", self.max_size_mb, 0)
        _check_at_least("maxBackups", self.max_backups, 0)
        _check_at_least("maxAgeDay", self.max_age_day, 0)


@dataclass(frozen=True, kw_only=True, slots=True)
class LogSettings:
    """Logging (``global.log``)."""

    log_level: str = ""
    """Log level by Slime's names (``trace``, ``debug``, ``info``, ``warn``, ``error``, ...); empty: info."""

    klog_level: int = 0
    """Verbosity of the Kubernetes client's own logging."""

    log_rotate: bool = False
    """Write logs to ``logRotateConfig.filePath`` with rotation, instead of to standard output."""

    log_rotate_config: LogRotateSettings = field(default_factory=LogRotateSettings)
    """Rotation settings."""

    log_format: LogFormat = field(default="text", metadata=meta(empty_is_default=True))
    """lazystream's own key: ``text`` lines, or ``json`` (one object per line: time, level, logger, msg)."""

    def __post_init__(self) -> None:
        if self.log_level.lower() not in _LOG_LEVELS:
            fail(
                "logLevel", f"{self.log_level!r} is not a log level ({', '.join(sorted(_LOG_LEVELS - {''}))})"
            )
        _check_at_least("klogLevel", self.klog_level, 0)


@dataclass(frozen=True, kw_only=True, slots=True)
class GlobalSettings:
    """Slime's ``global`` section: namespaces, revisions and framework settings."""

    service: str = "app"
    """Label key whose value names a legacy fence's workloads (``workloadSelector: {<service>: <name>}``)."""

    istio_namespace: str = "istio-system"
    """Istio's namespace: every Sidecar shows ``<istioNamespace>/*``; the fallback EnvoyFilter lives here."""

    slime_namespace: str = "mesh-operator"
    """Slime's (and lazystream's) namespace: every Sidecar shows ``<slimeNamespace>/*``."""

    istio_rev: str = ""
    """Comma-separated Istio revisions in scope (label ``istio.io/rev`` of fences and Sidecars)."""

    strict_rev: bool = False
    """Whether objects without an ``istio.io/rev`` label are out of scope when ``istioRev`` is set."""

    self_resource_rev: str = ""
    """``istio.io/rev`` label put on the fences and EnvoyFilters lazystream creates."""

    config_sources: tuple[Mapping[str, Any], ...] = ()
    """Slime's extra config sources (enable ServiceEntry port discovery), kept as written."""

    master_url: str = ""
    """Kubernetes API server URL overriding the kubeconfig's."""

    client_go_token_bucket: TokenBucket = field(default_factory=TokenBucket)
    """Client-side rate limit of the Kubernetes client."""

    log: LogSettings = field(default_factory=LogSettings)
    """Logging."""

    misc: Mapping[str, str] = field(default_factory=lambda: dict(SLIME_MISC_DEFAULTS))
    """Slime's free-form settings; given entries merge over Slime's defaults (:data:`SLIME_MISC_DEFAULTS`).
    ``metricSourceType`` and ``globalSidecarMode`` here count for ``general`` unless ``general`` sets them."""

    def __post_init__(self) -> None:
        if not self.service:
            fail("service", "is required (a label key)")
        _check_namespace("istioNamespace", self.istio_namespace)
        _check_namespace("slimeNamespace", self.slime_namespace)
        if self.master_url and not _is_http_url(self.master_url):
            fail("masterUrl", f"{self.master_url!r} is not an http(s) URL")
        object.__setattr__(self, "misc", {**SLIME_MISC_DEFAULTS, **self.misc})

    @property
    def istio_revs(self) -> frozenset[str]:
        """``istioRev`` as a set (empty: every revision is in scope)."""
        return frozenset(_comma_list(self.istio_rev))


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


# --- metric ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class PrometheusHandler:
    """One Prometheus query run per fence (``metric.prometheus.handlers.<name>``)."""

    query: str
    """PromQL; ``$namespace`` becomes the fence's namespace and ``$source_app`` its name. Required."""

    type: HandlerType = "Value"
    """Slime's result type (``Value`` or ``Group``); lazyload does not use it."""

    def __post_init__(self) -> None:
        if not self.query.strip():
            fail("query", "is required")


@dataclass(frozen=True, kw_only=True, slots=True)
class PrometheusSettings:
    """Prometheus as a source of dependencies (``metricSourceType: prometheus``)."""

    address: str = ""
    """Base URL of the Prometheus HTTP API, e.g. ``http://prometheus.istio-system:9090``. Required in
    Prometheus mode."""

    handlers: Mapping[str, PrometheusHandler] = field(default_factory=dict)
    """Queries by name; lazystream unions their results (Slime needs exactly one). At least one is required
    in Prometheus mode."""

    def __post_init__(self) -> None:
        if self.address and not _is_http_url(self.address):
            fail("address", f"{self.address!r} is not an http(s) URL")


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricSettings:
    """Slime's ``metric`` section."""

    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    """Prometheus source settings."""


# --- lazystream's own sections -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class KafkaSecuritySettings:
    """How every Kafka client of lazystream (the worker's faust app and ingest stage, the operations commands)
    connects: TLS and SASL, as Kafka's ``security.protocol``. One set for all brokers of ``kafka.bootstrap``.

    The files are read when a client is built (at the start of the worker or a command), not when the
    configuration is loaded: ``lazystream render`` and ``config show`` work without them, and a rotated
    password file is read again at the next start. A file that is missing or unreadable then fails the
    start, naming its setting. ``lazystream config show`` prints the password as ``<redacted>``.
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    """``PLAINTEXT`` (the default), ``SSL`` (TLS), ``SASL_PLAINTEXT`` (SASL without TLS: the password
    crosses the network in the clear with ``PLAIN``) or ``SASL_SSL`` (SASL over TLS)."""

    ca_file: Path | None = None
    """PEM file of the CA certificates that sign the brokers' certificates (TLS protocols). Unset: the
    system's trusted CAs."""

    cert_file: Path | None = None
    """PEM client certificate (chain) for brokers that authenticate clients by certificate (TLS protocols).
    Unset: no client certificate."""

    key_file: Path | None = None
    """PEM private key (unencrypted) of ``certFile``; unset when ``certFile`` holds the key as well."""

    check_hostname: bool = True
    """Check that a broker's certificate names the host it was reached at (TLS protocols). Turn off only for
    brokers whose certificates lack the names clients use."""

    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    """SASL mechanism (SASL protocols): ``SCRAM-SHA-512`` (the default), ``SCRAM-SHA-256`` or ``PLAIN``."""

    username: str = ""
    """SASL user name. Required with the SASL protocols."""

    password: str = field(default="", repr=False, metadata=meta(secret=True))
    """SASL password. Better given as ``LAZYSTREAM_KAFKA_SECURITY_PASSWORD`` (a Kubernetes Secret mounted
    as an environment variable) or in ``passwordFile`` than written in the configuration file; when set it
    wins over ``passwordFile``. Never printed."""

    password_file: Path | None = None
    """File holding the SASL password (a mounted Secret); one trailing newline is ignored. With the SASL
    protocols, this or ``password`` is required."""

    def __post_init__(self) -> None:
        if self.sasl:
            if not self.username:
                fail("username", f"is required with protocol {self.protocol}")
            if not self.password and self.password_file is None:
                fail(
                    "passwordFile",
                    f"a password (password or passwordFile) is required with protocol {self.protocol}",
                )
        if self.key_file is not None and self.cert_file is None:
            fail("certFile", "is required with keyFile (the key is of a client certificate)")

    @property
    def sasl(self) -> bool:
        """Whether clients authenticate with SASL."""
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def tls(self) -> bool:
        """Whether connections use TLS."""
        return self.protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True, kw_only=True, slots=True)
class KafkaSettings:
    """The Kafka cluster and the faust application."""

    bootstrap: str = "127.0.0.1:19092"
    """Comma-separated ``host:port`` list of brokers to bootstrap from (the default is the local test
    broker)."""

    app_id: str = "lazystream"
    """faust application id: the consumer group, and the prefix of the tables' changelog topics. Workers of
    one deployment share it; changing it starts from empty state."""

    security: KafkaSecuritySettings = field(default_factory=KafkaSecuritySettings)
    """TLS and SASL of every Kafka client (``kafka.security.*``, ``LAZYSTREAM_KAFKA_SECURITY_<FIELD>``)."""

    def __post_init__(self) -> None:
        servers = self.bootstrap.split(",")
        for server in servers:
            host, sep, port = server.strip().rpartition(":")
            if not (sep and port.isascii() and port.isdigit() and 0 < int(port) < 65536 and _is_host(host)):
                fail("bootstrap", f"{server.strip()!r} is not host:port")
        if not self.app_id.strip():
            fail("appId", "is required")

    @property
    def servers(self) -> tuple[str, ...]:
        """The brokers as ``host:port`` strings (aiokafka's ``bootstrap_servers``)."""
        return tuple(server.strip() for server in self.bootstrap.split(","))

    @property
    def ingest_group(self) -> str:
        """The consumer group of the ingest stage, which reads the access topic (``<appId>-ingest``);
        ``lazystream replay`` moves its offsets."""
        return f"{self.app_id}-ingest"

    @property
    def broker_url(self) -> str:
        """The brokers in faust's form, ``kafka://h1:p1;kafka://h2:p2``."""
        return ";".join(f"kafka://{server}" for server in self.servers)


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        return ":" in host  # an IPv6 literal
    return _HOSTNAME.fullmatch(host) is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class TopicsSettings:
    """lazystream's Kafka topics (created when missing, with these partitions and replicas)."""

    access: str = "lazystream-access"
    """Topic that Fluent Bit (or the global-sidecar) writes access-log records to."""

    edges: str = "lazystream-edges"
    """Topic of learned-state changes keyed by fence: the only input of the learned-state table."""

    dead_letter: str = "lazystream-dead-letter"
    """Topic receiving records that cannot be parsed, with the reason."""

    partitions: int = 4
    """Partitions of the topics lazystream creates; the tables' changelogs get as many."""

    replication: int = 1
    """Replication factor of the topics lazystream creates (3 on a production cluster)."""

    partition_key: PartitionKey = "fence"
    """How the edges topic is keyed: ``fence`` (one fence per key) or ``namespace`` (all fences of a
    namespace on one partition)."""

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for key, value in (("access", self.access), ("edges", self.edges), ("deadLetter", self.dead_letter)):
            if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
                fail(key, f"{value!r} is not a valid Kafka topic name")
            if value in seen:
                fail(key, f"{value!r} is already the {seen[value]} topic")
            seen[value] = key
        _check_at_least("partitions", self.partitions, 1)
        _check_at_least("replication", self.replication, 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class TablesSettings:
    """The RocksDB-backed tables of learned state."""

    data_dir: Path = Path("lazystream-data")
    """This worker's data directory (RocksDB files); two workers on one host need two directories. A relative
    path is relative to the working directory."""

    block_cache_bytes: int = 512 * 1024
    """RocksDB block cache per table partition, in bytes (faust's default of 2 GiB per partition is far too
    much; a worker opens a store per active and standby partition). Default: 512 KiB. The cache hardly
    serves the table agent: it reads a fence's state once per new edge, from the memtable when the fence
    was written lately and otherwise from anywhere in a partition of thousands of fences, so the kernel's
    page cache serves what it misses; at 10k fences the caches were full at any size (16.7 MB of 4 MiB
    caches in a worker with four stores open, whose RSS sat at the 300 MB target)."""

    write_buffer_bytes: int = 2 * 1024 * 1024
    """RocksDB memtable size per table partition, in bytes; at most two are kept. faust's default (three of
    64 MiB per partition, 64 MiB files) left about 200 MB on disk per 1,000 fences, for a table whose values
    are a few KB per fence. Default: 2 MiB (16 MiB cost a worker about 110 MB more RSS at 1,000 fences, for
    no measurable throughput; at 10k fences the memtables of 4 MiB took 3 to 14 MB of a worker whose RSS
    sat within 11 MB of its 300 MB target)."""

    bucket_seconds: float = 10.0
    """Event-time bucket of the dedupe, in seconds: an edge already recorded in the current bucket does not
    touch the table again."""

    version: int = 1
    """Version of the learned-state table: version 1 is the table ``learned``, version N > 1 is
    ``learned-vN``, with its own changelog topic and RocksDB files. ``lazystream topics scale`` moves to the
    next version, because faust cannot repartition a table's changelog in place."""

    def __post_init__(self) -> None:
        if not str(self.data_dir):
            fail("dataDir", "is required")
        _check_at_least("blockCacheBytes", self.block_cache_bytes, 1)
        _check_at_least("writeBufferBytes", self.write_buffer_bytes, 64 * 1024)
        _check_positive("bucketSeconds", self.bucket_seconds)
        _check_at_least("version", self.version, 1)

    @property
    def table_name(self) -> str:
        """The faust name of the learned-state table at this version."""
        return "learned" if self.version == 1 else f"learned-v{self.version}"


@dataclass(frozen=True, kw_only=True, slots=True)
class FenceSettings:
    """How fences are computed and kept."""

    cluster_domain: str = "cluster.local"
    """Kubernetes cluster domain used to complete short hosts (``reviews`` →
    ``reviews.<ns>.svc.<clusterDomain>``)."""

    refresh_period_seconds: float = 10.0
    """Period of the reconcile that re-evaluates time-based state (deadlines, idle TTLs, EXPIREWAIT), in
    seconds; Slime's tick is 10 s."""

    idle_ttl_seconds: float | None = None
    """Idle time-to-live of learned dependencies, in seconds: one with neither a fallback nor a direct
    observation for that long expires. None (the default, as in Slime): learned dependencies never expire.
    Needs ``directObservations: true``."""

    direct_observations: bool = False
    """Whether callers' own sidecar outbound logs are shipped to the access topic. Only then is a dependency
    in use seen again after it goes direct, so only then is an idle TTL safe."""

    max_hosts_per_fence: int = 1000
    """Most learned hosts one fence may hold; further hosts are rejected and counted, so a spray of calls
    cannot grow a Sidecar without bound."""

    max_record_bytes: int = 65536
    """Largest access-log record parsed, in bytes; larger ones go to the dead-letter topic."""

    seed_from_status: bool = True
    """On a start with empty learned state, seed each fence's learned dependencies from its existing
    ``status.metricStatus`` (through the edges topic), as Slime does on restart."""

    def __post_init__(self) -> None:
        if not _is_dns_name(self.cluster_domain):
            fail("clusterDomain", f"{self.cluster_domain!r} is not a DNS name")
        _check_positive("refreshPeriodSeconds", self.refresh_period_seconds)
        if self.idle_ttl_seconds is not None:
            _check_positive("idleTtlSeconds", self.idle_ttl_seconds)
            if not self.direct_observations:
                fail(
                    "idleTtlSeconds",
                    "an idle time-to-live needs fence.directObservations: true (callers' sidecar "
                    "outbound logs shipped); otherwise a dependency in use is never seen again once it "
                    "goes direct, and expires",
                )
        _check_at_least("maxHostsPerFence", self.max_hosts_per_fence, 1)
        _check_at_least("maxRecordBytes", self.max_record_bytes, 1)


@dataclass(frozen=True, kw_only=True, slots=True)
class SinkSettings:
    """Writing ServiceFences, Sidecars and EnvoyFilters to the API server."""

    coalesce_seconds: float = 0.5
    """A fence's objects are written at most once per this many seconds."""

    concurrency: int = 8
    """Writes in flight at once."""

    field_manager: str = "lazystream"
    """Server-side apply field manager of every write."""

    def __post_init__(self) -> None:
        _check_positive("coalesceSeconds", self.coalesce_seconds)
        _check_at_least("concurrency", self.concurrency, 1)
        if not self.field_manager:
            fail("fieldManager", "is required")


@dataclass(frozen=True, kw_only=True, slots=True)
class FallbackSettings:
    """The leader's fallback objects: the ``to-global-sidecar`` EnvoyFilter(s) and the ``global-sidecar``
    Service(s) and ConfigMap(s), kept in step with the wormhole ports. In
    Slime, its chart renders them (and its controller, with ``autoPort``); lazystream has no chart."""

    manage: bool = True
    """Whether the leader writes them. Off: they are someone else's (a chart), and ``autoPort`` only
    computes ports nobody applies."""

    resync_seconds: float = 10.0
    """The objects are re-checked this often (Slime's autoPort tick), besides after every Service change."""

    selector: Mapping[str, str] = field(default_factory=lambda: {"app": "global-sidecar"})
    """The global-sidecar Service's pod selector (the labels of the global-sidecar pods)."""

    def __post_init__(self) -> None:
        _check_positive("resyncSeconds", self.resync_seconds)
        if not self.selector:
            fail("selector", "must select the global-sidecar pods (at least one label)")


@dataclass(frozen=True, kw_only=True, slots=True)
class WebSettings:
    """The worker's HTTP endpoint (health and, later, the admin API)."""

    host: str = "127.0.0.1"
    """Address to bind (``0.0.0.0`` in a container, so that probes reach it)."""

    port: int = 6066
    """Port to bind."""

    write_auth: WriteAuth = "kubernetes"
    """Who may reset learned state or start a sweep through the admin API. ``kubernetes``: a caller sends
    ``Authorization: Bearer <token>``; the API server says who it is (TokenReview) and whether it may
    ``update`` ServiceFences in the namespace, or in every namespace for a sweep (SubjectAccessReview).
    ``none``: anyone who reaches the port (a local demo only)."""

    def __post_init__(self) -> None:
        if not self.host:
            fail("host", "is required")
        _check_port("port", self.port)


@dataclass(frozen=True, kw_only=True, slots=True)
class KubeSettings:
    """Access to the Kubernetes API server."""

    kubeconfig: Path | None = None
    """Kubeconfig file; None: the in-cluster configuration, then ``$KUBECONFIG`` / ``~/.kube/config``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LeaderElectionSettings:
    """Electing the one worker that does cluster-wide work, with a ``coordination.k8s.io/v1`` Lease.
    The timing follows client-go's leader election: a holder renews every
    ``retryPeriodSeconds``; it stops its leader work when it could not renew for ``renewDeadlineSeconds``;
    another worker takes the Lease when it saw no renewal for ``leaseDurationSeconds``. Since the duration
    is longer than the deadline, the old leader has stopped before a new one starts (assuming clocks run at
    the same rate; no clocks are compared across machines). A worker that shuts down cleanly releases the
    Lease, so another takes over at its next retry rather than after the duration."""

    enabled: bool = True
    """Elect a leader with a Lease. Off: this worker does cluster-wide work without asking (for a single
    worker only; two such workers would both do it). Slime's ``global.misc.enableLeaderElection`` is not
    read: lazystream always runs several workers."""

    lease_name: str = "lazystream-leader"
    """Name of the Lease; workers of one deployment share it, two deployments need two names."""

    lease_namespace: str = ""
    """Namespace of the Lease; empty: ``global.slimeNamespace``."""

    identity: str = ""
    """This worker's identity in the Lease (``holderIdentity``); unique per worker. Empty: the host name
    (the pod name in Kubernetes) and a random suffix, so a restarted worker is a new candidate."""

    lease_duration_seconds: float = 15.0
    """How long a candidate waits, after it last saw the Lease renewed, before taking it over."""

    renew_deadline_seconds: float = 10.0
    """How long the leader keeps leading without a successful renewal; then it stops its leader work.
    Less than ``leaseDurationSeconds``."""

    retry_period_seconds: float = 2.0
    """Interval of renewals and of candidates' attempts. ``renewDeadlineSeconds`` must exceed 1.2 times
    this (client-go's rule: a few attempts fit in the deadline even with jitter)."""

    def __post_init__(self) -> None:
        if not _is_dns_name(self.lease_name):
            fail("leaseName", f"{self.lease_name!r} is not a DNS subdomain name")
        if self.lease_namespace:
            _check_namespace("leaseNamespace", self.lease_namespace)
        if len(self.identity) > 253 or any(char.isspace() for char in self.identity):
            fail("identity", f"{self.identity!r}: at most 253 characters and no white space")
        _check_positive("leaseDurationSeconds", self.lease_duration_seconds)
        _check_positive("renewDeadlineSeconds", self.renew_deadline_seconds)
        _check_positive("retryPeriodSeconds", self.retry_period_seconds)
        if self.lease_duration_seconds <= self.renew_deadline_seconds:
            fail(
                "leaseDurationSeconds",
                f"must be greater than renewDeadlineSeconds ({self.renew_deadline_seconds}), got "
                f"{self.lease_duration_seconds}: otherwise a new leader may start before the old one stops",
            )
        if self.renew_deadline_seconds <= 1.2 * self.retry_period_seconds:
            fail(
                "renewDeadlineSeconds",
                f"must be greater than 1.2 x retryPeriodSeconds ({1.2 * self.retry_period_seconds:g}), got "
                f"{self.renew_deadline_seconds}",
            )


RecordsSink = Literal["stdout", "forward", "none"]
EventLoop = Literal["uvloop", "asyncio"]


@dataclass(frozen=True, kw_only=True, slots=True)
class GlobalSidecarSettings:
    """``lazystream global-sidecar``, the fallback proxy. The names of
    Slime's environment variables for its Go proxy are given where a setting replaces one."""

    listen_address: str = "0.0.0.0"  # noqa: S104 - a proxy for the whole mesh listens on every address
    """Address every proxy listener binds (``0.0.0.0``: all IPv4 addresses; ``::`` for IPv6 too)."""

    port: int = 80
    """The global-sidecar's own port, always listened on (Slime: 80, the chart's
    ``component.globalSidecar.port``). Below 1024 a non-root user needs the container runtime's
    ``net.ipv4.ip_unprivileged_port_start=0`` (the default of Docker and containerd) or
    ``CAP_NET_BIND_SERVICE``."""

    probe_port: int = 18181
    """Health port (``PROBE_PORT``): ``/healthz/live`` answers 200 while the process runs,
    ``/healthz/ready`` once the listeners are open (and the Service cache is synced). Never proxied."""

    ports_file: Path | None = None
    """The ConfigMap-mounted file of wormhole ports (the ``global-sidecar`` ConfigMap's ``data.cfg``, YAML
    ``wormholePorts: [9080, ...]``), watched for changes. None: only ``port`` is listened on."""

    ports_reload_seconds: float = 2.0
    """How often ``portsFile`` is checked for changes (the kubelet swaps a ConfigMap volume's files)."""

    cleanup_ports: bool = False
    """Stop listening on ports removed from ``portsFile`` (``CLEAN_UP_WORMHOLE_PORT``); otherwise ports are
    only added, as in Slime."""

    wormhole_port_prior_to_host_port: bool = False
    """Without ``Slime-Orig-Dest``, dial the listener's port rather than the Host's
    (``WORMHOLE_PORT_PRIOR_TO_HOST_PORT``)."""

    service_cache: bool = True
    """Watch Services, so that a short Host is completed with ``Slime-Source-Ns`` only when that Service
    exists (the inverse of ``DISABLE_SVC_CONTROLLER``). Off: short names are always completed, and the
    proxy needs no access to the API server."""

    upstream_timeout_seconds: float = 0.0
    """Longest time from dialling an upstream to the end of its response, in seconds; 0 (the default, as
    Slime's ``timeout: 0s`` routes): none. An upstream that runs out of time is answered 504."""

    connect_timeout_seconds: float = 5.0
    """Longest time to open an upstream connection, in seconds (504 after it); 0: none. An upstream whose
    listen queue is full never refuses, it just never answers: without a limit, its callers wait forever."""

    response_head_timeout_seconds: float = 60.0
    """Longest wait for an upstream's response head once it has the request, in seconds (504 after it);
    0: none. Streaming responses are not cut: the limit ends when the head arrives."""

    header_timeout_seconds: float = 10.0
    """Longest time a client may take to send a request's head (and a body of up to 64 KiB, read before
    the proxy dials), from its first byte, in seconds: 408 and the connection closes. Bounds slow-header
    clients (one byte a second), which would otherwise hold a connection for as long as they like."""

    client_idle_seconds: float = 60.0
    """A client connection with no request under way is closed after this many seconds."""

    max_header_bytes: int = 64 * 1024
    """Largest request head (request line and header fields), in bytes: 431 beyond."""

    max_headers: int = 100
    """Most header fields in one request: 431 beyond."""

    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body (Content-Length, or the chunks of a chunked body added up), in bytes: 413
    beyond. Response bodies are not limited."""

    max_idle_per_upstream: int = 32
    """Keep-alive connections kept open per upstream address for reuse (Slime opens one per request)."""

    idle_seconds: float = 60.0
    """An idle upstream connection is closed after this many seconds."""

    records: RecordsSink = "stdout"
    """Where the per-request records go: ``stdout`` (JSON lines, for Fluent Bit's tail of the container's
    log), ``forward`` (Fluent Bit's forward input, with fluent-logger) or ``none``. Neither ever blocks a
    request: records are queued and, when the queue is full, dropped and counted."""

    forward_host: str = "127.0.0.1"
    """Fluent Bit's forward input host (``records: forward``); a Fluent Bit sidecar or node agent."""

    forward_port: int = 24224
    """Fluent Bit's forward input port."""

    forward_tag: str = "lazystream.access"
    """Fluent tag of the records (the forward input keeps it; Fluent Bit routes on it)."""

    queue_size: int = 10000
    """Records queued for the writer thread before new ones are dropped (and counted)."""

    event_loop: EventLoop = "uvloop"
    """The proxy's asyncio event loop: ``uvloop`` (libuv's, the default: on the default loop the loop's own
    bookkeeping and its socket calls were most of the proxy's CPU per request) or ``asyncio`` (the standard
    library's, e.g. to tell a uvloop problem from the proxy's own)."""

    def __post_init__(self) -> None:
        if not self.listen_address:
            fail("listenAddress", "is required")
        _check_port("port", self.port)
        _check_port("probePort", self.probe_port)
        if self.probe_port == self.port:
            fail("probePort", f"must differ from port ({self.port})")
        _check_positive("portsReloadSeconds", self.ports_reload_seconds)
        for key, value in (
            ("upstreamTimeoutSeconds", self.upstream_timeout_seconds),
            ("connectTimeoutSeconds", self.connect_timeout_seconds),
            ("responseHeadTimeoutSeconds", self.response_head_timeout_seconds),
        ):
            if value < 0:
                fail(key, f"must be 0 (no timeout) or more, got {value}")
        _check_positive("headerTimeoutSeconds", self.header_timeout_seconds)
        _check_positive("clientIdleSeconds", self.client_idle_seconds)
        _check_at_least("maxHeaderBytes", self.max_header_bytes, 1024)
        _check_at_least("maxHeaders", self.max_headers, 1)
        _check_at_least("maxBodyBytes", self.max_body_bytes, 0)
        _check_at_least("maxIdlePerUpstream", self.max_idle_per_upstream, 0)
        _check_positive("idleSeconds", self.idle_seconds)
        if not self.forward_host:
            fail("forwardHost", "is required")
        _check_port("forwardPort", self.forward_port)
        prefix, dot, label = self.forward_tag.partition(".")
        if not (prefix and dot and label) or any(c.isspace() for c in self.forward_tag):
            fail("forwardTag", f"{self.forward_tag!r} is not <tag>.<label> (fluent-logger sends both)")
        _check_at_least("queueSize", self.queue_size, 1)


# --- the configuration -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    """lazystream's whole configuration. Build it with :func:`load_config`; every section is validated when
    it is constructed, and the checks across sections here."""

    general: GeneralSettings = field(default_factory=GeneralSettings)
    """Slime's ``general`` section (the lazyload module's settings)."""

    global_: GlobalSettings = field(default_factory=GlobalSettings, metadata=meta(key="global"))
    """Slime's ``global`` section (YAML key ``global``)."""

    metric: MetricSettings = field(default_factory=MetricSettings)
    """Slime's ``metric`` section."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """Kafka brokers and the faust app id."""

    topics: TopicsSettings = field(default_factory=TopicsSettings)
    """lazystream's topics."""

    tables: TablesSettings = field(default_factory=TablesSettings)
    """RocksDB tables of learned state."""

    fence: FenceSettings = field(default_factory=FenceSettings)
    """Fence computation and expiry."""

    sink: SinkSettings = field(default_factory=SinkSettings)
    """Writes to the API server."""

    web: WebSettings = field(default_factory=WebSettings)
    """The worker's HTTP endpoint."""

    kube: KubeSettings = field(default_factory=KubeSettings)
    """Access to the API server."""

    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    """Electing the worker that does cluster-wide work (a Kubernetes Lease)."""
    global_sidecar: GlobalSidecarSettings = field(default_factory=GlobalSidecarSettings)
    """``lazystream global-sidecar``, the fallback proxy (YAML key ``globalSidecar``)."""

    fallback: FallbackSettings = field(default_factory=FallbackSettings)
    """The fallback EnvoyFilters and global-sidecar Service/ConfigMap the leader keeps in step."""

    values: Mapping[str, str] = field(default_factory=dict)
    """``.Values`` of dispatch cluster templates (lazystream's stand-in for Slime's chart values). In a
    SlimeBoot, the string settings at the top of ``spec`` come first. ``namespace`` defaults to
    ``global.slimeNamespace``."""

    def __post_init__(self) -> None:
        if self.general.metric_source_type == "prometheus":
            if not self.metric.prometheus.address:
                fail("metric.prometheus.address", "is required when general.metricSourceType is prometheus")
            if not self.metric.prometheus.handlers:
                fail(
                    "metric.prometheus.handlers",
                    "at least one handler is required when general.metricSourceType is prometheus",
                )
        values = self.template_values
        for i, dispatch in enumerate(self.general.dispatches):
            try:
                rendered = render_dispatch_cluster(dispatch.cluster, values)
            except TemplateError as exc:
                fail(f"general.dispatches[{i}].cluster", str(exc))
            if not rendered.strip():
                fail(
                    f"general.dispatches[{i}].cluster",
                    f"{dispatch.cluster!r} renders to an empty cluster name",
                )

    @property
    def template_values(self) -> Mapping[str, str]:
        """The ``.Values`` dispatch templates see: ``values`` over ``{namespace: global.slimeNamespace}``."""
        return {"namespace": self.global_.slime_namespace, **self.values}

    @property
    def lease_namespace(self) -> str:
        """The Lease's namespace: ``leaderElection.leaseNamespace``, else ``global.slimeNamespace``."""
        return self.leader_election.lease_namespace or self.global_.slime_namespace

    def dispatch_clusters(self) -> tuple[str, ...]:
        """The ``cluster`` of each dispatch rule, rendered (``_GLOBAL_SIDECAR`` stays as it is)."""
        values = self.template_values
        return tuple(render_dispatch_cluster(d.cluster, values) for d in self.general.dispatches)

    def global_sidecar_namespaces(self) -> frozenset[str]:
        """Namespaces running a global-sidecar: ``clusterGsNamespace`` in cluster mode, ``namespace`` in
        namespace mode."""
        if self.general.global_sidecar_mode == "namespace":
            return frozenset(self.general.namespace)
        return frozenset({self.general.cluster_gs_namespace})

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """The configuration in its YAML form (a bare module body, camelCase keys), every setting included.

        Secrets (``kafka.security.password``) that are set read ``<redacted>`` unless ``secrets`` is true.
        Loading the dict again gives an equal :class:`Config` (with ``secrets=True`` when one is set).
        """
        return typing.cast(dict[str, Any], encode(self, redact=not secrets))


# --- the loader --------------------------------------------------------------------------------------------
#
# Sources are first gathered into one raw nested mapping in the YAML form (the file, then environment and
# override values set at their key paths, remembering where each came from); one typed pass then converts
# and validates it, section by section, raising errors by key path, finally relabelled with their origin.

_MODULE_KEYS = frozenset({"name", "kind", "enable", "mode"})
"""Keys of a SlimeBoot module entry that are Slime's business, not settings."""

_MISC_ALIASES = ("metricSourceType", "globalSidecarMode")

_RETIRED_ENV = {
    "LAZYSTREAM_APP_ID": "LAZYSTREAM_KAFKA_APP_ID",
    "LAZYSTREAM_ACCESS_TOPIC": "LAZYSTREAM_TOPICS_ACCESS",
    "LAZYSTREAM_EDGES_TOPIC": "LAZYSTREAM_TOPICS_EDGES",
    "LAZYSTREAM_DEAD_LETTER_TOPIC": "LAZYSTREAM_TOPICS_DEAD_LETTER",
    "LAZYSTREAM_TOPIC_PARTITIONS": "LAZYSTREAM_TOPICS_PARTITIONS",
    "LAZYSTREAM_TOPIC_REPLICATION": "LAZYSTREAM_TOPICS_REPLICATION",
    "LAZYSTREAM_DATA_DIR": "LAZYSTREAM_TABLES_DATA_DIR",
    "LAZYSTREAM_ROCKSDB_BLOCK_CACHE_BYTES": "LAZYSTREAM_TABLES_BLOCK_CACHE_BYTES",
    "LAZYSTREAM_KUBECONFIG": "LAZYSTREAM_KUBE_KUBECONFIG",
}
"""Environment variables of lazystream's first, flat settings, and their names now."""


@cache
def _settings() -> dict[str, Setting]:
    """Every setting (each field of each section, at any depth), by YAML key path."""
    return {s.path: s for s in walk_settings(Config, "", "", ENV_PREFIX.rstrip("_"))}


@cache
def _settings_by_env() -> dict[str, Setting]:
    return {s.env: s for s in _settings().values()}


def env_var_names() -> dict[str, str]:
    """Every setting's environment variable, by key path (``{"kafka.bootstrap": "LAZYSTREAM_KAFKA_BOOTSTRAP",
    ...}``)."""
    return {path: setting.env for path, setting in _settings().items()}


# --- sources -----------------------------------------------------------------------------------------------


def _read_file(file: Path, src: Sources) -> dict[str, Any]:
    """The file's settings as a bare module body (a SlimeBoot is unwrapped), with ``src`` set up for it."""
    src.file = file
    data = read_yaml(file, src)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            "", "the top level must be a mapping: a SlimeBoot or a lazyload module body", label=str(file)
        )
    body = _unwrap_slimeboot(data, src) if "kind" in data or "apiVersion" in data else data
    _alias_misc_in_file(body, src)
    return body


def _unwrap_slimeboot(data: dict[str, Any], src: Sources) -> dict[str, Any]:
    def invalid(key: str, reason: str) -> NoReturn:
        raise ConfigError(key, reason, location=src.location(key))

    if data.get("kind") != "SlimeBoot":
        invalid("kind", f"expected a SlimeBoot or a bare lazyload module body, got kind {data.get('kind')!r}")
    if data.get("apiVersion") != SLIMEBOOT_API_VERSION:
        src.warn("apiVersion", f"expected {SLIMEBOOT_API_VERSION}, got {data.get('apiVersion')!r}")
    spec = data.get("spec")
    if not isinstance(spec, dict):
        invalid("spec", f"expected a mapping, got {describe(spec)}")
    modules = spec.get("module")
    if not isinstance(modules, list):
        invalid("spec.module", f"expected a list of modules, got {describe(modules)}")
    found = [
        i
        for i, module in enumerate(modules)
        if isinstance(module, dict) and "lazyload" in (module.get("kind"), module.get("name"))
    ]
    if not found:
        invalid("spec.module", "no lazyload module (an entry with kind: lazyload or name: lazyload)")
    if len(found) > 1:
        invalid(
            "spec.module", f"{len(found)} lazyload modules (entries {', '.join(map(str, found))}); keep one"
        )
    module: dict[str, Any] = modules[found[0]]
    src.prefix = f"spec.module[{found[0]}]."
    body = {key: value for key, value in module.items() if key not in _MODULE_KEYS}
    # Slime renders dispatch templates against the chart values, i.e. the SlimeBoot's spec.
    spec_values = {
        key: str(value)
        for key, value in spec.items()
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    }
    own_values = body.get("values")
    if spec_values and (own_values is None or isinstance(own_values, dict)):
        body["values"] = {**spec_values, **(own_values or {})}
    return body


def _alias_misc_in_file(body: dict[str, Any], src: Sources) -> None:
    """``global.misc.metricSourceType`` / ``globalSidecarMode`` count for ``general`` unless it sets them."""
    glob = body.get("global")
    misc = glob.get("misc") if isinstance(glob, dict) else None
    general = body.get("general")
    if not isinstance(misc, dict) or not isinstance(general, dict | None):
        return
    for key in _MISC_ALIASES:
        if misc.get(key) is not None and (general is None or general.get(key) is None):
            general = body["general"] = general if general is not None else {}
            general[key] = misc[key]
            src.origins[f"general.{key}"] = Origin(f"{src.prefix}global.misc.{key}", in_file=True)


def _alias_misc_in_layer(layer: dict[str, tuple[Any, Origin]]) -> None:
    """The same within one environment or override layer: its ``global.misc`` counts for its ``general``."""
    general = layer.get("general", (None, None))[0]
    given = {
        key
        for key in _MISC_ALIASES
        if f"general.{key}" in layer or (isinstance(general, Mapping) and general.get(key) is not None)
    }
    miscs: list[tuple[Any, Origin]] = []
    if "global" in layer:  # a whole section, e.g. LAZYSTREAM_GLOBAL='{"misc": {...}}'
        section, origin = layer["global"]
        if isinstance(section, Mapping) and "misc" in section:
            miscs.append((section["misc"], Origin(f"{origin.label}.misc", origin.in_file)))
    if "global.misc" in layer:  # more specific than the whole section: it comes last and wins
        miscs.append(layer["global.misc"])
    for misc, origin in miscs:
        for key in _MISC_ALIASES:
            if key not in given and isinstance(misc, Mapping) and misc.get(key) is not None:
                layer[f"general.{key}"] = (misc[key], Origin(f"{origin.label}.{key}", origin.in_file))


def _env_layer(environ: Mapping[str, str]) -> dict[str, tuple[Any, Origin]]:
    layer: dict[str, tuple[Any, Origin]] = {}
    by_env = _settings_by_env()
    sections = tuple(f"{s.env}_" for s in _settings().values() if "." not in s.path)
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        setting = by_env.get(var)
        if setting is not None:
            try:
                value = parse_env(setting.type, environ[var])
            except ValueError as exc:
                raise ConfigError(setting.path, str(exc), label=var) from None
            layer[setting.path] = (value, Origin(var, in_file=False))
        elif (entry := _misc_entry(var)) is not None:
            layer[f"global.misc.{entry}"] = (environ[var], Origin(var, in_file=False))
        elif var in _RETIRED_ENV:
            warnings.warn(f"{var} is no longer read: use {_RETIRED_ENV[var]}", ConfigWarning, stacklevel=3)
        elif var.startswith(sections):
            hint = suggestion(var, by_env)
            warnings.warn(f"{var}: unknown setting (ignored){hint}", ConfigWarning, stacklevel=3)
    return layer


_MISC_ENV = f"{ENV_PREFIX}GLOBAL_MISC_"


def _misc_entry(var: str) -> str | None:
    """The ``global.misc`` key a ``LAZYSTREAM_GLOBAL_MISC_<KEY>`` variable sets: Slime's own keys match with
    hyphens and case ignored (``..._AUX_ADDR`` is ``aux-addr``, ``..._LOG_SOURCE_PORT`` ``logSourcePort``);
    another key is its lower case with hyphens."""
    if not var.startswith(_MISC_ENV) or len(var) == len(_MISC_ENV):
        return None
    rest = var[len(_MISC_ENV) :]
    folded = rest.replace("_", "").lower()
    for key in SLIME_MISC_DEFAULTS:
        if key.replace("-", "").lower() == folded:
            return key
    return rest.lower().replace("_", "-")


def _override_layer(overrides: Mapping[str, Any]) -> dict[str, tuple[Any, Origin]]:
    layer: dict[str, tuple[Any, Origin]] = {}
    by_attr = {s.attr_path: s for s in _settings().values()}
    for key, value in overrides.items():
        setting = _settings().get(key) or by_attr.get(key)
        if setting is None:
            raise ConfigError(key, "unknown setting (an override names a key path such as kafka.bootstrap)")
        if value is not None:
            layer[setting.path] = (value, Origin(setting.path, in_file=False))
    return layer


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the configuration: ``overrides`` > environment > file > defaults.

    ``path`` is the YAML file (a SlimeBoot or a bare lazyload module body); None reads ``$LAZYSTREAM_CONFIG``
    when it is set, and no file otherwise. ``environ`` defaults to :data:`os.environ`; pass ``{}`` to ignore
    the environment. ``overrides`` maps key paths to values, e.g. ``{"kafka.bootstrap": "k1:9092",
    "web.port": 7000}`` (YAML keys or Python attribute names, ``kafka.appId`` or ``kafka.app_id``); a None
    value means "not given", which suits optional command-line options.

    Raises :class:`ConfigError` naming the key (or environment variable) of an invalid value, or
    :class:`ConfigErrors` (a ConfigError) naming every one when there are several; an unknown section is an
    error, with the closest known one as a suggestion. Warns (:class:`ConfigWarning`) about unknown keys
    within a section (with a suggestion) and deprecated keys.
    """
    return _load(path, environ, overrides)[0]


def load_config_with_origins(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Config, dict[str, str]]:
    """:func:`load_config`, and where each setting's value came from, by key path: ``<file>:<line>``, an
    environment variable, ``option`` (an override) or ``default``. Settings that are sections are left out."""
    config, src = _load(path, environ, overrides)
    origins: dict[str, str] = {}
    for key, setting in _settings().items():
        if is_dataclass_type(setting.type):
            continue
        origin = src.origin(key)
        if not origin.in_file:
            origins[key] = origin.label if origin.label.startswith(ENV_PREFIX) else "option"
        elif src.file is not None and origin.label in src.lines:
            origins[key] = f"{src.file}:{src.lines[origin.label]}"
        else:
            origins[key] = "default"
    return config, origins


def _load(
    path: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any] | None,
) -> tuple[Config, Sources]:
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = environ[CONFIG_ENV]
    src = Sources()
    raw = _read_file(Path(path), src) if path is not None else {}
    for layer in (_env_layer(environ), _override_layer(overrides or {})):
        _alias_misc_in_layer(layer)
        for key in sorted(layer, key=lambda p: p.count(".")):  # a whole section first, then its settings
            value, origin = layer[key]
            src.set_from(raw, key, value, origin)
    try:
        config = build(Config, raw, "", src)
    except ConfigError as exc:
        raise src.relabel(exc) from None
    _advise(config, src)
    return config, src


def _advise(config: Config, src: Sources) -> None:
    """Warnings about valid settings that do not do what they seem to."""
    general = config.general
    if general.fence_label_key_alias and not general.auto_fence:
        src.warn("general.fenceLabelKeyAlias", "has no effect without general.autoFence: true")
    for i, dispatch in enumerate(general.dispatches):
        if dispatch.domain_regex and dispatch.domains:
            src.warn(f"general.dispatches[{i}].domains", "ignored: the rule has a domainRegex (as in Slime)")
    _advise_kafka_security(config.kafka.security, src)


def _advise_kafka_security(security: KafkaSecuritySettings, src: Sources) -> None:
    prefix = "kafka.security."
    if not security.sasl:
        for key, value in (("username", security.username), ("password", security.password)):
            if value:
                src.warn(prefix + key, f"has no effect with protocol {security.protocol} (no SASL)")
        if security.password_file is not None:
            src.warn(prefix + "passwordFile", f"has no effect with protocol {security.protocol} (no SASL)")
    elif security.password and security.password_file is not None:
        src.warn(prefix + "passwordFile", "ignored: password is set as well, and wins")
    if not security.tls:
        for key, path in (
            ("caFile", security.ca_file),
            ("certFile", security.cert_file),
            ("keyFile", security.key_file),
        ):
            if path is not None:
                src.warn(prefix + key, f"has no effect with protocol {security.protocol} (no TLS)")
