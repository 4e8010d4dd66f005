#!/usr/bin/env bash
# Build one of the Go command-line tools the deploy/ tests render with, from the Go module proxy, and cache
# the binary outside the repo (as the kube-apiserver is): `go install` of the released module, one build of
# a tool at a time.
#   build-go-tool.sh kustomize   # renders the kustomize overlays
#   build-go-tool.sh helm        # renders the Helm chart (helm template)
# Env: KUSTOMIZE_VERSION, HELM_VERSION (defaults from versions.env), LAZYSTREAM_INFRA_CACHE
# (default ~/.cache/lazystream-infra). Prints the path of the binary on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$HERE/../versions.env"
case "${1:-}" in
  kustomize) VERSION=$KUSTOMIZE_VERSION; MODULE=sigs.k8s.io/kustomize/kustomize/v5; CHECK=(version) ;;
  helm) VERSION=$HELM_VERSION; MODULE=helm.sh/helm/v${HELM_VERSION%%.*}/cmd/helm; CHECK=(version --short) ;;
  *) echo "usage: $0 kustomize|helm" >&2; exit 2 ;;
esac
TOOL=$1
OUT=$INFRA_CACHE/$TOOL-v$VERSION
BIN=$OUT/$TOOL
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$INFRA_CACHE" "$OUT"
exec 9>"$INFRA_CACHE/.$TOOL-build.lock"
flock 9
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
echo "==> go install $TOOL v$VERSION (cold: a few minutes)" >&2
GOBIN=$OUT/tmp GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0 \
  go install -trimpath -ldflags "-s -w" "$MODULE@v$VERSION" >&2
mv "$OUT/tmp/$TOOL" "$BIN"
rmdir "$OUT/tmp"
"$BIN" "${CHECK[@]}" >&2
echo "$BIN"
