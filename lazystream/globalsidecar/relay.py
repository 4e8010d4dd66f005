"""The global-sidecar's hot path: ordinary requests relayed by protocol callbacks, without streams or tasks.

A client connection is a :class:`ClientConnection` (an :class:`asyncio.Protocol`). Its bytes collect in one
buffer; a complete request head (and its Content-Length body, when small) is parsed there, forwarding is
decided by the domain core, the upstream request is written in one ``transport.write`` on a pooled
:class:`~lazystream.globalsidecar.pool.UpstreamConnection`, and the upstream's bytes go to the client as
they arrive (the response head rewritten, the body passed on as the very ``bytes`` objects received). No
task switch, no future, no stream buffer copy per request: profiling the stream-based proxy showed the event
loop's bookkeeping and the copies around each system call, not HTTP, as the cost.

Everything else — request bodies that must be streamed (chunked, or larger than
:data:`BUFFERED_BODY_BYTES`), ``Upgrade`` and ``CONNECT`` — hands the connection, with the bytes already
read, to the stream-based code in :mod:`lazystream.globalsidecar.proxy` for the rest of its life. The
answers, records and counters are the same on both paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from lazystream.domain.forwarding import (
    HOP_HEADER,
    ORIG_DEST_HEADER,
    SOURCE_NS_HEADER,
    XFCC_HEADER,
    Forward,
    Refuse,
    access_record,
    connection_is_self,
    format_address,
    join_host_port,
    principal_from_xfcc,
)
from lazystream.globalsidecar.http1 import (
    HOP_BY_HOP,
    MAX_HEAD_BYTES,
    NO_BODY,
    BadMessage,
    Framing,
    Head,
    forwardable,
    keep_alive,
    parse_head,
    plain_response_length,
    request_framing,
    response_framing,
    serialize,
    simple_response,
)
from lazystream.globalsidecar.pool import UpstreamConnection

if TYPE_CHECKING:
    from lazystream.globalsidecar.proxy import Proxy

log = logging.getLogger(__name__)

BUFFERED_BODY_BYTES = 64 * 1024
"""Request bodies up to this size are read before dialling, so a request that meets a pooled connection
the upstream has just closed can be sent again on a new one; larger ones are streamed."""
REASONS = {400: "Bad Request", 502: "Bad Gateway"}
MAX_CHUNK_LINE = 4096
_STATUS_KEYS = {n: f"status_{n}xx" for n in range(1, 6)}
_DROP_REQUEST = frozenset({"host", SOURCE_NS_HEADER, ORIG_DEST_HEADER, HOP_HEADER})
_DROP_UPSTREAM = _DROP_REQUEST | HOP_BY_HOP


class ForwardedRequest:
    """What the proxy sends upstream for one request, and what it keeps for the record."""

    __slots__ = (
        "authority",
        "head",
        "method",
        "orig_dest",
        "source_ns",
        "started",
        "t0",
        "target",
        "version",
    )

    def __init__(self, head: Head, started: float, t0: float) -> None:
        self.head = head
        self.method, target, self.version = head.start
        index = head.names()
        authority = index.get("host")
        if target.startswith(("http://", "HTTP://")):  # absolute form: the target names the host
            rest = target[7:]
            slash = rest.find("/")
            authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        self.target = target
        self.authority = authority
        self.source_ns = index.get(SOURCE_NS_HEADER)
        self.orig_dest = index.get(ORIG_DEST_HEADER)
        self.started = started
        self.t0 = t0

    def upstream_head(self, decision: Forward, instance: str, upgrade: str | None = None) -> bytes:
        """The request head for the upstream: the completed Host, no hop-by-hop or Slime headers, the loop
        marker added. The other header lines go on as they were received, in one string built once."""
        head = self.head
        lines, lowered = head.lines, head.lowered
        if lines is None or lowered is None:  # a Head built by hand, not parsed
            tokens = head.connection_tokens()
            headers = [kv for kv in forwardable(head.headers, tokens) if kv[0].lower() not in _DROP_REQUEST]
            lines, lowered = ["", *(f"{k}: {v}" for k, v in headers)], [k.lower() for k, _ in headers]
            drop: frozenset[str] = frozenset()
        else:
            tokens = head.connection_tokens()
            drop = _DROP_UPSTREAM.union(tokens) if tokens else _DROP_UPSTREAM
        kept = [lines[i] for i, name in enumerate(lowered, 1) if name not in drop]
        kept.append(f"{HOP_HEADER}: {instance}")
        if upgrade is not None:
            kept += ["Connection: upgrade", f"Upgrade: {upgrade}"]
        text = f"{self.method} {self.target} HTTP/1.1\r\nHost: {decision.authority}\r\n"
        return (text + "\r\n".join(kept) + "\r\n\r\n").encode("latin-1")

    def record(self, peer_address: str, peer_ip: str, status: int, upstream: str | None) -> dict[str, object]:
        head = self.head
        return access_record(
            time=self.started,
            peer_address=peer_address,
            authority=self.authority,
            status=status,
            duration_ms=(time.perf_counter() - self.t0) * 1000,
            x_forwarded_for=head.get("x-forwarded-for"),
            source_namespace=self.source_ns,
            peer_principal=principal(head, peer_ip),
            original_destination=self.orig_dest,
            upstream=upstream,
        )


def principal(head: Head, peer_ip: str) -> str | None:
    """The caller's certificate principal, from the XFCC header of the proxy's own Istio sidecar: trusted
    only from a loopback peer (that sidecar); from anyone else the header is the caller's own claim."""
    if not (peer_ip.startswith("127.") or peer_ip == "::1"):
        return None
    return principal_from_xfcc(head.get(XFCC_HEADER))


