"""deploy/: every overlay renders with the real kustomize, and what it renders agrees with lazystream's own
settings (configuration keys, topics, ports, probes), with Slime's metadata, and with what the leader writes
(no field the controller manages). Applying them to the real API server:
tests/integration/test_deploy_apply.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from lazystream.config import ConfigWarning, GlobalSidecarSettings, WebSettings, load_config
from lazystream.domain import wormhole
from lazystream.ops.topics import TopicKind, changelog_topic, topic_names
from tests.fixtures.deploy import DEPLOY, OVERLAYS, find, render, render_with

WORKLOAD_KINDS = {"StatefulSet", "Deployment", "DaemonSet"}


def overlay_config(objects: list[dict[str, Any]], tmp_path: Path, env: dict[str, str] | None = None) -> Any:
    config_map = find(objects, "ConfigMap", "lazystream-config", "mesh-operator")
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(path, environ=env or {})
    assert not [w for w in caught if issubclass(w.category, ConfigWarning)], [str(w.message) for w in caught]
    return config


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_the_four_overlays_exist() -> None:
    assert OVERLAYS == [
        "cluster-accesslog",
        "cluster-prometheus",
        "namespace-accesslog",
        "namespace-prometheus",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_configuration_loads_without_warnings(overlay: str, tmp_path: Path) -> None:
    objects = render(overlay)
    worker = find(objects, "StatefulSet", "lazystream", "mesh-operator")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    env = container_env(container)
    env["LAZYSTREAM_LEADER_ELECTION_LEASE_NAMESPACE"] = "mesh-operator"  # a fieldRef in the pod
    config = overlay_config(objects, tmp_path, env)
    mode, metric = overlay.split("-")
    assert config.general.global_sidecar_mode == mode
    assert config.general.metric_source_type == metric
    if mode == "namespace":
        # one global-sidecar per listed namespace, and each has its own directory in the overlay
        assert set(config.general.namespace) == {
            d["metadata"]["namespace"] for d in objects if d["kind"] == "Deployment"
        }
    if metric == "prometheus":
        assert "$source_app" in config.metric.prometheus.handlers["destination"].query
    # the StatefulSet mounts the generated ConfigMap where LAZYSTREAM_CONFIG points
    volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
    generated = find(objects, "ConfigMap", "lazystream-config", "mesh-operator")["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == generated
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["LAZYSTREAM_CONFIG"] == f"{mount['config']}/config.yaml"
    assert str(config.tables.data_dir) == mount["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_worker_is_a_statefulset_with_a_volume_per_replica_and_admin_probes(overlay: str) -> None:
    worker = find(render(overlay), "StatefulSet", "lazystream", "mesh-operator")
    spec = worker["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (container,) = spec["template"]["spec"]["containers"]
    port = int(container_env(container)["LAZYSTREAM_WEB_PORT"])
    assert port == WebSettings().port == 6066
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"admin": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "lazystream"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_field_the_controller_manages(overlay: str) -> None:
    """The leader writes the global-sidecar ConfigMap's data and the Service's wormhole ports;
    nothing in deploy/ carries status, managed fields or generated identifiers."""
    objects = render(overlay)
    for obj in objects:
        assert "status" not in obj, obj["metadata"]
        for generated in ("uid", "resourceVersion", "managedFields", "creationTimestamp", "generation"):
            assert generated not in obj["metadata"], obj["metadata"]
    for config_map in (
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "global-sidecar"
    ):
        assert "data" not in config_map
        assert config_map["metadata"]["labels"]["lazyload.slime.io/config"] == "global-sidecar"
    for service in (
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "global-sidecar"
    ):
        assert [p["port"] for p in service["spec"]["ports"]] == [GlobalSidecarSettings().port]
        assert "clusterIP" not in service["spec"]
    assert not [
        o for o in objects if o["kind"] == "EnvoyFilter" and o["metadata"]["name"] == "to-global-sidecar"
    ]
    assert not [o for o in objects if o["kind"] in {"ServiceFence", "Sidecar"}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_deploy_and_the_leader_both_write_agrees(overlay: str) -> None:
    """The leader applies the whole global-sidecar Service and ConfigMap (lazystream.domain.wormhole) with
    server-side apply; every field deploy/ also sets must have the leader's value, or re-applying deploy/
    would conflict with the leader's ownership."""
    objects = render(overlay)
    for namespace in {o["metadata"]["namespace"] for o in objects if o["kind"] == "Deployment"}:
        ours = find(objects, "Service", "global-sidecar", namespace)
        leaders = wormhole.render_service(
            namespace, [GlobalSidecarSettings().port, 9080], wormhole.DEFAULT_SELECTOR
        )
        assert ours["spec"]["selector"] == leaders["spec"]["selector"]
        assert leaders["metadata"]["labels"].items() <= ours["metadata"]["labels"].items()
        for port in ours["spec"]["ports"]:
            assert port in leaders["spec"]["ports"]
        config_map = find(objects, "ConfigMap", "global-sidecar", namespace)
        leaders_map = wormhole.render_config_map(namespace, [80])
        assert leaders_map["metadata"]["labels"].items() <= config_map["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_global_sidecar_is_never_fenced_and_carries_slimes_metadata(overlay: str) -> None:
    objects = render(overlay)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        namespace = deployment["metadata"]["namespace"]
        service = find(objects, "Service", "global-sidecar", namespace)
        assert service["metadata"]["labels"]["slime.io/serviceFenced"] == "false"
        template = deployment["spec"]["template"]
        assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
        proxy = yaml.safe_load(template["metadata"]["annotations"]["proxy.istio.io/config"])["proxyMetadata"]
        assert proxy["ISTIO_META_SLIME_APP"] == "LAZYLOAD_GLOBAL_SIDECAR"  # the loop guard's match
        if overlay.endswith("prometheus"):
            assert proxy["ISTIO_META_ISTIO_VERSION"] == "999.0.0"
            exchange = find(objects, "EnvoyFilter", "global-sidecar-metadata-exchange-remove", namespace)
            patches = exchange["spec"]["configPatches"]
            assert {p["match"]["context"] for p in patches} == {
                "SIDECAR_INBOUND",
                "SIDECAR_OUTBOUND",
                "GATEWAY",
            }
            assert {p["patch"]["operation"] for p in patches} == {"REMOVE"}
            assert not [o for o in objects if o["kind"] == "Telemetry"]
        else:
            assert "ISTIO_META_ISTIO_VERSION" not in proxy
            telemetry = find(objects, "Telemetry", "global-sidecar-accesslog", namespace)
            assert telemetry["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        (container,) = template["spec"]["containers"]
        env = container_env(container)
        probe_port = int(env["LAZYSTREAM_GLOBAL_SIDECAR_PROBE_PORT"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": int(env["LAZYSTREAM_GLOBAL_SIDECAR_PORT"]), "probe": probe_port}
        assert service["spec"]["ports"][0]["targetPort"] == ports["http"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "probe"}
        # the ports file is the ConfigMap the leader writes, mounted
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["ports"]["configMap"]["name"] == "global-sidecar"
        mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["ports"]
        assert container["args"] == ["global-sidecar", "--ports-file", f"{mount}/cfg"]


def rules_of(objects: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> list[Any]:
    return find(objects, kind, name, namespace)["rules"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_bound_where_the_objects_are(overlay: str) -> None:
    """The worker may write the global-sidecar's ConfigMap and Service, and the fallback EnvoyFilter, by
    name, exactly where its mode puts them; each global-sidecar may list and watch Services."""
    objects = render(overlay)
    mode = overlay.split("-")[0]
    gs_namespaces = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Deployment"}
    envoyfilter_namespaces = {"istio-system"} if mode == "cluster" else gs_namespaces
    for namespace in gs_namespaces:
        config_maps, services = rules_of(objects, "Role", "lazystream-worker-global-sidecar", namespace)
        assert config_maps["resourceNames"] == services["resourceNames"] == ["global-sidecar"]
        assert (config_maps["resources"], config_maps["verbs"]) == (["configmaps"], ["get", "patch"])
        assert (services["resources"], services["verbs"]) == (["services"], ["patch"])
        binding = find(objects, "RoleBinding", "lazystream-worker-global-sidecar", namespace)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "lazystream", "namespace": "mesh-operator"}
        ]
        gs_bindings = [
            o
            for o in objects
            if o["kind"] == "ClusterRoleBinding"
            and o["roleRef"]["name"] == "lazystream-global-sidecar"
            and o["subjects"][0]["namespace"] == namespace
        ]
        assert [b["subjects"][0]["name"] for b in gs_bindings] == ["global-sidecar"]
    for namespace in envoyfilter_namespaces:
        create, named = rules_of(objects, "Role", "lazystream-worker-envoyfilters", namespace)
        assert create["resources"] == named["resources"] == ["envoyfilters"]
        assert create["verbs"] == ["create"]
        assert (named["resourceNames"], named["verbs"]) == (["to-global-sidecar"], ["patch"])
    assert rules_of(objects, "ClusterRole", "lazystream-global-sidecar") == [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch"]}
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_match_what_the_worker_uses(overlay: str, tmp_path: Path) -> None:
    """The Strimzi KafkaTopics are a component: without it an overlay applies where Strimzi does not run."""
    assert not [o for o in render(overlay) if o["kind"] == "KafkaTopic"]
    objects = render_with(overlay, "kafka-topics", workdir=tmp_path)
    config = overlay_config(objects, tmp_path)
    topics = {o["spec"]["topicName"]: o["spec"] for o in objects if o["kind"] == "KafkaTopic"}
    names = topic_names(config)
    assert set(topics) == set(names.values())
    for kind, name in names.items():
        assert topics[name]["partitions"] == config.topics.partitions
        assert topics[name]["replicas"] == config.topics.replication
        expected = {"cleanup.policy": "compact"} if kind is TopicKind.CHANGELOG else None
        assert topics[name].get("config") == expected
    assert names[TopicKind.CHANGELOG] == changelog_topic(config)


def test_fluent_bit_tails_every_global_sidecar_namespace() -> None:
    for overlay in ("cluster-accesslog", "namespace-accesslog"):
        daemonset = find(render(overlay), "DaemonSet", "fluent-bit", "mesh-operator")
        env = container_env(daemonset["spec"]["template"]["spec"]["containers"][0])
        assert env["GS_NAMESPACE"] == ("mesh-operator" if overlay.startswith("cluster") else "*")
        assert env["ACCESS_TOPIC"] == "lazystream-access"
    for overlay in ("cluster-prometheus", "namespace-prometheus"):
        assert not [o for o in render(overlay) if o["kind"] == "DaemonSet"]


def test_mesh_config_keeps_a_format_lazystream_reads() -> None:
    mesh = yaml.safe_load((DEPLOY / "istio" / "mesh-config.yaml").read_text())
    assert mesh["kind"] == "IstioOperator"
    config = mesh["spec"]["meshConfig"]
    assert config["accessLogEncoding"] in {"TEXT", "JSON"}
    assert config["accessLogFormat"] == ""  # Istio's default text format: the parser's and Fluent Bit's


def test_every_workload_runs_as_non_root_without_privilege_escalation() -> None:
    for overlay in OVERLAYS:
        for obj in render(overlay):
            if obj["kind"] not in WORKLOAD_KINDS or obj["metadata"]["name"] == "fluent-bit":
                continue  # Fluent Bit reads the node's root-owned logs
            pod = obj["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]
            for container in pod["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nothing_on_the_data_path_runs_alone(overlay: str, tmp_path: Path) -> None:
    """Two global-sidecars and two workers, spread over nodes, each with a PodDisruptionBudget; the admin
    port behind a NetworkPolicy; the PodMonitor a component for the Prometheus operator."""
    objects = render(overlay)
    for kind, name in (("Deployment", "global-sidecar"), ("StatefulSet", "lazystream")):
        for workload in (o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name):
            assert workload["spec"]["replicas"] >= 2
            spread = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            terms = spread["preferredDuringSchedulingIgnoredDuringExecution"]
            assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            budgets = [
                o
                for o in objects
                if o["kind"] == "PodDisruptionBudget"
                and o["metadata"].get("namespace") == workload["metadata"].get("namespace")
                and o["spec"]["selector"] == workload["spec"]["selector"]
            ]
            assert len(budgets) == 1, (kind, name)
    policy = find(objects, "NetworkPolicy", "lazystream-admin")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "lazystream"}}
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert not [o for o in objects if o["kind"] == "PodMonitor"]
    (monitor,) = [
        o for o in render_with(overlay, "monitoring", workdir=tmp_path) if o["kind"] == "PodMonitor"
    ]
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "admin", "path": "/metrics", "interval": "30s"}
    ]
