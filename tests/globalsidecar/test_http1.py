"""The parsing shortcuts of the proxy's hot path agree with the full parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lazystream.globalsidecar.http1 import (
    HOP_BY_HOP,
    BadMessage,
    Limits,
    parse_head,
    parse_request,
    plain_response_length,
    response_framing,
)

PLAIN = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 256\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PLAIN, 256),
        (b"HTTP/1.1 404 Not Found\r\ncontent-length:0\r\n\r\n", 0),
        (b"HTTP/1.1 503 \r\nX: a b\r\nContent-Length:  12 \r\n\r\n", 12),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n", None),  # repeated
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n", None),  # until the connection closes
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", None),
        (b"HTTP/1.1 100 Continue\r\n\r\n", None),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nX :y\r\nContent-Length: 1\r\n\r\n", None),  # a bad line: the parser's
        (b"HTTP/1.1 200 OK\r\n folded\r\nContent-Length: 1\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\nContent-Length: 1\r\n\r\n", None),  # not ASCII
    ],
)
def test_plain_responses(head: bytes, expected: int | None) -> None:
    assert plain_response_length(head) == expected


LINES = st.sampled_from(
    [
        b"Content-Length: 5",
        b"content-length:7",
        b"Content-Length: 5, 5",
        b"Connection: keep-alive",
        b"Connection: close",
        b"Transfer-Encoding: chunked",
        b"TE: trailers",
        b"Upgrade: h2c",
        b"Proxy-Connection: x",
        b"Date: Sat, 28 Nov 2026 04:00:00 GMT",
        b"X-Thing:",
        b"X-Thing: \t spaced \t",
        b"Bad Name: x",
        b" leading: space",
        b"NoColon",
        b"X: \x85",
        b"Connection-Extra: x",
        b"Keep-Alive-Ish: 1",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    status=st.sampled_from([b"200 OK", b"201 ", b"304 Not Modified", b"404 Not Found", b"103 Early", b"abc"]),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    lines=st.lists(LINES, max_size=6),
)
def test_a_plain_response_is_one_the_parser_frames_alike_and_passes_on_unchanged(
    status: bytes, version: bytes, lines: list[bytes]
) -> None:
    raw = version + b" " + status + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    length = plain_response_length(raw)
    if length is None:
        return
    head = parse_head(raw)  # never BadMessage for a plain head
    assert head.start[0] == "HTTP/1.1"
    framing = response_framing(head, "GET")
    assert not framing.chunked
    assert not framing.until_close
    assert framing.length == length
    assert HOP_BY_HOP.isdisjoint(head.names())


def test_a_head_that_fails_to_parse_is_never_plain() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX :y\r\nContent-Length: 1\r\n\r\n"
    with pytest.raises(BadMessage):
        parse_head(raw)
    assert plain_response_length(raw) is None


def test_parsed_heads_keep_names_as_spelled_and_values_without_their_whitespace() -> None:
    head = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Y:  1 \r\nx-y: 2\r\n\r\n", Limits())
    assert head.headers == [("Host", "a"), ("X-Y", "1"), ("x-y", "2")]
    assert head.lowered == ["host", "x-y", "x-y"]
    assert head.get("x-y") == "1,2"
