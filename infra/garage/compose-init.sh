#!/bin/sh
# The `garage-init` one-shot of docker-compose.yml (POSIX sh, in infra/docker/garage-init.Dockerfile).
# Once the `garage` service answers: assigns the single-node layout, imports the access key that
# the api and worker are configured with, creates the bucket and lets the key use it.
# Every step is skipped when already done, so `docker compose up` can run it again and again.
#
# Environment (set by docker-compose.yml):
#   GARAGE_RPC_SECRET         the cluster's RPC secret (same value as the garage service)
#   GARAGE_BUCKET             bucket to create
#   GARAGE_ACCESS_KEY_ID      access key to import (Garage style: GK + 24 hex digits)
#   GARAGE_SECRET_ACCESS_KEY  its secret (64 hex digits)
#   GARAGE_CAPACITY           capacity given to the node in the layout (default 10G)
# /etc/garage.toml and the garage metadata volume (read-only, for the node id) are mounted.
set -eu

: "${GARAGE_BUCKET:?}" "${GARAGE_ACCESS_KEY_ID:?}" "${GARAGE_SECRET_ACCESS_KEY:?}"

attempt=0
until garage status >/dev/null 2>&1; do
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 60 ]; then
        echo "garage-init: the garage service did not answer within 60 s" >&2
        garage status >&2 || true
        exit 1
    fi
    sleep 1
done

if garage layout show | grep -q 'Current cluster layout version: 0'; then
    node_id="$(garage node id -q | cut -d@ -f1)"
    garage layout assign -z dc1 -c "${GARAGE_CAPACITY:-10G}" "$node_id"
    garage layout apply --version 1
fi

if ! garage key info "$GARAGE_ACCESS_KEY_ID" >/dev/null 2>&1; then
    garage key import --yes -n medinform "$GARAGE_ACCESS_KEY_ID" "$GARAGE_SECRET_ACCESS_KEY"
fi

if ! garage bucket info "$GARAGE_BUCKET" >/dev/null 2>&1; then
    garage bucket create "$GARAGE_BUCKET"
fi
garage bucket allow --read --write --owner "$GARAGE_BUCKET" --key "$GARAGE_ACCESS_KEY_ID"

echo "garage-init: bucket '$GARAGE_BUCKET' ready for key $GARAGE_ACCESS_KEY_ID"
