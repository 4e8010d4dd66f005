"""The Kubernetes error vocabulary of every API-server client here (the sink, the leader, the watch cache,
access reviews, the admin proxy): how an error is counted, described in a log line, and whether another
attempt can help.

Descriptions are log-safe: an API error's status, reason and the message of the server's ``Status`` body,
never headers (they may carry tokens) or request data.
"""

from __future__ import annotations

from typing import Any

import orjson
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (HTTPError, OSError)
"""Errors of reaching the API server at all (no answer), as opposed to an answer that is an error."""


def error_label(exc: BaseException) -> str:
    """A counter key: ``error:<HTTP status>`` for API errors, ``error:<exception class>`` otherwise."""
    if isinstance(exc, ApiException) and exc.status:
        return f"error:{exc.status}"
    return f"error:{type(exc).__name__}"


def describe(exc: BaseException) -> str:
    """A log-safe description: ``HTTP <status> <reason>: <server message>`` for API errors,
    ``<exception class>: <text>`` otherwise."""
    if isinstance(exc, ApiException):
        message = _status_message(exc.body)
        return f"HTTP {exc.status} {exc.reason}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def short_reason(exc: BaseException) -> str:
    """The shortest useful reason, for a sentence that says what failed: ``403 Forbidden``, or the
    exception's class (``MaxRetryError``: the server could not be reached)."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__


def retryable(exc: BaseException) -> bool:
    """Conflicts, throttling, server errors and transport errors are worth another attempt; the rest of
    4xx (403, 422, ...) will fail the same way until the object or the permissions change."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status in (409, 429) or status >= 500 or status == 0
    return isinstance(exc, TRANSPORT_ERRORS)


def retry_after(exc: BaseException) -> float | None:
    """The server's ``Retry-After`` seconds on a 429/503, if it sent one."""
    headers = getattr(exc, "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("Retry-After")
    except AttributeError:
        return None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _status_message(body: Any) -> str:
    """The ``message`` of a ``Status`` body, or empty."""
    if not isinstance(body, bytes | str) or not body:
        return ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return ""
