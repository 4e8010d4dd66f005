"""lazystream.config: Slime's keys and defaults, SlimeBoot or bare body, environment, precedence, checks."""

from __future__ import annotations

import json
import operator
import re
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from lazystream.cli import main
from lazystream.config import (
    Config,
    ConfigError,
    ConfigErrors,
    ConfigWarning,
    Dispatch,
    DomainAlias,
    FenceSettings,
    GeneralSettings,
    LabelSelector,
    LabelSelectorRequirement,
    PrometheusHandler,
    env_var_names,
    load_config,
)
from lazystream.kube.leader import LeaseSettings

# A warning nobody expects is a failure here; tests that expect one catch it with pytest.warns.
pytestmark = pytest.mark.filterwarnings("error::lazystream.config.ConfigWarning")

MISC_DEFAULTS = {
    "metrics-addr": ":8080",
    "aux-addr": ":8081",
    "enableLeaderElection": "off",
    "logSourcePort": ":8082",
    "seLabelSelectorKeys": "app",
    "xdsSourceEnableIncPush": "true",
    "pathRedirect": "",
}


def write(tmp_path: Path, text: str, name: str = "lazystream.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load(
    tmp_path: Path,
    text: str | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    path = write(tmp_path, text) if text is not None else None
    return load_config(path, env or {}, overrides)


def error_of(tmp_path: Path, text: str | None = None, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text, env)
    return str(exc.value)


def get(config: Config, attr_path: str) -> Any:
    return operator.attrgetter(attr_path)(config)


# --- defaults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr_path", "expected"),
    [
        # general: Slime's config.Fence
        ("general.wormhole_port", ()),
        ("general.auto_port", False),
        ("general.cleanup_wormhole_port", False),
        ("general.auto_fence", False),
        ("general.default_fence", False),
        ("general.namespace", ()),
        ("general.global_sidecar_mode", "cluster"),
        ("general.cluster_gs_namespace", "mesh-operator"),
        ("general.metric_source_type", "accesslog"),
        ("general.dispatches", ()),
        ("general.passthrough_by_default", False),
        ("general.domain_aliases", ()),
        ("general.stable_host", ()),
        ("general.enable_short_domain", False),
        ("general.support_h2", False),
        ("general.add_env_header_via_lua", False),
        ("general.proxy_version", ""),
        ("general.fence_label_key_alias", ""),
        ("general.fence_label_alias", "app"),
        ("general.management_selectors", ()),
        ("general.black_namespace_list", ""),
        ("general.white_namespace_list", ""),
        ("general.render", ""),
        ("general.disable_ipv4_passthrough", False),
        # global
        ("global_.service", "app"),
        ("global_.istio_namespace", "istio-system"),
        ("global_.slime_namespace", "mesh-operator"),
        ("global_.istio_rev", ""),
        ("global_.strict_rev", False),
        ("global_.self_resource_rev", ""),
        ("global_.config_sources", ()),
        ("global_.master_url", ""),
        ("global_.client_go_token_bucket.qps", 0),
        ("global_.client_go_token_bucket.burst", 0),
        ("global_.log.log_level", ""),
        ("global_.log.klog_level", 0),
        ("global_.log.log_rotate", False),
        ("global_.log.log_rotate_config.file_path", "/tmp/log/slime.log"),  # noqa: S108
        ("global_.log.log_rotate_config.max_size_mb", 100),
        ("global_.log.log_rotate_config.max_backups", 10),
        ("global_.log.log_rotate_config.max_age_day", 10),
        ("global_.log.log_rotate_config.compress", False),
        ("global_.misc", MISC_DEFAULTS),
        ("metric.prometheus.address", ""),
        ("metric.prometheus.handlers", {}),
        # lazystream's own
        ("kafka.bootstrap", "127.0.0.1:19092"),
        ("kafka.app_id", "lazystream"),
        ("kafka.broker_url", "kafka://127.0.0.1:19092"),
        ("topics.access", "lazystream-access"),
        ("topics.edges", "lazystream-edges"),
        ("topics.dead_letter", "lazystream-dead-letter"),
        ("topics.partitions", 4),
        ("topics.replication", 1),
        ("topics.partition_key", "fence"),
        ("tables.data_dir", Path("lazystream-data")),
        ("tables.block_cache_bytes", 524_288),
        ("tables.bucket_seconds", 10.0),
        ("fence.cluster_domain", "cluster.local"),
        ("fence.refresh_period_seconds", 10.0),
        ("fence.idle_ttl_seconds", None),
        ("fence.direct_observations", False),
        ("fence.max_hosts_per_fence", 1000),
        ("fence.max_record_bytes", 65536),
        ("sink.coalesce_seconds", 0.5),
        ("sink.concurrency", 8),
        ("sink.field_manager", "lazystream"),
        ("web.host", "127.0.0.1"),
        ("web.port", 6066),
        ("kube.kubeconfig", None),
        ("values", {}),
        ("template_values", {"namespace": "mesh-operator"}),
    ],
)
def test_defaults_are_slimes_and_lazystreams(attr_path: str, expected: object) -> None:
    assert get(load_config(None, {}), attr_path) == expected
    assert get(Config(), attr_path) == expected


def test_empty_file_and_empty_sections_mean_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == Config()
    assert load(tmp_path, "general:\nglobal:\nkafka: {}\n") == Config()
    # null and Slime's empty strings mean the default, as in Slime (protojson, chart defaults)
    assert (
        load(tmp_path, "general: {globalSidecarMode: '', metricSourceType: '', wormholePort: null}")
        == Config()
    )


# --- SlimeBoot or bare body --------------------------------------------------------------------------------

SLIMEBOOT = """
apiVersion: config.netease.com/v1alpha1
kind: SlimeBoot
metadata:
  name: lazyload
  namespace: mesh-operator
spec:
  image:
    pullPolicy: Always
    repository: docker.io/slimeio/slime-lazyload
    tag: v0.9.0
  namespace: mesh-operator
  istioNamespace: istio-system
  module:
    - name: limiter
      kind: limiter
      enable: true
    - name: lazyload-test
      kind: lazyload
      enable: true
      general:
        autoPort: true
        autoFence: true
        defaultFence: true
        wormholePort:
          - "9080"
        dispatches:
          - name: egress
            domains: ["*.example.com"]
            cluster: '{{ print "outbound|80||egress." .Values.namespace ".svc.cluster.local" }}'
      global:
        log:
          logLevel: info
        misc:
          globalSidecarMode: cluster
          metricSourceType: accesslog
      kafka:
        bootstrap: kafka:9092
  component:
    globalSidecar:
      enable: true
      sidecarInject:
        enable: true
        mode: pod
        labels:
          sidecar.istio.io/inject: "true"
"""

