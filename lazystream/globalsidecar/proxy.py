"""The global-sidecar's HTTP/1.1 forwarding proxy on asyncio streams.

One task per client connection reads requests one after the other (keep-alive), asks the domain core
(:func:`lazystream.domain.forwarding.decide`) where each goes, relays it over a pooled keep-alive
connection, relays the response back, and hands one record per request to the emitter. Failures answer
502 (upstream) or 400 (client), never 500; ``Upgrade`` requests that the upstream accepts (101) become a
byte tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass

from lazystream.domain.forwarding import (
    HOP_HEADER,
    ORIG_DEST_HEADER,
    SOURCE_NS_HEADER,
    XFCC_HEADER,
    Forward,
    Refuse,
    ServiceExists,
    access_record,
    connection_is_self,
    decide,
    format_address,
    join_host_port,
    principal_from_xfcc,
)
from lazystream.globalsidecar.emit import Emitter
from lazystream.globalsidecar.http1 import (
    MAX_HEAD_BYTES,
    BadMessage,
    Framing,
    Head,
    forwardable,
    keep_alive,
    parse_head,
    read_body,
    read_head,
    relay_body,
    request_framing,
    response_framing,
    serialize,
    simple_response,
)
from lazystream.globalsidecar.pool import Upstream, UpstreamPool

log = logging.getLogger(__name__)

BUFFERED_BODY_BYTES = 64 * 1024
"""Request bodies up to this size are read before dialling, so a request that meets a pooled connection
the upstream has just closed can be sent again on a new one; larger ones are streamed."""
REASONS = {400: "Bad Request", 502: "Bad Gateway"}
_DROP_REQUEST = frozenset({"host", SOURCE_NS_HEADER, ORIG_DEST_HEADER, HOP_HEADER})


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
        self.exists = exists
        self.listen_address = listen_address
        self.servers: dict[int, asyncio.Server] = {}
        self.counters: Counter[str] = Counter()
        self._handlers: set[asyncio.Task[None]] = set()

    # -- listeners ----------------------------------------------------------------------------------------

    @property
    def ports(self) -> frozenset[int]:
        return frozenset(self.servers)

    @property
    def own_listeners(self) -> list[tuple[str, int]]:
        return [(self.listen_address, port) for port in self.servers]

    async def listen(self, port: int) -> None:
        if port in self.servers:
            return

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.serve_connection(reader, writer, port)

        self.servers[port] = await asyncio.start_server(
            handle, self.listen_address, port, reuse_address=True, limit=MAX_HEAD_BYTES, backlog=1024
        )
        log.info("listening on %s", join_host_port(self.listen_address, port))

    async def unlisten(self, port: int, grace: float = 10.0) -> None:
        server = self.servers.pop(port, None)
        if server is None:
            return
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await server.wait_closed()
        log.info("stopped listening on port %d", port)

    async def close(self) -> None:
        for port in list(self.servers):
            await self.unlisten(port, grace=0.5)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- one client connection -----------------------------------------------------------------------------

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        peer_address = format_address(peer[0], peer[1]) if peer else "-"
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
            method, target, version = head.start
            if not version.startswith("HTTP/1."):
                raise BadMessage(f"unsupported protocol {version[:20]!r}")
            framing = request_framing(head)
        except BadMessage as exc:
            self.counters["bad_requests"] += 1
            writer.write(simple_response(400, "Bad Request", str(exc), close=True))
            await writer.drain()
            return False
        authority = head.get("host")
        if target.startswith(("http://", "HTTP://")):  # absolute form: the target names the host
            rest = target[7:]
            slash = rest.find("/")
            authority, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        source_ns = head.get(SOURCE_NS_HEADER)
        orig_dest = head.get(ORIG_DEST_HEADER)
        decision = decide(
            authority=authority,
            source_ns=source_ns,
            orig_dest=orig_dest,
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
            exchange = await self._forward(reader, writer, head, target, decision, framing, keep)
        self.counters[f"status_{exchange.status // 100}xx"] += 1
        self.emitter.emit(
            access_record(
                time=started,
                peer_address=peer_address,
                authority=authority,
                status=exchange.status,
                duration_ms=(time.perf_counter() - t0) * 1000,
                x_forwarded_for=head.get("x-forwarded-for"),
                source_namespace=source_ns,
                peer_principal=_principal(head, peer_ip),
                original_destination=orig_dest,
                upstream=exchange.upstream,
            )
        )
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
        head: Head,
        target: str,
        decision: Forward,
        framing: Framing,
        keep: bool,
    ) -> Exchange:
        upstream = join_host_port(decision.host, decision.port)
        state = _ResponseState()
        try:
            async with asyncio.timeout(self.options.upstream_timeout):
                status, keep = await self._exchange(
                    reader, writer, head, target, decision, framing, keep, state
                )
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
        head: Head,
        target: str,
        decision: Forward,
        framing: Framing,
        keep: bool,
        state: _ResponseState,
    ) -> tuple[int, bool]:
        method, _, version = head.start
        tokens = head.connection_tokens()
        upgrade = head.get("upgrade") if "upgrade" in tokens else None
        headers = [
            ("Host", decision.authority),
            *(kv for kv in forwardable(head.headers, tokens) if kv[0].lower() not in _DROP_REQUEST),
            (HOP_HEADER, self.options.instance),
        ]
        if upgrade is not None:
            headers += [("Connection", "upgrade"), ("Upgrade", upgrade)]
        request = serialize((method, target, "HTTP/1.1"), headers)
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
        out = forwardable(response.headers, response.connection_tokens())
        if not keep:
            out.append(("Connection", "close"))
        elif version == "HTTP/1.0":
            out.append(("Connection", "keep-alive"))
        out_head = serialize(("HTTP/1.1", response.start[1], response.start[2]), out)
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


def _principal(head: Head, peer_ip: str) -> str | None:
    """The caller's certificate principal, from the XFCC header of the proxy's own Istio sidecar: trusted
    only from a loopback peer (that sidecar); from anyone else the header is the caller's own claim."""
    if not (peer_ip.startswith("127.") or peer_ip == "::1"):
        return None
    return principal_from_xfcc(head.get(XFCC_HEADER))
