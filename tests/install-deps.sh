#!/usr/bin/env bash
# Installs what the tests and benchmarks need on a Debian machine, and checks
# the Rust toolchains. Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
    build-essential g++ pkg-config     # C and C++ test programs
    valgrind                           # instruction counts (benches/callgrind.sh)
    python3 sqlite3 git redis-server redis-tools   # real programs under the shim
    libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0   # peers for the comparison
    procps                             # ps, for RSS readings
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found: install Rust with rustup" >&2
    exit 1
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "install-deps: no nightly toolchain: 'rustup toolchain install nightly' (needed for AddressSanitizer)" >&2
    exit 1
fi
echo "install-deps: all present"
