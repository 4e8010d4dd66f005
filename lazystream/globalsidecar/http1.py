"""HTTP/1.1 for a forwarding proxy that every workload in the mesh can reach: strict heads, relayed bodies.

Requests are validated whole before a byte of them goes upstream (RFC 9110 and RFC 9112): the request line
and every field line must match the grammar, framing must be unambiguous, and the head sent upstream is
built again from the parsed fields. Anything else is refused with a :class:`RequestError`, whose status
(400, 408, 413, 417, 431, 501, 505) the client gets before the connection closes. A message that two
parsers could frame differently is how request smuggling starts, so every leniency RFC 9112 merely permits
(bare LF, obs-fold, whitespace before the colon, list-valued Content-Length, any coding but ``chunked``) is
refused here.

Bodies are relayed in their own framing, never re-framed or buffered whole: Content-Length bodies byte for
byte, chunked bodies through :class:`ChunkedBody`, which validates each chunk line before it is passed on.
Responses come from upstreams the proxy was asked to dial; their heads are validated too (a malformed one
is the upstream's failure: 502, :class:`BadMessage`), so nothing the client receives splits into two
responses either.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
"""The largest response head accepted from an upstream (request heads: :attr:`Limits.max_head_bytes`)."""
COPY_CHUNK = 64 * 1024
MAX_CHUNK_LINE = 4096
"""The longest chunk-size line (with its extensions) or trailer line of a chunked body."""
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "upgrade",
    }
)
"""Headers that concern one connection only (RFC 9110 §7.6.1); ``transfer-encoding`` and ``trailer`` are
kept because bodies are relayed in their own framing."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class BadMessage(Exception):
    """An upstream sent something that is not HTTP/1.x: the client is answered 502 (or hung up on)."""


class RequestError(Exception):
    """A request the proxy refuses: ``status`` goes to the client, the connection closes, nothing of the
    request reaches an upstream (or, for a body found bad while streaming, the upstream's connection is
    closed before the message is complete)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may be: its head's size and number of fields, and its body's size."""

    max_head_bytes: int = 64 * 1024
    """Request line and header fields together, in bytes (431 beyond)."""
    max_headers: int = 100
    """Header fields of one request (431 beyond)."""
    max_body_bytes: int = 64 * 1024 * 1024
    """A request body, Content-Length or chunked (413 beyond)."""


# --- grammar (RFC 9110 §5.6.2 tokens, §5.5 field values; RFC 9112 §3 request line, §7.1 chunks) ---------

