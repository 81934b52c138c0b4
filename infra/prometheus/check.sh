#!/usr/bin/env bash
# Checks the Prometheus files with Prometheus's own promtool (Debian's `prometheus` package,
# installed with apt-get when missing and running as root):
#   - alerts.yml parses and every expression is valid PromQL (`promtool check rules`);
#   - each alert fires, and stays quiet, as alerts.test.yml says (`promtool test rules`);
#   - prometheus.yml (docker compose's) is a valid configuration (`promtool check config`, on a
#     copy whose rule file points at alerts.yml here instead of the container's path).
#
# Usage: infra/prometheus/check.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[prometheus] %s\n' "$*" >&2; }

if ! command -v promtool >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing promtool (Debian package prometheus) with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
    else
        log "error: promtool not found: install it (Debian: apt-get install prometheus)"
        exit 1
    fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/medinform-prometheus.XXXXXX")"
trap 'rm -rf "$work"' EXIT

promtool check rules "$here/alerts.yml"
promtool test rules "$here/alerts.test.yml"
sed "s|/etc/prometheus/alerts.yml|$here/alerts.yml|" "$here/prometheus.yml" >"$work/prometheus.yml"
grep -q "$here/alerts.yml" "$work/prometheus.yml" ||
    { log "error: prometheus.yml no longer loads /etc/prometheus/alerts.yml"; exit 1; }
promtool check config "$work/prometheus.yml"
