"""``lazystream global-sidecar``: the proxy, its health port, its ports file and its Service cache, wired.

Start-up: the Service cache (when on) lists Services; the proxy listens on ``port`` and on every wormhole
port of ``portsFile`` (the health port excepted); ``/healthz/ready`` turns 200 and the process logs
``lazystream global-sidecar ready``. The ports file is then checked every ``portsReloadSeconds``. SIGTERM or
SIGINT closes the listeners, the pooled connections and the record emitter (flushing what it holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable

from lazystream.config import EventLoop, GlobalSidecarSettings, KubeSettings
from lazystream.domain.forwarding import ServiceExists
from lazystream.globalsidecar.emit import Emitter, make_emitter
from lazystream.globalsidecar.http1 import Limits, read_head, simple_response
from lazystream.globalsidecar.options import ProxyOptions
from lazystream.globalsidecar.pool import UpstreamPool
from lazystream.globalsidecar.ports import PortsFile
from lazystream.globalsidecar.proxy import Proxy
from lazystream.runtime import heap

log = logging.getLogger(__name__)
STATS_SECONDS = 30.0

StartServiceCache = Callable[[KubeSettings, str], Awaitable[tuple[ServiceExists, Callable[[], None]]]]
"""Starts the Service cache (``kube``, cluster domain): whether a Service exists, and how to stop. The
command passes :func:`lazystream.kube.services.start_service_cache`; this package does not import the
Kubernetes layer."""


class GlobalSidecar:
    """One global-sidecar process; :meth:`run` serves until :meth:`stop`."""

    def __init__(
        self,
        settings: GlobalSidecarSettings,
        kube: KubeSettings,
        *,
        cluster_domain: str = "cluster.local",
        emitter: Emitter | None = None,
        services: StartServiceCache | None = None,
    ) -> None:
        """With ``settings.service_cache`` on, ``services`` starts the Service cache; it must be given."""
        if settings.service_cache and services is None:
            raise ValueError("globalSidecar.serviceCache is on but no Service cache was given")
        self.settings = settings
        self.services = services
        self.kube = kube
        self.cluster_domain = cluster_domain
        self.emitter = emitter or make_emitter(
            settings.records,
            tag=settings.forward_tag,
            host=settings.forward_host,
            port=settings.forward_port,
            queue_size=settings.queue_size,
        )
        self.pool = UpstreamPool(
            max_idle=settings.max_idle_per_upstream,
            idle_seconds=settings.idle_seconds,
            connect_timeout=settings.connect_timeout_seconds or None,
        )
        self.ports_file = PortsFile(settings.ports_file) if settings.ports_file else None
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.proxy: Proxy | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        exists, stop_cache = await self._service_cache()
        options = ProxyOptions(
            instance=f"{os.uname().nodename}/{os.getpid()}/{uuid.uuid4().hex[:8]}",
            prefer_listener_port=self.settings.wormhole_port_prior_to_host_port,
            upstream_timeout=self.settings.upstream_timeout_seconds or None,
            limits=Limits(
                max_head_bytes=self.settings.max_header_bytes,
                max_headers=self.settings.max_headers,
                max_body_bytes=self.settings.max_body_bytes,
            ),
            header_timeout=self.settings.header_timeout_seconds,
            idle_timeout=self.settings.client_idle_seconds,
            response_head_timeout=self.settings.response_head_timeout_seconds or None,
        )
        proxy = self.proxy = Proxy(options, self.pool, self.emitter, exists, self.settings.listen_address)
        health = await asyncio.start_server(
            self._health, self.settings.listen_address, self.settings.probe_port, reuse_address=True
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            try:
                await proxy.listen(self.settings.port)
            except PermissionError as exc:
                raise PermissionError(
                    f"cannot listen on port {self.settings.port} as uid {os.getuid()}: {exc.strerror}. Use "
                    "globalSidecar.port above 1023, or let the runtime allow low ports to non-root users "
                    "(sysctl net.ipv4.ip_unprivileged_port_start=0) or grant CAP_NET_BIND_SERVICE"
                ) from None
            await self._reload_ports(proxy)
            self.pool.start()
            tasks.append(asyncio.create_task(self._watch_ports(proxy)))
            tasks.append(asyncio.create_task(self._log_stats(proxy)))
            heap.freeze()  # imports, clients and the listed Services: full collections skip them
            self.ready.set()
            log.info(
                "lazystream global-sidecar ready: ports %s, health port %d, records to %s, event loop %s",
                sorted(proxy.ports),
                self.settings.probe_port,
                self.settings.records,
                loop_name(asyncio.get_running_loop()),
            )
            await self._stop.wait()
        finally:
            self.ready.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            health.close()
            await proxy.close()
            await self.pool.close()
            await asyncio.to_thread(self.emitter.close)
            stop_cache()
            log.info("global-sidecar stopped: %s", _stats(proxy, self.emitter))

    async def _service_cache(self) -> tuple[ServiceExists | None, Callable[[], None]]:
        """Slime's Service controller: short names are completed only for Services that exist."""
        if not self.settings.service_cache or self.services is None:
            return None, lambda: None
        return await self.services(self.kube, self.cluster_domain)

    async def _reload_ports(self, proxy: Proxy) -> None:
        if self.ports_file is None:
            return
        ports = self.ports_file.poll()
        if ports is None:
            return
        wanted = (ports | {self.settings.port}) - {self.settings.probe_port}
        for port in sorted(wanted - proxy.ports):
            try:
                await proxy.listen(port)
            except OSError as exc:
                log.error("cannot listen on wormhole port %d: %s", port, exc)
        if self.settings.cleanup_ports:
            for port in sorted(proxy.ports - wanted):
                await proxy.unlisten(port)

    async def _watch_ports(self, proxy: Proxy) -> None:
        while True:
            await asyncio.sleep(self.settings.ports_reload_seconds)
            await self._reload_ports(proxy)

    async def _log_stats(self, proxy: Proxy) -> None:
        last = ""
        while True:
            await asyncio.sleep(STATS_SECONDS)
            line = _stats(proxy, self.emitter)
            if line != last:
                log.info("global-sidecar: %s", line)
                last = line

    async def _health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``/healthz/ready``: 200 once listening, 503 before; any other path: 200 (Slime's probe port)."""
        try:
            raw = await asyncio.wait_for(read_head(reader), 10)
            if raw is not None:
                path = raw.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")  # only the path counts
                ready = self.ready.is_set() or not path.startswith("/healthz/ready")
                status, reason = (200, "OK") if ready else (503, "Service Unavailable")
                writer.write(simple_response(status, reason, "ok" if ready else "not ready", close=True))
                await writer.drain()
        except Exception as exc:  # a probe that sends garbage gets no answer, nothing else happens
            log.debug("health request failed: %r", exc)
        finally:
            writer.close()


def _stats(proxy: Proxy, emitter: Emitter) -> str:
    counters = ", ".join(f"{k} {v}" for k, v in sorted(proxy.counters.items()))
    return (
        f"{counters or 'no requests'}; upstream connections dialled {proxy.pool.dialled}, reused "
        f"{proxy.pool.reused}; records emitted {emitter.emitted}, dropped {emitter.dropped}"
    )


def loop_factory(kind: EventLoop) -> Callable[[], asyncio.AbstractEventLoop]:
    """How to make the proxy's event loop (``globalSidecar.eventLoop``). uvloop is the default because the
    proxy's cost per request is mostly the loop's: its callbacks and socket calls, which libuv does in C."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, for the ready line: which loop a running proxy is on."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(
    settings: GlobalSidecarSettings,
    kube: KubeSettings,
    cluster_domain: str,
    services: StartServiceCache | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, on the event loop ``settings.event_loop`` names."""
    heap.tune()

    async def main() -> None:
        sidecar = GlobalSidecar(settings, kube, cluster_domain=cluster_domain, services=services)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, sidecar.stop)
        await sidecar.run()

    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner,
    ):
        runner.run(main())
