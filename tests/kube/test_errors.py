"""The Kubernetes error vocabulary: counter labels, log-safe descriptions (never headers), short reasons,
and which errors are worth another attempt."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, ProtocolError

from lazystream.kube.errors import describe, error_label, retry_after, retryable, short_reason


class _Response:
    def __init__(self, status: int, reason: str, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.reason, self.data, self.headers = status, reason, body, headers


def api_error(status: int, reason: str = "Forbidden", body: bytes = b"", **headers: str) -> ApiException:
    return ApiException(http_resp=_Response(status, reason, body, headers))


def test_labels_name_the_status_or_the_class() -> None:
    assert error_label(api_error(403)) == "error:403"
    assert error_label(ApiException(status=0)) == "error:ApiException"
    assert error_label(TimeoutError()) == "error:TimeoutError"


def test_descriptions_carry_the_status_message_never_headers() -> None:
    exc = api_error(
        403,
        body=b'{"kind": "Status", "message": "sidecars is forbidden"}',
        **{"Authorization": "Bearer secret-token"},
    )
    text = describe(exc)
    assert text == "HTTP 403 Forbidden: sidecars is forbidden"
    assert "secret-token" not in text
    assert describe(api_error(500, "Internal Server Error", b"not json")) == "HTTP 500 Internal Server Error"
    assert describe(ConnectionResetError("reset by peer")) == "ConnectionResetError: reset by peer"


def test_short_reasons() -> None:
    assert short_reason(api_error(403)) == "403 Forbidden"
    assert short_reason(MaxRetryError(None, "/", "refused")) == "MaxRetryError"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api_error(409, "Conflict"), True),
        (api_error(429, "Too Many Requests"), True),
        (api_error(503, "Service Unavailable"), True),
        (api_error(403), False),
        (api_error(422, "Unprocessable Entity"), False),
        (ProtocolError("connection aborted"), True),
        (ConnectionRefusedError(), True),
        (ValueError("bug"), False),
    ],
)
def test_what_is_worth_another_attempt(exc: BaseException, expected: bool) -> None:
    assert retryable(exc) is expected


def test_retry_after_is_read_when_sent() -> None:
    assert retry_after(api_error(429, "Too Many Requests", **{"Retry-After": "3"})) == 3.0
    assert retry_after(api_error(429, "Too Many Requests", **{"Retry-After": "soon"})) is None
    assert retry_after(api_error(429, "Too Many Requests")) is None
    assert retry_after(ValueError()) is None
