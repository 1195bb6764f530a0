#!/usr/bin/env bash
# Installs what Postern's build and tests need on a fresh Debian machine. Safe to run again.
set -euo pipefail

packages=(ca-certificates util-linux procps iproute2 curl swaks python3)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    if [ "${#missing[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
elif [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: missing Debian packages (install as root): ${missing[*]}" >&2
    exit 1
fi
command -v cargo >/dev/null || { echo "setup: cargo (stable Rust) is required" >&2; exit 1; }