BARE_BODY = """
general:
  autoPort: true
  autoFence: true
  defaultFence: true
  wormholePort: ["9080"]
  dispatches:
    - name: egress
      domains: ["*.example.com"]
      cluster: '{{ print "outbound|80||egress." .Values.namespace ".svc.cluster.local" }}'
global:
  log:
    logLevel: info
  misc:
    globalSidecarMode: cluster
    metricSourceType: accesslog
kafka:
  bootstrap: kafka:9092
values:
  namespace: mesh-operator
  istioNamespace: istio-system
"""


def test_slimeboot_and_bare_body_give_the_same_config(tmp_path: Path) -> None:
    slimeboot = load_config(write(tmp_path, SLIMEBOOT, "slimeboot.yaml"), {})
    bare = load_config(write(tmp_path, BARE_BODY, "bare.yaml"), {})
    assert slimeboot == bare
    assert slimeboot.general.auto_fence is True
    assert slimeboot.general.wormhole_port == ("9080",)
    assert slimeboot.global_.log.log_level == "info"
    assert slimeboot.global_.misc == {
        **MISC_DEFAULTS,
        "globalSidecarMode": "cluster",
        "metricSourceType": "accesslog",
    }
    assert slimeboot.kafka.bootstrap == "kafka:9092"
    # the SlimeBoot's top-level strings are the chart .Values that dispatch templates see
    assert slimeboot.values == {"namespace": "mesh-operator", "istioNamespace": "istio-system"}
    assert slimeboot.dispatch_clusters() == ("outbound|80||egress.mesh-operator.svc.cluster.local",)


def test_slimeboot_module_is_found_by_name_too(tmp_path: Path) -> None:
    text = """
    apiVersion: config.netease.com/v1alpha1
    kind: SlimeBoot
    spec:
      module:
        - name: lazyload
          general: {autoFence: true}
    """
    assert load(tmp_path, text).general.auto_fence is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: config.netease.com/v1alpha1\nkind: SlimeBoot\nspec:\n  module:\n"
            "    - {kind: limiter}\n",
            "spec.module: no lazyload module (an entry with kind: lazyload or name: lazyload) (FILE:4)",
        ),
        (
            "apiVersion: config.netease.com/v1alpha1\nkind: SlimeBoot\nspec:\n  module:\n"
            "    - {kind: lazyload}\n    - {name: lazyload}\n",
            "spec.module: 2 lazyload modules (entries 0, 1); keep one (FILE:4)",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\ndata: {}\n",
            "kind: expected a SlimeBoot or a bare lazyload module body, got kind 'ConfigMap' (FILE:2)",
        ),
        ("kind: SlimeBoot\napiVersion: config.netease.com/v1alpha1\n", "spec: expected a mapping, got null"),
        (
            "apiVersion: config.netease.com/v1alpha1\nkind: SlimeBoot\nspec:\n  module:\n"
            "    - kind: lazyload\n"
            "      general:\n        autoFence: maybe\n",
            "spec.module[0].general.autoFence: expected true or false, got string 'maybe' (FILE:7)",
        ),
    ],
)
def test_slimeboot_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, {})
    assert str(exc.value) == message.replace("FILE", str(path))


def test_slimeboot_with_another_api_version_is_read_with_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path, "apiVersion: config.netease.com/v1\nkind: SlimeBoot\nspec:\n  module: [{kind: lazyload}]\n"
    )
    with pytest.warns(ConfigWarning) as caught:
        load_config(path, {})
    assert [str(w.message) for w in caught] == [
        f"apiVersion: expected config.netease.com/v1alpha1, got 'config.netease.com/v1' ({path}:1)"
    ]


# --- metricSourceType and globalSidecarMode from global.misc ------------------------------------------------

PROMETHEUS = "metric: {prometheus: {address: 'http://prom:9090', handlers: {dest: {query: 'q'}}}}\n"


@pytest.mark.parametrize(
    ("text", "env", "mode", "source"),
    [
        (
            "global: {misc: {globalSidecarMode: namespace}}\ngeneral: {namespace: [a]}\n",
            {},
            "namespace",
            "accesslog",
        ),
        ("global: {misc: {metricSourceType: prometheus}}\n" + PROMETHEUS, {}, "cluster", "prometheus"),
        # general wins when both are set
        (
            "global: {misc: {metricSourceType: prometheus}}\ngeneral: {metricSourceType: accesslog}\n",
            {},
            "cluster",
            "accesslog",
        ),
        (
            "global: {misc: {globalSidecarMode: namespace}}\ngeneral: {globalSidecarMode: cluster}\n",
            {},
            "cluster",
            "accesslog",
        ),
        # a SlimeBoot, as in the lazyload tutorial
        (
            "apiVersion: config.netease.com/v1alpha1\nkind: SlimeBoot\nspec:\n  module:\n"
            "    - kind: lazyload\n"
            "      global: {misc: {metricSourceType: prometheus}}\n"
            "      metric: {prometheus: {address: 'http://prom:9090', handlers: {dest: {query: 'q'}}}}\n",
            {},
            "cluster",
            "prometheus",
        ),
        # from the environment, as misc JSON; the environment's misc beats the file's general
        (
            "general: {metricSourceType: accesslog}\n" + PROMETHEUS,
            {"LAZYSTREAM_GLOBAL_MISC": '{"metricSourceType": "prometheus"}'},
            "cluster",
            "prometheus",
        ),
        # ... but within the environment, general wins again
        (
            PROMETHEUS,
            {
                "LAZYSTREAM_GLOBAL_MISC": '{"metricSourceType": "prometheus"}',
                "LAZYSTREAM_GENERAL_METRIC_SOURCE_TYPE": "accesslog",
            },
            "cluster",
            "accesslog",
        ),
    ],
)
def test_mode_and_source_type_from_global_misc(
    tmp_path: Path, text: str, env: dict[str, str], mode: str, source: str
) -> None:
    config = load(tmp_path, text, env)
    assert (config.general.global_sidecar_mode, config.general.metric_source_type) == (mode, source)


def test_misc_keeps_slimes_defaults_under_given_entries(tmp_path: Path) -> None:
    config = load(
        tmp_path, "global: {misc: {enableLeaderElection: 'on', extra: x, metricSourceType: accesslog}}"
    )
    assert config.global_.misc == {
        **MISC_DEFAULTS,
        "enableLeaderElection": "on",
        "extra": "x",
        "metricSourceType": "accesslog",
    }


