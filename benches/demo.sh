#!/usr/bin/env bash
# Strata in one command: build the workspace in release, run a real program
# (python3 on the bundled benches/workloads/python_workload.py) on glibc's
# malloc and under the Strata shim side by side, print wall time and peak RSS
# for each, then the shim's own statistics table (STRATA_STATS=1).
#
# Usage: benches/demo.sh
#
# Environment:
#   CARGO_TARGET_DIR      honoured, as cargo does (default: <repo>/target)
#   STRATA_DEMO_ROUNDS    interleaved rounds per allocator (default: 3)
#   STRATA_DEMO_WORKLOAD  `python` (default) or `python-malloc`, the same
#                         script with PYTHONMALLOC=malloc so that every Python
#                         object goes through malloc
#
# Runs non-interactively; installs python3 with apt-get when missing and run
# as root. Exits 0 on success and non-zero on any failure, including output
# that differs between the two allocators.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
rounds="${STRATA_DEMO_ROUNDS:-3}"
workload="${STRATA_DEMO_WORKLOAD:-python}"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$repo/$target" ;; esac

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --- prerequisites -----------------------------------------------------------
command -v cargo >/dev/null || die "cargo is not installed (see https://rustup.rs)"
if [ ! -x /usr/bin/python3 ]; then
    [ "$(id -u)" -eq 0 ] || die "python3 is missing; run: sudo apt-get install -y python3"
    say "Installing python3"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q python3 || { apt-get update -q && apt-get install -y -q python3; }
fi

# --- build -------------------------------------------------------------------
say "Building the workspace in release (cargo build --release --workspace)"
cargo build --release --workspace
shim="$target/release/libstrata.so"
compare="$target/release/compare_programs"
[ -f "$shim" ] || die "the build did not produce $shim"
[ -x "$compare" ] || die "the build did not produce $compare"

# --- run ---------------------------------------------------------------------
say "Running python3 benches/workloads/python_workload.py ($workload) on glibc and with LD_PRELOAD=$shim"
echo "    $rounds interleaved round(s) each; the outputs of both allocators must be identical."
STRATA_SHIM="$shim" "$compare" \
    --workloads "$workload" --allocators glibc,strata --rounds "$rounds" --stats

say "Done. Try it on any program:  STRATA_STATS=1 LD_PRELOAD=$shim <command>"
