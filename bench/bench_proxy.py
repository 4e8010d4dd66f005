"""``lazystream global-sidecar`` next to direct calls to the same upstream, in the same run: the latency the
proxy adds (p50, p99) at a fixed request rate, and requests/s at saturation.

The upstream is a fixed small HTTP/1.1 server (a 256-byte body) in its own process, on the standard
library's event loop; the proxy runs as the real command (records off, no Service cache, on its default
event loop, uvloop) in another; this process is the load generator, over keep-alive connections, on the
standard library's loop too. Direct and proxied rounds alternate, so drift affects both alike. The CPU time
each process used per request at saturation (from ``/proc``) is reported too: on a shared machine it is
steadier than requests/s.

    python -m bench.bench_proxy [seconds-per-round]
    LAZYSTREAM_GLOBAL_SIDECAR_EVENT_LOOP=asyncio python -m bench.bench_proxy   # the proxy on asyncio's loop
    BENCH_PROXY_BASELINE=/path/to/other/checkout python -m bench.bench_proxy  # and that checkout's proxy

With ``BENCH_PROXY_BASELINE``, a second proxy runs the ``lazystream`` package of that checkout (e.g. a
``git worktree`` of the previous commit) in the same run, its rounds alternating with the others': the
figures then compare this checkout's proxy with the baseline's, measured alike.

Targets: p99 added <= 2 ms at 1k req/s; throughput >= 0.5 x direct; against a baseline checkout, at least
0.9 x its throughput (the strict request parser's budget).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import cpu_seconds, free_ports, quantile

BODY = b"x" * 256
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


# --- the fixed upstream (its own process) -----------------------------------------------------------------


class FixedUpstream(asyncio.Protocol):
    """Answers every request with the same 200 and 256 bytes; requests have no body (GET)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(RESPONSE * count)


async def serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedUpstream, "127.0.0.1", port, backlog=1024)
    print("upstream ready", flush=True)
    async with server:
        await server.serve_forever()


# --- the load generator --------------------------------------------------------------------------------


class Connection:
    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def call(self) -> float:
        start = time.perf_counter()
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"content-length:")
        length = int(head[at + 15 : head.find(b"\r\n", at)])
        await self.reader.readexactly(length)
        return time.perf_counter() - start

    def close(self) -> None:
        self.writer.close()


async def connections(port: int, request: bytes, count: int) -> list[Connection]:
    conns = [Connection(port, request) for _ in range(count)]
    await asyncio.gather(*(c.open() for c in conns))
    return conns


async def paced(port: int, request: bytes, rate: float, seconds: float, conns: int = 8) -> list[float]:
    """Latencies of requests sent at ``rate`` per second in all, spread over ``conns`` connections."""
    pool = await connections(port, request, conns)
    interval = conns / rate
    latencies: list[float] = []

    async def run(conn: Connection, offset: float) -> None:
        start = time.perf_counter() + offset
        n = 0
        while (due := start + n * interval) < start + seconds:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            latencies.append(await conn.call())
            n += 1

    await asyncio.gather(*(run(c, i * interval / conns) for i, c in enumerate(pool)))
    for c in pool:
        c.close()
    return latencies


async def saturate(port: int, request: bytes, seconds: float, conns: int = 16) -> float:
    """Requests/s with ``conns`` connections each sending the next request as soon as one is answered."""
    pool = await connections(port, request, conns)
    done = 0
    end = time.perf_counter() + seconds

    async def run(conn: Connection) -> None:
        nonlocal done
        while time.perf_counter() < end:
            await conn.call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(run(c) for c in pool))
    elapsed = time.perf_counter() - start
    for c in pool:
        c.close()
    return done / elapsed


@dataclass
class CpuMeter:
    """CPU time per request of each process, over the saturated rounds."""

    pids: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    requests: int = 0

    async def measure(self, saturated_round: Coroutine[Any, Any, float]) -> float:
        """Run one saturated round; its requests/s."""
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        start = time.perf_counter()
        rps = await saturated_round
        elapsed = time.perf_counter() - start
        for name, pid in self.pids.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + cpu_seconds(pid) - before[name]
        self.requests += round(rps * elapsed)
        return rps

    def __str__(self) -> str:
        each = (f"{name} {1e6 * used / max(1, self.requests):.0f} µs" for name, used in self.seconds.items())
        return ", ".join(each)


