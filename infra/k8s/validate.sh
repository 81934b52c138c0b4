#!/usr/bin/env bash
# Checks the Kubernetes manifests under infra/k8s offline (no cluster, no kustomize needed):
# renders the base and the overlays with render.py and runs validate.py's checks on them
# (Kubernetes and KEDA schemas, checkov, MedInform's settings, ...). Its last line is
# `k8s: N passed, M failed, K skipped`; the exit status is 1 when a check failed.
#
# Usage: infra/k8s/validate.sh [validate.py options: --keep DIR, --no-checkov, --settings-file F]
#
# Makes (or reuses) a throw-away venv, <repo>/target/k8s-venv, from requirements.txt beside this
# script; pip runs again only when that file or the Python changed. The interpreter is
# MEDINFORM_BOOTSTRAP_PYTHON (default python3, >= 3.11: validate.py reads TOML with tomllib).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$root/target/k8s-venv"
bootstrap="${MEDINFORM_BOOTSTRAP_PYTHON:-python3}"

log() { printf '[k8s] %s\n' "$*" >&2; }
die() {
    printf '[k8s] error: %s\n' "$*" >&2
    exit 2
}

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    command -v "$bootstrap" >/dev/null 2>&1 || die "'$bootstrap' not found: install Python >= 3.11"
    "$bootstrap" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
        die "$("$bootstrap" --version 2>&1) is too old: validate.py needs Python >= 3.11"
    log "creating $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$bootstrap" -m venv "$venv" || die "'$bootstrap -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)"
fi

stamp="$venv/.medinform-k8s-requirements.sha256"
want="$({
    "$venv/bin/python" -c 'import sys; print(sys.version)'
    cat "$here/requirements.txt"
} | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing $here/requirements.txt into $venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off --quiet \
        -r "$here/requirements.txt" >&2
    printf '%s\n' "$want" >"$stamp"
fi

exec "$venv/bin/python" "$here/validate.py" "$@"
