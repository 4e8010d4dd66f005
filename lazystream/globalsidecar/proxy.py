"""The global-sidecar's HTTP/1.1 forwarding proxy: listeners, and the stream-based path for unusual requests.

Every client connection starts on the callback-driven hot path (:mod:`lazystream.globalsidecar.relay`).
A request that path does not serve (a streamed or chunked request body, ``Upgrade``, ``CONNECT``) moves the
connection here for the rest of its life: one task reads requests one after the other (keep-alive), asks
the domain core (:func:`lazystream.domain.forwarding.decide`) where each goes, relays it over a pooled
keep-alive connection, relays the response back, and hands one record per request to the emitter.
Failures answer 502 (upstream) or 400 (client), never 500; ``Upgrade`` requests that the upstream accepts
(101) become a byte tunnel.
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
    MAX_HEAD_BYTES,
    BadMessage,
    Framing,
    keep_alive,
    parse_head,
    read_body,
    read_head,
    relay_body,
    request_framing,
    response_framing,
    simple_response,
)
from lazystream.globalsidecar.pool import Upstream, UpstreamPool
from lazystream.globalsidecar.relay import (
    BUFFERED_BODY_BYTES,
    REASONS,
    ClientConnection,
    ForwardedRequest,
    response_head,
)

log = logging.getLogger(__name__)


class UpstreamFailed(Exception):
    """The upstream could not be reached, or broke off before a complete response head."""


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    instance: str
    """This process's id, the value of the loop-detection header it adds."""
    prefer_listener_port: bool = False
    upstream_timeout: float | None = None


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

    async def close(self) -> None:
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
        reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES)
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
            pass
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
        try:
            raw = await read_head(reader)
            if raw is None:
                return False
            started, t0 = time.time(), time.perf_counter()
            head = parse_head(raw)
            method, _, version = head.start
            if not version.startswith("HTTP/1."):
                raise BadMessage(f"unsupported protocol {version[:20]!r}")
            framing = request_framing(head)
        except BadMessage as exc:
            self.counters["bad_requests"] += 1
            writer.write(simple_response(400, "Bad Request", str(exc), close=True))
            await writer.drain()
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

    async def _refuse(self, writer: asyncio.StreamWriter, refusal: Refuse, keep: bool) -> None:
        self.counters["refused"] += 1
        log.debug("refused (%d): %s", refusal.status, refusal.reason)
        writer.write(simple_response(refusal.status, REASONS[refusal.status], refusal.reason, close=not keep))
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
        except (UpstreamFailed, TimeoutError, BadMessage) as exc:
            self.counters["upstream_failures"] += 1
            reason = "upstream timed out" if isinstance(exc, TimeoutError) else str(exc)
            log.debug("upstream %s failed: %s", upstream, reason)
            if state.conn is not None:
                state.conn.close()
            if state.responded:  # the client has part of a response: all that is left is to hang up
                return Exchange(state.status, False, upstream)
            writer.write(simple_response(502, "Bad Gateway", f"{upstream}: {reason}", close=True))
            await writer.drain()
            return Exchange(502, False, upstream)
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
        body = await read_body(reader, framing, BUFFERED_BODY_BYTES)
        raw = await self._send(reader, decision, request, body, framing, state)
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
            writer.write(raw)  # an interim response (100 Continue, 103): relayed as it is
            raw = await _read_upstream_head(conn)
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

    async def _send(
        self,
        reader: asyncio.StreamReader,
        decision: Forward,
        request: bytes,
        body: bytes | None,
        framing: Framing,
        state: _ResponseState,
    ) -> bytes:
        """Write the request upstream; the response head. A pooled connection that turns out closed is
        replaced once, when the body is still at hand."""
        address = (decision.host, decision.port)
        for attempt in (1, 2):
            try:
                conn, reused = await self.pool.acquire(address)
            except OSError as exc:
                raise UpstreamFailed(f"cannot connect: {exc.strerror or exc}") from None
            state.conn = conn
            if not reused and connection_is_self(conn.local, conn.remote, self.ports):
                raise UpstreamFailed("loop: the destination is this global-sidecar")
            try:
                if body is not None:
                    conn.writer.write(request + body if body else request)
                else:
                    conn.writer.write(request)
                    await relay_body(reader, conn.writer, framing)
                await conn.writer.drain()
                return await _read_upstream_head(conn)
            except (OSError, UpstreamFailed, asyncio.IncompleteReadError) as exc:
                conn.close()
                state.conn = None
                if reused and body is not None and attempt == 1:
                    self.counters["retried_stale"] += 1
                    continue
                raise UpstreamFailed(f"upstream broke off: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

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


async def _read_upstream_head(conn: Upstream) -> bytes:
    raw = await read_head(conn.reader)
    if raw is None:
        raise UpstreamFailed("the upstream closed the connection without a response")
    return raw
