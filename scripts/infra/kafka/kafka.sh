#!/usr/bin/env bash
# kafka.sh install|start|stop|status — a real single-node KRaft Apache Kafka broker from Maven Central jars,
# on loopback, with fast-start settings for tests. Idempotent: `start` on a running broker does nothing.
# Two client listeners: PLAINTEXT on KAFKA_PORT, and SASL_SSL (TLS + SCRAM-SHA-512/256) on KAFKA_SECURE_PORT,
# with a test CA, a server certificate for 127.0.0.1/localhost, a client certificate and the SCRAM user
# `lazystream` (its password generated) made once into $LAZYSTREAM_INFRA_RUN/kafka-secrets (kept across
# restarts, so clients' CA and password stay valid). The controller and inter-broker listeners are PLAINTEXT.
# Env: KAFKA_VERSION, KAFKA_PORT (default 19092), KAFKA_SECURE_PORT (default 19095), KAFKA_CONTROLLER_PORT
#      (default 19093), LAZYSTREAM_INFRA_* (LAZYSTREAM_INFRA_RUN: where the data and logs live),
#      KAFKA_KEEP_DATA=1 (start keeps the log dir of a previous run, so a stopped broker comes back with its
#      topics and offsets; default: start empty).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../versions.env"
. "$HERE/../lib.sh"
KAFKA_HOME=$INFRA_CACHE/kafka-$KAFKA_VERSION
RUN=$INFRA_RUN/kafka
PORT=${KAFKA_PORT:-19092}
SPORT=${KAFKA_SECURE_PORT:-19095}
CPORT=${KAFKA_CONTROLLER_PORT:-19093}
SECRETS=$INFRA_RUN/kafka-secrets
SCRAM_USER=lazystream
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

ready() {
  grep -q "Kafka Server started" "$RUN/logs/server.out" \
    && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") && (exec 3<>"/dev/tcp/127.0.0.1/$SPORT")
}

secrets() {
  # Made once per run directory (about a second): a test CA, the broker's certificate for 127.0.0.1 and
  # localhost, a client certificate (for clients that present one) and the SCRAM user's password.
  [ -f "$SECRETS/.complete" ] && return 0
  command -v openssl >/dev/null || { echo "kafka: openssl is needed to make the test certificates" >&2; return 1; }
  rm -rf "$SECRETS"; mkdir -p "$SECRETS"; chmod 700 "$SECRETS"
  (
    cd "$SECRETS"
    # The CA carries keyUsage and the leaves an authorityKeyIdentifier: Python's ssl with VERIFY_X509_STRICT
    # (the 3.13 default) refuses them otherwise. Keys are unencrypted PKCS#8, which Kafka's PEM store reads.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=lazystream-kafka-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout ca.key -out ca.crt 2>/dev/null
    leaf() {  # leaf NAME CN EXTENDED-KEY-USAGE [SAN]
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
      printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
        "extendedKeyUsage=$3" 'authorityKeyIdentifier=keyid,issuer' 'subjectKeyIdentifier=hash' \
        ${4:+"subjectAltName=$4"} > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    leaf server localhost serverAuth "IP:127.0.0.1,DNS:localhost"
    leaf client "$SCRAM_USER" clientAuth
    cat server.key server.crt > server.pem   # Kafka's PEM keystore: the key, then the certificate chain
    openssl rand -hex 24 > scram.password
    chmod 600 ./*.key server.pem scram.password
  )
  touch "$SECRETS/.complete"
}

start() {
  install
  if pid_alive "$PIDFILE"; then echo "kafka already running on 127.0.0.1:$PORT" >&2; return 0; fi
  require_port_free kafka "$PORT"; require_port_free kafka-secure "$SPORT"
  require_port_free kafka-controller "$CPORT"
  secrets
  [ "${KAFKA_KEEP_DATA:-0}" = 1 ] || rm -rf "$RUN"
  mkdir -p "$RUN/data" "$RUN/logs"
  # a restarted broker's readiness is judged on this run's output only
  [ ! -f "$RUN/logs/server.out" ] || mv "$RUN/logs/server.out" "$RUN/logs/server.out.previous"
  sed -e "s#@DATA@#$RUN/data#" -e "s#@PORT@#$PORT#g" -e "s#@SPORT@#$SPORT#g" -e "s#@CPORT@#$CPORT#g" \
      -e "s#@SECRETS@#$SECRETS#g" "$HERE/server.properties.in" > "$RUN/server.properties"
  # The SCRAM user goes into the cluster metadata when the storage is formatted: no extra JVM start. (With
  # KAFKA_KEEP_DATA=1 an already formatted log dir keeps the credentials it was formatted with.)
  local password; password=$(cat "$SECRETS/scram.password")
  # shellcheck disable=SC2046
  "$JAVA" $(jopts) -cp "$KAFKA_HOME/lib/*" kafka.tools.StorageTool format \
      -t "$CLUSTER_ID" -c "$RUN/server.properties" --ignore-formatted \
      --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$password]" \
      --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$password]" > "$RUN/logs/format.log" 2>&1 \
      || { cat "$RUN/logs/format.log" >&2; return 1; }
  # shellcheck disable=SC2046
  setsid nohup "$JAVA" $(jopts) -cp "$KAFKA_HOME/lib/*" kafka.Kafka "$RUN/server.properties" \
      > "$RUN/logs/server.out" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  wait_for "kafka $KAFKA_VERSION on 127.0.0.1:$PORT (SASL_SSL on :$SPORT)" 90 "$PIDFILE" "$RUN/logs/server.out" ready
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop_pid kafka "$PIDFILE" ;;
  status) pid_alive "$PIDFILE" && echo "kafka running on 127.0.0.1:$PORT (SASL_SSL on :$SPORT)" || { echo "kafka stopped"; exit 1; } ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
