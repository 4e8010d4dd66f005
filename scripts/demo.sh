#!/usr/bin/env bash
# The README's run command: a local demo of lazystream on real servers.
# Starts Kafka and the kube-apiserver (installing them on first use), applies the CRDs, runs a worker and
# feeds it access-log records. In this release the worker counts what it consumes; the following releases
# turn the same command into the full learning demo (Sidecars learned from traffic).
# Servers the demo started are stopped at the end unless LAZYSTREAM_DEMO_KEEP=1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
INFRA=scripts/infra
step() { printf '\n\033[1m==> %s\033[0m  (+%ds)\n' "$1" "$SECONDS"; }

step "Python environment"
scripts/bootstrap.sh
PY=.venv/bin

step "Kafka and kube-apiserver on loopback (first run installs them: a few minutes)"
started=()
for s in kafka k8s; do "$INFRA/servers.sh" status "$s" >/dev/null 2>&1 || started+=("$s"); done
RUN_DIR=$(mktemp -d -t lazystream-demo.XXXXXX)
worker_pid=
cleanup() {
  [ -z "$worker_pid" ] || { kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true; }
  if [ "${LAZYSTREAM_DEMO_KEEP:-0}" != 1 ] && [ ${#started[@]} -gt 0 ]; then "$INFRA/servers.sh" down "${started[@]}"; fi
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
"$INFRA/servers.sh" up kafka k8s
eval "$("$INFRA/servers.sh" env)"
export KUBECONFIG=$LAZYSTREAM_TEST_KUBECONFIG LAZYSTREAM_KAFKA_BOOTSTRAP=$LAZYSTREAM_TEST_KAFKA_BOOTSTRAP
RUN_ID=$(date +%s)  # fresh consumer group and topics per run: servers may outlive a demo
export LAZYSTREAM_KAFKA_APP_ID=lazystream-demo-$RUN_ID LAZYSTREAM_TOPICS_ACCESS=lazystream-demo-access-$RUN_ID
export LAZYSTREAM_TOPICS_EDGES=lazystream-demo-edges-$RUN_ID LAZYSTREAM_TOPICS_DEAD_LETTER=lazystream-demo-dlq-$RUN_ID
export LAZYSTREAM_TABLES_DATA_DIR=$RUN_DIR/data LAZYSTREAM_WEB_PORT=${LAZYSTREAM_WEB_PORT:-16066}

step "CRDs: ServiceFence and the Istio kinds"
"$PY/lazystream" crds apply

step "Bookinfo in the API server: Services, EndpointSlices, Pods and four ServiceFences"
"$PY/python" - <<'PY'
from lazystream.kube.client import api_client, dynamic_client
from lazystream.testing import bookinfo

with api_client() as api:
    dynamic = dynamic_client(api)
    for obj in bookinfo().objects():
        meta = obj["metadata"]
        resource = dynamic.resources.get(api_version=obj.get("apiVersion", "v1"), kind=obj["kind"])
        resource.server_side_apply(
            body=obj, name=meta["name"], namespace=meta.get("namespace"), field_manager="demo", force_conflicts=True
        )
        print(f"applied {obj['kind']:<15} {meta.get('namespace', '')}/{meta['name']}")
PY

step "lazystream worker"
"$PY/lazystream" worker > "$RUN_DIR/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 1 480); do
  grep -q "lazystream ready" "$RUN_DIR/worker.log" && break
  kill -0 "$worker_pid" 2>/dev/null || { cat "$RUN_DIR/worker.log"; exit 1; }
  sleep 0.25
done
grep -q "lazystream ready" "$RUN_DIR/worker.log" || { tail -30 "$RUN_DIR/worker.log"; exit 1; }
echo "worker ready (log: $RUN_DIR/worker.log)"

step "Traffic: the global-sidecar's access-log lines onto $LAZYSTREAM_TOPICS_ACCESS, then the learned Sidecar"
"$PY/python" - <<'PY'
import asyncio, os, time

import yaml
from aiokafka import AIOKafkaProducer

from lazystream.kube.client import api_client, dynamic_client
from lazystream.testing import istio_text_line

# productpage (10.244.0.15) calls details, reviews, ratings and a host nobody declared; the global-sidecar's
# proxy logs each fallback call in Istio's default text format, with productpage as the peer.
CALLS = ["details:9080", "reviews:9080", "details:9080", "evil.example.net", "ratings.default:9080"]
LINES = [
    istio_text_line(authority=a, upstream_cluster="inbound|80||", downstream_remote_address=f"10.244.0.15:{50000 + i}",
                    start_time=time.time())
    for i, a in enumerate(CALLS)
]


async def send() -> float:
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["LAZYSTREAM_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        for line in LINES:
            await producer.send_and_wait(os.environ["LAZYSTREAM_TOPICS_ACCESS"], line.encode())
            print("sent:", line.split('"')[11], "from 10.244.0.15")
    finally:
        await producer.stop()
    return time.monotonic()


sent = asyncio.run(send())
with api_client() as api:
    sidecars = dynamic_client(api).resources.get(api_version="networking.istio.io/v1alpha3", kind="Sidecar")
    fences = dynamic_client(api).resources.get(api_version="microservice.slime.io/v1alpha1", kind="ServiceFence")
    hosts: list[str] = []
    while time.monotonic() - sent < 60:
        try:
            hosts = list(sidecars.get(name="productpage", namespace="default").spec.egress[0].hosts)
        except Exception:
            hosts = []
        if "*/ratings.default.svc.cluster.local" in hosts:
            break
        time.sleep(0.1)
    print(f"\nproductpage's Sidecar learned its dependencies {time.monotonic() - sent:.2f} s after the last record:\n")
    sidecar = sidecars.get(name="productpage", namespace="default").to_dict()
    print(yaml.safe_dump({"kind": "Sidecar", "metadata": {"name": "productpage", "namespace": "default"},
                          "spec": sidecar["spec"]}, sort_keys=False), end="---\n")
    fence = fences.get(name="productpage", namespace="default").to_dict()
    print(yaml.safe_dump({"kind": "ServiceFence", "metadata": {"name": "productpage", "namespace": "default"},
                          "status": fence["status"]}, sort_keys=False))
PY
echo "(evil.example.net is declared by no Service, ServiceEntry or VirtualService: not admitted)"
echo
echo "API server: $(grep -m1 'server:' "$KUBECONFIG" | awk '{print $2}')  (KUBECONFIG=$KUBECONFIG)"
echo "Kafka: $LAZYSTREAM_KAFKA_BOOTSTRAP   Set LAZYSTREAM_DEMO_KEEP=1 to keep the servers running."
