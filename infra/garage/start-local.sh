#!/usr/bin/env bash
# Starts a single-node Garage (S3-compatible object store) for tests and local development,
# entirely under DATA_DIR, on loopback only, and writes DATA_DIR/s3.env:
#
#     MEDINFORM_TEST_S3_ENDPOINT=http://127.0.0.1:<port>
#     MEDINFORM_TEST_S3_BUCKET=<bucket>
#     MEDINFORM_TEST_S3_REGION=garage
#     MEDINFORM_TEST_S3_ACCESS_KEY_ID=GK...
#     MEDINFORM_TEST_S3_SECRET_ACCESS_KEY=...
#
# Load it with `set -a; . DATA_DIR/s3.env; set +a`. The endpoint needs path-style addressing.
# Stop the server with infra/garage/stop-local.sh DATA_DIR.
#
# Usage: infra/garage/start-local.sh DATA_DIR
#
# Environment (all optional):
#   GARAGE_BIN          the garage binary (default: `garage` on PATH, then ~/.cargo/bin/garage;
#                       when none is found it is built with `cargo install garage --locked`)
#   GARAGE_S3_PORT      S3 API port     (default: a free port)
#   GARAGE_RPC_PORT     RPC port        (default: a free port)
#   GARAGE_ADMIN_PORT   admin API port  (default: a free port)
#   GARAGE_BUCKET       bucket to create (default: medinform-test)
#
# Running it again on the same DATA_DIR reuses the configuration, the data and the key; if the
# server is still running it only rewrites s3.env.
set -euo pipefail

GARAGE_VERSION=2.5.0 # the version `cargo install` builds; any 2.x found on PATH is accepted
REGION=garage
KEY_NAME=medinform-test

log() { printf '[garage] %s\n' "$*" >&2; }
die() {
    printf '[garage] error: %s\n' "$*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 DATA_DIR"
mkdir -p "$1"
data_dir="$(cd "$1" && pwd)"
config="$data_dir/garage.toml"
pid_file="$data_dir/garage.pid"
log_file="$data_dir/garage.log"
env_file="$data_dir/s3.env"
bucket="${GARAGE_BUCKET:-medinform-test}"

# --- the binary --------------------------------------------------------------------------------
find_garage() {
    if [[ -n "${GARAGE_BIN:-}" ]]; then
        printf '%s\n' "$GARAGE_BIN"
    elif command -v garage >/dev/null 2>&1; then
        command -v garage
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]]; then
        printf '%s\n' "${CARGO_HOME:-$HOME/.cargo}/bin/garage"
    fi
}
garage_bin="$(find_garage)"
if [[ -z "$garage_bin" ]]; then
    command -v cargo >/dev/null 2>&1 || die "garage is not installed and cargo is not on PATH"
    log "garage not found: building it with 'cargo install garage --version $GARAGE_VERSION --locked'"
    log "this takes about 10-15 minutes on 2 cores, once per machine (it lands in ~/.cargo/bin)"
    cargo install garage --version "$GARAGE_VERSION" --locked >&2
    garage_bin="${CARGO_HOME:-$HOME/.cargo}/bin/garage"
fi
[[ -x "$garage_bin" ]] || die "garage binary '$garage_bin' is not executable"
version="$("$garage_bin" --version 2>/dev/null || true)"
[[ "$version" =~ [^0-9.]2\.[0-9]+\.[0-9]+ ]] ||
    die "'$garage_bin' reports '$version'; Garage 2.x is needed (unset GARAGE_BIN or remove it to build $GARAGE_VERSION)"

garage() { "$garage_bin" -c "$config" "$@"; }

running() {
    local pid
    [[ -f "$pid_file" ]] || return 1
    pid="$(cat "$pid_file")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q garage
}

# --- configuration -----------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local port _
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 40000))
        if ! port_in_use "$port" && [[ " ${taken_ports[*]} " != *" $port "* ]]; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "found no free port"
}
random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

if [[ ! -f "$config" ]]; then
    taken_ports=()
    s3_port="${GARAGE_S3_PORT:-$(free_port)}"
    taken_ports+=("$s3_port")
    rpc_port="${GARAGE_RPC_PORT:-$(free_port)}"
    taken_ports+=("$rpc_port")
    admin_port="${GARAGE_ADMIN_PORT:-$(free_port)}"
    # Secrets must not be world-readable: Garage refuses to start otherwise.
    (
        umask 077
        cat >"$config" <<EOF
# Written by infra/garage/start-local.sh: a throw-away single-node Garage on loopback.
metadata_dir = "$data_dir/meta"
data_dir = "$data_dir/data"
db_engine = "lmdb"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(random_hex 32)"
EOF
    )
    log "wrote $config (S3 on 127.0.0.1:$s3_port, RPC $rpc_port, admin $admin_port)"
fi
s3_addr="$(sed -n '/^\[s3_api\]/,/^\[/s/^api_bind_addr = "\(.*\)"$/\1/p' "$config")"
[[ -n "$s3_addr" ]] || die "no [s3_api] api_bind_addr in $config"

# --- the server --------------------------------------------------------------------------------
if running; then
    log "already running (pid $(cat "$pid_file"))"
else
    log "starting $("$garage_bin" --version) (log: $log_file)"
    NO_COLOR=1 nohup "$garage_bin" -c "$config" server >>"$log_file" 2>&1 &
    printf '%s\n' "$!" >"$pid_file"
fi

for attempt in $(seq 1 60); do
    if ! running; then
        tail -n 30 "$log_file" >&2 || true
        die "garage exited during start-up (log above, full log in $log_file)"
    fi
    garage status >/dev/null 2>&1 && break
    [[ $attempt -lt 60 ]] || die "garage did not answer 'garage status' within 30 s (log: $log_file)"
    sleep 0.5
done

# --- layout, key, bucket (each step skipped when already done) --------------------------------
if garage layout show 2>/dev/null | grep -q 'Current cluster layout version: 0'; then
    node_id="$(garage node id -q 2>/dev/null | cut -d@ -f1)"
    [[ -n "$node_id" ]] || die "could not read the node id"
    garage layout assign -z dc1 -c 1G "$node_id" >/dev/null
    garage layout apply --version 1 >/dev/null
    log "layout applied: node ${node_id:0:16}… in zone dc1, 1 GB"
fi

if ! garage key info "$KEY_NAME" >/dev/null 2>&1; then
    garage key create "$KEY_NAME" >/dev/null
    log "created key $KEY_NAME"
fi
key_id="$(garage key info "$KEY_NAME" --key-id)"
secret_key="$(garage key info "$KEY_NAME" --secret-key)"

if ! garage bucket info "$bucket" >/dev/null 2>&1; then
    garage bucket create "$bucket" >/dev/null
    log "created bucket $bucket"
fi
garage bucket allow --read --write --owner "$bucket" --key "$KEY_NAME" >/dev/null

(
    umask 077
    cat >"$env_file" <<EOF
MEDINFORM_TEST_S3_ENDPOINT=http://$s3_addr
MEDINFORM_TEST_S3_BUCKET=$bucket
MEDINFORM_TEST_S3_REGION=$REGION
MEDINFORM_TEST_S3_ACCESS_KEY_ID=$key_id
MEDINFORM_TEST_S3_SECRET_ACCESS_KEY=$secret_key
EOF
)
log "ready: S3 at http://$s3_addr, bucket $bucket, key $key_id (pid $(cat "$pid_file"))"
printf '%s\n' "$env_file"
