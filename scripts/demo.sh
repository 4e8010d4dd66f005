#!/usr/bin/env bash
# The README's run command: a local demo of lazystream on real servers.
# Starts Kafka and the kube-apiserver (installing them on first use), applies the CRDs, loads a bookinfo-like
# set of Services with a ServiceFence for productpage, runs a worker and a global-sidecar, and sends traffic
# from demo service A (productpage) through the global-sidecar to demo service B (details), each on its own
# address; then shows A's Sidecar learning B, with timings (scripts/demo_traffic.py).
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
RUN_ID=$(date +%s)-$$  # fresh consumer group and topics per run: servers may outlive a demo
export LAZYSTREAM_KAFKA_APP_ID=lazystream-demo-$RUN_ID LAZYSTREAM_TOPICS_ACCESS=lazystream-demo-access-$RUN_ID
export LAZYSTREAM_TOPICS_EDGES=lazystream-demo-edges-$RUN_ID LAZYSTREAM_TOPICS_DEAD_LETTER=lazystream-demo-dlq-$RUN_ID
export LAZYSTREAM_TABLES_DATA_DIR=$RUN_DIR/data
LAZYSTREAM_WEB_PORT=${LAZYSTREAM_WEB_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export LAZYSTREAM_WEB_PORT LAZYSTREAM_SINK_COALESCE_SECONDS=0.2
# a fresh namespace per run (servers may outlive a demo), and the worker manages only that one
export DEMO_NAMESPACE=lazystream-demo-$RUN_ID LAZYSTREAM_GENERAL_WHITE_NAMESPACE_LIST=lazystream-demo-$RUN_ID
export LAZYSTREAM_LEADER_ELECTION_LEASE_NAMESPACE=$DEMO_NAMESPACE  # the worker's Lease, in the same namespace

step "CRDs: Istio's own (istio.io/api v$LAZYSTREAM_TEST_ISTIO_VERSION) and lazystream's ServiceFence"
"$PY/lazystream" crds apply --from "$LAZYSTREAM_TEST_ISTIO_CRDS" --from deploy/crds
"$PY/python" - <<PY
from kubernetes import client
from lazystream.kube.client import api_client
with api_client() as api:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="$DEMO_NAMESPACE")))
print("namespace $DEMO_NAMESPACE")
PY

step "lazystream worker"
: > "$RUN_DIR/worker.log"  # exists before the first grep below, whenever the worker starts writing
"$PY/lazystream" worker >> "$RUN_DIR/worker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 1 480); do
  grep -q "lazystream ready" "$RUN_DIR/worker.log" && break
  kill -0 "$worker_pid" 2>/dev/null || { cat "$RUN_DIR/worker.log"; exit 1; }
  sleep 0.25
done
grep -q "lazystream ready" "$RUN_DIR/worker.log" || { tail -30 "$RUN_DIR/worker.log"; exit 1; }
echo "worker ready (log: $RUN_DIR/worker.log)"

step "Traffic: A → global-sidecar → B, and A's Sidecar learning B"
DEMO_LOG_DIR=$RUN_DIR "$PY/python" scripts/demo_traffic.py
echo
echo "API server: $(grep -m1 'server:' "$KUBECONFIG" | awk '{print $2}')  (KUBECONFIG=$KUBECONFIG)"
if [ "${LAZYSTREAM_DEMO_KEEP:-0}" = 1 ]; then
  echo "Kafka: $LAZYSTREAM_KAFKA_BOOTSTRAP   The servers keep running (LAZYSTREAM_DEMO_KEEP=1): scripts/infra/servers.sh down stops them."
else
  echo "Kafka: $LAZYSTREAM_KAFKA_BOOTSTRAP   Set LAZYSTREAM_DEMO_KEEP=1 to keep the servers running."
fi
