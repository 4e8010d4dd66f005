"""Builders of access-log records as the real producers write them.

- :func:`istio_text_line`: Istio's default text format (``EnvoyTextLogFormat``): the same layout before and
  after Istio 1.23, where ``%UPSTREAM_CLUSTER%`` became ``%UPSTREAM_CLUSTER_RAW%``.
- :func:`envoy_json`: Istio's JSON encoding (``meshConfig.accessLogEncoding: JSON``).
- :func:`fluent_bit` / :func:`fluent_bit_cri`: Fluent Bit's Kafka output with ``format: json``: one compact
  JSON object whose **first** key is ``timestamp_key`` (``@timestamp``, a double by default or ISO 8601),
  followed by the record's keys in order (``out_kafka``'s ``produce_message``).
- :func:`global_sidecar_record`: a record of lazystream's own global-sidecar proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from lazystream.domain.records import GLOBAL_SIDECAR_MARKER

DEFAULT_TIME = 1764237600.5  # 2025-11-27T10:00:00.5Z


def iso_time(ts: float) -> str:
    """Envoy's START_TIME: ISO 8601 with milliseconds and ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def istio_fields(
    *,
    authority: str = "details:9080",
    upstream_cluster: str = "outbound|9080||details.default.svc.cluster.local",
    downstream_remote_address: str = "10.244.0.15:51234",
    start_time: float = DEFAULT_TIME,
    response_code: int = 200,
    **overrides: Any,
) -> dict[str, Any]:
    """The fields of Istio's access-log formats, in ``EnvoyJSONLogFormatIstio`` key order."""
    fields: dict[str, Any] = {
        "start_time": iso_time(start_time),
        "route_name": "default",
        "method": "GET",
        "path": "/details/0",
        "protocol": "HTTP/1.1",
        "response_code": response_code,
        "response_flags": "-",
        "response_code_details": "via_upstream",
        "connection_termination_details": "-",
        "upstream_transport_failure_reason": "-",
        "bytes_received": 0,
        "bytes_sent": 178,
        "duration": 12,
        "upstream_service_time": "12",
        "x_forwarded_for": "-",
        "user_agent": "curl/8.5.0",
        "request_id": "4d9f3c07-1b2e-4b5a-9a41-7e0e2f6f5b11",
        "authority": authority,
        "upstream_host": "10.244.0.12:9080",
        "upstream_cluster": upstream_cluster,
        "upstream_local_address": "10.244.0.15:45194",
        "downstream_local_address": "10.96.0.20:9080",
        "downstream_remote_address": downstream_remote_address,
        "requested_server_name": "-",
    }
    fields.update(overrides)
    return fields


def istio_text_line(**kwargs: Any) -> str:
    """One line of Istio's default text format (no trailing newline)."""
    f = istio_fields(**kwargs)

    def q(key: str) -> str:
        return f'"{f[key]}"'

    return (
        f'[{f["start_time"]}] "{f["method"]} {f["path"]} {f["protocol"]}" {f["response_code"]} '
        f"{f['response_flags']} {f['response_code_details']} {f['connection_termination_details']} "
        f"{q('upstream_transport_failure_reason')} {f['bytes_received']} {f['bytes_sent']} {f['duration']} "
        f"{f['upstream_service_time']} {q('x_forwarded_for')} {q('user_agent')} {q('request_id')} "
        f"{q('authority')} {q('upstream_host')} {f['upstream_cluster']} {f['upstream_local_address']} "
        f"{f['downstream_local_address']} {f['downstream_remote_address']} {f['requested_server_name']} "
        f"{f['route_name']}"
    )


def envoy_json(**kwargs: Any) -> bytes:
    """One access-log line in Istio's JSON encoding."""
    return orjson.dumps(istio_fields(**kwargs))


def kubernetes_meta(namespace: str, pod: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The ``kubernetes`` map of Fluent Bit's kubernetes filter for an ``istio-proxy`` container."""
    return {
        "pod_name": pod,
        "namespace_name": namespace,
        "pod_id": "0b8f1f0e-6d6c-4b8e-9c43-5f4a2f6b1c2d",
        "labels": dict(labels),
        "host": "node-1",
        "container_name": "istio-proxy",
        "docker_id": "3f1e2d",
        "container_hash": "docker.io/istio/proxyv2@sha256:0f1e",
        "container_image": "docker.io/istio/proxyv2:1.24.0",
    }


def fluent_bit(
    record: Mapping[str, Any],
    *,
    timestamp: float | str = DEFAULT_TIME,
    timestamp_key: str = "@timestamp",
) -> bytes:
    """A record as Fluent Bit's Kafka output writes it (``format: json``): the timestamp key first."""
    return orjson.dumps({timestamp_key: timestamp, **record})


def fluent_bit_cri(
    line: str,
    *,
    namespace: str | None = "default",
    pod: str = "productpage-v1-7d6cfb7dfd-x2k8p",
    labels: Mapping[str, str] | None = None,
    timestamp: float = DEFAULT_TIME,
    parsed: bool = False,
) -> bytes:
    """A tailed container-log line after the ``cri`` multiline parser and the kubernetes filter.

    With ``parsed=True`` the Istio parser filter has also run (``reserve_data: on``): the Envoy fields
    are at top level next to the CRI fields.
    """
    record: dict[str, Any] = {
        "time": iso_time(timestamp)[:-1] + "712345Z",
        "stream": "stdout",
        "_p": "F",
        "log": line,
    }
    if parsed:
        from lazystream.domain.records import ISTIO_TEXT_LINE

        match = ISTIO_TEXT_LINE.match(line)
        if match is None:
            raise ValueError(f"not an Istio line: {line!r}")
        del record["log"]
        record.update(match.groupdict())
    if namespace is not None:
        record["kubernetes"] = kubernetes_meta(
            namespace, pod, labels or {"app": "productpage", "version": "v1"}
        )
    return fluent_bit(record, timestamp=timestamp)


def global_sidecar_record(
    *,
    authority: str = "details:9080",
    peer_address: str = "10.244.0.15:51234",
    source_namespace: str | None = "default",
    peer_principal: str | None = None,
    original_destination: str | None = "10.96.0.20:9080",
    response_code: int = 200,
    time: float = DEFAULT_TIME,
    duration_ms: float = 3.2,
    x_forwarded_for: str | None = None,
) -> dict[str, Any]:
    """One request as lazystream's global-sidecar reports it (serialise with orjson, or wrap in
    :func:`fluent_bit` for the path through Fluent Bit's forward input)."""
    return {
        GLOBAL_SIDECAR_MARKER[0]: GLOBAL_SIDECAR_MARKER[1],
        "time": time,
        "peer_address": peer_address,
        "x_forwarded_for": x_forwarded_for,
        "source_namespace": source_namespace,
        "peer_principal": peer_principal,
        "authority": authority,
        "original_destination": original_destination,
        "response_code": response_code,
        "duration_ms": duration_ms,
    }
