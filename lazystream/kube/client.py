"""Kubernetes API clients built from a kubeconfig or the in-cluster service account."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

FIELD_MANAGER = "lazystream"
"""The single server-side-apply field manager lazystream writes with (decisions §1)."""


def api_client(kubeconfig: Path | None = None) -> client.ApiClient:
    """An API client: from ``kubeconfig`` when given, else in-cluster, else the default kubeconfig."""
    if kubeconfig is not None:
        return config.new_client_from_config(config_file=str(kubeconfig))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        return config.new_client_from_config()
    return client.ApiClient()


def dynamic_client(api: client.ApiClient) -> DynamicClient:
    """A discovery-backed client for custom resources (ServiceFence, Sidecar, ...)."""
    return DynamicClient(api)
