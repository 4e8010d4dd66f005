"""lazystream's Kafka messages as people read them: ``lazystream tail`` decodes through here.

Each of lazystream's topics carries one kind of message:

- **access**: access-log records, any key, in any format :func:`~lazystream.domain.records.parse_record`
  reads;
- **edges**: learned-state changes (observe, seed, reset, expire, restore), keyed by fence;
- **dead-letter**: the unreadable access records, verbatim, with ``lazystream-reason`` / ``-detail``
  headers and ``lazystream-origin`` (``<access topic>/<partition>@<offset>``: a record read twice after a
  crash is dead-lettered twice with the same origin);
- **changelog**: the learned-state table's changelog, keyed by fence, each value the fence's whole state
  (host → first seen, last seen, count); an empty value is a deletion.

:func:`decode` turns one message into a plain dict (``-o json``); :func:`one_line` renders that dict as one
readable line. Nothing here raises on hostile bytes: an undecodable message is shown as such.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from lazystream.domain import learned
from lazystream.domain.records import AccessRecord, parse_record

MAX_SHOWN_BYTES = 200
"""Raw values longer than this are cut in one-line output (``-o json`` keeps them whole)."""


class TopicKind(StrEnum):
    ACCESS = "access"
    EDGES = "edges"
    DEAD_LETTER = "dead-letter"
    CHANGELOG = "changelog"


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def decode(
    kind: TopicKind,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> dict[str, Any]:
    """The readable content of one message of a ``kind`` topic (without Kafka coordinates)."""
    out: dict[str, Any] = {"key": _text(key)}
    if kind is TopicKind.ACCESS:
        out.update(_access(value or b""))
    elif kind is TopicKind.EDGES:
        out.update(_edge(value))
    elif kind is TopicKind.DEAD_LETTER:
        head = {k: _text(v) for k, v in headers}
        out["reason"] = head.get("lazystream-reason")
        out["detail"] = head.get("lazystream-detail")
        if "lazystream-origin" in head:
            out["origin"] = head["lazystream-origin"]
        out["value"] = _text(value)
    else:
        out.update(_changelog(value))
    return out


def _access(value: bytes) -> dict[str, Any]:
    record = parse_record(value)
    if not isinstance(record, AccessRecord):
        return {"error": str(record), "value": _text(value)}
    fields = record._asdict()
    fields["format"] = str(record.format)
    if record.pod is not None:
        fields["pod"] = f"{record.pod.namespace}/{record.pod.name}"
    return {k: v for k, v in fields.items() if v is not None}


def _edge(value: bytes | None) -> dict[str, Any]:
    try:
        message = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return {"error": "not JSON", "value": _text(value)}
    if not isinstance(message, dict):
        return {"error": "not an object", "value": _text(value)}
    return message


def _changelog(value: bytes | None) -> dict[str, Any]:
    if not value:
        return {"deleted": True}
    state = learned.decode_state(value)
    return {
        "hosts": {h: {"first": v.first, "last": v.last, "count": v.count} for h, v in sorted(state.items())}
    }


def _time(seconds: Any) -> str:
    try:
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    except (TypeError, ValueError, OverflowError, OSError):
        return str(seconds)


def _cut(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= MAX_SHOWN_BYTES else text[:MAX_SHOWN_BYTES] + "…"


def one_line(kind: TopicKind, decoded: Mapping[str, Any]) -> str:
    """``decoded`` (from :func:`decode`) as one line, without the Kafka coordinates."""
    key = decoded.get("key") or "-"
    if "error" in decoded:
        return f"{key}  UNREADABLE ({decoded['error']}): {_cut(decoded.get('value'))}"
    if kind is TopicKind.ACCESS:
        parts = [f"[{decoded.get('format')}]"]
        if "event_time" in decoded:
            parts.append(_time(decoded["event_time"]))
        for field, label in (
            ("downstream_remote_address", "from"),
            ("pod", "pod"),
            ("source_namespace", "ns"),
            ("authority", "authority"),
            ("upstream_cluster", "cluster"),
            ("response_code", "code"),
        ):
            if field in decoded:
                parts.append(f"{label}={decoded[field]}")
        return f"{key}  " + " ".join(parts)
    if kind is TopicKind.EDGES:
        op = decoded.get("op", "?")
        detail = decoded.get("host") or ",".join(str(h) for h in decoded.get("hosts") or []) or ""
        if op == learned.Op.RESTORE and isinstance(decoded.get("state"), Mapping):
            detail = ",".join(sorted(decoded["state"]))
        kind_of = f" ({decoded['kind']})" if decoded.get("kind") else ""
        return f"{key}  {op} {detail}{kind_of} at {_time(decoded.get('t'))}".rstrip()
    if kind is TopicKind.DEAD_LETTER:
        return f"{key}  {decoded.get('reason')}: {decoded.get('detail')}  {_cut(decoded.get('value'))}"
    if decoded.get("deleted"):
        return f"{key}  (deleted)"
    hosts = decoded.get("hosts") or {}
    listed = ", ".join(f"{h} (x{v['count']})" for h, v in hosts.items())
    return f"{key}  {len(hosts)} hosts: {listed}"