def test_bad_mode_in_misc_is_named_where_it_was_written(tmp_path: Path) -> None:
    path = write(tmp_path, "global:\n  misc:\n    globalSidecarMode: pod\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, {})
    assert str(exc.value) == (
        f"global.misc.globalSidecarMode: must be one of cluster, namespace, got string 'pod' ({path}:3)"
    )


# --- the environment ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "attr_path", "expected"),
    [
        ({"LAZYSTREAM_GENERAL_AUTO_FENCE": "true"}, "general.auto_fence", True),
        ({"LAZYSTREAM_GENERAL_AUTO_FENCE": "ON"}, "general.auto_fence", True),
        ({"LAZYSTREAM_GENERAL_AUTO_FENCE": "0"}, "general.auto_fence", False),
        ({"LAZYSTREAM_WEB_PORT": " 7000 "}, "web.port", 7000),
        ({"LAZYSTREAM_TABLES_BUCKET_SECONDS": "2.5"}, "tables.bucket_seconds", 2.5),
        ({"LAZYSTREAM_SINK_COALESCE_SECONDS": "1"}, "sink.coalesce_seconds", 1.0),
        ({"LAZYSTREAM_KAFKA_APP_ID": "demo"}, "kafka.app_id", "demo"),
        (
            {"LAZYSTREAM_KAFKA_BOOTSTRAP": "k1:9092, k2:9093"},
            "kafka.broker_url",
            "kafka://k1:9092;kafka://k2:9093",
        ),
        ({"LAZYSTREAM_KAFKA_BOOTSTRAP": "k1:9092, k2:9093"}, "kafka.servers", ("k1:9092", "k2:9093")),
        ({"LAZYSTREAM_GENERAL_WORMHOLE_PORT": "9080,9090"}, "general.wormhole_port", ("9080", "9090")),
        ({"LAZYSTREAM_GENERAL_WORMHOLE_PORT": " 9080 , ,9090,"}, "general.wormhole_port", ("9080", "9090")),
        ({"LAZYSTREAM_GENERAL_WORMHOLE_PORT": '["9080", 9090]'}, "general.wormhole_port", ("9080", "9090")),
        ({"LAZYSTREAM_GENERAL_WORMHOLE_PORT": ""}, "general.wormhole_port", ()),
        ({"LAZYSTREAM_TOPICS_PARTITION_KEY": "namespace"}, "topics.partition_key", "namespace"),
        (
            {"LAZYSTREAM_TABLES_DATA_DIR": "/var/lib/lazystream"},
            "tables.data_dir",
            Path("/var/lib/lazystream"),
        ),
        ({"LAZYSTREAM_KUBE_KUBECONFIG": "/etc/kube/config"}, "kube.kubeconfig", Path("/etc/kube/config")),
        ({"LAZYSTREAM_KUBE_KUBECONFIG": ""}, "kube.kubeconfig", None),
        (
            {"LAZYSTREAM_FENCE_IDLE_TTL_SECONDS": "3600", "LAZYSTREAM_FENCE_DIRECT_OBSERVATIONS": "yes"},
            "fence.idle_ttl_seconds",
            3600.0,
        ),
        ({"LAZYSTREAM_FENCE_IDLE_TTL_SECONDS": ""}, "fence.idle_ttl_seconds", None),
        ({"LAZYSTREAM_GLOBAL_LOG_LOG_LEVEL": "debug"}, "global_.log.log_level", "debug"),
        (
            {"LAZYSTREAM_GLOBAL_LOG_LOG_ROTATE_CONFIG_MAX_SIZE_MB": "5"},
            "global_.log.log_rotate_config.max_size_mb",
            5,
        ),
        ({"LAZYSTREAM_VALUES": '{"egress": "e.ns", "port": 80}'}, "values", {"egress": "e.ns", "port": "80"}),
        ({"LAZYSTREAM_GLOBAL_MISC": '{"a": "b"}'}, "global_.misc", {**MISC_DEFAULTS, "a": "b"}),
        (
            {
                "LAZYSTREAM_GENERAL_DISPATCHES": (
                    '[{"name": "ext", "domains": ["*.x.com"], "cluster": "PassthroughCluster"}]'
                )
            },
            "general.dispatches",
            (Dispatch(name="ext", domains=("*.x.com",), cluster="PassthroughCluster"),),
        ),
        (
            {"LAZYSTREAM_GENERAL_DOMAIN_ALIASES": '[{"pattern": "(?P<a>.+)\\\\.x", "templates": ["$a.y"]}]'},
            "general.domain_aliases",
            (DomainAlias(pattern=r"(?P<a>.+)\.x", templates=("$a.y",)),),
        ),
        (
            {
                "LAZYSTREAM_GENERAL_MANAGEMENT_SELECTORS": (
                    '[{"matchLabels": {"team": "a"}, '
                    '"matchExpressions": [{"key": "env", "operator": "Exists"}]}]'
                )
            },
            "general.management_selectors",
            (
                LabelSelector(
                    match_labels={"team": "a"},
                    match_expressions=(LabelSelectorRequirement(key="env", operator="Exists"),),
                ),
            ),
        ),
        (
            {"LAZYSTREAM_METRIC_PROMETHEUS_HANDLERS": '{"dest": {"query": "sum(x)", "type": "Group"}}'},
            "metric.prometheus.handlers",
            {"dest": PrometheusHandler(query="sum(x)", type="Group")},
        ),
        (
            {"LAZYSTREAM_GLOBAL_CONFIG_SOURCES": '[{"address": "ss://"}]'},
            "global_.config_sources",
            ({"address": "ss://"},),
        ),
        ({"LAZYSTREAM_KAFKA": '{"bootstrap": "a:1", "appId": "x"}'}, "kafka.app_id", "x"),
        (
            {"LAZYSTREAM_GLOBAL_CLIENT_GO_TOKEN_BUCKET": '{"qps": 50, "burst": 100}'},
            "global_.client_go_token_bucket.burst",
            100,
        ),
    ],
)
def test_environment_sets_each_type(env: dict[str, str], attr_path: str, expected: object) -> None:
    assert get(load_config(None, env), attr_path) == expected


