"""Kubernetes API clients built from a kubeconfig or the in-cluster service account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

FIELD_MANAGER = "lazystream"
"""The single server-side-apply field manager lazystream writes with."""


DEFAULT_REQUEST_TIMEOUT = (10.0, 60.0)
"""(connect, read) seconds for every request that sets no ``_request_timeout`` of its own. The client's
default is none at all: one request to an API server that stops answering (not refusing) would hold its
thread forever, and a worker's exit waits for the threads of its executors."""


def api_client(kubeconfig: Path | None = None, *, connections: int | None = None) -> client.ApiClient:
    """An API client: from ``kubeconfig`` when given, else in-cluster, else the default kubeconfig; every
    request is bounded by :data:`DEFAULT_REQUEST_TIMEOUT` unless it says otherwise.

    ``connections``: idle connections kept for reuse (the client's default: five per CPU). A process that
    holds more at once, such as a worker's watches besides its sink's writers, should say how many: each
    connection returned to a full pool is closed with a warning."""
    settings = type.__call__(client.Configuration)  # a new one, not a copy of the process-wide default
    if connections is not None:
        settings.connection_pool_maxsize = connections
    if kubeconfig is not None:
        loaded = config.new_client_from_config(config_file=str(kubeconfig), client_configuration=settings)
        return _bounded(loaded)
    try:
        config.load_incluster_config(client_configuration=settings)
    except config.ConfigException:
        return _bounded(config.new_client_from_config(client_configuration=settings))
    return _bounded(client.ApiClient(settings))


def _bounded(api: client.ApiClient) -> client.ApiClient:
    rest = api.rest_client
    request = rest.request

    def bounded_request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return request(*args, _request_timeout=_request_timeout or DEFAULT_REQUEST_TIMEOUT, **kwargs)

    rest.request = bounded_request
    return api


def dynamic_client(api: client.ApiClient) -> DynamicClient:
    """A discovery-backed client for custom resources (ServiceFence, Sidecar, ...)."""
    return DynamicClient(api)


SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def bearer_token(kubeconfig: Path | None = None) -> str | None:
    """The bearer token the kubeconfig's current user authenticates with (a static token, or what its exec
    or auth-provider plugin returns), else the pod's ServiceAccount token; None when there is neither (a
    client certificate cannot be forwarded to a worker's admin API)."""
    settings = type.__call__(client.Configuration)
    try:
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=settings
        )
    except (config.ConfigException, OSError, TypeError):
        try:
            return SERVICE_ACCOUNT_TOKEN.read_text().strip() or None
        except OSError:
            return None
    auth = settings.api_key.get("authorization") or settings.api_key.get("BearerToken") or ""
    token = auth.removeprefix("Bearer ").strip()
    return token or None