_TCHAR = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]"
_FIELD_LINE = _TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*\r\n"
_REQUEST_HEAD = re.compile(_TCHAR + rb"+ [\x21-\x7e]+ HTTP/1\.[01]\r\n(?:" + _FIELD_LINE + rb")*\r\n")
"""A whole request head that is well-formed: token method, a target of visible ASCII, HTTP/1.0 or 1.1, field
lines of a token name, a colon right after it, and a value without control bytes (tab allowed)."""
_RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.[01] [0-9]{3}(?: [\t\x20-\x7e\x80-\xff]*)?\r\n(?:" + _FIELD_LINE + rb")*\r\n"
)
"""A response head: the status line (its reason phrase may be missing) and field lines as for requests."""
_TOKEN = re.compile(_TCHAR + rb"+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[ \t]*"
    + _TCHAR
    + rb"+(?:[ \t]*=[ \t]*(?:"
    + _TCHAR
    + rb"+|"
    + _QUOTED
    + rb"))?)*\r\n"
)
_TRAILER_LINE = re.compile(_FIELD_LINE)
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[-A-Za-z0-9._~!$&'()*+,;=%]*)(?::[0-9]{0,5})?")
"""``uri-host [ ":" port ]`` (RFC 3986 reg-name or IPv4, or an IP literal in brackets)."""
_OWS = " \t"


@dataclass(slots=True)
class Head:
    """A request or response head. ``headers`` keep their original spelling and order; values are stripped
    of the optional whitespace around them."""

    start: tuple[str, str, str]
    """Request: method, target, version. Response: version, status, reason."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    _index: dict[str, str] | None = field(default=None, repr=False, compare=False)
    _tokens: set[str] | None = field(default=None, repr=False, compare=False)
    lowered: list[str] | None = field(default=None, repr=False, compare=False)
    """The header names in lower case, in the order of ``headers`` (when parsed)."""

    def get(self, name: str) -> str | None:
        """The value of header ``name`` (lower case), several joined with ``,``; None when absent."""
        return self.names().get(name)

    def names(self) -> dict[str, str]:
        """The headers by lower-case name (values joined as :meth:`get` gives them)."""
        index = self._index
        if index is None:  # parsing builds it; a Head built by hand builds it here
            index = self._index = _index(self.headers)
        return index

    def connection_tokens(self) -> set[str]:
        tokens = self._tokens
        if tokens is None:
            value = self.get("connection")
            tokens = {t.strip(_OWS).lower() for t in value.split(",") if t.strip(_OWS)} if value else set()
            self._tokens = tokens
        return tokens


def _index(headers: list[tuple[str, str]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for key, value in headers:
        lower = key.lower()
        index[lower] = f"{index[lower]},{value}" if lower in index else value
    return index


def _split(text: str) -> tuple[list[str], Head]:
    """The lines of a head already matched by its grammar, and the :class:`Head` of them."""
    lines = text[:-4].split("\r\n")
    headers: list[tuple[str, str]] = []
    lowered: list[str] = []
    index: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        value = value.strip(_OWS)
        headers.append((name, value))
        lower = name.lower()
        lowered.append(lower)
        index[lower] = f"{index[lower]},{value}" if lower in index else value
    return lines, Head(("", "", ""), headers, index, None, lowered)


# --- requests ------------------------------------------------------------------------------------------

SINGLE = ("host", "content-length", "slime-orig-dest", "slime-source-ns")
"""Fields a request may carry once: two Hosts, or two Content-Lengths, are two ways to read one request."""


def parse_request(raw: bytes, limits: Limits) -> Head:
    """The head of one request, ``raw`` through its blank line, validated; :class:`RequestError` if not."""
    if len(raw) > limits.max_head_bytes + 4:
        raise RequestError(431, f"request head larger than {limits.max_head_bytes} bytes")
    if raw.count(b"\n") - 2 > limits.max_headers:
        raise RequestError(431, f"more than {limits.max_headers} header fields")
    if _REQUEST_HEAD.fullmatch(raw) is None:
        raise diagnose(raw)
    lines, head = _split(raw.decode("latin-1"))
    method, target, version = lines[0].split(" ")
    head.start = (method, target, version)
    index = head.names()
    if len(index) < len(head.headers):  # a name repeats: the fields that must come once are counted
        lowered = head.lowered or []
        for name in SINGLE:
            if lowered.count(name) > 1:
                raise RequestError(400, f"more than one {name} field")
    _check_target(method, target, head)
    named = head.connection_tokens() & FRAMED_BY if "connection" in index else None
    if named:
        raise RequestError(400, f"Connection names {', '.join(sorted(named))}, which frame the request")
    expect = index.get("expect")
    if expect is not None and expect.lower() != "100-continue":
        raise RequestError(417, f"unsupported expectation {expect[:40]!r}")
    return head


def _check_target(method: str, target: str, head: Head) -> None:
    """RFC 9112 §3.2: origin-form, absolute-form (http), or ``*`` for OPTIONS; Host present and valid."""
    host = head.get("host")
    if host is not None and _HOST.fullmatch(host) is None:
        raise RequestError(400, f"bad Host {host[:100]!r}")
    if method == "CONNECT":
        raise RequestError(501, "CONNECT is not supported")
    if target.startswith("/") or (target == "*" and method == "OPTIONS"):
        if host is None and head.start[2] == "HTTP/1.1":
            raise RequestError(400, "HTTP/1.1 request without Host")
        return
    if target[:7].lower() == "http://":
        rest = target[7:]
        authority = rest.split("/", 1)[0].split("?", 1)[0]
        if not authority or "@" in authority or _HOST.fullmatch(authority) is None:
            raise RequestError(400, f"bad authority in target {target[:100]!r}")
        return
    raise RequestError(400, f"bad request target {target[:100]!r} (origin-form or http absolute-form only)")


def diagnose(raw: bytes) -> RequestError:
    """Why a head that fails :data:`_REQUEST_HEAD` fails: the first offending line, said plainly."""
    lines = raw[:-4].split(b"\r\n") if raw.endswith(b"\r\n\r\n") else raw.split(b"\r\n")
    start = lines[0]
    if b"\n" in raw.replace(b"\r\n", b""):
        return RequestError(400, "bare LF in the request head (lines must end with CRLF)")
    if b"\r" in raw.replace(b"\r\n", b""):
        return RequestError(400, "bare CR in the request head")
    parts = start.split(b" ")
    if len(parts) != 3:
        return RequestError(400, f"bad request line {start[:100]!r}")
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        return RequestError(400, f"bad method {method[:40]!r}")
    if not target or any(b < 0x21 or b > 0x7E for b in target):
        return RequestError(400, f"bad request target {target[:100]!r}")
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        if _VERSION.fullmatch(version) is not None:
            return RequestError(505, f"unsupported version {version.decode('latin-1')}")
        return RequestError(400, f"bad version {version[:20]!r}")
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return RequestError(400, f"obsolete line folding at {line[:60]!r}")
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            return RequestError(400, f"bad header name in {line[:60]!r}")
        if _FIELD_VALUE.fullmatch(value) is None:
            return RequestError(400, f"control byte in the value of {name[:40].decode('latin-1')}")
    return RequestError(400, "malformed request head")  # pragma: no cover - every failure is named above


def head_end(buffer: bytes | bytearray, limits: Limits) -> int:
    """Where the request head at the start of ``buffer`` ends (the index after its blank line), or -1 while
    it may still be coming; :class:`RequestError` as soon as it cannot be a valid head: too long, or a bare
    LF or CR in it (a client whose lines end in LF alone would otherwise wait for CRLF CRLF forever)."""
    end = buffer.find(b"\r\n\r\n", 0, limits.max_head_bytes + 4)
    if end >= 0:
        return end + 4
    if len(buffer) >= limits.max_head_bytes + 4:
        raise RequestError(431, f"request head larger than {limits.max_head_bytes} bytes")
    lf = buffer.count(b"\n")
    if lf and lf != buffer.count(b"\r\n"):
        raise RequestError(400, "bare LF in the request head (lines must end with CRLF)")
    cr = buffer.count(b"\r")
    if cr > lf + (buffer[-1:] == b"\r"):
        raise RequestError(400, "bare CR in the request head")
    return -1


def request_framing(head: Head, limits: Limits) -> Framing:
    """RFC 9112 §6.3 for requests, strictly: ``Transfer-Encoding: chunked`` exactly (HTTP/1.1 only), or one
    Content-Length of digits, or no body. Any other coding is 501; both headers at once are 400."""
    names = head.names()
    te = names.get("transfer-encoding")
    cl = names.get("content-length")
    if te is not None:
        if cl is not None:
            raise RequestError(400, "both Transfer-Encoding and Content-Length")
        if head.start[2] != "HTTP/1.1":
            raise RequestError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if te.lower() != "chunked":
            raise RequestError(501, f"unsupported Transfer-Encoding {te[:40]!r} (only chunked)")
        return Framing(chunked=True)
    if cl is None:
        return NO_BODY
    if not (cl.isascii() and cl.isdigit()) or len(cl) > 19:
        raise RequestError(400, f"bad Content-Length {cl[:40]!r}")
    length = int(cl)
    if length > limits.max_body_bytes:
        raise RequestError(413, f"body of {length} bytes, more than {limits.max_body_bytes}")
    return Framing(length=length)


def expects_continue(head: Head) -> bool:
    """Whether the client waits for ``100 Continue`` before it sends the body (HTTP/1.1 only)."""
    return head.start[2] == "HTTP/1.1" and "expect" in head.names()


# --- responses -----------------------------------------------------------------------------------------


def parse_head(data: bytes) -> Head:
    """A response head (``data`` through its blank line), validated; :class:`BadMessage` if malformed."""
    if _RESPONSE_HEAD.fullmatch(data) is None:
        first = data.split(b"\r\n", 1)[0]
        raise BadMessage(f"malformed response head (status line {first[:80]!r})")
    lines, head = _split(data.decode("latin-1"))
    version, status, *reason = lines[0].split(" ", 2)
    head.start = (version, status, reason[0] if reason else "")
    return head


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The bytes of one message head (through the blank line); None at a clean end of stream."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadMessage("the stream ended inside a message head") from None
    except asyncio.LimitOverrunError:
        raise BadMessage(f"message head larger than {MAX_HEAD_BYTES} bytes") from None


_PLAIN_RESPONSE = re.compile(
    rb"HTTP/1\.1 (?!204|304)[2-5][0-9][0-9] [\t\x20-\x7e]*\r\n"
    rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\t\x20-\x7e]*\r\n)*\r\n"
)
"""A response head in plain ASCII, HTTP/1.1, with a final status and well-formed header lines: every head
it matches, :func:`parse_head` parses without complaint."""
_SPECIAL_RESPONSE_HEADER = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|proxy-authenticate|proxy-authorization|te|upgrade"
    rb"|transfer-encoding)[\t ]*:"
)
_CONTENT_LENGTH = b"\r\ncontent-length:"


def plain_response_length(raw: bytes) -> int | None:
    """The body length of an ordinary response head ``raw``, found without parsing it into a :class:`Head`:
    HTTP/1.1 with a final status, well-formed ASCII header lines, one plain Content-Length, and no header
    that concerns the connection or the framing otherwise (Connection, Transfer-Encoding, hop-by-hop ones).
    Such a head keeps the connection open and is passed on unchanged. None for every other head (parse it),
    and for 204 and 304 (no body whatever the header says). Not for responses to HEAD."""
    if _PLAIN_RESPONSE.fullmatch(raw) is None:
        return None
    lower = raw.lower()
    if _SPECIAL_RESPONSE_HEADER.search(lower) is not None:
        return None
    at = lower.find(_CONTENT_LENGTH)
    if at < 0 or lower.find(_CONTENT_LENGTH, at + 17) >= 0:
        return None
    value = lower[at + 17 : lower.find(b"\r\n", at + 17)].strip()
    return int(value) if value.isdigit() else None


def serialize(start: tuple[str, str, str], headers: list[tuple[str, str]]) -> bytes:
    lines = [" ".join(start), *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


@dataclass(frozen=True, slots=True)
class Framing:
    """How a body ends: ``chunked``, after ``length`` bytes, or (responses only) at the end of the stream."""

    chunked: bool = False
    length: int = 0
    until_close: bool = False

    @property
    def empty(self) -> bool:
        return not self.chunked and not self.until_close and self.length == 0


NO_BODY = Framing()


def response_framing(head: Head, request_method: str) -> Framing:
    """RFC 9112 §6.3 for responses to ``request_method``."""
    status = int(head.start[1])
    if request_method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return NO_BODY
    te = head.get("transfer-encoding")
    if te is not None:
        if te.replace(" ", "").lower().split(",")[-1] == "chunked":
            return Framing(chunked=True)
        return Framing(until_close=True)
    cl = head.get("content-length")
    return Framing(length=_content_length(cl)) if cl is not None else Framing(until_close=True)


def _content_length(value: str) -> int:
    if value.isascii() and value.isdigit():  # the usual case: one plain number
        return int(value)
    values = {v.strip(_OWS) for v in value.split(",")}
    if len(values) != 1:
        raise BadMessage(f"conflicting Content-Length {value[:40]!r}")
    text = values.pop()
    if not (text.isascii() and text.isdigit()):
        raise BadMessage(f"bad Content-Length {text[:40]!r}")
    return int(text)


# --- chunked bodies -------------------------------------------------------------------------------------


class ChunkedBody:
    """A chunked body (RFC 9112 §7.1) as its bytes come, validated as it goes and passed on unchanged.

    :meth:`feed` returns the bytes that may be passed on: a chunk line (size, extensions) or trailer line
    only once all of it has arrived and matched the grammar, chunk data as it comes, and the CRLF after
    each chunk's data checked. A line split across reads is held back until it is complete. Bad framing
    raises :class:`RequestError` (for a request, 400; 413 past ``limit`` bytes of data) or
    :class:`BadMessage` (for a response).
    """

    __slots__ = ("ended", "held", "limit", "remaining", "request", "state", "total", "trailers")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, *, request: bool, limit: int | None = None, max_trailers: int = 100) -> None:
        self.request = request
        self.limit = limit
        self.held = bytearray()
        self.remaining = 0
        self.state = self._SIZE
        self.total = 0
        self.trailers = max_trailers
        self.ended = False

    def error(self, reason: str, status: int = 400) -> Exception:
        return RequestError(status, reason) if self.request else BadMessage(reason)

    def wants(self) -> int:
        """How many bytes of chunk data come next, or 0 when a line does (read up to its LF)."""
        return self.remaining if self.state == self._DATA else 0

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """Take ``data``; the bytes to pass on now, and how many bytes of ``data`` belong to the body (fewer
        than ``len(data)`` once the body has ended: the rest is the next message's)."""
        held = bytes(self.held) if self.held else b""
        pos, size, ready = 0, len(data), 0
        while pos < size and not self.ended:
            if self.state == self._DATA:
                step = min(self.remaining, size - pos)
                pos += step
                self.remaining -= step
                ready = pos
                if not self.remaining:
                    self.state = self._DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                if len(self.held) + size - pos > MAX_CHUNK_LINE:
                    raise self.error("chunk line too long")
                self.held += data[pos:]
                pos = size
                break
            self.held += data[pos : newline + 1]
            pos = newline + 1
            self._line(bytes(self.held))
            self.held.clear()
            ready = pos
        if ready == 0:
            return b"", pos
        out = data if ready == size else data[:ready]
        return (held + out if held else out), pos

    def _line(self, line: bytes) -> None:
        if len(line) > MAX_CHUNK_LINE:
            raise self.error("chunk line too long")
        if self.state == self._DATA_END:
            if line != b"\r\n":
                raise self.error("chunk data not followed by CRLF")
            self.state = self._SIZE
        elif self.state == self._SIZE:
            match = _CHUNK_LINE.fullmatch(line)
            if match is None:
                raise self.error(f"bad chunk size line {line[:40]!r}")
            chunk = int(match.group(1), 16)
            if chunk == 0:
                self.state = self._TRAILER
                return
            self.total += chunk
            if self.limit is not None and self.total > self.limit:
                raise self.error(f"chunked body larger than {self.limit} bytes", 413)
            self.remaining, self.state = chunk, self._DATA
        elif line == b"\r\n":
            self.ended = True
        else:
            if _TRAILER_LINE.fullmatch(line) is None:
                raise self.error(f"bad trailer line {line[:40]!r}")
            self.trailers -= 1
            if self.trailers < 0:
                raise self.error("too many trailer fields", 431)


async def _next_piece(reader: asyncio.StreamReader, body: ChunkedBody, most: int) -> bytes:
    """The next bytes of a chunked body from a stream, for :meth:`ChunkedBody.feed`: up to ``most`` bytes
    of chunk data, or one whole line (size, CRLF, trailer) — a line longer than the stream's limit is
    the body's framing error, the stream's end an :class:`asyncio.IncompleteReadError`."""
    want = body.wants()
    try:
        data = await (reader.read(min(want, most)) if want else reader.readuntil(b"\n"))
    except asyncio.LimitOverrunError:
        raise body.error("chunk line too long") from None
    if not data:
        raise asyncio.IncompleteReadError(b"", None)
    return data


async def relay_chunked(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: ChunkedBody
) -> None:
    """Pass a chunked body from ``reader`` to ``writer``, reading no byte past its end."""
    while not body.ended:
        out, _ = body.feed(await _next_piece(reader, body, COPY_CHUNK))
        if out:
            writer.write(out)
            if writer.transport.get_write_buffer_size() > COPY_CHUNK:
                await writer.drain()


async def read_chunked(reader: asyncio.StreamReader, body: ChunkedBody, limit: int) -> bytes:
    """Up to about ``limit`` bytes of a chunked body, validated; all of it when it ends sooner
    (``body.ended``), so a small body is known good before anything is sent upstream."""
    out = bytearray()
    while not body.ended and len(out) < limit:
        try:
            data = await _next_piece(reader, body, limit)
        except asyncio.IncompleteReadError:
            raise asyncio.IncompleteReadError(bytes(out), None) from None
        out += body.feed(data)[0]
    return bytes(out)


async def read_body(reader: asyncio.StreamReader, framing: Framing, limit: int) -> bytes | None:
    """The whole body of a Content-Length body of at most ``limit`` bytes; None otherwise (stream it)."""
    if framing.chunked or framing.until_close or framing.length > limit:
        return None
    return await reader.readexactly(framing.length) if framing.length else b""


async def relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: Framing) -> None:
    """Copy one response body from ``reader`` to ``writer`` in its own framing, ending where it ends."""
    if framing.chunked:
        await relay_chunked(reader, writer, ChunkedBody(request=False))
    elif framing.until_close:
        while data := await reader.read(COPY_CHUNK):
            writer.write(data)
            await writer.drain()
    else:
        await relay_exactly(reader, writer, framing.length)


async def relay_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remaining: int) -> None:
    while remaining > 0:
        data = await reader.read(min(COPY_CHUNK, remaining))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        writer.write(data)
        remaining -= len(data)
        if writer.transport.get_write_buffer_size() > COPY_CHUNK:
            await writer.drain()


