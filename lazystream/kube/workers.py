"""Reaching the workers' admin API through the API server, as ``kubectl`` and ``istioctl`` reach pods.

An operator has a kubeconfig, not a route to each worker's pod. The API server proxies HTTP to a pod's port
(``/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>``, the ``pods/proxy`` subresource), so the CLI
lists the worker pods by their labels and asks them there. For ``explain`` it asks each and keeps the
answer of the worker that holds the fence's learned state (it has the times and counts); a reset may go to
any worker, since it travels on the edges topic to whichever holds the fence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from lazystream.kube.errors import short_reason


@dataclass(frozen=True, slots=True)
class WorkerPod:
    namespace: str
    name: str
    port: int

    def path(self, path: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}:{self.port}/proxy/{path.lstrip('/')}"


class NoWorkers(LookupError):
    """No running worker pod matched."""


def find_workers(api: client.ApiClient, namespace: str, selector: str, port: int) -> list[WorkerPod]:
    """The running worker pods (those with an IP), by name; :class:`NoWorkers` when there are none."""
    try:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    except (ApiException, HTTPError) as exc:  # HTTPError: the API server cannot be reached
        raise NoWorkers(f"cannot list the worker pods in {namespace} ({short_reason(exc)})") from exc
    found = sorted(
        p.metadata.name for p in pods if p.status and p.status.pod_ip and not p.metadata.deletion_timestamp
    )
    if not found:
        raise NoWorkers(f"no running worker pod in namespace {namespace} with labels {selector}")
    return [WorkerPod(namespace, name, port) for name in found]


def proxy(
    api: client.ApiClient,
    pod: WorkerPod,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request to ``pod``'s admin API through the API server: its status and JSON body.

    The API server authenticates the request with its ``Authorization`` header and removes it before
    proxying: a token for the admin API itself goes in another header (``headers``)."""
    headers = {"Accept": "application/json", **(headers or {})}
    request = api.param_serialize(
        method=method, resource_path=pod.path(path), header_params=headers, auth_settings=["BearerToken"]
    )
    try:
        response = api.call_api(*request)
        response.read()
    except (ApiException, HTTPError, OSError) as exc:  # never printed whole: it may hold headers
        return 502, {"error": f"the API server's proxy to pod {pod.name} failed ({short_reason(exc)})"}
    return int(response.status), _json(response.data)


def _json(data: bytes | str | None) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {"error": str(data)[:200]}
    return value if isinstance(value, dict) else {"value": value}
