"""Keep-alive connections to upstreams, reused across requests (Slime's proxy dials one per request)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

Address = tuple[str, int]


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

    def release(self, conn: Upstream) -> None:
        idle = self._idle[conn.address]
        if len(idle) >= self.max_idle or conn.writer.is_closing():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def idle_count(self) -> int:
        return sum(len(v) for v in self._idle.values())

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
        conns = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()