def test_env_var_names_follow_the_rule() -> None:
    names = env_var_names()
    assert names["kafka.bootstrap"] == "LAZYSTREAM_KAFKA_BOOTSTRAP"
    assert names["kafka.appId"] == "LAZYSTREAM_KAFKA_APP_ID"
    assert names["topics.access"] == "LAZYSTREAM_TOPICS_ACCESS"
    assert names["tables.dataDir"] == "LAZYSTREAM_TABLES_DATA_DIR"
    assert names["web.port"] == "LAZYSTREAM_WEB_PORT"
    assert names["general.autoFence"] == "LAZYSTREAM_GENERAL_AUTO_FENCE"
    assert names["general.supportH2"] == "LAZYSTREAM_GENERAL_SUPPORT_H2"
    assert names["global.istioNamespace"] == "LAZYSTREAM_GLOBAL_ISTIO_NAMESPACE"
    assert (
        names["global.log.logRotateConfig.maxSizeMB"] == "LAZYSTREAM_GLOBAL_LOG_LOG_ROTATE_CONFIG_MAX_SIZE_MB"
    )
    assert names["metric.prometheus.handlers"] == "LAZYSTREAM_METRIC_PROMETHEUS_HANDLERS"
    assert names["values"] == "LAZYSTREAM_VALUES"
    assert len(set(names.values())) == len(names), "two settings share an environment variable"
    assert all(name.startswith("LAZYSTREAM_") and name != "LAZYSTREAM_CONFIG" for name in names.values())


def test_lazystream_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "web: {port: 7100}")
    assert load_config(None, {"LAZYSTREAM_CONFIG": str(path)}).web.port == 7100
    assert load_config(None, {"LAZYSTREAM_CONFIG": ""}).web.port == 6066


# --- precedence --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_file", "in_env", "override", "expected"),
    [
        (None, None, None, 6066),
        (7001, None, None, 7001),
        (7001, "7002", None, 7002),
        (7001, "7002", 7003, 7003),
        (None, "7002", 7003, 7003),
        (7001, None, 7003, 7003),
        (None, "7002", None, 7002),  # an override of None means "not given"
    ],
)
def test_precedence_override_env_file_default(
    tmp_path: Path, in_file: int | None, in_env: str | None, override: int | None, expected: int
) -> None:
    text = f"web: {{port: {in_file}}}" if in_file is not None else None
    env = {"LAZYSTREAM_WEB_PORT": in_env} if in_env is not None else {}
    assert load(tmp_path, text, env, {"web.port": override}).web.port == expected


def test_a_higher_source_replaces_a_whole_list(tmp_path: Path) -> None:
    config = load(
        tmp_path, "general: {wormholePort: ['9080', '9090']}", {"LAZYSTREAM_GENERAL_WORMHOLE_PORT": "8080"}
    )
    assert config.general.wormhole_port == ("8080",)


def test_a_setting_beats_its_whole_section_from_the_same_source() -> None:
    env = {
        "LAZYSTREAM_KAFKA": '{"bootstrap": "a:1", "appId": "from-section"}',
        "LAZYSTREAM_KAFKA_APP_ID": "leaf",
    }
    config = load_config(None, env)
    assert (config.kafka.bootstrap, config.kafka.app_id) == ("a:1", "leaf")


def test_overrides_take_yaml_keys_or_attribute_names(tmp_path: Path) -> None:
    config = load_config(
        None, {}, {"kafka.appId": "a", "tables.data_dir": tmp_path, "global.slimeNamespace": "slime"}
    )
    assert (config.kafka.app_id, config.tables.data_dir, config.global_.slime_namespace) == (
        "a",
        tmp_path,
        "slime",
    )
    with pytest.raises(ConfigError, match=r"^kafka\.bootstrapz: unknown setting"):
        load_config(None, {}, {"kafka.bootstrapz": "x"})


# --- warnings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "warnings_"),
    [
        (
            "general:\n  autoFenceX: true\n",
            {},
            ["general.autoFenceX: unknown key (ignored); did you mean 'autoFence'? (FILE:2)"],
        ),
        (
            "general:\n  dispatches:\n    - name: a\n      domains: [x]\n"
            "      cluster: PassthroughCluster\n      clsuter: y\n",
            {},
            ["general.dispatches[0].clsuter: unknown key (ignored); did you mean 'cluster'? (FILE:6)"],
        ),
        (
            "apiVersion: config.netease.com/v1alpha1\nkind: SlimeBoot\nspec:\n  module:\n"
            "    - kind: lazyload\n"
            "      general:\n        autoFenceX: true\n",
            {},
            ["spec.module[0].general.autoFenceX: unknown key (ignored); did you mean 'autoFence'? (FILE:7)"],
        ),
        (
            "general:\n  disableIpv4Passthrough: true\n",
            {},
            ["general.disableIpv4Passthrough: it is deprecated in Slime and has no effect (FILE:2)"],
        ),
        (
            "general:\n  disableIpv4Passthrough: false\n  autoFenceX: 1\n",
            {},
            ["general.autoFenceX: unknown key (ignored); did you mean 'autoFence'? (FILE:3)"],
        ),
        ("web:\n  port: 1\n  port: 2\n", {}, ["web.port: duplicate key; the last one counts (FILE:3)"]),
        (
            "general:\n  fenceLabelKeyAlias: app\n",
            {},
            ["general.fenceLabelKeyAlias: has no effect without general.autoFence: true (FILE:2)"],
        ),
        (
            "general:\n  dispatches:\n"
            "    - {name: a, domains: [x], domainRegex: '^x$', cluster: PassthroughCluster}\n",
            {},
            ["general.dispatches[0].domains: ignored: the rule has a domainRegex (as in Slime) (FILE:3)"],
        ),
        (
            None,
            {"LAZYSTREAM_KAFKA_BOOTSTRAPS": "x:1"},
            [
                "LAZYSTREAM_KAFKA_BOOTSTRAPS: unknown setting (ignored); "
                "did you mean 'LAZYSTREAM_KAFKA_BOOTSTRAP'?"
            ],
        ),
        (
            None,
            {"LAZYSTREAM_DATA_DIR": "/d"},
            ["LAZYSTREAM_DATA_DIR is no longer read: use LAZYSTREAM_TABLES_DATA_DIR"],
        ),
        (
            None,
            {"LAZYSTREAM_APP_ID": "a"},
            ["LAZYSTREAM_APP_ID is no longer read: use LAZYSTREAM_KAFKA_APP_ID"],
        ),
        (
            None,
            {
                "LAZYSTREAM_GENERAL_DISPATCHES": (
                    '[{"name": "a", "domains": ["x"], "cluster": "c", "extra": 1}]'
                )
            },
            ["LAZYSTREAM_GENERAL_DISPATCHES[0].extra: unknown key (ignored)"],
        ),
    ],
)
def test_unknown_and_deprecated_keys_are_warned_about(
    tmp_path: Path, text: str | None, env: dict[str, str], warnings_: list[str]
) -> None:
    path = write(tmp_path, text) if text is not None else None
    with pytest.warns(ConfigWarning) as caught:
        load_config(path, env)
    assert [str(w.message) for w in caught] == [w.replace("FILE", str(path)) for w in warnings_]


