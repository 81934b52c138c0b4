#!/usr/bin/env bash
# Creates or updates the project's Python virtual environment, <repo>/.venv, and prints the path
# of the ONNX Runtime shared library inside it (the value for ORT_DYLIB_PATH) on stdout.
# Everything else goes to stderr, so callers can write:
#
#     ORT_DYLIB_PATH="$(infra/setup-python.sh --runtime)"
#
# Usage: infra/setup-python.sh [--dev | --runtime]
#   --dev      (default) infra/requirements.txt + infra/requirements-training.txt: everything the
#              test suite and the training pipeline need (torch included, several GB).
#   --runtime  infra/requirements-runtime.txt only: ONNX Runtime, all `medinform serve` needs.
#
# Idempotent: pip runs only when the requirement files (or the base Python) changed since the last
# successful install, which is recorded in a stamp file inside .venv.
#
# Environment:
#   MEDINFORM_BOOTSTRAP_PYTHON  the interpreter that creates the venv (default: python3, >= 3.11)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$root/.venv"

log() { printf '[setup-python] %s\n' "$*" >&2; }
die() {
    printf '[setup-python] error: %s\n' "$*" >&2
    exit 1
}

profile=dev
case "${1:-}" in
    "" | --dev) profile=dev ;;
    --runtime) profile=runtime ;;
    -h | --help)
        sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument '$1' (expected --dev or --runtime)" ;;
esac

runtime_files=("$here/requirements-runtime.txt")
# requirements.txt includes requirements-runtime.txt with `-r`, so it is hashed here too.
dev_files=("$here/requirements-runtime.txt" "$here/requirements.txt" "$here/requirements-training.txt")

bootstrap="${MEDINFORM_BOOTSTRAP_PYTHON:-python3}"

# --- the virtual environment ------------------------------------------------------------------
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    command -v "$bootstrap" >/dev/null 2>&1 ||
        die "'$bootstrap' not found: install Python >= 3.11 (Debian/Ubuntu: apt-get install python3 python3-venv) or set MEDINFORM_BOOTSTRAP_PYTHON"
    "$bootstrap" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
        die "$("$bootstrap" --version 2>&1) is too old: onnxruntime 1.31 needs Python >= 3.11 (set MEDINFORM_BOOTSTRAP_PYTHON)"
    log "creating $venv with $("$bootstrap" --version 2>&1)"
    rm -rf "$venv"
    "$bootstrap" -m venv "$venv" ||
        die "'$bootstrap -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)"
fi
py="$venv/bin/python"

# The stamp names the interpreter and the exact requirement files' contents.
requirements_hash() {
    {
        "$py" -c 'import sys; print(sys.version)'
        cat "$@"
    } | sha256sum | cut -d' ' -f1
}
runtime_hash="$(requirements_hash "${runtime_files[@]}")"
dev_hash="$(requirements_hash "${dev_files[@]}")"
runtime_stamp="$venv/.medinform-requirements-runtime.sha256"
dev_stamp="$venv/.medinform-requirements-dev.sha256"

stamp_matches() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

pip_install() {
    # pip's own output goes to stderr: stdout carries only the library path.
    "$py" -m pip install --disable-pip-version-check --progress-bar off "$@" >&2
}

if [[ "$profile" == dev ]]; then
    if stamp_matches "$dev_stamp" "$dev_hash"; then
        log "requirements unchanged (dev), skipping pip"
    else
        log "installing infra/requirements.txt + infra/requirements-training.txt (torch: several GB, takes minutes the first time)"
        pip_install -r "$here/requirements.txt" -r "$here/requirements-training.txt"
        printf '%s\n' "$dev_hash" >"$dev_stamp"
        # The dev set includes the runtime set.
        printf '%s\n' "$runtime_hash" >"$runtime_stamp"
    fi
else
    if stamp_matches "$runtime_stamp" "$runtime_hash"; then
        log "requirements unchanged (runtime), skipping pip"
    else
        log "installing infra/requirements-runtime.txt"
        pip_install -r "$here/requirements-runtime.txt"
        printf '%s\n' "$runtime_hash" >"$runtime_stamp"
    fi
fi

# --- the ONNX Runtime library ----------------------------------------------------------------
# The wheel ships libonnxruntime.so.<version> (no unversioned symlink).
shopt -s nullglob
libs=("$venv"/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so*)
shopt -u nullglob
[[ ${#libs[@]} -gt 0 ]] ||
    die "no libonnxruntime.so* under $venv/lib/python3.*/site-packages/onnxruntime/capi/ (is onnxruntime installed?)"
log "ONNX Runtime library: ${libs[0]}"
printf '%s\n' "${libs[0]}"
