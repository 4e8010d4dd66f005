"""The live part of `make demo` (scripts/demo.sh runs it once the worker is ready).

Two small demo services, each on its own address as pods have: B ("details", an echo service) on a loopback
address 127.x.y.z, and A ("productpage", a service that calls details) listening on another loopback
address and calling out from this machine's non-loopback address, which its Service's EndpointSlice lists
(the API server refuses loopback addresses in Endpoints; the worker finds the caller by that address).
A has a ServiceFence, so lazystream gives it a Sidecar that lists only what it calls; details is not in it.
A's calls therefore go where its sidecar's fallback route would send them: to `lazystream global-sidecar`,
with the short Host, Slime-Source-Ns and Slime-Orig-Dest. The global-sidecar forwards them to B and sends
one record per request to Fluent Bit's forward input (here the testing kit's stand-in, which produces them
onto the access topic as Fluent Bit's Kafka output would); the worker learns A → B and A's Sidecar gains B.

Environment: KUBECONFIG, LAZYSTREAM_KAFKA_BOOTSTRAP, LAZYSTREAM_TOPICS_ACCESS, DEMO_NAMESPACE, DEMO_LOG_DIR.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from lazystream.kube.client import api_client
from lazystream.testing import ClusterBuilder
from lazystream.testing.fluentbit import ForwardToKafka
from lazystream.testing.http import Client, EchoUpstream

NS = os.environ["DEMO_NAMESPACE"]
LOGS = Path(os.environ["DEMO_LOG_DIR"])
LAZYSTREAM = str(Path(sys.executable).with_name("lazystream"))
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f} s] {text}", flush=True)


def own_address() -> str:
    """This machine's IPv4 address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def loopback() -> str:
    return f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"  # noqa: S311


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sidecar(dynamic: DynamicClient) -> dict[str, Any] | None:
    resource = dynamic.resources.get(api_version="networking.istio.io/v1alpha3", kind="Sidecar")
    try:
        return dict(resource.get(name="productpage", namespace=NS).to_dict())
    except NotFoundError:
        return None


def hosts(obj: dict[str, Any] | None) -> list[str]:
    return list(obj["spec"]["egress"][0]["hosts"]) if obj else []


def show(obj: dict[str, Any] | None) -> None:
    if obj is None:
        return
    shown = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
             "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
             "spec": obj["spec"]}  # fmt: skip
    print(yaml.safe_dump(shown, sort_keys=False), end="", flush=True)


