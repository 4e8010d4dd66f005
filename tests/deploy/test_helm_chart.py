"""deploy/helm/lazystream: the Helm chart, rendered with the real helm, against the kustomize overlays.

For each of the four modes the chart (with ``modes/<mode>.yaml``) and the overlay of the same name must
produce the same objects: the same kinds, names and namespaces, and the same content once what only tells
the two tools apart is set aside (Helm's own labels, the hash suffix kustomize gives generated ConfigMaps,
the checksum annotation the chart rolls pods with, the order of a container's env, a map keyed by name that
a strategic merge reorders). The configuration file is compared as lazystream reads
it, so comments and the keys the chart spells out for its defaults do not count.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lazystream.config import load_config
from lazystream.ops.topics import changelog_topic
from tests.fixtures.deploy import (
    CHART,
    MODES,
    OVERLAYS,
    RELEASE_NAMESPACE,
    find,
    helm_template,
    render,
    render_chart,
    render_with,
)
from tests.fixtures.servers import REPO

HELM_LABELS = {"app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "helm.sh/chart"}
GENERATED = re.compile(r"(lazystream-config|fluent-bit)-[a-z0-9]{10}")

Key = tuple[str, str | None, str]


def _key(obj: dict[str, Any]) -> Key:
    return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def _walk(value: Any) -> Any:
    """``value`` with generated ConfigMap names unhashed and Helm's labels and checksums removed."""
    if isinstance(value, dict):
        out = {k: _walk(v) for k, v in value.items()}
        for field in ("labels", "annotations"):
            if isinstance(out.get(field), dict):
                out[field] = {
                    k: v
                    for k, v in out[field].items()
                    if k not in HELM_LABELS and not k.startswith("checksum/")
                }
                if not out[field]:
                    del out[field]
        if isinstance(out.get("env"), list):  # a map keyed by name (a strategic merge reorders it)
            out["env"] = sorted(out["env"], key=lambda e: e["name"])
        return out
    if isinstance(value, list):
        return [_walk(v) for v in value]
    if isinstance(value, str) and (m := GENERATED.fullmatch(value)):
        return m.group(1)
    return value


def _config_as_read(obj: dict[str, Any], tmp_path: Path, name: str) -> dict[str, Any]:
    file = tmp_path / f"{name}.yaml"
    file.write_text(obj["data"]["config.yaml"])
    return load_config(file, environ={}).to_dict()


def normalised(objects: list[dict[str, Any]], tmp_path: Path, tag: str) -> dict[Key, Any]:
    out: dict[Key, Any] = {}
    for obj in objects:
        obj = _walk(copy.deepcopy(obj))
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "lazystream-config":
            obj["data"] = {"config.yaml": _config_as_read(obj, tmp_path, tag)}
        key = _key(obj)
        assert key not in out, f"{tag}: {key} twice"
        out[key] = obj
    return out


def test_there_are_values_for_each_overlay() -> None:
    assert MODES == OVERLAYS


@pytest.mark.parametrize("mode", MODES)
def test_chart_and_overlay_render_the_same_objects(mode: str, tmp_path: Path) -> None:
    chart = normalised(render_chart(mode), tmp_path, "chart")
    overlay = normalised(render(mode), tmp_path, "overlay")
    assert sorted(chart, key=str) == sorted(overlay, key=str), "different objects"
    for key, obj in overlay.items():
        assert chart[key] == obj, (
            f"{key} differs:\nchart:   {json.dumps(chart[key], sort_keys=True)}\n"
            f"overlay: {json.dumps(obj, sort_keys=True)}"
        )


