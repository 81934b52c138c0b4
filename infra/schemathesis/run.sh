#!/usr/bin/env bash
# Property-based tests of the HTTP API against its own OpenAPI document, with schemathesis
# (pinned in infra/requirements.txt; settings and narrow exceptions in schemathesis.toml beside
# this file). `infra/test` runs it after `cargo test`.
#
#   infra/schemathesis/run.sh [SCHEMATHESIS RUN OPTIONS...]
#
# Starts target/debug/medinform serve (embedded mode: SQLite, local folder, in-process queue) on
# a free loopback port with a temporary data directory, with API keys required
# (auth.allow_anonymous = false) and an admin key made with `medinform keys create`, then runs
# `schemathesis run` against http://127.0.0.1:PORT/openapi.json with every check (schemathesis.toml
# turns them all on), every request sent with `Authorization: Bearer <key>`. Exits non-zero on any
# finding, after the server's ERROR and WARN lines. The last line is for the summary of infra/test:
# "schemathesis: N passed, N failed, N skipped", one test per operation and one for the stateful
# sequences. hooks.py (SCHEMATHESIS_HOOKS) sends STOW-RS bodies as multipart/related.
#
# Environment:
#   MEDINFORM_TEST_SCHEMATHESIS_BINARY   the binary (default target/debug/medinform, built by the
#                                        caller)
#   MEDINFORM_TEST_SCHEMATHESIS_EXAMPLES test cases per operation and phase (default 500)
#   MEDINFORM_TEST_SCHEMATHESIS_SEED     the random seed (default: a new one, printed)
#   ORT_DYLIB_PATH                       the ONNX Runtime library (default: the one in .venv)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

log() { printf '[schemathesis] %s\n' "$*" >&2; }
die() {
    printf '[schemathesis] error: %s\n' "$*" >&2
    exit 1
}

bin="${MEDINFORM_TEST_SCHEMATHESIS_BINARY:-$root/target/debug/medinform}"
py="$root/.venv/bin/python"
schemathesis="$root/.venv/bin/schemathesis"
[[ -x "$bin" ]] || die "$bin is missing: cargo build --bin medinform"
[[ -x "$schemathesis" ]] || die "$schemathesis is missing: infra/setup-python.sh (installs infra/requirements.txt)"
if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
    ORT_DYLIB_PATH="$(ls "$root"/.venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1)"
    [[ -n "$ORT_DYLIB_PATH" ]] || die "no ONNX Runtime library in .venv: infra/setup-python.sh, or set ORT_DYLIB_PATH"
fi
export ORT_DYLIB_PATH

work="$(mktemp -d "${TMPDIR:-/tmp}/medinform-schemathesis.XXXXXX")"
server_pid=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The service under test, with only these settings (none of the caller's MEDINFORM_* ones, such
# as a database URL). Keys are required so that the `ignored_auth` check has something to check;
# the rate limit is off because thousands of requests a minute are the point here; private
# webhook targets are allowed so that a webhook URL is checked for its form only (the hosts
# schemathesis makes up would otherwise need DNS, which a test machine may not have).
settings=(
    "MEDINFORM_DATA_DIR=$work/data"
    "MEDINFORM_MODELS_DIR=$root/models"
    MEDINFORM_AUTH_ALLOW_ANONYMOUS=false
    MEDINFORM_AUTH_RATE_LIMIT_PER_MINUTE=0
    MEDINFORM_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true
    "RUST_LOG=${RUST_LOG:-info}"
)
unset_caller=()
while IFS= read -r name; do
    unset_caller+=(-u "$name")
done < <(compgen -e | grep '^MEDINFORM_' || true)
medinform() { env "${unset_caller[@]}" "${settings[@]}" "$bin" "$@"; }

key="$(medinform keys create --tenant schemathesis --name schemathesis --scopes admin 2>"$work/keys.log")" ||
    die "medinform keys create failed: $(cat "$work/keys.log")"

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
# Not through the function: $! must be the server's own pid (env execs it).
env "${unset_caller[@]}" "${settings[@]}" "$bin" serve --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!
deadline=$((SECONDS + 60))
until "$py" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$base/healthz" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.log" >&2
        die "medinform serve exited before it answered /healthz"
    fi
    [[ $SECONDS -lt $deadline ]] || die "$base/healthz did not answer within 60 s"
    sleep 0.5
done
log "medinform serve is up on $base (data in $work/data)"

seed="${MEDINFORM_TEST_SCHEMATHESIS_SEED:-$("$py" -c 'import random; print(random.randrange(2**31))')}"
examples="${MEDINFORM_TEST_SCHEMATHESIS_EXAMPLES:-500}"
log "seed $seed (MEDINFORM_TEST_SCHEMATHESIS_SEED=$seed replays the run), $examples examples per operation"

rc=0
# From the temporary directory, so that schemathesis' caches stay out of the tree.
(
    cd "$work"
    SCHEMATHESIS_HOOKS="$here/hooks.py" \
        "$schemathesis" --config-file "$here/schemathesis.toml" run "$base/openapi.json" \
        --max-examples "$examples" \
        --seed "$seed" \
        --header "Authorization: Bearer $key" \
        --report junit --report-junit-path "$work/junit.xml" \
        "$@"
) || rc=$?

if [[ $rc -ne 0 ]]; then
    log "failed (exit $rc); the server's errors and warnings:"
    grep -aE ' (ERROR|WARN) ' "$work/server.log" | tail -n 50 >&2 || true
fi
# One test per operation (and one for the stateful sequences), from the JUnit report; one with a
# failure or an error counts as failed.
"$py" - "$work/junit.xml" "$rc" <<'PY'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError):
    cases = []
for case in cases:
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    elif case.find("skipped") is not None:
        skipped += 1
    else:
        passed += 1
if sys.argv[2] != "0" and failed == 0:
    failed = 1  # the run failed before or beside its operations (no schema, a warning)
print(f"schemathesis: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit "$rc"
