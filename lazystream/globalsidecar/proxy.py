"""The global-sidecar's HTTP/1.1 forwarding proxy: listeners, and the stream-based path for unusual requests.

Every client connection starts on the callback-driven hot path (:mod:`lazystream.globalsidecar.relay`).
A request that path does not serve (a streamed or chunked request body, ``Upgrade``, ``CONNECT``) moves the
connection here for the rest of its life: one task reads requests one after the other (keep-alive), asks
the domain core (:func:`lazystream.domain.forwarding.decide`) where each goes, relays it over a pooled
keep-alive connection, relays the response back, and hands one record per request to the emitter.
Requests the proxy refuses get the status :class:`~lazystream.globalsidecar.http1.RequestError` names (400,
408, 413, 417, 431, 501, 505); an upstream that fails is 502, one that runs out of time 504, never 500.
``Upgrade`` requests that the upstream accepts (101) become a byte tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from lazystream.domain.forwarding import (
    HOP_HEADER,
    Decisions,
    Forward,
    Refuse,
    ServiceExists,
    connection_is_self,
    decide,
    format_address,
    join_host_port,
)
from lazystream.globalsidecar.emit import Emitter, NullEmitter
from lazystream.globalsidecar.http1 import (
    CONTINUE,
    MAX_HEAD_BYTES,
    REASONS,
    BadMessage,
    ChunkedBody,
    Framing,
    RequestError,
    expects_continue,
    keep_alive,
    parse_head,
    parse_request,
    read_body,
    read_chunked,
    read_head,
    refusal,
    relay_body,
    relay_chunked,
    relay_exactly,
    request_framing,
    response_framing,
    simple_response,
)
from lazystream.globalsidecar.options import ProxyOptions
from lazystream.globalsidecar.pool import Upstream, UpstreamPool
from lazystream.globalsidecar.relay import (
    BUFFERED_BODY_BYTES,
    ClientConnection,
    ForwardedRequest,
    response_head,
)

log = logging.getLogger(__name__)


class UpstreamFailed(Exception):
    """The upstream could not be reached, or broke off before a complete response head (502)."""

    status = 502


class UpstreamTimedOut(UpstreamFailed):
    """The upstream could not be reached, or did not answer, in time (504)."""

    status = 504


@dataclass(slots=True)
class Exchange:
    """What became of one request, for its record."""

    status: int
    keep_client: bool
    upstream: str | None = None


class Proxy:
    """Listeners on any number of ports, all forwarding alike."""

    def __init__(
        self,
        options: ProxyOptions,
        pool: UpstreamPool,
        emitter: Emitter,
        exists: ServiceExists | None,
        listen_address: str,
    ) -> None:
        self.options = options
        self.pool = pool
        self.emitter = emitter
        self.count_only = emitter if isinstance(emitter, NullEmitter) else None
        """With records off, requests are counted there and no record is built."""
        self.decisions = Decisions()
        """:func:`decide`'s answers, remembered for the hot path."""
        self.exists = exists
        self.listen_address = listen_address
        self.servers: dict[int, asyncio.Server] = {}
        self.counters: Counter[str] = Counter()
        self.clients: set[ClientConnection] = set()
        """Connections on the hot path."""
        self._handlers: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.own_listeners: list[tuple[str, int]] = []
        """The bound ``(address, port)`` pairs; a new list whenever they change, not one per request."""

    # -- listeners ----------------------------------------------------------------------------------------

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(self.servers)

    async def listen(self, port: int) -> None:
        if port in self.servers:
            return
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep_timeouts())
        self.servers[port] = await loop.create_server(
            lambda: ClientConnection(self, port), self.listen_address, port, reuse_address=True, backlog=1024
        )
        self.own_listeners = [(self.listen_address, p) for p in self.servers]
        log.info("listening on %s", join_host_port(self.listen_address, port))

    async def unlisten(self, port: int, grace: float = 10.0) -> None:
        server = self.servers.pop(port, None)
        if server is None:
            return
        self.own_listeners = [(self.listen_address, p) for p in self.servers]
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await server.wait_closed()
        log.info("stopped listening on port %d", port)

    async def _sweep_timeouts(self) -> None:
        """One task for every hot-path connection's timeouts, instead of a timer per request."""
        interval = self.options.sweep_seconds
        while True:
            await asyncio.sleep(interval)
            now = time.perf_counter()
            for client in list(self.clients):
                client.check(now)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for port in list(self.servers):
            await self.unlisten(port, grace=0.5)
        for client in list(self.clients):
            client.close()
            if client.exchange is not None:
                client.exchange.abandon()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of the hot path (dialling), kept until it ends and cancelled by :meth:`close`."""
        task = asyncio.get_running_loop().create_task(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        return task

    def hand_to_streams(self, client: ClientConnection) -> None:
        """Move a hot-path connection, with what it has read, to the stream-based code for good."""
        transport = client.transport
        if transport is None:  # pragma: no cover - a connection always has its transport here
            return
        self.clients.discard(client)
        client.closed = True  # the protocol object is done with this transport
        reader = asyncio.StreamReader(limit=max(MAX_HEAD_BYTES, self.options.limits.max_head_bytes + 4))
        protocol = asyncio.StreamReaderProtocol(reader)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if client.buffer:
            reader.feed_data(bytes(client.buffer))
        if client.eof:
            reader.feed_eof()
        if client.read_paused:
            transport.resume_reading()
        writer = asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop())
        self.spawn(self.serve_connection(reader, writer, client.port, counted=True))

    # -- one client connection on streams ------------------------------------------------------------------

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, *, counted: bool = False
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        peer_address = format_address(peer[0], peer[1]) if peer else "-"
        if not counted:
            self.counters["connections"] += 1
        try:
            while await self._one_request(reader, writer, port, peer_address, peer[0] if peer else ""):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the client went away, or stayed idle for too long
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        port: int,
        peer_address: str,
        peer_ip: str,
    ) -> bool:
        """Serve one request; whether the client connection stays open for another."""
        limits = self.options.limits
        try:
            raw = await self._read_request_head(reader)
            if raw is None:
                return False
            started, t0 = time.time(), time.perf_counter()
            head = parse_request(raw, limits)
            method, _, version = head.start
            framing = request_framing(head, limits)
        except RequestError as exc:
            await self._refuse_request(writer, exc)
            return False
        request = ForwardedRequest(head, started, t0)
        decision = decide(
            authority=request.authority,
            source_ns=request.source_ns,
            orig_dest=request.orig_dest,
            listener_port=port,
            exists=self.exists,
            prefer_listener_port=self.options.prefer_listener_port,
            looped=head.get(HOP_HEADER) is not None,
            own_listeners=self.own_listeners,
        )
        keep = keep_alive(head, version) and method != "CONNECT"
        if isinstance(decision, Refuse):
            exchange = Exchange(decision.status, keep and framing.empty)
            await self._refuse(writer, decision, exchange.keep_client)
        else:
            exchange = await self._forward(reader, writer, request, decision, framing, keep)
        self.counters[f"status_{exchange.status // 100}xx"] += 1
        self.emitter.emit(request.record(peer_address, peer_ip, exchange.status, exchange.upstream))
        return exchange.keep_client

    async def _read_request_head(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request's head: None when the client closes, or sends nothing for ``idle_timeout``;
        :class:`RequestError` 408 when the head takes longer than ``header_timeout`` once begun."""
        options = self.options
        try:
            async with asyncio.timeout(options.idle_timeout):
                first = await reader.read(2)
                while first == b"\r\n":  # empty lines before a request line are ignored
                    first = await reader.read(2)
        except TimeoutError:
            self.counters["idle_closed"] += 1
            return None
        if not first:
            return None
        try:
            async with asyncio.timeout(options.header_timeout):
                return first + await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise RequestError(
                408, f"request head not received within {options.header_timeout:g} s"
            ) from None
        except asyncio.IncompleteReadError:
            raise RequestError(400, "the stream ended inside a request head") from None
        except asyncio.LimitOverrunError:
            raise RequestError(
                431, f"request head larger than {options.limits.max_head_bytes} bytes"
            ) from None

    async def _refuse_request(self, writer: asyncio.StreamWriter, error: RequestError) -> None:
        self.counters["bad_requests"] += 1
        self.counters[f"refused_{error.status}"] += 1
        log.debug("request refused (%d): %s", error.status, error.reason)
        with contextlib.suppress(OSError):
            writer.write(refusal(error))
            await writer.drain()

    async def _refuse(self, writer: asyncio.StreamWriter, refused: Refuse, keep: bool) -> None:
        self.counters["refused"] += 1
        log.debug("refused (%d): %s", refused.status, refused.reason)
        writer.write(simple_response(refused.status, REASONS[refused.status], refused.reason, close=not keep))
        await writer.drain()

    # -- forwarding ----------------------------------------------------------------------------------------

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: ForwardedRequest,
        decision: Forward,
        framing: Framing,
        keep: bool,
    ) -> Exchange:
        upstream = join_host_port(decision.host, decision.port)
        state = _ResponseState()
        try:
            async with asyncio.timeout(self.options.upstream_timeout):
                status, keep = await self._exchange(reader, writer, request, decision, framing, keep, state)
        except RequestError as exc:  # the client's body was bad: the upstream never gets a whole message
            if state.conn is not None:
                state.conn.close()
            if state.responded:
                return Exchange(state.status, False, upstream)
            await self._refuse_request(writer, exc)
            return Exchange(exc.status, False, upstream)
        except (UpstreamFailed, TimeoutError, BadMessage) as exc:
            if isinstance(exc, TimeoutError):
                limit = self.options.upstream_timeout
                status, reason = 504, f"no whole response within {limit:g} s" if limit else "timed out"
            else:
                status, reason = (exc.status if isinstance(exc, UpstreamFailed) else 502), str(exc)
            self.counters["upstream_failures" if status == 502 else "upstream_timeouts"] += 1
            log.debug("upstream %s failed: %s", upstream, reason)
            if state.conn is not None:
                state.conn.close()
            if state.responded:  # the client has part of a response: all that is left is to hang up
                return Exchange(state.status, False, upstream)
            writer.write(simple_response(status, REASONS[status], f"{upstream}: {reason}", close=True))
            await writer.drain()
            return Exchange(status, False, upstream)
        return Exchange(status, keep, upstream)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        forwarded: ForwardedRequest,
        decision: Forward,
        framing: Framing,
        keep: bool,
        state: _ResponseState,
    ) -> tuple[int, bool]:
        head, method, version = forwarded.head, forwarded.method, forwarded.version
        upgrade = head.get("upgrade") if "upgrade" in head.connection_tokens() else None
        request = forwarded.upstream_head(decision, self.options.instance, upgrade)
        if not framing.empty and expects_continue(head):
            writer.write(CONTINUE)  # the proxy answers the expectation itself, and drops it upstream
        body, rest = await self._request_body(reader, framing)
        raw = await self._send(reader, decision, request, body, rest, state)
        conn = state.conn
        if conn is None:  # pragma: no cover - _send always leaves its connection here
            raise UpstreamFailed("no upstream connection")
        while True:
            response = parse_head(raw)
            try:
                status = int(response.start[1])
            except ValueError:
                raise BadMessage(f"bad status line {' '.join(response.start)[:80]!r}") from None
            if not 100 <= status < 200 or status == 101:
                break
            if version == "HTTP/1.1":  # never to an HTTP/1.0 client
                writer.write(raw)  # an interim response (100 Continue, 103): relayed as it is
            raw = await self._read_upstream_head(conn)
        state.status = status
        if status == 101 and upgrade is not None:
            writer.write(raw)
            state.responded = True
            await self._tunnel(reader, writer, conn)
            return status, False
        rframing = response_framing(response, method)
        upstream_keep = keep_alive(response, response.start[0]) and not rframing.until_close
        keep = keep and not rframing.until_close
        out_head = response_head(response, version, keep)
        try:
            small = await read_body(conn.reader, rframing, BUFFERED_BODY_BYTES)
            if small is not None:  # one write, one system call, for head and body
                writer.write(out_head + small)
                state.responded = True
            else:
                writer.write(out_head)
                state.responded = True
                await relay_body(conn.reader, writer, rframing)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise UpstreamFailed(f"response body broken off: {exc!r}") from None
        await writer.drain()
        state.conn = None
        if upstream_keep:
            self.pool.release(conn)
        else:
            conn.close()
        return status, keep

    async def _request_body(
        self, reader: asyncio.StreamReader, framing: Framing
    ) -> tuple[bytes, ChunkedBody | int | None]:
        """What of the client's body is read before dialling (all of it when small, so that a bad chunk
        refuses the request before any of it goes upstream), and what is left to stream: the chunked
        body's state, or the number of Content-Length bytes; None when the body is at hand."""
        try:
            if framing.chunked:
                chunks = ChunkedBody(request=True, limit=self.options.limits.max_body_bytes)
                head_of_body = await read_chunked(reader, chunks, BUFFERED_BODY_BYTES)
                return head_of_body, (None if chunks.ended else chunks)
            small = await read_body(reader, framing, BUFFERED_BODY_BYTES)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise RequestError(400, "the stream ended inside the request body") from None
        return (small, None) if small is not None else (b"", framing.length)

    async def _send(
        self,
        reader: asyncio.StreamReader,
        decision: Forward,
        request: bytes,
        body: bytes,
        rest: ChunkedBody | int | None,
        state: _ResponseState,
    ) -> bytes:
        """Write the request upstream (streaming ``rest`` of the body); the response head. A pooled
        connection that turns out closed is replaced once, when the whole body is still at hand."""
        address = (decision.host, decision.port)
        for attempt in (1, 2):
            try:
                conn, reused = await self.pool.acquire(address)
            except TimeoutError:
                raise UpstreamTimedOut(f"cannot connect within {self.pool.connect_timeout:g} s") from None
            except OSError as exc:
                raise UpstreamFailed(f"cannot connect: {exc.strerror or exc}") from None
            state.conn = conn
            if not reused and connection_is_self(conn.local, conn.remote, self.ports):
                raise UpstreamFailed("loop: the destination is this global-sidecar")
            try:
                conn.writer.write(request + body if body else request)
                if rest is not None:
                    await _stream_request_body(reader, conn.writer, rest)
                await conn.writer.drain()
                return await self._read_upstream_head(conn)
            except (OSError, UpstreamFailed, asyncio.IncompleteReadError) as exc:
                conn.close()
                state.conn = None
                if isinstance(exc, UpstreamTimedOut):
                    raise
                if reused and rest is None and attempt == 1:
                    self.counters["retried_stale"] += 1
                    continue
                raise UpstreamFailed(f"upstream broke off: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_upstream_head(self, conn: Upstream) -> bytes:
        limit = self.options.response_head_timeout
        try:
            async with asyncio.timeout(limit):
                raw = await read_head(conn.reader)
        except TimeoutError:
            raise UpstreamTimedOut(f"no response head within {limit:g} s") from None
        if raw is None:
            raise UpstreamFailed("the upstream closed the connection without a response")
        return raw

    async def _tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Upstream
    ) -> None:
        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof() if dst.can_write_eof() else None

        state = asyncio.gather(pipe(reader, conn.writer), pipe(conn.reader, writer))
        try:
            await state
        finally:
            conn.close()


@dataclass(slots=True)
class _ResponseState:
    conn: Upstream | None = None
    responded: bool = False
    status: int = 502


async def _stream_request_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rest: ChunkedBody | int
) -> None:
    """The rest of a large request body, client to upstream; the client's failures are its own (400)."""
    try:
        if isinstance(rest, ChunkedBody):
            await relay_chunked(reader, writer, rest)
        else:
            await relay_exactly(reader, writer, rest)
    except asyncio.IncompleteReadError:
        raise RequestError(400, "the stream ended inside the request body") from None
