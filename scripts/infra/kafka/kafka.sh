#!/usr/bin/env bash
# kafka.sh install|start|stop|status — a real single-node KRaft Apache Kafka broker from Maven Central jars,
# on loopback, with fast-start settings for tests. Idempotent: `start` on a running broker does nothing.
# Env: KAFKA_VERSION, KAFKA_PORT (default 19092), KAFKA_CONTROLLER_PORT (default 19093), LAZYSTREAM_INFRA_*
#      (LAZYSTREAM_INFRA_RUN: where the data and logs live), KAFKA_KEEP_DATA=1 (start keeps the log dir of a
#      previous run, so a stopped broker comes back with its topics and offsets; default: start empty).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../versions.env"
. "$HERE/../lib.sh"
KAFKA_HOME=$INFRA_CACHE/kafka-$KAFKA_VERSION
RUN=$INFRA_RUN/kafka
PORT=${KAFKA_PORT:-19092}
CPORT=${KAFKA_CONTROLLER_PORT:-19093}
CLUSTER_ID=MkU3OEVBNTcwNTJENDM2Qk   # any base64url 16-byte id; fixed so no tool output is parsed
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
PIDFILE=$RUN/kafka.pid

install() {
  [ -f "$KAFKA_HOME/.complete" ] && return 0
  echo "==> resolving Kafka $KAFKA_VERSION jars with Maven" >&2
  rm -rf "$KAFKA_HOME"; mkdir -p "$KAFKA_HOME/lib"
  mvn -B -q -Dstyle.color=never -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/lib" >&2
  ls "$KAFKA_HOME/lib"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
  touch "$KAFKA_HOME/.complete"
}

jopts() {
  # small-machine, fast-start JVM settings (upstream scripts use -Xmx1G -Xms1G and G1)
  echo "-Xms256m -Xmx768m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true" \
       "-Dkafka.logs.dir=$RUN/logs -Dlog4j2.configurationFile=$HERE/log4j2.properties"
}

ready() { grep -q "Kafka Server started" "$RUN/logs/server.out" && (exec 3<>"/dev/tcp/127.0.0.1/$PORT"); }

start() {
  install
  if pid_alive "$PIDFILE"; then echo "kafka already running on 127.0.0.1:$PORT" >&2; return 0; fi
  require_port_free kafka "$PORT"; require_port_free kafka-controller "$CPORT"
  [ "${KAFKA_KEEP_DATA:-0}" = 1 ] || rm -rf "$RUN"
  mkdir -p "$RUN/data" "$RUN/logs"
  # a restarted broker's readiness is judged on this run's output only
  [ ! -f "$RUN/logs/server.out" ] || mv "$RUN/logs/server.out" "$RUN/logs/server.out.previous"
  sed -e "s#@DATA@#$RUN/data#" -e "s#@PORT@#$PORT#g" -e "s#@CPORT@#$CPORT#g" \
      "$HERE/server.properties.in" > "$RUN/server.properties"
  # shellcheck disable=SC2046
  "$JAVA" $(jopts) -cp "$KAFKA_HOME/lib/*" kafka.tools.StorageTool format \
      -t "$CLUSTER_ID" -c "$RUN/server.properties" --ignore-formatted > "$RUN/logs/format.log" 2>&1 \
      || { cat "$RUN/logs/format.log" >&2; return 1; }
  # shellcheck disable=SC2046
  setsid nohup "$JAVA" $(jopts) -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$RUN/server.properties" \
      > "$RUN/logs/server.out" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  wait_for "kafka $KAFKA_VERSION on 127.0.0.1:$PORT" 90 "$PIDFILE" "$RUN/logs/server.out" ready
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop_pid kafka "$PIDFILE" ;;
  status) pid_alive "$PIDFILE" && echo "kafka running on 127.0.0.1:$PORT" || { echo "kafka stopped"; exit 1; } ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