def response_head(response: Head, version: str, keep: bool, raw: bytes | None = None) -> bytes:
    """The upstream's response head as the client gets it: HTTP/1.1, no hop-by-hop headers, and the
    client connection's fate spelled out when it differs from the version's default. ``raw`` (the head as
    received) is passed on unchanged when none of that changes anything, as for most responses."""
    tokens, names = response.connection_tokens(), response.names()
    as_received = raw is not None and keep and version != "HTTP/1.0" and raw.startswith(b"HTTP/1.1 ")
    if as_received and raw is not None and HOP_BY_HOP.isdisjoint(names) and tokens.isdisjoint(names):
        return raw
    out = forwardable(response.headers, tokens)
    if not keep:
        out.append(("Connection", "close"))
    elif version == "HTTP/1.0":
        out.append(("Connection", "keep-alive"))
    return serialize(("HTTP/1.1", response.start[1], response.start[2]), out)


class ClientConnection(asyncio.Protocol):
    """One client connection on the hot path: requests one after the other, one exchange at a time."""

    def __init__(self, proxy: Proxy, port: int) -> None:
        self.proxy = proxy
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.exchange: Exchange | None = None
        self.eof = False
        self.closed = False
        self.write_paused = False
        self.read_paused = False
        self.peer_address = "-"
        self.peer_ip = ""

    # -- transport events ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_address, self.peer_ip = format_address(peer[0], peer[1]), str(peer[0])
        self.proxy.counters["connections"] += 1
        self.proxy.clients.add(self)

    def data_received(self, data: bytes) -> None:
        if not self.buffer and self.exchange is None and not self.write_paused and not self.closed:
            end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end >= 0 and end + 4 == len(data):  # the usual case: one whole request head, nothing else
                self.serve_head(data, buffered=False)
                return
        self.buffer += data
        if self.exchange is None and not self.write_paused:
            self.next_request()
        elif len(self.buffer) > MAX_HEAD_BYTES and not self.read_paused and self.transport is not None:
            self.read_paused = True  # a client that sends ahead waits until its answer is on its way
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        if self.exchange is None and not self.write_paused:
            self.next_request()
        return True  # the answer to a request in flight can still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.clients.discard(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.abandon()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.resume()
        elif not self.closed:
            self.next_request()

    # -- requests ------------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def next_request(self) -> None:
        """Start on the next complete request in the buffer, if there is one."""
        if self.closed or self.exchange is not None:
            return
        buffer = self.buffer
        if not buffer and not self.eof:  # the usual case after an answer: nothing more sent yet
            return
        end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(buffer) >= MAX_HEAD_BYTES:
                self.bad_request(f"message head larger than {MAX_HEAD_BYTES} bytes")
            elif self.eof:
                if bytes(buffer).strip():
                    self.bad_request("the stream ended inside a message head")
                else:
                    self.close()
            return
        self.serve_head(bytes(buffer[: end + 4]), buffered=True)

    def serve_head(self, raw: bytes, *, buffered: bool) -> None:
        """Serve the request whose head is ``raw``: at the start of the buffer when ``buffered``, else all
        that the client has sent so far, with nothing in the buffer (the usual case, without a copy)."""
        try:
            head = parse_head(raw)
            if not head.start[2].startswith("HTTP/1."):
                raise BadMessage(f"unsupported protocol {head.start[2][:20]!r}")
            index = head.names()
            if "content-length" in index or "transfer-encoding" in index:
                framing = request_framing(head)
                length = framing.length
            else:  # the usual case: no body
                framing, length = NO_BODY, 0
        except BadMessage as exc:
            self.bad_request(str(exc))
            return
        ordinary = self.ordinary(head, framing)
        if not buffered and (length or not ordinary):  # a body to wait for, or the streams take over
            self.buffer += raw
            buffered = True
        if not ordinary:
            self.proxy.hand_to_streams(self)
            return
        body = b""
        if buffered:
            buffer = self.buffer
            head_end = len(raw)
            body_end = head_end + length
            if len(buffer) < body_end:
                if self.eof:  # the client stopped sending inside the body
                    self.close()
                return  # the rest of the body is on its way
            if length:
                body = bytes(buffer[head_end:body_end])
            del buffer[:body_end]
            if self.read_paused and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
        self.start(ForwardedRequest(head, time.time(), time.perf_counter()), body)

    @staticmethod
    def ordinary(head: Head, framing: Framing) -> bool:
        """Whether the hot path serves this request: a small Content-Length body or none, no upgrade."""
        if framing.chunked or framing.length > BUFFERED_BODY_BYTES or head.start[0] == "CONNECT":
            return False
        return "connection" not in head.names() or "upgrade" not in head.connection_tokens()

    def bad_request(self, reason: str) -> None:
        self.proxy.counters["bad_requests"] += 1
        self.write(simple_response(400, "Bad Request", reason, close=True))
        self.close()

    def start(self, request: ForwardedRequest, body: bytes) -> None:
        proxy = self.proxy
        head = request.head
        index = head.names()
        decision = proxy.decisions.decide(
            request.authority,
            request.source_ns,
            request.orig_dest,
            self.port,
            proxy.exists,
            proxy.options.prefer_listener_port,
            HOP_HEADER in index,
            proxy.own_listeners,
        )
        # without a Connection header, HTTP/1.1's default
        keep = keep_alive(head, request.version) if "connection" in index else request.version == "HTTP/1.1"
        if isinstance(decision, Refuse):
            proxy.counters["refused"] += 1
            log.debug("refused (%d): %s", decision.status, decision.reason)
            keep = keep and not body
            reason = REASONS[decision.status]
            self.write(simple_response(decision.status, reason, decision.reason, close=not keep))
            self.finished(request, decision.status, keep, None)
            return
        message = request.upstream_head(decision, proxy.options.instance)
        self.exchange = exchange = Exchange(
            self, request, decision, message + body if body else message, keep
        )
        exchange.begin()

    def finished(self, request: ForwardedRequest, status: int, keep: bool, dialled: Forward | None) -> None:
        """One request answered: count it, report it, and go on with the next or hang up."""
        self.exchange = None
        proxy = self.proxy
        proxy.counters[_STATUS_KEYS.get(status // 100) or f"status_{status // 100}xx"] += 1
        if proxy.count_only is None:
            upstream = None if dialled is None else join_host_port(dialled.host, dialled.port)
            proxy.emitter.emit(request.record(self.peer_address, self.peer_ip, status, upstream))
        else:  # records off: none is built
            proxy.count_only.emitted += 1
        if not keep:
            self.close()
        elif not self.write_paused:
            self.next_request()


class Exchange:
    """One request relayed to its upstream and the response relayed back, driven by both connections'
    events. ``status`` is what the client has been told (502 until a response head arrives)."""

    __slots__ = (
        "chunks",
        "client",
        "conn",
        "decision",
        "dialling",
        "done",
        "keep",
        "message",
        "partial",
        "plain",
        "remaining",
        "request",
        "responded",
        "reused",
        "status",
        "timer",
        "until_close",
        "upstream_keep",
    )  # fmt: skip

    def __init__(
        self,
        client: ClientConnection,
        request: ForwardedRequest,
        decision: Forward,
        message: bytes,
        keep: bool,
    ) -> None:
        self.client = client
        self.request = request
        self.decision = decision
        self.message = message
        self.keep = keep
        self.plain = keep and request.version == "HTTP/1.1" and request.method != "HEAD"
        """Whether a plain response (:func:`plain_response_length`) can go to the client unchanged."""
        self.conn: UpstreamConnection | None = None
        self.reused = False
        self.status = 502
        self.responded = False
        self.partial: bytes | None = b""
        self.remaining = 0
        self.chunks: ChunkScanner | None = None
        self.until_close = False
        self.upstream_keep = False
        self.timer: asyncio.TimerHandle | None = None
        self.dialling: asyncio.Task[None] | None = None
        self.done = False

    @property
    def upstream(self) -> str:
        """The address dialled, as the record and the 502 answers give it."""
        return join_host_port(self.decision.host, self.decision.port)

    def begin(self) -> None:
        timeout = self.client.proxy.options.upstream_timeout
        if timeout is not None:
            self.timer = asyncio.get_running_loop().call_later(timeout, self.fail, "upstream timed out")
        self.send(first=True)

    def send(self, *, first: bool) -> None:
        """On an idle pooled connection (first attempt only), or a new one."""
        proxy = self.client.proxy
        conn = proxy.pool.take((self.decision.host, self.decision.port)) if first else None
        if conn is None:
            self.dialling = proxy.spawn(self.dial())
            return
        self.reused = True
        self.use(conn)

    async def dial(self) -> None:
        proxy = self.client.proxy
        try:
            conn = await proxy.pool.open((self.decision.host, self.decision.port))
        except OSError as exc:  # TimeoutError included
            self.dialling = None
            self.fail(f"cannot connect: {exc.strerror or exc or 'timed out'}")
            return
        self.dialling = None
        if self.done:
            conn.close()
        elif connection_is_self(conn.local, conn.remote, proxy.ports):
            conn.close()
            self.fail("loop: the destination is this global-sidecar")
        else:
            self.reused = False
            self.use(conn)

    def use(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.user = self
        conn.write(self.message)  # head and body: one write, one system call

    # -- the upstream's events -----------------------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        if self.done:
            return
        self.reused = False  # the upstream has answered: a broken exchange is not retried any more
        partial = self.partial
        if partial is None:
            self.relay(data)
            return
        if partial:  # a head that came in pieces
            data = partial + data
            self.partial = b""
        self.read_response_head(data)

    def upstream_lost(self, exc: Exception | None) -> None:
        self.conn = None
        if self.done:
            return
        if self.partial is not None:  # no complete response head
            if self.reused:  # a pooled connection the upstream had closed before it got the request
                self.client.proxy.counters["retried_stale"] += 1
                self.send(first=False)
                return
            self.fail("upstream broke off: the upstream closed the connection without a response")
        elif self.until_close:
            self.upstream_keep = False
            self.complete()
        else:
            self.fail(f"response body broken off: {exc!r}")

    # -- the response --------------------------------------------------------------------------------------

    def read_response_head(self, data: bytes) -> None:
        """Parse the response head at the start of ``data`` (interim responses relayed first), then pass
        the head and the body bytes that came with it to the client in one write."""
        if self.plain:
            end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4) + 4
            length = plain_response_length(data[:end]) if end > 12 else None
            if length is not None:
                self.plain_response(data, end, length)
                return
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start, start + MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(data) - start >= MAX_HEAD_BYTES:
                    self.fail(f"message head larger than {MAX_HEAD_BYTES} bytes")
                elif self.partial is not None:
                    self.partial = data[start:]
                return
            raw = data[start : end + 4]
            start = end + 4
            try:
                response = parse_head(raw)
                try:
                    status = int(response.start[1])
                except ValueError:
                    raise BadMessage(f"bad status line {' '.join(response.start)[:80]!r}") from None
                if 100 <= status < 200 and status != 101:
                    self.client.write(raw)  # an interim response (100 Continue, 103): relayed as it is
                    continue
                framing = response_framing(response, self.request.method)
            except BadMessage as exc:
                self.fail(str(exc))
                return
            break
        self.status = status
        self.upstream_keep = keep_alive(response, response.start[0]) and not framing.until_close
        self.keep = self.keep and not framing.until_close
        out = response_head(response, self.request.version, self.keep, raw)
        self.partial = None
        self.responded = True
        if framing.chunked:
            self.chunks = ChunkScanner()
        elif framing.until_close:
            self.until_close = True
        else:
            self.remaining = framing.length
        size = len(data) - start
        if not size:
            self.client.write(out)
            if self.remaining == 0 and self.chunks is None and not self.until_close:
                self.complete()
            return
        rest = data[start:]
        try:
            take, ended = self.measure(rest)
        except BadMessage as exc:
            self.client.write(out)
            self.fail(str(exc))
            return
        if out is raw and take == size and len(raw) == start:  # the bytes as received, not a copy
            self.client.write(data)
        else:
            self.client.write(out + rest[:take])  # head and what came with it: one write
        if ended:
            self.complete(extra=take < size)

    def plain_response(self, data: bytes, head_end: int, length: int) -> None:
        """The usual response, recognised by :func:`plain_response_length`: its head goes to the client as
        received, both connections stay open, and the body is ``length`` bytes."""
        self.status = int(data[9:12])
        self.upstream_keep = True
        self.partial = None
        self.responded = True
        size = len(data)
        if size - head_end >= length:  # all of it came at once: the usual case
            self.client.write(data if size == head_end + length else data[: head_end + length])
            self.complete(extra=size > head_end + length)
            return
        self.remaining = length - (size - head_end)
        self.client.write(data)

    def relay(self, data: bytes) -> None:
        try:
            take, ended = self.measure(data)
        except BadMessage as exc:
            self.fail(str(exc))
            return
        self.client.write(data if take == len(data) else data[:take])
        if ended:
            self.complete(extra=take < len(data))

    def measure(self, data: bytes) -> tuple[int, bool]:
        """How many bytes of ``data`` belong to the response body, and whether the body ends there."""
        if self.chunks is not None:
            return self.chunks.feed(data)
        if self.until_close:
            return len(data), False
        take = min(self.remaining, len(data))
        self.remaining -= take
        return take, self.remaining == 0

    # -- endings -------------------------------------------------------------------------------------------

    def complete(self, *, extra: bool = False) -> None:
        """The whole response is with the client; the upstream connection goes back to the pool when both
        sides left it in step (nothing sent beyond the response)."""
        self.done = True
        if self.timer is not None or self.dialling is not None:
            self.finish_timers()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.user = None
            if self.upstream_keep and not extra:
                self.client.proxy.pool.give_back(conn)
            else:
                conn.close()
        self.client.finished(self.request, self.status, self.keep, self.decision)

    def fail(self, reason: str) -> None:
        if self.done:
            return
        proxy = self.client.proxy
        proxy.counters["upstream_failures"] += 1
        log.debug("upstream %s failed: %s", self.upstream, reason)
        self.finish_timers()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        if not self.responded:
            self.client.write(simple_response(502, "Bad Gateway", f"{self.upstream}: {reason}", close=True))
            self.status = 502
        # the client has part of a response when one was begun: all that is left is to hang up
        self.client.finished(self.request, self.status, False, self.decision)

    def abandon(self) -> None:
        """The client has gone: the upstream connection is mid-exchange, and closed."""
        self.finish_timers()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def finish_timers(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.dialling is not None:
            self.dialling.cancel()
            self.dialling = None

    # -- flow control: a client that reads slowly slows the upstream down ---------------------------------

    def pause(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def resume(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()


class ChunkScanner:
    """Finds where a chunked body ends in the bytes as they come, without changing them: chunk-size lines,
    chunk data, then trailers up to the blank line (RFC 9112 §7.1)."""

    __slots__ = ("line", "remaining", "trailers")

    def __init__(self) -> None:
        self.line = bytearray()
        self.remaining = 0
        self.trailers = False

    def feed(self, data: bytes) -> tuple[int, bool]:
        pos, size = 0, len(data)
        while pos < size:
            if self.remaining:
                step = min(self.remaining, size - pos)
                pos += step
                self.remaining -= step
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self.line += data[pos:]
                if len(self.line) > MAX_CHUNK_LINE:
                    raise BadMessage("chunk line too long")
                return size, False
            self.line += data[pos : newline + 1]
            pos = newline + 1
            if not self.line.endswith(b"\r\n"):
                continue  # a bare LF: the line goes on
            line = bytes(self.line)
            self.line.clear()
            if self.trailers:
                if line == b"\r\n":
                    return pos, True
                continue
            size_text = line.split(b";", 1)[0].strip()
            try:
                chunk = int(size_text, 16)
            except ValueError:
                raise BadMessage(f"bad chunk size {size_text[:20]!r}") from None
            if chunk < 0:
                raise BadMessage(f"bad chunk size {size_text[:20]!r}")
            if chunk == 0:
                self.trailers = True
            else:
                self.remaining = chunk + 2
        return pos, False
