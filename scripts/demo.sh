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
export LAZYSTREAM_KAFKA_APP_ID=lazystream-demo LAZYSTREAM_TOPICS_ACCESS=lazystream-demo-access
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
"$PY/python" - <<'PY'
import asyncio, os, time
from aiokafka import AIOKafkaProducer

LINES = [  # Istio's default text format, as the global-sidecar's proxy logs fallback calls
    '[2026-11-27T10:00:0{i}.000Z] "GET /details/0 HTTP/1.1" 200 - via_upstream - "-" 0 178 3 2 "-" '
    '"curl/8.5.0" "6c1b8e0e-{i}" "details:9080" "10.244.0.12:80" '
    'inbound|80|| 127.0.0.6:44017 10.244.0.12:80 10.244.0.15:51234 - default'
    for i in range(5)
]

async def main() -> None:
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["LAZYSTREAM_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        for line in LINES:
            await producer.send_and_wait(os.environ["LAZYSTREAM_TOPICS_ACCESS"], line.encode())
            print("sent:", line[:96], "...")
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
echo
echo "API server: $(grep -m1 'server:' "$KUBECONFIG" | awk '{print $2}')  (KUBECONFIG=$KUBECONFIG)"
echo "Kafka: $LAZYSTREAM_KAFKA_BOOTSTRAP   Set LAZYSTREAM_DEMO_KEEP=1 to keep the servers running."
