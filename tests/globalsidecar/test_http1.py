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


HOSTILE_BYTES = st.sampled_from(
    [b"a", b"-", b" ", b"\t", b":", b"\r", b"\n", b"\r\n", b"\x00", b"\x7f", b"\xe9"]
)


@settings(max_examples=600, deadline=None)
@given(
    fields=st.lists(
        st.tuples(
            st.lists(HOSTILE_BYTES, min_size=1, max_size=6).map(b"".join),
            st.lists(HOSTILE_BYTES, max_size=8).map(b"".join),
        ),
        max_size=5,
    )
)
def test_what_the_strict_parser_accepts_goes_upstream_as_exactly_those_fields(
    fields: list[tuple[bytes, bytes]],
) -> None:
    from lazystream.domain.forwarding import Forward
    from lazystream.globalsidecar.http1 import RequestError
    from lazystream.globalsidecar.relay import ForwardedRequest

    raw = b"GET / HTTP/1.1\r\nHost: svc\r\n" + b"".join(n + b":" + v + b"\r\n" for n, v in fields) + b"\r\n"
    try:
        head = parse_request(raw, Limits())
    except RequestError as exc:
        refused = exc.status
    else:
        refused = 0
    if refused:
        assert refused in (400, 417, 431)
        return
    for name, value in head.headers:
        assert not set(name + value) & set("\r\n\x00\x7f")
    sent = ForwardedRequest(head, 0.0, 0.0).upstream_head(Forward("127.0.0.1", 80, "svc"), "me")
    again = parse_request(sent, Limits())  # what the upstream parses is what the proxy parsed
    kept = [(n, v) for n, v in head.headers if n.lower() not in {"host", "expect", "connection", "te"}]
    assert [kv for kv in again.headers if kv[0].lower() not in {"host", "lazystream-global-sidecar"}] == [
        kv for kv in kept if kv[0].lower() not in HOP_BY_HOP and kv[0].lower() not in head.connection_tokens()
    ]
