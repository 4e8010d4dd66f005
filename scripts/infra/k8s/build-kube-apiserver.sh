#!/usr/bin/env bash
# Build a real kube-apiserver from the Go module proxy and cache the binary outside the repo.
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` is refused: k8s.io/kubernetes's go.mod replaces its
# staging modules (k8s.io/api, k8s.io/apiserver, ...) with ./staging/src paths at the non-existent v0.0.0.
# A throw-away wrapper module re-creates those replaces with the published v0.<minor>.<patch> tags, read from
# the tag's own go.mod, then builds the command with the version stamped as hack/lib/version.sh does (so
# clients see /version = v<K8S_VERSION>, not v0.0.0-master).
#
# Env: K8S_VERSION (default from versions.env), LAZYSTREAM_INFRA_CACHE (default ~/.cache/lazystream-infra)
# Prints the path of the binary on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$HERE/../versions.env"
OUT=$INFRA_CACHE/k8s-v$K8S_VERSION
BIN=$OUT/kube-apiserver
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
# One build at a time: a second caller (servers.sh up while servers.sh install runs) waits for the first.
mkdir -p "$INFRA_CACHE"
exec 9>"$INFRA_CACHE/.kube-apiserver-build.lock"
flock 9
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

MINOR_PATCH=${K8S_VERSION#1.}     # 36.3
MINOR=${MINOR_PATCH%%.*}          # 36
STAGING_VERSION=v0.$MINOR_PATCH   # v0.36.3
export GOFLAGS=-mod=mod GOTOOLCHAIN=${GOTOOLCHAIN:-local} CGO_ENABLED=0

WORK=$INFRA_CACHE/build/k8s-v$K8S_VERSION
mkdir -p "$WORK" "$OUT"
cd "$WORK"
[ -f go.mod ] || go mod init local/lazystream-kube-apiserver >/dev/null 2>&1

echo "==> resolving k8s.io/kubernetes@v$K8S_VERSION" >&2
GOMOD=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
STAGING=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/.*#\1#p' "$GOMOD")
[ -n "$STAGING" ] || { echo "no staging replaces found in $GOMOD" >&2; exit 1; }

go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
for m in $STAGING; do go mod edit -replace="$m=$m@$STAGING_VERSION"; done
printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
echo "==> go mod tidy" >&2
go mod tidy >&2

LD="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitVersion=v$K8S_VERSION -X $p.gitTreeState=clean"
  LD="$LD -X $p.buildDate=1970-01-01T00:00:00Z"
done
echo "==> go build kube-apiserver v$K8S_VERSION (cold: ~10-20 min on 2 cores)" >&2
go build -trimpath -ldflags "$LD" -o "$BIN.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
mv "$BIN.tmp" "$BIN"
"$BIN" --version >&2
echo "$BIN"
