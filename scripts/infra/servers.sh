#!/usr/bin/env bash
# servers.sh install|up|down|status|env [kafka] [k8s] [prometheus]
# Installs (cached outside the repo) and starts lazystream's real test servers on loopback, or stops them.
#   install install what is missing, start nothing (the kube-apiserver build takes ~10 min cold)
#   up      install what is missing and start the named servers (default: all); idempotent
#   down    stop them; no process is left behind
#   status  show which are running
#   env     print the `export` lines that tests and the demo read (LAZYSTREAM_TEST_*)
# Ports: KAFKA_PORT, KAFKA_SECURE_PORT, KAFKA_CONTROLLER_PORT, K8S_PORT, ETCD_PORT, PROM_PORT.
# Cache: LAZYSTREAM_INFRA_CACHE.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/versions.env"
mkdir -p "$INFRA_CACHE"
cmd=${1:-status}; shift || true
names=("$@"); [ ${#names[@]} -gt 0 ] || names=(kafka k8s prometheus)

script() {
  case "$1" in
    kafka) echo "$HERE/kafka/kafka.sh" ;;
    k8s) echo "$HERE/k8s/kube-apiserver.sh" ;;
    prometheus) echo "$HERE/prometheus/prometheus.sh" ;;
    *) echo "unknown server '$1' (expected kafka, k8s or prometheus)" >&2; return 2 ;;
  esac
}

env_lines() {
  echo "export LAZYSTREAM_TEST_KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-19092}"
  # The broker's SASL_SSL listener (TLS + SCRAM), once kafka.sh has made its certificates and SCRAM user.
  local secrets=$INFRA_RUN/kafka-secrets
  if [ -f "$secrets/.complete" ]; then
    echo "export LAZYSTREAM_TEST_KAFKA_SECURE_BOOTSTRAP=127.0.0.1:${KAFKA_SECURE_PORT:-19095}"
    echo "export LAZYSTREAM_TEST_KAFKA_CA_FILE=$secrets/ca.crt"
    echo "export LAZYSTREAM_TEST_KAFKA_SASL_USERNAME=lazystream"
    echo "export LAZYSTREAM_TEST_KAFKA_SASL_PASSWORD_FILE=$secrets/scram.password"
    echo "export LAZYSTREAM_TEST_KAFKA_CLIENT_CERT_FILE=$secrets/client.crt"
    echo "export LAZYSTREAM_TEST_KAFKA_CLIENT_KEY_FILE=$secrets/client.key"
  fi
  echo "export LAZYSTREAM_TEST_KUBECONFIG=$INFRA_RUN/k8s/kubeconfig"
  echo "export LAZYSTREAM_TEST_KUBE_AUDIT_LOG=$INFRA_RUN/k8s/logs/audit.log"
  echo "export LAZYSTREAM_TEST_K8S_VERSION=$K8S_VERSION"
  echo "export LAZYSTREAM_TEST_PROMETHEUS_URL=http://127.0.0.1:${PROM_PORT:-19090}"
  echo "export LAZYSTREAM_TEST_PROMETHEUS_SD_DIR=$INFRA_RUN/prometheus/targets"
  echo "export LAZYSTREAM_TEST_LUAJIT=$INFRA_CACHE/luajit/usr/bin/luajit"
  echo "export LAZYSTREAM_TEST_KUSTOMIZE=$INFRA_CACHE/kustomize-v$KUSTOMIZE_VERSION/kustomize"
  echo "export LAZYSTREAM_TEST_HELM=$INFRA_CACHE/helm-v$HELM_VERSION/helm"
  echo "export LAZYSTREAM_TEST_ISTIO_CRDS=$INFRA_CACHE/istio-api-$ISTIO_API_VERSION/customresourcedefinitions.gen.yaml"
  echo "export LAZYSTREAM_TEST_ISTIO_VERSION=$ISTIO_API_VERSION"
}

unpack_debs() {
  "$HERE/unpack-trixie-debs.sh" "$INFRA_CACHE/trixie" $TRIXIE_PACKAGES
  DEBIAN_SUITE=host "$HERE/unpack-trixie-debs.sh" "$INFRA_CACHE/luajit" $LUA_PACKAGES
}

install_all() {
  local t=$SECONDS
  unpack_debs
  [[ " ${names[*]} " != *" kafka "* ]] || "$HERE/kafka/kafka.sh" install
  [[ " ${names[*]} " != *" k8s "* ]] || "$HERE/k8s/build-kube-apiserver.sh" >/dev/null
  [[ " ${names[*]} " != *" k8s "* ]] || "$HERE/k8s/build-go-tool.sh" kustomize >/dev/null
  [[ " ${names[*]} " != *" k8s "* ]] || "$HERE/k8s/build-go-tool.sh" helm >/dev/null
  [[ " ${names[*]} " != *" k8s "* ]] || "$HERE/istio/fetch-crds.sh" >/dev/null
  echo "servers installed in $((SECONDS - t)) s" >&2
}

case "$cmd" in
  install) install_all ;;
  up)
    # The kube-apiserver build is the long pole on a cold machine: start it first, in the background,
    # while the Kafka jars resolve and the Debian packages unpack.
    build_pid=
    if [[ " ${names[*]} " == *" k8s "* ]] && [ -z "${KUBE_APISERVER:-}" ]; then
      "$HERE/k8s/build-kube-apiserver.sh" > "$INFRA_CACHE/kube-apiserver-build.log" 2>&1 & build_pid=$!
    fi
    unpack_debs
    [[ " ${names[*]} " != *" k8s "* ]] || "$HERE/istio/fetch-crds.sh" >/dev/null
    for n in "${names[@]}"; do
      [ "$n" = k8s ] && [ -n "$build_pid" ] && { wait "$build_pid" || { cat "$INFRA_CACHE/kube-apiserver-build.log" >&2; exit 1; }; }
      "$(script "$n")" start
    done
    ;;
  down) for n in "${names[@]}"; do "$(script "$n")" stop; done ;;
  status) rc=0; for n in "${names[@]}"; do "$(script "$n")" status || rc=1; done; exit $rc ;;
  env) env_lines ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