def keep_alive(head: Head, version: str) -> bool:
    """Whether the peer keeps the connection open after this message (HTTP/1.1 by default, 1.0 on request)."""
    tokens = head.connection_tokens()
    if "close" in tokens:
        return False
    return version == "HTTP/1.1" or "keep-alive" in tokens


FRAMED_BY = frozenset({"content-length", "transfer-encoding", "host"})
"""Fields a message is framed or routed by: never dropped because a Connection header names them (a
request that names them is refused; for a response they are kept), or the next hop would frame the
message differently from the proxy."""


def forwardable(headers: list[tuple[str, str]], connection_tokens: set[str]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones and those the Connection header names (framing fields kept)."""
    drop = (HOP_BY_HOP | connection_tokens) - FRAMED_BY
    return [(k, v) for k, v in headers if k.lower() not in drop]


def simple_response(status: int, reason: str, body: str, *, close: bool) -> bytes:
    payload = body.encode() + b"\n"
    headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(payload)))]
    if close:
        headers.append(("connection", "close"))
    return serialize(("HTTP/1.1", str(status), reason), headers) + payload


def refusal(error: RequestError) -> bytes:
    """The answer to a refused request: its status and reason, and the connection closes."""
    return simple_response(error.status, REASONS.get(error.status, "Bad Request"), error.reason, close=True)