def test_every_problem_is_reported_at_once_and_an_unknown_section_is_one(tmp_path: Path) -> None:
    path = write(tmp_path, "genral:\n  autoFence: true\nweb:\n  port: nope\ntopics:\n  partitions: -1\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, {})
    assert [str(e) for e in caught.value.errors] == [
        f"genral: unknown section; did you mean 'general'? ({path}:1)",
        f"web.port: expected an integer, got string 'nope' ({path}:4)",
        f"topics.partitions: must be at least 1, got -1 ({path}:6)",
    ]
    assert str(caught.value).startswith("3 problems:\n  genral: unknown section")
    with pytest.raises(ConfigError, match=r"^xyz: unknown section \(known sections: general, global, "):
        load_config(write(tmp_path, "xyz: {}\n"), {})


def test_other_lazystream_variables_are_not_settings() -> None:
    env = {
        "LAZYSTREAM_TEST_KAFKA_BOOTSTRAP": "x",
        "LAZYSTREAM_CRDS_DIR": "/c",
        "LAZYSTREAM_DEMO_KEEP": "1",
        "PATH": "/",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_config(None, env) == Config()


# --- validation: each error names its key ------------------------------------------------------------------

ALIAS = r"(?P<service>[^.]+)\.(?P<namespace>[^.]+)\.svc\.cluster\.local$"


def aliases(*templates: str, pattern: str = ALIAS) -> str:
    return yaml.safe_dump(
        {"general": {"domainAliases": [{"pattern": pattern, "templates": list(templates)}]}}
    )


def dispatch(cluster: str, values: dict[str, str] | None = None, **extra: object) -> str:
    rules: list[dict[str, object]] = [
        {"name": "first", "domains": ["*.a.com"], "cluster": "PassthroughCluster"}
    ]
    second = {"name": "second", "cluster": cluster, **extra}
    rules.append(second if "domainRegex" in extra else {**second, "domains": ["*.b.com"]})
    return yaml.safe_dump({"general": {"dispatches": rules}, "values": values or {}})


@pytest.mark.parametrize(
    "text",
    [
        aliases("$namespace.$service.mailsaas"),
        aliases("${service}_${namespace}"),
        aliases("$$literal.$service"),
        aliases("$1.$2", "$0.alias"),
        dispatch("_GLOBAL_SIDECAR"),
        dispatch("outbound|80||egress1.testns.svc.cluster.local"),
        dispatch("{{ .Values.egress }}", {"egress": "outbound|80||e.ns.svc.cluster.local"}),
        dispatch('{{ print "outbound|80||" .Values.egress ".svc" }}', {"egress": "e.ns"}),
        dispatch('{{ (print .Values.foo "." .Values.namespace ) }}', {"foo": "egress"}),  # namespace: default
        dispatch("x", domainRegex=r"^(?:[^.])+$"),
    ],
)
def test_valid_aliases_and_dispatches_load(tmp_path: Path, text: str) -> None:
    load(tmp_path, text)


def test_dispatch_clusters_render_with_values_and_the_slime_namespace(tmp_path: Path) -> None:
    config = load(tmp_path, dispatch('{{ (print .Values.foo "." .Values.namespace ) }}', {"foo": "egress"}))
    assert config.dispatch_clusters() == ("PassthroughCluster", "egress.mesh-operator")
    config = load(tmp_path, dispatch("{{ .Values.namespace }}", {"namespace": "own"}))
    assert config.dispatch_clusters() == ("PassthroughCluster", "own")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        # domainAliases (a bad rule fails the config naming the rule)
        (
            aliases("$service.x", pattern="(?P<service>[^.]+"),
            {},
            "general.domainAliases[0].pattern: invalid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            aliases("$namespace.$service", "$svc.x"),
            {},
            "general.domainAliases[0].templates[1]: $svc refers to no named group of the pattern "
            "(named groups: namespace, service)",
        ),
        (
            aliases("$1x"),
            {},
            "general.domainAliases[0].templates[0]: $1x refers to no named group of the pattern "
            "(named groups: namespace, service); "
            "Go reads $1x as the group named '1x': write ${1}x for group 1",
        ),
        (
            aliases("${3}.x"),
            {},
            "general.domainAliases[0].templates[0]: ${3} refers to group 3, but the pattern has 2 group(s)",
        ),
        (
            aliases("$namespace.$"),
            {},
            "general.domainAliases[0].templates[0]: the $ at offset 11 starts no group reference "
            "(write $name, ${name} or $1, or $$ for a literal $)",
        ),
        (aliases(), {}, "general.domainAliases[0].templates: at least one template is required"),
        (aliases("x", pattern=""), {}, "general.domainAliases[0].pattern: is required"),
        (
            aliases("x", pattern="(?=a)"),
            {},
            "general.domainAliases[0].pattern: invalid regular expression: "
            "look-ahead at offset 0 is not supported by RE2",
        ),
        # dispatches
        (
            dispatch("x", domainRegex="(unclosed"),
            {},
            "general.dispatches[1].domainRegex: invalid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            dispatch("{{ .Values.missing }}"),
            {},
            "general.dispatches[1].cluster: .Values.missing is not set (add missing to the values section)",
        ),
        (
            dispatch('{{ print "a" .Values.egress }}', {"other": "x"}),
            {},
            "general.dispatches[1].cluster: .Values.egress is not set (add egress to the values section)",
        ),
        (
            dispatch('{{ include "x" . }}'),
            {},
            "general.dispatches[1].cluster: unsupported function 'include' in {{ include \"x\" . }}",
        ),
        (
            dispatch("{{ .Values.a | quote }}", {"a": "b"}),
            {},
            "general.dispatches[1].cluster: unexpected '| quote' in {{ .Values.a | quote }}",
        ),
        (
            dispatch("{{ .Values.empty }}", {"empty": " "}),
            {},
            "general.dispatches[1].cluster: '{{ .Values.empty }}' renders to an empty cluster name",
        ),
        (
            yaml.safe_dump({"general": {"dispatches": [{"name": "a", "cluster": "c"}]}}),
            {},
            "general.dispatches[0].domains: a dispatch needs domains or a domainRegex",
        ),
        (
            yaml.safe_dump({"general": {"dispatches": [{"domains": ["x"], "cluster": "c"}]}}),
            {},
            "general.dispatches[0].name: is required",
        ),
        (
            yaml.safe_dump({"general": {"dispatches": [{"name": "a", "domains": ["x"]}]}}),
            {},
            "general.dispatches[0].cluster: is required",
        ),
        (
            yaml.safe_dump(
                {"general": {"dispatches": [{"name": "a", "domains": ["x"], "cluster": "c"}] * 2}}
            ),
            {},
            "general.dispatches[1].name: 'a' is already the name of dispatches[0]",
        ),
        # fences: an idle TTL needs direct observations
        (
            "fence: {idleTtlSeconds: 3600}",
            {},
            "fence.idleTtlSeconds: an idle time-to-live needs fence.directObservations: true "
            "(callers' sidecar outbound logs shipped); otherwise a dependency in use is never seen again "
            "once it goes direct, and expires",
        ),
        (
            None,
            {"LAZYSTREAM_FENCE_IDLE_TTL_SECONDS": "60"},
            "LAZYSTREAM_FENCE_IDLE_TTL_SECONDS: an idle time-to-live needs",
        ),
        (
            "fence: {idleTtlSeconds: 0, directObservations: true}",
            {},
            "fence.idleTtlSeconds: must be greater than 0, got 0.0",
        ),
        (
            "fence: {clusterDomain: 'Cluster..local'}",
            {},
            "fence.clusterDomain: 'Cluster..local' is not a DNS name",
        ),
        # namespace scope
        (
            "general: {whiteNamespaceList: 'a,b', blackNamespaceList: c}",
            {},
            "general.whiteNamespaceList: "
            "whiteNamespaceList and blackNamespaceList exclude each other: set one",
        ),
        (
            "general: {blackNamespaceList: 'a,B_c'}",
            {},
            "general.blackNamespaceList: 'B_c' is not a namespace name",
        ),
        (
            "general: {globalSidecarMode: namespace}",
            {},
            "general.namespace: globalSidecarMode namespace needs at least one namespace here",
        ),
        (
            "general: {globalSidecarMode: pod}",
            {},
            "general.globalSidecarMode: must be one of cluster, namespace, got string 'pod'",
        ),
        (
            "general: {metricSourceType: kafka}",
            {},
            "general.metricSourceType: must be one of accesslog, prometheus, got string 'kafka'",
        ),
        (
            "general: {managementSelectors: [{matchExpressions: [{key: env, operator: Has}]}]}",
            {},
            "general.managementSelectors[0].matchExpressions[0].operator: must be one of In, NotIn, Exists, "
            "DoesNotExist, got string 'Has'",
        ),
        (
            "general: {managementSelectors: [{matchExpressions: [{key: env, operator: In}]}]}",
            {},
            "general.managementSelectors[0].matchExpressions[0].values: operator In needs at least one value",
        ),
        (
            "general: {fenceLabelKeyAlias: 'a:b:c', autoFence: true}",
            {},
            "general.fenceLabelKeyAlias: 'a:b:c' is not <labelKey>[:<alias>]",
        ),
        (
            "general: {proxyVersion: '^1\\.(2'}",
            {},
            "general.proxyVersion: invalid regular expression: missing ), unterminated subpattern",
        ),
        # prometheus mode needs an address and a handler
        (
            "general: {metricSourceType: prometheus}\nmetric: {prometheus: {address: 'http://prom:9090'}}",
            {},
            "metric.prometheus.handlers: "
            "at least one handler is required when general.metricSourceType is prometheus",
        ),
        (
            "general: {metricSourceType: prometheus}\nmetric: {prometheus: {handlers: {a: {query: q}}}}",
            {},
            "metric.prometheus.address: is required when general.metricSourceType is prometheus",
        ),
        (
            "metric: {prometheus: {address: 'prom:9090'}}",
            {},
            "metric.prometheus.address: 'prom:9090' is not an http(s) URL",
        ),
        (
            "metric: {prometheus: {handlers: {a: {type: Value}}}}",
            {},
            "metric.prometheus.handlers.a.query: is required",
        ),
        # topics
        ("topics: {access: 'bad topic!'}", {}, "topics.access: 'bad topic!' is not a valid Kafka topic name"),
        (
            None,
            {"LAZYSTREAM_TOPICS_DEAD_LETTER": ".."},
            "LAZYSTREAM_TOPICS_DEAD_LETTER: '..' is not a valid Kafka topic name",
        ),
        (
            "topics: {edges: lazystream-access}",
            {},
            "topics.edges: 'lazystream-access' is already the access topic",
        ),
        ("topics: {partitions: 0}", {}, "topics.partitions: must be at least 1, got 0"),
        (
            None,
            {"LAZYSTREAM_TOPICS_PARTITIONS": "zero"},
            "LAZYSTREAM_TOPICS_PARTITIONS: 'zero' is not an integer",
        ),
        (
            None,
            {"LAZYSTREAM_TOPICS_REPLICATION": "0"},
            "LAZYSTREAM_TOPICS_REPLICATION: must be at least 1, got 0",
        ),
        (
            None,
            {"LAZYSTREAM_TOPICS_PARTITION_KEY": "pod"},
            "LAZYSTREAM_TOPICS_PARTITION_KEY: must be one of fence, namespace, got string 'pod'",
        ),
        # ports and brokers
        ("web: {port: 70000}", {}, "web.port: 70000 is not a TCP port (1-65535)"),
        (None, {"LAZYSTREAM_WEB_PORT": "0"}, "LAZYSTREAM_WEB_PORT: 0 is not a TCP port (1-65535)"),
        (
            "general: {wormholePort: ['9080', http]}",
            {},
            "general.wormholePort[1]: 'http' is not a port number (1-65535)",
        ),
        (
            None,
            {"LAZYSTREAM_GENERAL_WORMHOLE_PORT": "9080,99999"},
            "LAZYSTREAM_GENERAL_WORMHOLE_PORT[1]: '99999' is not a port number (1-65535)",
        ),
        (
            None,
            {"LAZYSTREAM_KAFKA_BOOTSTRAP": "no-port"},
            "LAZYSTREAM_KAFKA_BOOTSTRAP: 'no-port' is not host:port",
        ),
        ("kafka: {bootstrap: 'a:1,'}", {}, "kafka.bootstrap: '' is not host:port"),
        # types
        ("general: {autoFence: 'yes'}", {}, "general.autoFence: expected true or false, got string 'yes'"),
        (
            None,
            {"LAZYSTREAM_GENERAL_AUTO_FENCE": "maybe"},
            "LAZYSTREAM_GENERAL_AUTO_FENCE: 'maybe' is not a boolean (true or false)",
        ),
        (
            "global: {misc: {enableLeaderElection: off}}",
            {},
            "global.misc.enableLeaderElection: expected a string, got boolean false "
            "(YAML reads on/off/yes/no as booleans: quote it)",
        ),
        ("tables: {bucketSeconds: fast}", {}, "tables.bucketSeconds: expected a number, got string 'fast'"),
        ("topics: {partitions: 1.5}", {}, "topics.partitions: expected an integer, got number 1.5"),
        ("general: {dispatches: {name: x}}", {}, "general.dispatches: expected a list, got a mapping"),
        ("general: [autoFence]", {}, "general: expected a mapping, got a list"),
        ("values: {a: [1]}", {}, "values.a: expected a string, got a list"),
        (None, {"LAZYSTREAM_GENERAL_DISPATCHES": "[{"}, "LAZYSTREAM_GENERAL_DISPATCHES: invalid JSON: "),
        (
            None,
            {"LAZYSTREAM_GENERAL_DISPATCHES": '[{"name": "a", "cluster": "c", "domainRegex": "("}]'},
            "LAZYSTREAM_GENERAL_DISPATCHES[0].domainRegex: invalid regular expression: ",
        ),
        (
            "global: {slimeNamespace: Mesh_Operator}",
            {},
            "global.slimeNamespace: 'Mesh_Operator' is not a namespace name",
        ),
        ("global: {log: {logLevel: loud}}", {}, "global.log.logLevel: 'loud' is not a log level"),
    ],
)
def test_invalid_values_fail_naming_their_key(
    tmp_path: Path, text: str | None, env: dict[str, str], message: str
) -> None:
    assert error_of(tmp_path, text, env).startswith(message)


