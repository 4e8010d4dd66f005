# Shared helpers for the start/stop scripts in scripts/infra (sourced, not run).
# shellcheck shell=bash

# pid_alive PIDFILE: true when the process recorded in PIDFILE is running.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid NAME PIDFILE: TERM, wait up to 20 s, then KILL; removes the pid file. Never fails.
stop_pid() {
  local name=$1 pidfile=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
    echo "stopped $name (pid $pid)" >&2
  fi
  rm -f "$pidfile"
}

# wait_for WHAT SECONDS PIDFILE LOG CMD...: poll CMD every 0.25 s until it succeeds; fail early when the
# process dies, and show the tail of its log on failure.
wait_for() {
  local what=$1 secs=$2 pidfile=$3 log=$4; shift 4
  local tries=$((secs * 4)) start=$SECONDS
  for _ in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then echo "$what ready in $((SECONDS - start)) s" >&2; return 0; fi
    if ! pid_alive "$pidfile"; then echo "$what exited during start-up; last log lines:" >&2; tail -40 "$log" >&2; return 1; fi
    sleep 0.25
  done
  echo "$what not ready after $secs s; last log lines:" >&2; tail -40 "$log" >&2; return 1
}

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# require_port_free NAME PORT: clear error when a port is taken by something we did not start.
require_port_free() {
  port_free "$2" || { echo "$1: port $2 on 127.0.0.1 is already in use (set its *_PORT variable to another one)" >&2; return 1; }
}
