#!/usr/bin/env bash
# MedInform distributed on this machine, measured the way run.py measures the embedded mode:
# PostgreSQL and RabbitMQ (the local services), a throw-away Garage S3 server, and
# `medinform api` + `medinform worker` as separate processes.
#
#   benches/peers/distributed.sh [--images N] [--model pneumonia|malaria|both]
#
# 1. end to end: run.py --only medinform --medinform-url (single uploads and batches, every job
#    checked against ONNX Runtime);
# 2. the API alone, the worker stopped (as when the workers are on other machines): accept.py,
#    uploads of real ~100 KB chest X-ray JPEGs, accepted per second and latency percentiles, the
#    API process's CPU per 1,000 uploads, and the PostgreSQL transactions each upload took
#    (reads included).
#
# Needs: target/release/medinform (cargo build --release), PostgreSQL on 127.0.0.1:5432 (trust
# auth, user postgres), RabbitMQ on 127.0.0.1:5672 (guest/guest), ORT_DYLIB_PATH or .venv's
# onnxruntime. A database medinform_bench_<random>, queues and an S3 prefix of their own are
# made and removed. Logs: target/peers-logs/distributed-*.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
bin="${MEDINFORM_BIN_PATH:-$root/target/release/medinform}"
[[ -x "$bin" ]] || { echo "$bin not found: cargo build --release --bin medinform" >&2; exit 1; }
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)}"

run_id="$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')"
db="medinform_bench_$run_id"
work="$(mktemp -d)"
logs="$root/target/peers-logs"
mkdir -p "$logs"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -h 127.0.0.1 -U postgres -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
    "$root/infra/garage/stop-local.sh" "$work/garage" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

psql -h 127.0.0.1 -U postgres -qc "create database $db" >/dev/null
env_file="$("$root/infra/garage/start-local.sh" "$work/garage")"
set -a
# shellcheck source=/dev/null
. "$env_file"
set +a

# Only the settings below: a variable of the caller's is never picked up by accident.
for name in $(env | grep -o '^MEDINFORM_[A-Z0-9_]*' | grep -v '^MEDINFORM_TEST_'); do unset "$name"; done
export MEDINFORM_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export MEDINFORM_QUEUE_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
export MEDINFORM_QUEUE_PREFIX="bench-$run_id"
export MEDINFORM_STORAGE_BACKEND=s3
export MEDINFORM_STORAGE_S3_ENDPOINT="$MEDINFORM_TEST_S3_ENDPOINT"
export MEDINFORM_STORAGE_S3_BUCKET="$MEDINFORM_TEST_S3_BUCKET"
export MEDINFORM_STORAGE_S3_REGION="$MEDINFORM_TEST_S3_REGION"
export MEDINFORM_STORAGE_S3_ACCESS_KEY_ID="$MEDINFORM_TEST_S3_ACCESS_KEY_ID"
export MEDINFORM_STORAGE_S3_SECRET_ACCESS_KEY="$MEDINFORM_TEST_S3_SECRET_ACCESS_KEY"
export MEDINFORM_MODELS_DIR="$root/models"
export MEDINFORM_INFERENCE_THREADS=2
export MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE=0
export MEDINFORM_JOBS_MAX_BACKLOG=0
export MEDINFORM_LOG=warn
unset MEDINFORM_TEST_S3_ENDPOINT MEDINFORM_TEST_S3_BUCKET MEDINFORM_TEST_S3_REGION \
    MEDINFORM_TEST_S3_ACCESS_KEY_ID MEDINFORM_TEST_S3_SECRET_ACCESS_KEY

"$bin" migrate >"$logs/distributed-migrate.log" 2>&1
key="$("$bin" keys create --tenant bench --name distributed-bench 2>/dev/null | head -1)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"

start() { # start NAME ARGS...: a medinform process, logged
    local name="$1"
    shift
    "$bin" "$@" >"$logs/distributed-$name.log" 2>&1 &
    pids+=("$!")
}
start api api --listen "127.0.0.1:$port"
start worker worker
for _ in $(seq 100); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "$url/readyz" >/dev/null || { echo "the API did not become ready; see $logs" >&2; exit 1; }

echo "## distributed: medinform api + medinform worker, PostgreSQL, RabbitMQ, Garage"
python3 "$here/run.py" --only medinform --medinform-url "$url" --medinform-api-key "$key" \
    --output "$root/target/peers-distributed.json" "$@"

echo
echo "## the API alone (worker stopped): uploads accepted"
kill "${pids[1]}"
wait "${pids[1]}" 2>/dev/null || true
commits() { # the bench database's committed transactions so far (statistics settle within 1 s)
    sleep 2
    psql -h 127.0.0.1 -U postgres -Atc "select xact_commit from pg_stat_database where datname = '$db'"
}
uploads=5000
warmup=200
before="$(commits)"
"$root/target/peers-venv/bin/python" "$here/accept.py" --url "$url" --api-key "$key" \
    --images "$uploads" --warmup "$warmup" --server-pid "${pids[0]}"
after="$(commits)"
echo "PostgreSQL transactions per upload: $(python3 -c "print(f'{($after - $before) / ($uploads + $warmup):.2f}')")"
