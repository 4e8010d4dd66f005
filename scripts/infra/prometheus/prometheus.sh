#!/usr/bin/env bash
# prometheus.sh start|stop|status — Prometheus from Debian's package (trixie, unpacked; no system daemon),
# on loopback, scraping every 1 s the targets that tests write into $INFRA_RUN/prometheus/targets/*.json.
# Env: PROM_PORT (default 19090), PROMETHEUS (binary).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../versions.env"
. "$HERE/../lib.sh"
RUN=$INFRA_RUN/prometheus
PORT=${PROM_PORT:-19090}
PIDFILE=$RUN/prometheus.pid

ready() { curl -fsS "http://127.0.0.1:$PORT/-/ready"; }

start() {
  local prom=${PROMETHEUS:-$INFRA_CACHE/trixie/usr/bin/prometheus}
  [ -x "$prom" ] || "$HERE/../unpack-trixie-debs.sh" "$INFRA_CACHE/trixie" $TRIXIE_PACKAGES
  if pid_alive "$PIDFILE"; then echo "prometheus already running on 127.0.0.1:$PORT" >&2; return 0; fi
  require_port_free prometheus "$PORT"
  rm -rf "$RUN"; mkdir -p "$RUN/targets" "$RUN/data"
  sed -e "s#@SD_DIR@#$RUN/targets#" "$HERE/prometheus.yml.in" > "$RUN/prometheus.yml"
  setsid nohup "$prom" --config.file="$RUN/prometheus.yml" --storage.tsdb.path="$RUN/data" \
    --web.listen-address="127.0.0.1:$PORT" --web.enable-lifecycle \
    --storage.tsdb.retention.time=1h --log.level=warn > "$RUN/prometheus.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  wait_for "prometheus on 127.0.0.1:$PORT" 30 "$PIDFILE" "$RUN/prometheus.log" ready
}

case "${1:-start}" in
  start) start ;;
  stop) stop_pid prometheus "$PIDFILE" ;;
  status) pid_alive "$PIDFILE" && echo "prometheus running on 127.0.0.1:$PORT" || { echo "prometheus stopped"; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
