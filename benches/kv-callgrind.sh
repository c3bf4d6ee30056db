#!/usr/bin/env bash
# Instructions per request of the strata-kv server, per allocator build,
# counted by callgrind: the repeatable companion of benches/kv.sh, whose
# rates and latencies move from run to run on a shared machine.
#
# Usage: bash benches/kv-callgrind.sh
#   env: ALLOCATORS (default "strata mimalloc system"; the names of
#        kv.sh, `strata-huge` and `mimalloc-small` too), SIZES (default
#        "16 256 4096"), N (requests per command, default 20000), CLIENTS
#        (default 50), KV_DIR (the servers' log directories, default
#        /dev/shm: no disk wait, which callgrind would not count anyway),
#        CACHE_SIM (1: also simulate the caches, `--cache-sim=yes`, and
#        print the first-level and last-level data cache misses per
#        request; slower).
#
# Each build serves under `valgrind --tool=callgrind --instr-atstart=no`;
# for every size, the commands of kv.sh run in order (SET, GET, LPUSH,
# LPOP, MSET of 10 keys) through redis-benchmark -P 16 with random keys,
# each with instrumentation switched on for that command alone (after any
# compaction the ones before it started), and dumped on its own. Every
# thread of the server counts: the connections, the log writer, compaction.
# The table gives instructions per request and each build's ratio to
# mimalloc's. The counts repeat to within a few per cent from run to run
# (the threads interleave differently, and the log's group commit batches
# differently), unlike times.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ALLOCATORS=${ALLOCATORS:-"strata mimalloc system"}
SIZES=${SIZES:-"16 256 4096"}
N=${N:-20000}
CLIENTS=${CLIENTS:-50}
TESTS="set get lpush lpop mset"
CACHE_SIM=${CACHE_SIM:-0}
CALLGRIND_OPTIONS=(--tool=callgrind --instr-atstart=no)
[ "$CACHE_SIM" = 1 ] && CALLGRIND_OPTIONS+=(--cache-sim=yes)

for tool in valgrind callgrind_control redis-benchmark redis-cli; do
    command -v "$tool" >/dev/null || { echo "kv-callgrind: $tool not found (apt-get install valgrind redis-tools)" >&2; exit 2; }
done

# shellcheck source=benches/kv-common.sh
. "$ROOT/benches/kv-common.sh"
kv_workdir "${KV_DIR:-/dev/shm}/strata-kv-callgrind.XXXXXX"

kv_build_servers

RESULTS=$WORK/results.csv
: >"$RESULTS"
for d in $SIZES; do
    for a in $ALLOCATORS; do
        echo "size $d: $a" >&2
        rm -rf "$WORK/data"
        kv_start "$WORK/out" "$WORK/err" env $(environment_of "$a") valgrind "${CALLGRIND_OPTIONS[@]}" \
            --callgrind-out-file="$WORK/cg.$a.$d" "$WORK/strata-kv-$a" --port 0 --dir "$WORK/data" $(options_of "$a")
        port=$PORT
        for t in $TESTS; do
            kv_wait_compaction "$port"
            callgrind_control -i on "$SERVER_PID" >/dev/null 2>&1
            redis-benchmark -h 127.0.0.1 -p "$port" -c "$CLIENTS" -P 16 -r 100000 -n "$N" -d "$d" -t "$t" --csv >/dev/null 2>&1
            # The dump holds what ran since the one before (instrumentation
            # was off in between): this command alone.
            callgrind_control --dump="$t" "$SERVER_PID" >/dev/null 2>&1
            callgrind_control -i off "$SERVER_PID" >/dev/null 2>&1
        done
        redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        # One file per dump, named after the command by its trigger line.
        for f in "$WORK/cg.$a.$d".*; do
            t=$(sed -n 's/^desc: Trigger: dump //p' "$f")
            total=$(sed -n "s/^totals: //p" "$f" | head -1)
            [ -n "$t" ] && echo "$a,$d,$t,$total" >>"$RESULTS"
        done
        rm -f "$WORK/cg.$a.$d"*
    done
done

# Prints a table with a row per size and command and a column per
# allocator, after an empty line and the title $1. Each cell is what the
# awk statements $2 print from the allocator's totals for that command,
# split into c[] (Ir first; with --cache-sim=yes, Ir Dr Dw I1mr D1mr D1mw
# ILmr DLmr DLmw), mimalloc's split into b[] (empty without mimalloc), and
# n, the requests.
table() {
    echo
    echo "$1"
    printf '| size | command |'
    for a in $ALLOCATORS; do printf ' %s |' "$a"; done
    printf '\n|---|---|'
    for a in $ALLOCATORS; do printf -- '---|'; done
    printf '\n'
    for d in $SIZES; do
        for t in $TESTS; do
            base=$(awk -F, -v d="$d" -v t="$t" '$1 == "mimalloc" && $2 == d && $3 == t { print $4 }' "$RESULTS")
            printf '| %s | %s |' "$d" "${t^^}"
            for a in $ALLOCATORS; do
                awk -F, -v a="$a" -v d="$d" -v t="$t" -v n="$N" -v base="$base" '
                    $1 == a && $2 == d && $3 == t { split($4, c, " "); split(base, b, " "); '"$2"' }' "$RESULTS"
            done
            printf '\n'
        done
    done
}

table "strata-kv under callgrind: instructions per request, all server threads (redis-benchmark -P 16 -c $CLIENTS -r 100000 -n $N; MSET: 10 keys per request); in brackets, ÷ mimalloc's" '
    if (b[1] > 0) printf " %.0f (%.2f) |", c[1] / n, c[1] / b[1]; else printf " %.0f |", c[1] / n'

[ "$CACHE_SIM" = 1 ] || exit 0
# Data misses are D1mr + D1mw (first level) and DLmr + DLmw (last level),
# as callgrind's simulated caches count them.
table "the same runs, data cache misses per request as callgrind simulates them (first level / last level); in brackets, ÷ mimalloc's" '
    first = c[5] + c[6]; last = c[8] + c[9]; base_first = b[5] + b[6]; base_last = b[8] + b[9]
    if (base_first > 0 && base_last > 0) printf " %.1f / %.2f (%.2f / %.2f) |", first / n, last / n, first / base_first, last / base_last
    else printf " %.1f / %.2f |", first / n, last / n'
