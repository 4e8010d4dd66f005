"""Keep-alive connections to upstreams, reused across requests (Slime's proxy dials one per request).

Two kinds are pooled, each for its own path through the proxy: :class:`UpstreamConnection` (an asyncio
protocol driven by callbacks, for the hot path that relays ordinary requests without a task switch) and
:class:`Upstream` (asyncio streams, for the rare requests the hot path hands to the stream-based code:
streamed or chunked request bodies, upgrades).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol, cast

Address = tuple[str, int]


class ConnectionUser(Protocol):
    """The exchange a :class:`UpstreamConnection` currently serves: it is handed every event."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_lost(self, exc: Exception | None) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One open connection to ``address`` for the callback-driven hot path.

    Bytes the upstream sends go straight to the exchange it serves (``user``); bytes that arrive while it
    is idle in the pool mean the upstream is out of step, and the connection is closed.
    """

    __slots__ = ("address", "closed", "idle_since", "local", "remote", "transport", "user")

    def __init__(self, address: Address) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.user: ConnectionUser | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self.local: tuple[str, int] = ("", 0)
        self.remote: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        local, remote = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        if local:
            self.local = (str(local[0]), int(local[1]))
        if remote:
            self.remote = (str(remote[0]), int(remote[1]))

    def data_received(self, data: bytes) -> None:
        if self.user is not None:
            self.user.upstream_data(data)
        else:
            self.close()

    def eof_received(self) -> bool:
        return False  # close: an upstream that stops sending is done with this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        user, self.user = self.user, None
        if user is not None:
            user.upstream_lost(exc)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def usable(self, now: float, idle_seconds: float) -> bool:
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since < idle_seconds
        )

    def close(self) -> None:
        self.closed = True
        self.user = None
        if self.transport is not None:
            self.transport.close()


@dataclass(slots=True)
class Upstream:
    """One open connection to ``address``."""

    address: Address
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self, now: float, idle_seconds: float) -> bool:
        return (
            not self.reader.at_eof() and not self.writer.is_closing() and now - self.idle_since < idle_seconds
        )

    def close(self) -> None:
        self.writer.close()

    @property
    def local(self) -> tuple[str, int]:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def remote(self) -> tuple[str, int]:
        host, port = self.writer.get_extra_info("peername")[:2]
        return str(host), int(port)


class UpstreamPool:
    """Idle connections per upstream address, most recently used first.

    ``acquire`` gives an idle connection that still looks open (and says it was reused, so a request that
    meets a connection the upstream had just closed can be retried once on a new one) or dials a new one;
    ``release`` keeps it for the next request, up to ``max_idle`` per address for ``idle_seconds``.
    """

    def __init__(self, *, max_idle: int, idle_seconds: float, connect_timeout: float | None) -> None:
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self.connect_timeout = connect_timeout
        self._idle: dict[Address, list[Upstream]] = defaultdict(list)
        self._idle_protocols: dict[Address, list[UpstreamConnection]] = defaultdict(list)
        self.dialled = 0
        self.reused = 0
        self._sweeper: asyncio.Task[None] | None = None

    async def acquire(self, address: Address) -> tuple[Upstream, bool]:
        idle = self._idle.get(address)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.idle_seconds):
                self.reused += 1
                return conn, True
            conn.close()
        return await self.dial(address), False

    async def dial(self, address: Address) -> Upstream:
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(*address, limit=64 * 1024)
        self.dialled += 1
        return Upstream(address, reader, writer)

    def take(self, address: Address) -> UpstreamConnection | None:
        """An idle hot-path connection to ``address`` that still looks open, or None (then :meth:`open`)."""
        idle = self._idle_protocols.get(address)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.idle_seconds):
                self.reused += 1
                return conn
            conn.close()
        return None

    async def open(self, address: Address) -> UpstreamConnection:
        """A new hot-path connection to ``address``."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(lambda: UpstreamConnection(address), *address)
        self.dialled += 1
        return conn

    def give_back(self, conn: UpstreamConnection) -> None:
        """Keep a hot-path connection whose exchange ended in step, for the next request."""
        idle = self._idle_protocols[conn.address]
        transport = conn.transport
        if len(idle) >= self.max_idle or conn.closed or transport is None or transport.is_closing():
            conn.close()
            return
        conn.user = None
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def release(self, conn: Upstream) -> None:
        idle = self._idle[conn.address]
        if len(idle) >= self.max_idle or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values()) + sum(len(v) for v in self._idle_protocols.values())

    def sweep(self) -> None:
        """Close connections idle for longer than ``idle_seconds`` or closed by the upstream."""
        now = time.monotonic()
        for address in list(self._idle):
            keep = []
            for conn in self._idle[address]:
                if conn.usable(now, self.idle_seconds):
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]
        for address in list(self._idle_protocols):
            kept = []
            for fast in self._idle_protocols[address]:
                if fast.usable(now, self.idle_seconds):
                    kept.append(fast)
                else:
                    fast.close()
            if kept:
                self._idle_protocols[address] = kept
            else:
                del self._idle_protocols[address]

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.idle_seconds / 2))
            self.sweep()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for fast in [c for idle in self._idle_protocols.values() for c in idle]:
            fast.close()
        self._idle_protocols.clear()
        conns = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
