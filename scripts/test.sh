#!/usr/bin/env bash
# The README's test command: installs everything (Python deps from requirements.lock; Kafka, kube-apiserver,
# etcd and Prometheus into ~/.cache/lazystream-infra), starts the servers, runs lint, type checks and every
# test against the real servers, then stops the servers it started (ones already running are left running).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not heavy"` or `scripts/test.sh tests/domain`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
INFRA=scripts/infra
phase() { printf '\n==> %s  [%s, +%ds]\n' "$1" "$(date +%T)" "$SECONDS" >&2; }

# Server installs (Maven jars, Debian packages, the kube-apiserver build) run in the background meanwhile.
INSTALL_LOG=${LAZYSTREAM_INFRA_CACHE:-$HOME/.cache/lazystream-infra}/install.log
mkdir -p "$(dirname "$INSTALL_LOG")"
"$INFRA/servers.sh" install > "$INSTALL_LOG" 2>&1 &
install_pid=$!

phase "python environment"
scripts/bootstrap.sh
PY=.venv/bin

phase "lint and type checks"
"$PY/ruff" check lazystream tests bench
"$PY/ruff" format --check lazystream tests bench
"$PY/mypy"
"$PY/lint-imports"

phase "server installs"
while kill -0 "$install_pid" 2>/dev/null; do
  echo "  ... still installing (+${SECONDS}s): $(grep '==>' "$INSTALL_LOG" | tail -1)" >&2
  for _ in $(seq 1 30); do kill -0 "$install_pid" 2>/dev/null || break; sleep 1; done
done
wait "$install_pid" || { cat "$INSTALL_LOG" >&2; exit 1; }
tail -1 "$INSTALL_LOG" >&2

phase "test servers"
started=()
for s in kafka k8s prometheus; do
  "$INFRA/servers.sh" status "$s" >/dev/null 2>&1 || started+=("$s")
done
cleanup() { [ ${#started[@]} -eq 0 ] || "$INFRA/servers.sh" down "${started[@]}"; }
trap cleanup EXIT
"$INFRA/servers.sh" up
eval "$("$INFRA/servers.sh" env)"

phase "tests"
set +e
"$PY/pytest" "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  rc=1
fi
phase "done (pytest exit $rc)"
exit $rc