def apply(dynamic: DynamicClient, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        meta = obj["metadata"]
        resource = dynamic.resources.get(api_version=obj.get("apiVersion", "v1"), kind=obj["kind"])
        resource.server_side_apply(
            body=obj,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager="demo",
            force_conflicts=True,
        )
        print(f"  applied {obj['kind']:<14} {meta.get('namespace', '')}/{meta['name']}")


class ServiceA:
    """productpage: on GET /, calls details through the global-sidecar, as its fallback route would."""

    def __init__(self, address: str, caller_ip: str, gs_port: int, b_address: str) -> None:
        self.address, self.caller_ip, self.gs_port, self.b_address = address, caller_ip, gs_port, b_address
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        host = request.query.get("host", "details:9080")
        async with Client("127.0.0.1", self.gs_port, local_host=self.caller_ip) as client:
            response = await client.request(
                "GET", "/details/0",
                [("Host", host), ("Slime-Source-Ns", NS), ("Slime-Orig-Dest", self.b_address),
                 ("User-Agent", "demo-productpage")],
            )  # fmt: skip
        return web.json_response({"upstream_status": response.status, "via": "global-sidecar"})

    async def __aenter__(self) -> ServiceA:
        app = web.Application()
        app.router.add_get("/", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.address, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"global-sidecar did not start:\n{log.read_text(errors='replace')[-3000:]}")
        await asyncio.sleep(0.1)


async def main() -> int:
    caller_ip, a_ip, b_ip = own_address(), loopback(), loopback()
    if caller_ip.startswith("127."):
        print("this machine has no non-loopback IPv4 address: the API server refuses loopback addresses in "
              "Endpoints, so the caller cannot be resolved", file=sys.stderr)  # fmt: skip
        return 1
    api = api_client()
    dynamic = DynamicClient(api)
    # bookinfo-like: productpage (A) calls details (B); reviews and ratings exist but are not called
    builder = ClusterBuilder()
    builder.service("productpage", NS, ips=[caller_ip]).fence(
        "productpage", NS, workloadSelector={"fromService": True}
    )
    for name in ("details", "reviews", "ratings"):
        builder.service(name, NS)
    print(f"Cluster objects in namespace {NS} (productpage's EndpointSlice lists {caller_ip}):")
    apply(dynamic, [o for o in builder.objects() if o["kind"] != "Namespace"])

    say("waiting for the worker to write productpage's first Sidecar")
    deadline = time.monotonic() + 60
    while sidecar(dynamic) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    before = sidecar(dynamic)
    if before is None:
        print("the worker never wrote productpage's Sidecar", file=sys.stderr)
        return 1
    say("productpage's Sidecar before any traffic: only the mesh namespaces, not details")
    show(before)

    gs_port, probe = free_port(), free_port()
    async with (
        ForwardToKafka(
            os.environ["LAZYSTREAM_KAFKA_BOOTSTRAP"], os.environ["LAZYSTREAM_TOPICS_ACCESS"]
        ) as stand_in,
        EchoUpstream(host=b_ip) as service_b,
    ):
        b_address = f"{b_ip}:{service_b.port}"
        log = LOGS / "global-sidecar.log"
        with log.open("wb") as out:
            gs = subprocess.Popen(  # noqa: S603 - our own command
                [LAZYSTREAM, "global-sidecar", "--port", str(gs_port), "--probe-port", str(probe),
                 "--records", "forward", "--forward-port", str(stand_in.port)],
                env=dict(os.environ, LAZYSTREAM_GLOBAL_SIDECAR_LISTEN_ADDRESS="127.0.0.1"),
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            await wait_for_line(log, "lazystream global-sidecar ready", gs, 60)
            say(f"global-sidecar listening on 127.0.0.1:{gs_port} (log: {log})")
            async with ServiceA(a_ip, caller_ip, gs_port, b_address) as service_a:
                say(f"A = productpage on {a_ip}:{service_a.port} (calls out from {caller_ip}); "
                    f"B = details on {b_address}")  # fmt: skip
                sent = time.monotonic()
                async with Client(a_ip, service_a.port) as user:
                    for host in ("details:9080", "details:9080", "evil.example.net"):
                        start = time.monotonic()
                        reply = await user.request(
                            "GET", f"/?host={host}", [("Host", f"{a_ip}:{service_a.port}")]
                        )
                        say(f"GET A → A calls {host!r} → global-sidecar → B: {reply.status} "
                            f"{reply.json()} in {1000 * (time.monotonic() - start):.1f} ms")  # fmt: skip
                wanted = f"*/details.{NS}.svc.cluster.local"
                produced_at = None
                while wanted not in hosts(sidecar(dynamic)) and time.monotonic() - sent < 60:
                    if produced_at is None and stand_in.produced >= 3:
                        produced_at = time.monotonic()
                        say(f"{stand_in.produced} global-sidecar records produced onto the access topic")
                    await asyncio.sleep(0.05)
                after = sidecar(dynamic)
                if wanted not in hosts(after):
                    print(
                        f"productpage's Sidecar did not learn details within 60 s: {hosts(after)}",
                        file=sys.stderr,
                    )
                    return 1
                took = time.monotonic() - sent
                say(f"productpage's Sidecar learned details {took:.2f} s after the first call:")
                show(after)
                fence = dynamic.resources.get(
                    api_version="microservice.slime.io/v1alpha1", kind="ServiceFence"
                )
                status = fence.get(name="productpage", namespace=NS).to_dict()["status"]
                fence_meta = {"name": "productpage", "namespace": NS}
                shown = {"kind": "ServiceFence", "metadata": fence_meta, "status": status}
                print(yaml.safe_dump(shown, sort_keys=False), end="")
                print("(evil.example.net was forwarded, but no Service, ServiceEntry or VirtualService "
                      "declares it: not admitted into the Sidecar)")  # fmt: skip
        finally:
            gs.send_signal(signal.SIGTERM)
            gs.wait(timeout=30)
    api.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
