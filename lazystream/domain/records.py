"""Access-log records: every format lazystream reads, auto-detected, parsed with orjson, never raising.

One Kafka message is one record. Accepted, per message:

1. Fluent Bit's Kafka output in ``json`` format: an object whose first key is the timestamp key
   (``@timestamp`` or ``date``; a double or ISO 8601), then the record — either a raw ``log`` string holding
   an Envoy line (text or JSON), or the Envoy fields already parsed at top level — and optionally the
   ``kubernetes`` map of the pod that wrote the line.
2. An Envoy/Istio JSON access-log object (Istio's JSON encoding keys).
3. A raw Envoy text line in Istio's default format (before and after Istio 1.23).
4. A record of lazystream's own global-sidecar proxy: a JSON object with ``"lazystream":
   "global-sidecar/v1"`` (directly, or wrapped by Fluent Bit's forward input and Kafka output, or as the
   ``log`` line of Fluent Bit's tail of the proxy's standard output).

Anything else is a :class:`ParseError` with a reason, for the dead-letter topic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

TIMESTAMP_KEYS = ("@timestamp", "date")
GLOBAL_SIDECAR_MARKER = ("lazystream", "global-sidecar/v1")
DEFAULT_MAX_RECORD_BYTES = 65536

# Istio's default text format (EnvoyTextLogFormat); the upstream cluster is %UPSTREAM_CLUSTER% before 1.23
# and %UPSTREAM_CLUSTER_RAW% since, in the same position. TCP lines carry "- - -" for the request.
ISTIO_TEXT_LINE = re.compile(
    # possessive quantifiers: no field can give characters back, so a mismatch fails fast
    r'^\[(?P<start_time>[^\]]++)\] "(?P<method>\S++) (?P<path>\S++) (?P<protocol>[^"]++)" '
    r"(?P<response_code>\d++) (?P<response_flags>\S++) (?P<response_code_details>\S++) "
    r'(?P<connection_termination_details>\S++) "(?P<upstream_transport_failure_reason>[^"]*+)" '
    r"(?P<bytes_received>\d++) (?P<bytes_sent>\d++) (?P<duration>\S++) (?P<upstream_service_time>\S++) "
    r'"(?P<x_forwarded_for>[^"]*+)" "(?P<user_agent>[^"]*+)" "(?P<request_id>[^"]*+)" '
    r'"(?P<authority>[^"]*+)" "(?P<upstream_host>[^"]*+)" (?P<upstream_cluster>\S++) '
    r"(?P<upstream_local_address>\S++) (?P<downstream_local_address>\S++) "
    r"(?P<downstream_remote_address>\S++) (?P<requested_server_name>\S++) (?P<route_name>\S++)\s*$"
)


class RecordFormat(StrEnum):
    FLUENT_BIT = "fluent-bit"
    ENVOY_JSON = "envoy-json"
    ISTIO_TEXT = "istio-text"
    GLOBAL_SIDECAR = "global-sidecar"


class ParseProblem(StrEnum):
    """Why a message is not a record: the dead-letter reason."""

    TOO_LARGE = "too_large"
    EMPTY = "empty"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNRECOGNISED_LINE = "unrecognised_line"
    UNKNOWN_FORMAT = "unknown_format"
    MISSING_FIELDS = "missing_fields"
    BAD_FIELD = "bad_field"


@dataclass(frozen=True, slots=True)
class ParseError:
    problem: ParseProblem
    detail: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.detail}"


class PodMeta(NamedTuple):
    """The pod that wrote the line, from Fluent Bit's ``kubernetes`` filter."""

    namespace: str
    name: str
    labels: Mapping[str, str] = {}


class AccessRecord(NamedTuple):
    """The fields of one access record that lazystream uses. ``None`` means absent (Envoy's ``-``).

    A named tuple rather than a frozen dataclass: one is built per Kafka message, and building a tuple
    costs a fraction of a frozen dataclass's per-field ``object.__setattr__``.
    """

    format: RecordFormat
    authority: str | None
    upstream_cluster: str | None = None
    downstream_remote_address: str | None = None
    event_time: float | None = None
    x_forwarded_for: str | None = None
    response_code: int | None = None
    pod: PodMeta | None = None
    source_namespace: str | None = None
    """``Slime-Source-Ns`` as lazystream's global-sidecar received it."""
    peer_principal: str | None = None
    """The caller's client-certificate principal, when lazystream's global-sidecar saw one."""
    original_destination: str | None = None
    """``Slime-Orig-Dest``: the address the caller's sidecar meant to reach."""


Parsed = AccessRecord | ParseError


