#!/usr/bin/env bash
# Build kustomize from the Go module proxy and cache the binary outside the repo (the deploy/ overlays are
# rendered with it in tests). `go install` of the released module; one build at a time.
# Env: KUSTOMIZE_VERSION (default from versions.env), LAZYSTREAM_INFRA_CACHE (default ~/.cache/lazystream-infra)
# Prints the path of the binary on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$HERE/../versions.env"
OUT=$INFRA_CACHE/kustomize-v$KUSTOMIZE_VERSION
BIN=$OUT/kustomize
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$INFRA_CACHE" "$OUT"
exec 9>"$INFRA_CACHE/.kustomize-build.lock"
flock 9
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
echo "==> go install kustomize v$KUSTOMIZE_VERSION (cold: a few minutes)" >&2
GOBIN=$OUT/tmp GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 \
  go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@v$KUSTOMIZE_VERSION" >&2
mv "$OUT/tmp/kustomize" "$BIN"
rmdir "$OUT/tmp"
"$BIN" version >&2
echo "$BIN"
