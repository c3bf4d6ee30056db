#!/usr/bin/env bash
# Runs every test of the project: the core's unit, model, loom and stress
# tests, the GlobalAlloc program, the no_std arena build, the shim's C and C++
# tests, real programs under the shim, clippy, and the core under
# AddressSanitizer. Installs what it needs on Debian (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
step() {
    local name=$1
    shift
    echo
    echo "==> $name"
    "$@"
    passed=$((passed + 1))
}

step "install dependencies" bash tests/install-deps.sh
step "build (release)" cargo build --release --workspace
step "workspace tests (release)" cargo test --workspace --release --all-features
step "core without std: arena source" \
    cargo test -p strata --release --no-default-features --features arena --test arena
step "core builds with no features" cargo build -p strata --no-default-features
step "clippy" cargo clippy --workspace --all-targets --all-features -- -D warnings
step "rustdoc" env RUSTDOCFLAGS="-D warnings" cargo doc -p strata --no-deps --all-features
# AddressSanitizer over the core's unsafe code. Doc-tests are left out: they
# do not take the sanitizer runtime.
step "core under AddressSanitizer (nightly)" \
    env RUSTFLAGS=-Zsanitizer=address \
    cargo +nightly test -p strata --all-features --target x86_64-unknown-linux-gnu --lib --tests

echo
echo "run-all: $passed passed, 0 failed"
