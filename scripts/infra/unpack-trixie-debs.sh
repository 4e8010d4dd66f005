#!/usr/bin/env bash
# Download Debian trixie packages and unpack them into a private prefix, without touching the system's apt
# sources, pinning or dpkg database and without starting any daemon (a plain `apt-get install etcd-server`
# may start one on 2379). Idempotent: a prefix that already holds the packages is kept.
# Usage: unpack-trixie-debs.sh PREFIX pkg ...
# DEBIAN_SUITE picks another suite (default trixie): binaries linked against glibc need the host's own suite
# (trixie's need glibc 2.38), e.g. DEBIAN_SUITE=host for the suite of /etc/os-release.
set -euo pipefail
SUITE=${DEBIAN_SUITE:-trixie}
if [ "$SUITE" = host ]; then SUITE=$(. /etc/os-release && echo "$VERSION_CODENAME"); fi
PREFIX=$1; shift
STAMP="$PREFIX/.unpacked-$(echo "$*" | tr ' ' '+')"
[ -f "$STAMP" ] && exit 0
W=$(dirname "$PREFIX")/apt-$SUITE
mkdir -p "$W/lists/partial" "$W/cache/archives/partial" "$W/debs" "$PREFIX"
# Reuse the Debian archive the system's apt already uses: no host is written here.
URI=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$URI" ] || URI=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
echo "deb $URI $SUITE main" > "$W/sources.list"
APT=(-o Dir::Etc::sourcelist="$W/sources.list" -o Dir::Etc::sourceparts=- \
     -o Dir::State::Lists="$W/lists" -o Dir::Cache="$W/cache" -o APT::Get::List-Cleanup=0 \
     -o APT::Sandbox::User=root)
apt-get "${APT[@]}" update -qq
rm -f "$W"/debs/*.deb
(cd "$W/debs" && apt-get "${APT[@]}" download "$@")
for d in "$W"/debs/*.deb; do dpkg -x "$d" "$PREFIX"; done
touch "$STAMP"