def test_errors_in_the_file_give_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        general:
          dispatches:
            - name: ok
              domains: ["*"]
              cluster: PassthroughCluster
            - name: broken
              domainRegex: "(["
              cluster: _GLOBAL_SIDECAR
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path, {})
    assert exc.value.key == "general.dispatches[1].domainRegex"
    assert exc.value.location == f"{path}:7"
    assert str(exc.value).startswith("general.dispatches[1].domainRegex: invalid regular expression: ")
    assert str(exc.value).endswith(f" ({path}:7)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("general:\n  autoFence: true\n autoPort: false\n", "FILE:3:2: invalid YAML: "),
        ("general: {autoFence: true\n", "FILE:2:1: invalid YAML: "),
        ("a: 1\n---\nb: 2\n", "FILE:2:1: invalid YAML: "),
        (
            "- just\n- a list\n",
            "FILE: the top level must be a mapping: a SlimeBoot or a lazyload module body",
        ),
    ],
)
def test_yaml_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, {})
    assert str(exc.value).startswith(message.replace("FILE", str(path)))


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the configuration file"):
        load_config(tmp_path / "nope.yaml", {})


def test_sections_validate_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"^idleTtlSeconds: an idle time-to-live needs"):
        FenceSettings(idle_ttl_seconds=10)
    assert FenceSettings(idle_ttl_seconds=10, direct_observations=True).idle_ttl_seconds == 10
    with pytest.raises(ConfigError, match=r"^domainRegex: invalid regular expression: missing \)"):
        Dispatch(name="x", cluster="c", domain_regex="(")
    with pytest.raises(ConfigError, match=r"^general\.dispatches\[0\]\.cluster: \.Values\.x is not set"):
        Config(
            general=GeneralSettings(
                dispatches=(Dispatch(name="x", domains=("*",), cluster="{{ .Values.x }}"),)
            )
        )


