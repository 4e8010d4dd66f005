#!/usr/bin/env bash
# Fetch Istio's own CustomResourceDefinitions from the istio.io/api Go module (the file Istio's installers
# apply) and cache it outside the repo: the test API server, the demo and every test install these, so what
# lazystream writes is checked against Istio's real schemas and CEL rules, not stand-ins.
# Env: ISTIO_API_VERSION (default from versions.env), LAZYSTREAM_INFRA_CACHE.
# Prints the path of the CRD file on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$HERE/../versions.env"
OUT=$INFRA_CACHE/istio-api-$ISTIO_API_VERSION
FILE=$OUT/customresourcedefinitions.gen.yaml
if [ -s "$FILE" ]; then echo "$FILE"; exit 0; fi
mkdir -p "$OUT"
exec 9>"$INFRA_CACHE/.istio-crds.lock"
flock 9
if [ -s "$FILE" ]; then echo "$FILE"; exit 0; fi
echo "==> go mod download istio.io/api@v$ISTIO_API_VERSION (its CRDs)" >&2
dir=$(cd "$OUT" && GOTOOLCHAIN=${GOTOOLCHAIN:-local} GOFLAGS=-mod=mod go mod download -json "istio.io/api@v$ISTIO_API_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -s "$dir/kubernetes/customresourcedefinitions.gen.yaml" ] || {
  echo "istio.io/api@$ISTIO_API_VERSION has no kubernetes/customresourcedefinitions.gen.yaml" >&2; exit 1; }
cp "$dir/kubernetes/customresourcedefinitions.gen.yaml" "$FILE.tmp"
mv "$FILE.tmp" "$FILE"
echo "$FILE"
