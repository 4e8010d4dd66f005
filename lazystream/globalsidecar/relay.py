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
from collections import Counter
from collections.abc import Coroutine
from typing import Any, Protocol, cast

from lazystream.domain.forwarding import (
    HOP_HEADER,
    ORIG_DEST_HEADER,
    SOURCE_NS_HEADER,
    XFCC_HEADER,
    Decisions,
    Forward,
    Refuse,
    ServiceExists,
    access_record,
    connection_is_self,
    format_address,
    join_host_port,
    principal_from_xfcc,
)
from lazystream.globalsidecar.emit import Emitter, NullEmitter
from lazystream.globalsidecar.http1 import (
    CONTINUE,
    FRAMED_BY,
    HOP_BY_HOP,
    MAX_HEAD_BYTES,
    NO_BODY,
    REASONS,
    BadMessage,
    ChunkedBody,
    Framing,
    Head,
    RequestError,
    expects_continue,
    forwardable,
    head_end,
    keep_alive,
    parse_head,
    parse_request,
    plain_response_length,
    refusal,
    request_framing,
    response_framing,
    serialize,
    simple_response,
)
from lazystream.globalsidecar.options import ProxyOptions
from lazystream.globalsidecar.pool import UpstreamConnection, UpstreamPool

log = logging.getLogger(__name__)


class ProxyCore(Protocol):
    """What the hot path uses of the proxy that owns its connections
    (:class:`lazystream.globalsidecar.proxy.Proxy`): its options, pool, emitter and counters, and the way
    to hand a connection to the stream-based code. A Protocol, so this module does not import the proxy."""

    options: ProxyOptions
    pool: UpstreamPool
    emitter: Emitter
    count_only: NullEmitter | None
    decisions: Decisions
    exists: ServiceExists | None
    counters: Counter[str]
    clients: set[ClientConnection]
    own_listeners: list[tuple[str, int]]

    @property
    def ports(self) -> frozenset[int]: ...

    def spawn(self, coro: Coroutine[Any, Any, None], /) -> asyncio.Task[None]: ...

    def hand_to_streams(self, client: ClientConnection, /) -> None: ...


