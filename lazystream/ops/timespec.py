"""``--since`` values: a point in time or a duration back from now."""

from __future__ import annotations

import re
from datetime import datetime

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class TimeSpecError(ValueError):
    """A ``--since`` value that is neither a time nor a duration."""


def parse_duration(text: str) -> float | None:
    """Seconds of ``90s``, ``10m``, ``1h30m``, ``2d``, ``1w``; None when ``text`` is not a duration."""
    text = text.strip()
    if not text or _DURATION.sub("", text) != "":
        return None
    return sum(float(n) * _UNITS[u.lower()] for n, u in _DURATION.findall(text))


def parse_since(text: str, now: float) -> float:
    """Unix seconds of ``text``: a duration back from ``now`` (``15m``), ISO 8601 (``2024-05-01T10:00:00Z``;
    without a zone it is local time) or Unix seconds (``1714557600``)."""
    duration = parse_duration(text)
    if duration is not None:
        return now - duration
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise TimeSpecError(
            f"{text!r} is neither a duration (90s, 15m, 2h, 1d), ISO 8601 nor Unix seconds"
        ) from None