@dataclass
class ProxyFigures:
    rate: float
    direct_latencies: list[float] = field(default_factory=list)
    proxy_latencies: list[float] = field(default_factory=list)
    direct_rps: list[float] = field(default_factory=list)
    proxy_rps: list[float] = field(default_factory=list)
    event_loop: str = "uvloop"
    direct_cpu: CpuMeter | None = None
    proxy_cpu: CpuMeter | None = None
    baseline: str | None = None
    """The checkout whose proxy was measured alongside, if any."""
    baseline_latencies: list[float] = field(default_factory=list)
    baseline_rps: list[float] = field(default_factory=list)
    baseline_cpu: CpuMeter | None = None

    def p(self, which: list[float], q: float) -> float:
        return quantile(which, q) * 1000

    @property
    def added_p50_ms(self) -> float:
        return self.p(self.proxy_latencies, 0.5) - self.p(self.direct_latencies, 0.5)

    @property
    def added_p99_ms(self) -> float:
        return self.p(self.proxy_latencies, 0.99) - self.p(self.direct_latencies, 0.99)

    @property
    def throughput_ratio(self) -> float:
        return statistics.median(self.proxy_rps) / statistics.median(self.direct_rps)

    @property
    def baseline_ratio(self) -> float:
        """This proxy's requests/s over the baseline proxy's, at saturation."""
        return statistics.median(self.proxy_rps) / statistics.median(self.baseline_rps)

    def __str__(self) -> str:
        d, p = self.direct_latencies, self.proxy_latencies
        return (
            f"at {self.rate:.0f} req/s ({len(d)} + {len(p)} requests): direct p50 {self.p(d, 0.5):.3f} ms, "
            f"p99 {self.p(d, 0.99):.3f} ms; through the proxy p50 {self.p(p, 0.5):.3f} ms, "
            f"p99 {self.p(p, 0.99):.3f} ms; added p50 {self.added_p50_ms:.3f} ms, "
            f"p99 {self.added_p99_ms:.3f} ms"
            f"\nsaturated: direct {statistics.median(self.direct_rps):,.0f} req/s, proxy "
            f"{statistics.median(self.proxy_rps):,.0f} req/s (x{self.throughput_ratio:.2f})"
            f"\nCPU per request at saturation: direct calls: {self.direct_cpu}; "
            f"proxied calls: {self.proxy_cpu}"
            f"\nproxy event loop: {self.event_loop}" + (self._against_baseline() if self.baseline_rps else "")
        )

    def _against_baseline(self) -> str:
        b, d = self.baseline_latencies, self.direct_latencies
        p50, p99 = self.p(b, 0.5), self.p(b, 0.99)
        return (
            f"\nbaseline proxy ({self.baseline}): p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
            f"added p50 {p50 - self.p(d, 0.5):.3f} ms, p99 {p99 - self.p(d, 0.99):.3f} ms; "
            f"saturated {statistics.median(self.baseline_rps):,.0f} req/s; CPU/request {self.baseline_cpu}"
            f"\nthis proxy / baseline: throughput x{self.baseline_ratio:.3f}"
        )


def start_process(
    argv: list[str], ready: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)  # noqa: S603
    deadline = time.monotonic() + 30
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return proc


def start_proxy(port: int, log: Path, checkout: Path | None = None) -> subprocess.Popen[bytes]:
    """``lazystream global-sidecar`` on ``port``: this checkout's, or ``checkout``'s package."""
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    lazystream = str(Path(sys.executable).with_name("lazystream"))
    return start_process(
        [lazystream, "global-sidecar", "--port", str(port), "--probe-port", str(free_ports(1)[0]),
         "--records", "none", "--no-service-cache", "--loglevel", "warning"],
        "", log, env,
    )  # fmt: skip


async def run(
    seconds: float = 5.0, rounds: int = 3, rate: float = 1000.0, baseline: Path | None = None
) -> ProxyFigures:
    import tempfile

    logs = Path(tempfile.mkdtemp(prefix="lazystream-bench-proxy-"))
    upstream_port, proxy_port, baseline_port = free_ports(3)
    python = sys.executable
    upstream = start_process(
        [python, "-m", "bench.bench_proxy", "upstream", str(upstream_port)], "upstream ready", logs / "up.log"
    )
    proxy = other = None
    try:
        proxy = start_proxy(proxy_port, logs / "proxy.log")
        await wait_port(proxy_port)
        if baseline is not None:
            other = start_proxy(baseline_port, logs / "baseline.log", baseline)
            await wait_port(baseline_port)
        direct_request = (
            b"GET /details/0 HTTP/1.1\r\nHost: details:%d\r\nUser-Agent: bench\r\n\r\n" % upstream_port
        )
        proxy_request = (
            b"GET /details/0 HTTP/1.1\r\nHost: details\r\nUser-Agent: bench\r\nSlime-Source-Ns: default\r\n"
            b"Slime-Orig-Dest: 127.0.0.1:%d\r\n\r\n" % upstream_port
        )
        figures = ProxyFigures(
            rate, event_loop=os.environ.get("LAZYSTREAM_GLOBAL_SIDECAR_EVENT_LOOP", "uvloop")
        )
        own = {"load generator": os.getpid(), "upstream": upstream.pid}
        direct_cpu = figures.direct_cpu = CpuMeter(own)
        proxy_cpu = figures.proxy_cpu = CpuMeter({**own, "proxy": proxy.pid})
        await paced(proxy_port, proxy_request, rate, min(1.0, seconds))  # warm-up: connections, code paths
        if other is not None:
            figures.baseline = str(baseline)
            baseline_cpu = figures.baseline_cpu = CpuMeter({**own, "proxy": other.pid})
            await paced(baseline_port, proxy_request, rate, min(1.0, seconds))
        for _ in range(rounds):
            figures.direct_latencies += await paced(upstream_port, direct_request, rate, seconds)
            figures.proxy_latencies += await paced(proxy_port, proxy_request, rate, seconds)
            if other is not None:
                figures.baseline_latencies += await paced(baseline_port, proxy_request, rate, seconds)
            figures.direct_rps.append(
                await direct_cpu.measure(saturate(upstream_port, direct_request, seconds))
            )
            figures.proxy_rps.append(await proxy_cpu.measure(saturate(proxy_port, proxy_request, seconds)))
            if other is not None:
                figures.baseline_rps.append(
                    await baseline_cpu.measure(saturate(baseline_port, proxy_request, seconds))
                )
        return figures
    finally:
        for proc in (proxy, other, upstream):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


async def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on {port}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["upstream"]:
        asyncio.run(serve_upstream(int(sys.argv[2])))
    else:
        base = os.environ.get("BENCH_PROXY_BASELINE")
        print(
            asyncio.run(
                run(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0, baseline=Path(base) if base else None)
            )
        )
