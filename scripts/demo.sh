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

step "lazystream worker"
"$PY/lazystream" worker > "$RUN_DIR/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 1 360); do
  grep -q "Ready" "$RUN_DIR/worker.log" && break
  kill -0 "$worker_pid" 2>/dev/null || { cat "$RUN_DIR/worker.log"; exit 1; }
  sleep 0.25
done
echo "worker ready (log: $RUN_DIR/worker.log)"

step "Traffic: global-sidecar access-log lines onto $LAZYSTREAM_TOPICS_ACCESS"
"$PY/python" - "$RUN_DIR" <<'PY'
import asyncio, os, sys
from pathlib import Path

import yaml
from aiokafka import AIOKafkaProducer

from lazystream.testing import bookinfo, istio_text_line

# productpage (10.244.0.15) calls details, reviews and, twice, a host nobody declared; the global-sidecar's
# proxy logs each fallback call in Istio's default text format, with productpage as the peer.
CALLS = ["details:9080", "reviews:9080", "details:9080", "evil.example.net", "ratings.default:9080"]
LINES = [
    istio_text_line(authority=a, upstream_cluster="inbound|80||", downstream_remote_address=f"10.244.0.15:{50000 + i}")
    for i, a in enumerate(CALLS)
]
run_dir = Path(sys.argv[1])
(run_dir / "access.log").write_text("\n".join(LINES) + "\n")
(run_dir / "cluster.yaml").write_text(yaml.safe_dump_all(bookinfo().objects(), sort_keys=False))


async def main() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["LAZYSTREAM_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        for line in LINES:
            await producer.send_and_wait(os.environ["LAZYSTREAM_TOPICS_ACCESS"], line.encode())
            print("sent:", line[:60], "...", line.split('"')[11], "from 10.244.0.15")
    finally:
        await producer.stop()

asyncio.run(main())
PY

step "What the worker saw"
for _ in $(seq 1 60); do
  line=$(grep -o "access records seen: [1-9][0-9]* ([0-9]* bytes)" "$RUN_DIR/worker.log" | tail -1 || true)
  [ -n "$line" ] && { echo "$line"; break; }
  sleep 0.5
done
[ -n "$line" ] || { echo "worker reported nothing:"; tail -30 "$RUN_DIR/worker.log"; exit 1; }

step "What lazystream learns from them: lazystream render (the worker's code, offline)"
"$PY/lazystream" render --access-log "$RUN_DIR/access.log" --cluster "$RUN_DIR/cluster.yaml" > "$RUN_DIR/render.yaml"
"$PY/python" - "$RUN_DIR/render.yaml" <<'PY'
import sys

import yaml

for obj in yaml.safe_load_all(open(sys.argv[1])):
    if obj["metadata"]["name"] == "productpage" and obj["kind"] in ("ServiceFence", "Sidecar"):
        shown = {"kind": obj["kind"], "metadata": {"name": "productpage", "namespace": "default"}}
        shown["status" if obj["kind"] == "ServiceFence" else "spec"] = obj.get("status") or obj["spec"]
        print(yaml.safe_dump(shown, sort_keys=False), end="---\n")
PY
echo "(evil.example.net is declared by no Service, ServiceEntry or VirtualService: not admitted)"
echo
echo "API server: $(grep -m1 'server:' "$KUBECONFIG" | awk '{print $2}')  (KUBECONFIG=$KUBECONFIG)"
echo "Kafka: $LAZYSTREAM_KAFKA_BOOTSTRAP   Set LAZYSTREAM_DEMO_KEEP=1 to keep the servers running."