# --- derived helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"mesh-operator"}),
        ("general: {clusterGsNamespace: gs}", {"gs"}),
        ("general: {globalSidecarMode: namespace, namespace: [a, b], clusterGsNamespace: gs}", {"a", "b"}),
        ("global: {misc: {globalSidecarMode: namespace}}\ngeneral: {namespace: [c]}", {"c"}),
    ],
)
def test_global_sidecar_namespaces(tmp_path: Path, text: str, expected: set[str]) -> None:
    assert load(tmp_path, text).global_sidecar_namespaces() == expected


def test_scope_helpers(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "general: {whiteNamespaceList: ' a, b ,', fenceLabelKeyAlias: 'version:ver', autoFence: true}\n"
        "global: {istioRev: 'canary,stable'}",
    )
    assert config.general.white_namespaces == {"a", "b"}
    assert config.general.black_namespaces == frozenset()
    assert (config.general.fence_label_key, config.general.fence_label_alias) == ("version", "ver")
    assert config.global_.istio_revs == {"canary", "stable"}


def test_alias_rules_compile_for_the_domain_code(tmp_path: Path) -> None:
    (rule,) = load(tmp_path, aliases("$namespace.$service.mailsaas")).general.domain_aliases
    match = rule.regex().search("details.default.svc.cluster.local")
    assert match is not None
    assert match.group("namespace") == "default"


# --- the YAML form and `lazystream config show` -------------------------------------------------------------

FULL = """
general:
  wormholePort: ["9080"]
  autoFence: true
  dispatches:
    - {name: ext, domains: ["*.example.com"], cluster: '{{ .Values.egress }}'}
  domainAliases:
    - pattern: '(?P<service>[^.]+)\\.(?P<namespace>[^.]+)\\.svc\\.cluster\\.local$'
      templates: ['$namespace.$service.mailsaas']
  managementSelectors:
    - matchLabels: {team: a}
      matchExpressions: [{key: env, operator: In, values: [prod]}]
global:
  configSources: [{address: "ss://", extra: {nested: [1, 2]}}]
  log: {logRotateConfig: {maxSizeMB: 5}}
metric:
  prometheus:
    address: http://prom:9090
    handlers: {dest: {query: 'sum(x)'}}
fence: {idleTtlSeconds: 600, directObservations: true}
kube: {kubeconfig: /etc/kube/config}
leaderElection: {leaseNamespace: ops, identity: worker-0, leaseDurationSeconds: 30}
globalSidecar: {port: 8080, portsFile: /etc/global-sidecar/cfg, records: forward, upstreamTimeoutSeconds: 30}
values: {egress: 'outbound|80||egress.mesh.svc.cluster.local'}
"""


