#!/usr/bin/env bash
# Stops the Garage server that infra/garage/start-local.sh started in DATA_DIR (SIGTERM, then
# SIGKILL after 10 s). Leaves DATA_DIR in place; delete it yourself to drop the data.
#
# Usage: infra/garage/stop-local.sh DATA_DIR
set -euo pipefail

log() { printf '[garage] %s\n' "$*" >&2; }

[[ $# -eq 1 ]] || {
    printf 'usage: %s DATA_DIR\n' "$0" >&2
    exit 2
}
pid_file="$1/garage.pid"

if [[ ! -f "$pid_file" ]]; then
    log "no $pid_file: nothing to stop"
    exit 0
fi
pid="$(cat "$pid_file")"

# Only signal the process if it is still the garage server we started (pids get reused).
is_ours() {
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q garage
}

if [[ -n "$pid" ]] && is_ours; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        is_ours || break
        sleep 0.1
    done
    if is_ours; then
        log "pid $pid did not stop on SIGTERM within 10 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped (pid $pid)"
else
    log "pid ${pid:-?} is not running"
fi
rm -f "$pid_file"
