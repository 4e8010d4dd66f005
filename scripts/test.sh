#!/usr/bin/env bash
# The README's test command: installs everything (Python deps from requirements.lock; Kafka, kube-apiserver,
# etcd and Prometheus into ~/.cache/lazystream-infra), starts the servers, runs lint, type checks and every
# test against the real servers, then stops the servers it started (ones already running are left running).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not heavy"` or `scripts/test.sh tests/unit`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
INFRA=scripts/infra
phase() { printf '\n==> %s  [%s, +%ds]\n' "$1" "$(date +%T)" "$SECONDS" >&2; }

phase "python environment"
scripts/bootstrap.sh
PY=.venv/bin

phase "lint and type checks"
"$PY/ruff" check lazystream tests bench
"$PY/ruff" format --check lazystream tests bench
"$PY/mypy"

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
