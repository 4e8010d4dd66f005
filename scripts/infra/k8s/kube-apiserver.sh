#!/usr/bin/env bash
# kube-apiserver.sh start|stop|status — etcd + a real kube-apiserver on loopback, for tests and the demo.
# TLS from a generated CA, token authentication, RBAC, audit log (JSON lines) to a file, and a kubeconfig.
# Idempotent: `start` on a running pair does nothing; the PKI and tokens are kept across restarts.
# Env: K8S_PORT (default 16443), ETCD_PORT (default 12379), ETCD_PEER_PORT (default ETCD_PORT+1),
#      KUBE_APISERVER (binary; default: build it with build-kube-apiserver.sh), ETCD (binary),
#      LAZYSTREAM_INFRA_RUN (the run directory; this pair uses its k8s/ subdirectory).
# `stop apiserver` stops the kube-apiserver only and keeps etcd (and its data) running: an API server outage.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../versions.env"
. "$HERE/../lib.sh"
RUN=$INFRA_RUN/k8s
PORT=${K8S_PORT:-16443}
EPORT=${ETCD_PORT:-12379}
PEER_PORT=${ETCD_PEER_PORT:-$((EPORT + 1))}
PKI=$RUN/pki
ADMIN_TOKEN_FILE=$RUN/admin.token

pki() {
  [ -f "$PKI/apiserver.crt" ] && return 0
  mkdir -p "$PKI"
  (
    cd "$PKI"
    # The CA carries keyUsage and the leaf an authorityKeyIdentifier: Python's ssl with VERIFY_X509_STRICT
    # (the 3.13 default) refuses them otherwise.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=lazystream-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
      'extendedKeyUsage=serverAuth' \
      'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1' \
      'authorityKeyIdentifier=keyid,issuer' 'subjectKeyIdentifier=hash' > san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
  # A random admin token per machine; ServiceAccount tokens (TokenRequest) work too, for least-privilege tests.
  openssl rand -hex 24 > "$ADMIN_TOKEN_FILE"
  printf '%s,lazystream-test-admin,lazystream-test-admin,"system:masters"\n' "$(cat "$ADMIN_TOKEN_FILE")" > "$RUN/tokens.csv"
}

kubeconfig() {
  cat > "$RUN/kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: lazystream-test
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $PKI/ca.crt
users:
- name: lazystream-test-admin
  user:
    token: $(cat "$ADMIN_TOKEN_FILE")
contexts:
- name: lazystream-test
  context: {cluster: lazystream-test, user: lazystream-test-admin, namespace: default}
current-context: lazystream-test
KCFG
}

etcd_ready() { curl -fsS "http://127.0.0.1:$EPORT/readyz"; }
api_ready() {
  curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(cat "$ADMIN_TOKEN_FILE")" \
    "https://127.0.0.1:$PORT/readyz"
}

start() {
  local apiserver etcd
  apiserver=${KUBE_APISERVER:-$("$HERE/build-kube-apiserver.sh" | tail -1)}
  etcd=${ETCD:-$INFRA_CACHE/trixie/usr/bin/etcd}
  [ -x "$etcd" ] || "$HERE/../unpack-trixie-debs.sh" "$INFRA_CACHE/trixie" $TRIXIE_PACKAGES
  mkdir -p "$RUN/etcd" "$RUN/logs"
  pki
  kubeconfig
  if ! pid_alive "$RUN/etcd.pid"; then
    require_port_free etcd "$EPORT"; require_port_free etcd-peer "$PEER_PORT"
    # single member, no fsync: test data only
    setsid nohup "$etcd" --name lazystream-test --data-dir "$RUN/etcd" \
      --listen-client-urls "http://127.0.0.1:$EPORT" --advertise-client-urls "http://127.0.0.1:$EPORT" \
      --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
      --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
      --initial-cluster "lazystream-test=http://127.0.0.1:$PEER_PORT" \
      --unsafe-no-fsync --log-level warn > "$RUN/logs/etcd.log" 2>&1 < /dev/null &
    echo $! > "$RUN/etcd.pid"
    wait_for "etcd on 127.0.0.1:$EPORT" 30 "$RUN/etcd.pid" "$RUN/logs/etcd.log" etcd_ready
  fi
  if pid_alive "$RUN/kube-apiserver.pid"; then echo "kube-apiserver already running on 127.0.0.1:$PORT" >&2; return 0; fi
  require_port_free kube-apiserver "$PORT"
  # --advertise-address + --endpoint-reconciler-type=none: a loopback advertise address is refused by the
  # lease reconciler. ServiceAccount admission is off: no controller manager creates the default account.
  # Four workers per deletecollection: a benchmark's clean-up (bench_apply) deletes each kind in one request.
  setsid nohup "$apiserver" \
    --etcd-servers="http://127.0.0.1:$EPORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$RUN/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/16 \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true --profiling=false --cert-dir="$PKI" \
    --delete-collection-workers=4 \
    --audit-policy-file="$HERE/audit-policy.yaml" \
    --audit-log-path="$RUN/logs/audit.log" --audit-log-format=json --audit-log-mode=blocking \
    --audit-log-maxsize=200 --audit-log-maxbackup=2 \
    > "$RUN/logs/kube-apiserver.log" 2>&1 < /dev/null &
  echo $! > "$RUN/kube-apiserver.pid"
  wait_for "kube-apiserver on 127.0.0.1:$PORT" 120 "$RUN/kube-apiserver.pid" "$RUN/logs/kube-apiserver.log" api_ready
}

stop() {
  stop_pid kube-apiserver "$RUN/kube-apiserver.pid"
  stop_pid etcd "$RUN/etcd.pid"
}

case "${1:-start}" in
  start) start ;;
  stop) if [ "${2:-}" = apiserver ]; then stop_pid kube-apiserver "$RUN/kube-apiserver.pid"; else stop; fi ;;
  reset) stop; rm -rf "$RUN" ;;
  status) pid_alive "$RUN/kube-apiserver.pid" && pid_alive "$RUN/etcd.pid" \
            && echo "kube-apiserver running on 127.0.0.1:$PORT" || { echo "kube-apiserver stopped"; exit 1; } ;;
  *) echo "usage: $0 start|stop [apiserver]|reset|status" >&2; exit 2 ;;
esac
