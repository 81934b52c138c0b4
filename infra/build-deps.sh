#!/usr/bin/env bash
# The build tools cargo needs besides Rust: CMake and NASM, which build libjpeg-turbo (the JPEG
# decoder training uses too) from the sources the `turbojpeg` crate vendors. Installed with
# apt-get when missing and running as root on Debian/Ubuntu; otherwise says what to install.
#
#   infra/build-deps.sh          (infra/run and infra/test call it before cargo)
set -euo pipefail

missing=()
for tool in cmake nasm; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    printf '[build-deps] installing %s with apt-get\n' "${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    exit 0
fi
printf '[build-deps] error: %s not found: install them (Debian/Ubuntu: apt-get install cmake nasm; macOS: brew install cmake nasm); libjpeg-turbo is built with them\n' "${missing[*]}" >&2
exit 1