def parse_record(data: bytes, *, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Parsed:
    """Parse one Kafka message into an :class:`AccessRecord`, or say precisely why not."""
    if len(data) > max_bytes:
        return ParseError(ParseProblem.TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    # Fluent Bit and Envoy JSON messages start with "{": skip copying them through strip().
    text = data if data[:1] == b"{" else data.strip()
    if not text:
        return ParseError(ParseProblem.EMPTY, "empty message")
    if text[:1] == b"{":
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return ParseError(ParseProblem.INVALID_JSON, str(exc)[:200])
        return _from_object(obj) if isinstance(obj, dict) else _not_an_object(obj)
    try:
        line = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseError(ParseProblem.NOT_UTF8, str(exc)[:200])
    parsed = _from_text_line(line, RecordFormat.ISTIO_TEXT)
    if isinstance(parsed, ParseError) and text[:1] == b"[":  # Istio lines start with "[", so do JSON arrays
        try:
            return _not_an_object(orjson.loads(text))
        except orjson.JSONDecodeError:
            pass
    return parsed


def _not_an_object(value: Any) -> ParseError:
    return ParseError(ParseProblem.NOT_AN_OBJECT, f"JSON {type(value).__name__}")


def _from_object(obj: dict[str, Any]) -> Parsed:
    first = next(iter(obj), None)
    if first in TIMESTAMP_KEYS:
        return _from_fluent_bit(obj, first)
    if obj.get(GLOBAL_SIDECAR_MARKER[0]) == GLOBAL_SIDECAR_MARKER[1]:
        return _from_global_sidecar(obj, None)
    if "upstream_cluster" in obj or "authority" in obj:
        return _from_envoy_fields(obj, RecordFormat.ENVOY_JSON, event_time=None, pod=None)
    return ParseError(ParseProblem.UNKNOWN_FORMAT, f"JSON object with keys {sorted(obj)[:8]}")


def _from_fluent_bit(obj: dict[str, Any], timestamp_key: str) -> Parsed:
    stamp = obj[timestamp_key]
    event_time = stamp if stamp.__class__ is float else _event_time(stamp)  # a double: Fluent Bit's default
    if isinstance(event_time, ParseError):
        return event_time
    pod = obj.get("kubernetes")
    if pod is not None:
        pod = _pod_meta(pod)
        if isinstance(pod, ParseError):
            return pod
    if obj.get(GLOBAL_SIDECAR_MARKER[0]) == GLOBAL_SIDECAR_MARKER[1]:
        return _from_global_sidecar(obj, event_time)
    if "upstream_cluster" in obj or "authority" in obj:
        return _from_envoy_fields(obj, RecordFormat.FLUENT_BIT, event_time=event_time, pod=pod)
    log = obj.get("log")
    if not isinstance(log, str):
        return ParseError(ParseProblem.MISSING_FIELDS, "Fluent Bit record without Envoy fields or a log line")
    log = log.strip()
    if log.startswith("{"):
        try:
            inner = orjson.loads(log)
        except orjson.JSONDecodeError as exc:
            return ParseError(ParseProblem.INVALID_JSON, f"log: {str(exc)[:200]}")
        if not isinstance(inner, dict):
            return ParseError(ParseProblem.NOT_AN_OBJECT, "log: not a JSON object")
        if inner.get(GLOBAL_SIDECAR_MARKER[0]) == GLOBAL_SIDECAR_MARKER[1]:  # its stdout, tailed unparsed
            return _from_global_sidecar(inner, event_time)
        return _from_envoy_fields(inner, RecordFormat.FLUENT_BIT, event_time=event_time, pod=pod)
    return _from_text_line(log, RecordFormat.FLUENT_BIT, event_time=event_time, pod=pod)


_ABSENT = frozenset({"", "-"})
_ENVOY_KEYS = ("authority", "upstream_cluster", "downstream_remote_address", "x_forwarded_for")


def _from_text_line(
    line: str, fmt: RecordFormat, *, event_time: float | None = None, pod: PodMeta | None = None
) -> Parsed:
    match = ISTIO_TEXT_LINE.match(line)
    if match is None:
        return ParseError(ParseProblem.UNRECOGNISED_LINE, f"not Istio's access-log format: {line[:120]!r}")
    start, code, *values = match.group("start_time", "response_code", *_ENVOY_KEYS)
    authority, cluster, remote, xff = (None if v in _ABSENT else v for v in values)
    if event_time is None:
        parsed_time = _event_time(start)
        event_time = None if isinstance(parsed_time, ParseError) else parsed_time
    return AccessRecord(fmt, authority, cluster, remote, event_time, xff, int(code), pod)


def _from_envoy_fields(
    fields: Mapping[str, Any], fmt: RecordFormat, *, event_time: float | None, pod: PodMeta | None
) -> Parsed:
    """The hot path for JSON records: plain loops, no helper call per field."""
    values: list[str | None] = []
    for key in _ENVOY_KEYS:
        value = fields.get(key)
        if value is None or value.__class__ is str:
            values.append(None if value is None or value in _ABSENT else value.strip())
        else:
            return ParseError(ParseProblem.BAD_FIELD, f"{key}: expected a string, got {type(value).__name__}")
    authority, cluster, remote, xff = values
    if cluster is None:
        return ParseError(ParseProblem.MISSING_FIELDS, "no upstream_cluster")
    code = _optional_int(fields.get("response_code"))
    if isinstance(code, ParseError):
        return ParseError(ParseProblem.BAD_FIELD, f"response_code: {code.detail}")
    if event_time is None:
        start = fields.get("start_time")
        parsed_time = _event_time(start) if isinstance(start, str) else None
        event_time = None if isinstance(parsed_time, ParseError) else parsed_time
    return AccessRecord(fmt, authority, cluster, remote, event_time, xff, code, pod)


_GLOBAL_SIDECAR_KEYS = (
    "authority",
    "peer_address",
    "x_forwarded_for",
    "source_namespace",
    "peer_principal",
    "original_destination",
)


def _from_global_sidecar(obj: Mapping[str, Any], event_time: float | None) -> Parsed:
    """The hot path for lazystream's own records (every fallback call is one): one plain loop over the
    string fields, as in :func:`_from_envoy_fields`."""
    values: list[str | None] = []
    for key in _GLOBAL_SIDECAR_KEYS:
        value = obj.get(key)
        if value is None:
            values.append(None)
        elif value.__class__ is str:
            value = value.strip()
            values.append(None if value in _ABSENT else value)
        else:
            return ParseError(ParseProblem.BAD_FIELD, f"{key}: expected a string, got {type(value).__name__}")
    authority, peer, xff, source_namespace, principal, original = values
    if authority is None or peer is None:
        return ParseError(
            ParseProblem.MISSING_FIELDS, "global-sidecar record needs authority and peer_address"
        )
    if event_time is None and "time" in obj:
        parsed_time = _event_time(obj["time"])
        if isinstance(parsed_time, ParseError):
            return parsed_time
        event_time = parsed_time
    code = obj.get("response_code")
    if code is not None and code.__class__ is not int:
        code = _optional_int(code)
        if isinstance(code, ParseError):
            return ParseError(ParseProblem.BAD_FIELD, f"response_code: {code.detail}")
    return AccessRecord(
        RecordFormat.GLOBAL_SIDECAR,
        authority,
        None,
        peer,
        event_time,
        xff,
        code,
        None,
        source_namespace,
        principal,
        original,
    )


def _optional_int(value: Any) -> int | ParseError | None:
    if value is None or value == "-":
        return None
    if isinstance(value, bool):
        return ParseError(ParseProblem.BAD_FIELD, "expected an integer, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 10:
        return int(value)
    return ParseError(ParseProblem.BAD_FIELD, f"expected an integer, got {str(value)[:40]!r}")


def _event_time(value: Any) -> float | ParseError:
    """Unix seconds from a double (Fluent Bit's default) or an ISO 8601 string (Envoy, Fluent Bit)."""
    if value.__class__ is float:  # Fluent Bit's default
        return float(value)
    if isinstance(value, bool):
        return ParseError(ParseProblem.BAD_FIELD, "timestamp: bool")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return ParseError(ParseProblem.BAD_FIELD, f"timestamp: {str(value)[:40]!r} is not a time")


def _pod_meta(value: Any) -> PodMeta | ParseError | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return ParseError(ParseProblem.BAD_FIELD, "kubernetes: not an object")
    namespace, name, labels = value.get("namespace_name"), value.get("pod_name"), value.get("labels") or {}
    if not isinstance(namespace, str) or not isinstance(name, str):
        return ParseError(ParseProblem.BAD_FIELD, "kubernetes: namespace_name and pod_name must be strings")
    if not isinstance(labels, Mapping):
        return ParseError(ParseProblem.BAD_FIELD, "kubernetes.labels: expected a map of strings")
    for value in labels.values():
        if value.__class__ is not str:
            return ParseError(ParseProblem.BAD_FIELD, "kubernetes.labels: expected a map of strings")
    return PodMeta(namespace, name, labels)