def test_to_dict_round_trips(tmp_path: Path) -> None:
    config = load(tmp_path, FULL)
    shown = config.to_dict()
    assert list(shown) == [
        "general",
        "global",
        "metric",
        "kafka",
        "topics",
        "tables",
        "fence",
        "sink",
        "web",
        "kube",
        "leaderElection",
        "globalSidecar",
        "fallback",
        "values",
    ]
    assert shown["global"]["log"]["logRotateConfig"]["maxSizeMB"] == 5
    assert shown["general"]["managementSelectors"] == [
        {
            "matchLabels": {"team": "a"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
        }
    ]
    assert shown["kube"] == {"kubeconfig": "/etc/kube/config"}
    assert load(tmp_path, yaml.safe_dump(shown)) == config


def test_config_show_prints_the_effective_config(tmp_path: Path) -> None:
    path = write(tmp_path, "general: {autoFence: true}\nweb: {port: 7000}\n")
    result = CliRunner().invoke(
        main, ["config", "show", "--config", str(path)], env={"LAZYSTREAM_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["general"]["autoFence"] is True
    assert shown["kafka"] == {
        "bootstrap": "k1:9092,k2:9092",
        "appId": "lazystream",
        "security": {
            "protocol": "PLAINTEXT",
            "caFile": None,
            "certFile": None,
            "keyFile": None,
            "checkHostname": True,
            "saslMechanism": "SCRAM-SHA-512",
            "username": "",
            "password": "",
            "passwordFile": None,
        },
    }
    assert shown["global"]["misc"] == MISC_DEFAULTS
    assert "web:\n  host: 127.0.0.1\n  port: 7000\n" in result.stdout
    assert (
        "global:\n  service: app\n  istioNamespace: istio-system\n  slimeNamespace: mesh-operator\n"
        in result.stdout
    )
    assert load_config(path, {"LAZYSTREAM_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}).to_dict() == shown


def test_config_show_reports_warnings_and_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "general: {autoFenceX: true}\n")
    result = CliRunner().invoke(main, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0
    assert (
        f"warning: general.autoFenceX: unknown key (ignored); did you mean 'autoFence'? ({path}:1)"
        in result.stderr
    )
    result = CliRunner().invoke(main, ["config", "show"], env={"LAZYSTREAM_WEB_PORT": "http"})
    assert result.exit_code == 2
    assert "LAZYSTREAM_WEB_PORT: 'http' is not an integer" in result.stderr


def test_leader_election_settings(tmp_path: Path) -> None:
    config = load_config(environ={"LAZYSTREAM_LEADER_ELECTION_LEASE_DURATION_SECONDS": "20"})
    lease = LeaseSettings.from_config(config)
    assert (lease.namespace, lease.name, lease.lease_duration) == ("mesh-operator", "lazystream-leader", 20.0)
    path = tmp_path / "c.yaml"
    path.write_text("leaderElection: {leaseNamespace: ops, renewDeadlineSeconds: 15}\n")
    with pytest.raises(ConfigError, match=r"leaderElection.leaseDurationSeconds: must be greater than"):
        load_config(path, environ={})
    path.write_text("leaderElection: {renewDeadlineSeconds: 2, retryPeriodSeconds: 2}\n")
    with pytest.raises(ConfigError, match=r"leaderElection.renewDeadlineSeconds: must be greater than 1.2"):
        load_config(path, environ={})
    path.write_text("leaderElection: {leaseNamespace: Not_A_Namespace}\n")
    with pytest.raises(ConfigError, match=r"leaderElection.leaseNamespace"):
        load_config(path, environ={})
    path.write_text("leaderElection: {leaseNamespace: ops, identity: worker-0}\n")
    config = load_config(path, environ={})
    assert config.lease_namespace == "ops"
    assert config.leader_election.identity == "worker-0"
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseSettings("ns", "l", lease_duration=2, renew_deadline=3)


def test_global_sidecar_section_from_file_and_environment(tmp_path: Path) -> None:
    config = load(tmp_path, "globalSidecar: {port: 8080, records: forward}\n")
    assert config.global_sidecar.port == 8080
    assert config.global_sidecar.records == "forward"
    assert config.global_sidecar.probe_port == 18181
    env = {
        "LAZYSTREAM_GLOBAL_SIDECAR_SERVICE_CACHE": "false",
        "LAZYSTREAM_GLOBAL_SIDECAR_PORTS_FILE": "/x/cfg",
    }
    config = load_config(None, env)
    assert config.global_sidecar.service_cache is False
    assert config.global_sidecar.ports_file == Path("/x/cfg")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LAZYSTREAM_GLOBAL_SIDECAR_PORT": "18181"}, "probePort: must differ from port"),
        ({"LAZYSTREAM_GLOBAL_SIDECAR_PORT": "0"}, "is not a TCP port"),
        ({"LAZYSTREAM_GLOBAL_SIDECAR_FORWARD_TAG": "lazystream"}, "is not <tag>.<label>"),
        ({"LAZYSTREAM_GLOBAL_SIDECAR_UPSTREAM_TIMEOUT_SECONDS": "-1"}, "must be 0 (no timeout) or more"),
        ({"LAZYSTREAM_GLOBAL_SIDECAR_RECORDS": "kafka"}, "LAZYSTREAM_GLOBAL_SIDECAR_RECORDS"),
    ],
)
def test_global_sidecar_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, env)


def test_config_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lazystream.cli import main

    path = write(tmp_path, "general:\n  autoFence: true\n")
    env = {"LAZYSTREAM_WEB_PORT": "7000"}
    result = CliRunner().invoke(
        main, ["config", "show", "--config", str(path), "--origin", "-o", "json"], env=env
    )
    assert result.exit_code == 0, result.output
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    assert rows["general.autoFence"] == {"key": "general.autoFence", "value": True, "from": f"{path}:2"}
    assert rows["web.port"] == {"key": "web.port", "value": 7000, "from": "LAZYSTREAM_WEB_PORT"}
    assert rows["kafka.bootstrap"]["from"] == "default"
    table = CliRunner().invoke(main, ["config", "show", "--config", str(path), "--origin"], env=env).stdout
    assert table.splitlines()[0].split() == ["SETTING", "VALUE", "FROM"]
    as_json = CliRunner().invoke(main, ["config", "show", "-o", "json"], env=env).stdout
    assert json.loads(as_json)["web"]["port"] == 7000


def test_slimes_hyphenated_misc_keys_can_be_set_from_the_environment() -> None:
    env = {
        "LAZYSTREAM_GLOBAL_MISC_AUX_ADDR": ":9999",
        "LAZYSTREAM_GLOBAL_MISC_LOG_SOURCE_PORT": ":1",
        "LAZYSTREAM_GLOBAL_MISC_CUSTOM_THING": "x",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of them is "unknown"
        misc = load_config(None, env).global_.misc
    assert (misc["aux-addr"], misc["logSourcePort"], misc["custom-thing"]) == (":9999", ":1", "x")
    assert misc["metrics-addr"] == ":8080"  # the others keep Slime's defaults