BUFFERED_BODY_BYTES = 64 * 1024
"""Request bodies up to this size are read before dialling, so a request that meets a pooled connection
the upstream has just closed can be sent again on a new one; larger ones are streamed."""
_STATUS_KEYS = {n: f"status_{n}xx" for n in range(1, 6)}
_DROP_UPSTREAM = frozenset({"host", "expect", SOURCE_NS_HEADER, ORIG_DEST_HEADER, HOP_HEADER}) | HOP_BY_HOP
"""Never sent upstream: the Host (sent completed), the Slime headers and the loop marker (the proxy's
own), ``Expect`` (the proxy answers ``100 Continue`` itself), and hop-by-hop fields."""


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
        if not target.startswith("/") and target[:7].lower() == "http://":  # absolute form names the host
            rest = target[7:]
            end = len(rest)
            for mark in "/?":
                at = rest.find(mark)
                if 0 <= at < end:
                    end = at
            authority, target = rest[:end], rest[end:] or "/"
            if target.startswith("?"):
                target = "/" + target
        self.target = target
        self.authority = authority
        self.source_ns = index.get(SOURCE_NS_HEADER)
        self.orig_dest = index.get(ORIG_DEST_HEADER)
        self.started = started
        self.t0 = t0

    def upstream_head(self, decision: Forward, instance: str, upgrade: str | None = None) -> bytes:
        """The request head for the upstream, built from the parsed fields (never the bytes as received):
        the completed Host, no hop-by-hop, Slime or ``Expect`` fields, the loop marker added."""
        head = self.head
        tokens = head.connection_tokens()
        drop = _DROP_UPSTREAM.union(tokens - FRAMED_BY) if tokens else _DROP_UPSTREAM
        lowered = head.lowered or [name.lower() for name, _ in head.headers]
        kept = [
            f"{kv[0]}: {kv[1]}\r\n"
            for kv, name in zip(head.headers, lowered, strict=True)
            if name not in drop
        ]
        kept.append(f"{HOP_HEADER}: {instance}\r\n")
        if upgrade is not None:
            kept.append(f"Connection: upgrade\r\nUpgrade: {upgrade}\r\n")
        text = f"{self.method} {self.target} HTTP/1.1\r\nHost: {decision.authority}\r\n"
        return (text + "".join(kept) + "\r\n").encode("latin-1")

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
    """One client connection on the hot path: requests one after the other, one exchange at a time.

    ``since`` is when the connection's current wait began: for the next request (idle, closed after
    ``clientIdleSeconds``) or for the rest of a request's head and small body (408 after
    ``headerTimeoutSeconds``). The proxy's timeout sweep reads it (:meth:`check`); nothing per request."""

    def __init__(self, proxy: ProxyCore, port: int) -> None:
        self.proxy = proxy
        self.port = port
        self.limits = proxy.options.limits
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.exchange: Exchange | None = None
        self.eof = False
        self.closed = False
        self.write_paused = False
        self.read_paused = False
        self.continued = False
        """Whether ``100 Continue`` went to the client for the request being read."""
        self.since = time.perf_counter()
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
        if self.closed:
            return
        if not self.buffer:
            if self.exchange is None and not self.write_paused:
                end = data.find(b"\r\n\r\n", 0, self.limits.max_head_bytes + 4)
                if end >= 0 and end + 4 == len(data) and data[:1] != b"\r":  # one whole head, nothing else
                    self.serve_head(data, buffered=False)
                    return
            self.since = time.perf_counter()  # a request begins to arrive
        self.buffer += data
        if self.exchange is None and not self.write_paused:
            self.next_request()
        elif len(self.buffer) > self.limits.max_head_bytes and not self.read_paused and self.transport:
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

    def check(self, now: float) -> None:
        """The proxy's timeout sweep: hang up on an idle connection, answer 408 to a request that is taking
        too long to arrive, and 504 for an upstream that has not answered in time."""
        if self.closed:
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.check(now)
            return
        options = self.proxy.options
        if self.buffer:
            if now - self.since > options.header_timeout:
                limit = options.header_timeout
                self.refuse(RequestError(408, f"request not received within {limit:g} s"))
        elif now - self.since > options.idle_timeout and not self.write_paused:
            self.proxy.counters["idle_closed"] += 1
            self.close()

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
        while buffer[:2] == b"\r\n":  # empty lines before a request line are ignored (RFC 9112 §2.2)
            del buffer[:2]
        try:
            end = head_end(buffer, self.limits)
        except RequestError as exc:
            self.refuse(exc)
            return
        if end < 0:
            if self.eof:
                if bytes(buffer).strip():
                    self.refuse(RequestError(400, "the stream ended inside a request head"))
                else:
                    self.close()
            return
        self.serve_head(bytes(buffer[:end]), buffered=True)

    def serve_head(self, raw: bytes, *, buffered: bool) -> None:
        """Serve the request whose head is ``raw``: at the start of the buffer when ``buffered``, else all
        that the client has sent so far, with nothing in the buffer (the usual case, without a copy)."""
        limits = self.limits
        try:
            head = parse_request(raw, limits)
            index = head.names()
            if "content-length" in index or "transfer-encoding" in index:
                framing = request_framing(head, limits)
                length = framing.length
            else:  # the usual case: no body
                framing, length = NO_BODY, 0
        except RequestError as exc:
            self.refuse(exc)
            return
        ordinary = self.ordinary(head, framing)
        if not buffered and (length or not ordinary):  # a body to wait for, or the streams take over
            self.since = time.perf_counter()
            self.buffer += raw
            buffered = True
        if not ordinary:
            self.proxy.hand_to_streams(self)
            return
        body = b""
        if buffered:
            buffer = self.buffer
            head_size = len(raw)
            body_end = head_size + length
            if len(buffer) < body_end:
                if self.eof:  # the client stopped sending inside the body
                    self.refuse(RequestError(400, "the stream ended inside the request body"))
                elif not self.continued and expects_continue(head):
                    self.continued = True
                    self.write(CONTINUE)
                return  # the rest of the body is on its way
            if length:
                body = bytes(buffer[head_size:body_end])
            del buffer[:body_end]
            if self.read_paused and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
        self.continued = False
        self.start(ForwardedRequest(head, time.time(), time.perf_counter()), body)

    @staticmethod
    def ordinary(head: Head, framing: Framing) -> bool:
        """Whether the hot path serves this request: a small Content-Length body or none, no upgrade."""
        if framing.chunked or framing.length > BUFFERED_BODY_BYTES:
            return False
        return "connection" not in head.names() or "upgrade" not in head.connection_tokens()

    def refuse(self, error: RequestError) -> None:
        """Answer a request the proxy will not forward, and hang up: the rest of what the client sent cannot
        be trusted to start where the refused request ends."""
        counters = self.proxy.counters
        counters["bad_requests"] += 1
        counters[f"refused_{error.status}"] += 1
        log.debug("request from %s refused (%d): %s", self.peer_address, error.status, error.reason)
        self.write(refusal(error))
        self.buffer.clear()
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
        self.since = time.perf_counter()
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
        "sent",
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
        self.chunks: ChunkedBody | None = None
        self.until_close = False
        self.upstream_keep = False
        self.timer: asyncio.TimerHandle | None = None
        self.dialling: asyncio.Task[None] | None = None
        self.done = False
        self.sent = 0.0
        """When the request went upstream (0 while dialling): the response head is due within
        ``responseHeadTimeoutSeconds`` of it."""

    @property
    def upstream(self) -> str:
        """The address dialled, as the record and the 502 answers give it."""
        return join_host_port(self.decision.host, self.decision.port)

    def begin(self) -> None:
        timeout = self.client.proxy.options.upstream_timeout
        if timeout is not None:
            self.timer = asyncio.get_running_loop().call_later(
                timeout, self.fail, f"no whole response within {timeout:g} s", 504
            )
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
        except TimeoutError:
            self.dialling = None
            self.fail(f"cannot connect within {proxy.pool.connect_timeout:g} s", 504)
            return
        except OSError as exc:
            self.dialling = None
            self.fail(f"cannot connect: {exc.strerror or exc}")
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
        self.sent = time.perf_counter()
        conn.write(self.message)  # head and body: one write, one system call

    def check(self, now: float) -> None:
        """The timeout sweep: 504 when the upstream has had the request for too long without answering."""
        limit = self.client.proxy.options.response_head_timeout
        if limit and self.partial is not None and self.sent and now - self.sent > limit and not self.done:
            self.fail(f"no response head within {limit:g} s", 504)

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
                    if self.request.version == "HTTP/1.1":  # never to an HTTP/1.0 client
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
            self.chunks = ChunkedBody(request=False)
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
            passed, used, ended = self.measure(rest)
        except BadMessage as exc:
            self.client.write(out)
            self.fail(str(exc))
            return
        if out is raw and passed is rest and len(raw) == start:  # the bytes as received, not a copy
            self.client.write(data)
        else:
            self.client.write(out + passed)  # head and what came with it: one write
        if ended:
            self.complete(extra=used < size)

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
            passed, used, ended = self.measure(data)
        except BadMessage as exc:
            self.fail(str(exc))
            return
        if passed:
            self.client.write(passed)
        if ended:
            self.complete(extra=used < len(data))

    def measure(self, data: bytes) -> tuple[bytes, int, bool]:
        """Of ``data``, the bytes to pass to the client now, how many belong to the response body, and
        whether the body ends there."""
        chunks = self.chunks
        if chunks is not None:
            passed, used = chunks.feed(data)
            return passed, used, chunks.ended
        if self.until_close:
            return data, len(data), False
        take = min(self.remaining, len(data))
        self.remaining -= take
        return (data if take == len(data) else data[:take]), take, self.remaining == 0

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

    def fail(self, reason: str, status: int = 502) -> None:
        """The upstream failed (502) or ran out of time (504): the client gets that status, or is hung up
        on when part of the response has already gone to it."""
        if self.done:
            return
        proxy = self.client.proxy
        proxy.counters["upstream_failures" if status == 502 else "upstream_timeouts"] += 1
        log.debug("upstream %s failed: %s", self.upstream, reason)
        self.finish_timers()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()
        if not self.responded:
            message = f"{self.upstream}: {reason}"
            self.client.write(simple_response(status, REASONS[status], message, close=True))
            self.status = status
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