def test_every_object_carries_helms_labels_and_pods_roll_with_their_configuration() -> None:
    objects = render_chart("cluster-accesslog")
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        assert labels["app.kubernetes.io/managed-by"] == "Helm", _key(obj)
        assert labels["app.kubernetes.io/part-of"] == "lazystream", _key(obj)
    worker = find(objects, "StatefulSet", "lazystream", RELEASE_NAMESPACE)
    before = worker["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    changed = find(
        render_chart("cluster-accesslog", "--set", "config.topics.partitions=8"),
        "StatefulSet",
        "lazystream",
        RELEASE_NAMESPACE,
    )
    assert changed["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != before


def test_the_release_namespace_is_where_the_worker_and_the_cluster_global_sidecar_go(tmp_path: Path) -> None:
    out = helm_template("-n", "lazy", mode="cluster-accesslog")
    assert out.returncode == 0, out.stderr
    objects = [d for d in yaml.safe_load_all(out.stdout) if d]
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"}
    assert namespaces == {"lazy", "istio-system", None}
    config_map = find(objects, "ConfigMap", "lazystream-config", "lazy")
    file = tmp_path / "config.yaml"
    file.write_text(config_map["data"]["config.yaml"])
    config = load_config(file, environ={})
    assert config.global_.slime_namespace == "lazy"
    assert config.general.cluster_gs_namespace == "lazy"
    binding = find(objects, "RoleBinding", "lazystream-worker-envoyfilters", "istio-system")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lazystream", "namespace": "lazy"}]


def test_namespace_mode_puts_a_global_sidecar_in_each_listed_namespace(tmp_path: Path) -> None:
    objects = render_chart("namespace-accesslog", "--set", "namespaces={shop,pay}")
    deployments = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Deployment"}
    assert deployments == {"shop", "pay"}
    fallback_roles = {
        o["metadata"]["namespace"]
        for o in objects
        if _key(o)[::2] == ("Role", "lazystream-worker-envoyfilters")
    }
    assert fallback_roles == {"shop", "pay"}
    config_map = find(objects, "ConfigMap", "lazystream-config", RELEASE_NAMESPACE)
    file = tmp_path / "config.yaml"
    file.write_text(config_map["data"]["config.yaml"])
    assert load_config(file, environ={}).general.namespace == ("shop", "pay")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "globalSidecarMode=namespaced"], "'/globalSidecarMode': value must be one of"),
        (["--set", "metricSourceType=logs"], "'/metricSourceType'"),
        (["--set", "worker.replicas=0"], "'/worker/replicas': minimum"),
        (
            ["--set", "namespaces={Not_A_Namespace}", "--set", "globalSidecarMode=namespace"],
            "'/namespaces/0'",
        ),
        (["--set", "globalSidecarMode=namespace"], "namespaces: namespace mode"),
        (["--set", "metricSourceType=prometheus"], "config.metric.prometheus.address"),
        (["--set", "wokrer.replicas=3"], "'wokrer' not allowed"),
    ],
)
def test_invalid_values_fail_naming_the_field(args: list[str], message: str) -> None:
    out = helm_template(*args)
    assert out.returncode != 0, out.stdout[:500]
    assert message in out.stderr, out.stderr


def test_optional_objects_match_the_kustomize_components(tmp_path: Path) -> None:
    chart = render_chart(
        "cluster-accesslog", "--set", "kafkaTopics.enabled=true", "--set", "podMonitor.enabled=true"
    )
    overlay = render_with("cluster-accesslog", "kafka-topics", "monitoring", workdir=tmp_path)
    wanted = {"KafkaTopic", "PodMonitor"}
    assert normalised([o for o in chart if o["kind"] in wanted], tmp_path, "chart") == normalised(
        [o for o in overlay if o["kind"] in wanted], tmp_path, "overlay"
    )


def test_kafka_topics_follow_the_configured_names(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "kafkaTopics": {"enabled": True},
                "config": {
                    "kafka": {"appId": "mesh"},
                    "tables": {"version": 3},
                    "topics": {"access": "logs"},
                },
            }
        )
    )
    objects = render_chart("cluster-accesslog", "-f", str(values))
    names = {o["spec"]["topicName"] for o in objects if o["kind"] == "KafkaTopic"}
    config_map = find(objects, "ConfigMap", "lazystream-config", RELEASE_NAMESPACE)
    file = tmp_path / "config.yaml"
    file.write_text(config_map["data"]["config.yaml"])
    config = load_config(file, environ={})
    assert names == {"logs", "lazystream-edges", "lazystream-dead-letter", changelog_topic(config)}
    assert changelog_topic(config) == "mesh-learned-v3-changelog"
    daemonset = find(objects, "DaemonSet", "fluent-bit", RELEASE_NAMESPACE)
    env = {e["name"]: e.get("value") for e in daemonset["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ACCESS_TOPIC"] == "logs"


def test_fluent_bits_files_are_one_copy_in_the_repository() -> None:
    """kustomize reads no file outside its directory, so deploy/components/fluent-bit holds the files;
    fluentbit/ and the chart link to them."""
    real = REPO / "deploy" / "components" / "fluent-bit"
    for name in ("fluent-bit.yaml", "lazystream.lua"):
        assert not (real / name).is_symlink()
        for link in (REPO / "fluentbit" / name, CHART / "files" / name):
            assert link.is_symlink(), link
            assert link.resolve() == (real / name).resolve(), link
