"""Just enough HTTP/1.1 for a forwarding proxy: message heads, and relaying bodies in their own framing.

Bodies are relayed byte for byte (chunked stays chunked, trailers included); the proxy only parses as much
as it needs to find where a message ends, so it never buffers a whole body and never re-frames one.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
COPY_CHUNK = 64 * 1024
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


class BadMessage(Exception):
    """The peer sent something that is not HTTP/1.x; answered 400 (from a client) or 502 (from upstream)."""


@dataclass(slots=True)
class Head:
    """A request or response head. ``headers`` keep their original spelling and order."""

    start: tuple[str, str, str]
    """Request: method, target, version. Response: version, status, reason."""
    headers: list[tuple[str, str]] = field(default_factory=list)
    _index: dict[str, str] | None = field(default=None, repr=False, compare=False)
    _tokens: set[str] | None = field(default=None, repr=False, compare=False)
    lines: list[str] | None = field(default=None, repr=False, compare=False)
    """The head's lines as received (start line first), when parsed: header lines are passed on from here
    as they are, without formatting them anew."""
    lowered: list[str] | None = field(default=None, repr=False, compare=False)
    """The header names in lower case, in the order of ``headers`` (when parsed)."""

    def get(self, name: str) -> str | None:
        """The value of header ``name`` (lower case), several joined with ``,``; None when absent."""
        index = self._index
        if index is None:  # parse_head builds it while parsing; a Head built by hand builds it here
            index = self._index = _index(self.headers)
        return index.get(name)

    def names(self) -> dict[str, str]:
        """The headers by lower-case name (values joined as :meth:`get` gives them)."""
        index = self._index
        if index is None:
            index = self._index = _index(self.headers)
        return index

    def connection_tokens(self) -> set[str]:
        tokens = self._tokens
        if tokens is None:
            value = self.get("connection")
            tokens = {t.strip().lower() for t in value.split(",") if t.strip()} if value else set()
            self._tokens = tokens
        return tokens


def _index(headers: list[tuple[str, str]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for key, value in headers:
        lower = key.lower()
        index[lower] = f"{index[lower]},{value}" if lower in index else value
    return index


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


def parse_head(data: bytes) -> Head:
    text = data.decode("latin-1")  # latin-1 decodes any byte
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2:
        raise BadMessage(f"bad start line {lines[0][:100]!r}")
    if len(parts) == 2:
        parts.append("")
    headers = []
    lowered = []
    index: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():  # a line that starts with space or tab is caught too
            raise BadMessage(f"bad header line {line[:100]!r}")
        value = value.strip()
        headers.append((name, value))
        lower = name.lower()
        lowered.append(lower)
        index[lower] = f"{index[lower]},{value}" if lower in index else value
    return Head((parts[0], parts[1], parts[2]), headers, index, None, lines, lowered)


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


def request_framing(head: Head) -> Framing:
    """RFC 9112 §6.3 for requests: chunked, Content-Length, or no body; both at once is refused."""
    te = head.get("transfer-encoding")
    cl = head.get("content-length")
    if te is not None:
        if cl is not None:
            raise BadMessage("both Transfer-Encoding and Content-Length")
        if te.replace(" ", "").lower().split(",")[-1] != "chunked":
            raise BadMessage(f"unsupported Transfer-Encoding {te[:40]!r}")
        return Framing(chunked=True)
    return Framing(length=_content_length(cl)) if cl is not None else NO_BODY


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
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1:
        raise BadMessage(f"conflicting Content-Length {value[:40]!r}")
    text = values.pop()
    if not (text.isascii() and text.isdigit()):
        raise BadMessage(f"bad Content-Length {text[:40]!r}")
    return int(text)


async def read_body(reader: asyncio.StreamReader, framing: Framing, limit: int) -> bytes | None:
    """The whole body of a Content-Length body of at most ``limit`` bytes; None otherwise (stream it)."""
    if framing.chunked or framing.until_close or framing.length > limit:
        return None
    return await reader.readexactly(framing.length) if framing.length else b""


async def relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: Framing) -> None:
    """Copy one body from ``reader`` to ``writer`` in its own framing, ending exactly where it ends."""
    if framing.chunked:
        await _relay_chunked(reader, writer)
    elif framing.until_close:
        while data := await reader.read(COPY_CHUNK):
            writer.write(data)
            await writer.drain()
    else:
        await _relay_exactly(reader, writer, framing.length)


async def _relay_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remaining: int) -> None:
    while remaining > 0:
        data = await reader.read(min(COPY_CHUNK, remaining))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        writer.write(data)
        remaining -= len(data)
        if writer.transport.get_write_buffer_size() > COPY_CHUNK:
            await writer.drain()


async def _relay_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadMessage(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            while True:  # trailers, then the blank line
                trailer = await reader.readuntil(b"\r\n")
                writer.write(trailer)
                if trailer == b"\r\n":
                    return
        await _relay_exactly(reader, writer, size + 2)


def keep_alive(head: Head, version: str) -> bool:
    """Whether the peer keeps the connection open after this message (HTTP/1.1 by default, 1.0 on request)."""
    tokens = head.connection_tokens()
    if "close" in tokens:
        return False
    return version == "HTTP/1.1" or "keep-alive" in tokens


def forwardable(headers: list[tuple[str, str]], connection_tokens: set[str]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones and those the Connection header names."""
    drop = HOP_BY_HOP | connection_tokens
    return [(k, v) for k, v in headers if k.lower() not in drop]


def simple_response(status: int, reason: str, body: str, *, close: bool) -> bytes:
    payload = body.encode() + b"\n"
    headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(payload)))]
    if close:
        headers.append(("connection", "close"))
    return serialize(("HTTP/1.1", str(status), reason), headers) + payload
