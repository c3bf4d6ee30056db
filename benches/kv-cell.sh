#!/usr/bin/env bash
# One cell of the strata-kv benchmark (benches/kv.sh), for A/B runs of
# several server builds side by side: `bash benches/kv-cell.sh BIN...`.
#
# Each BIN is a strata-kv executable (or a script that execs one, e.g. to
# set LD_PRELOAD); give each a distinct path. For every round, each server
# in turn (the order rotating from round to round) starts on a fresh directory, pinned to CPU 1; redis-benchmark
# (pinned to CPU 0) first runs the PRE tests, then the measured TEST, each
# once no background compaction is running (INFO's `compacting:0`). One line
# per server, size and round: requests per second of each PRE test and of
# TEST, TEST's p50 and p99 latency in ms, then the server's minor page
# faults, user and system time (clock ticks) over TEST alone, read from
# /proc/PID/stat, and the Strata counters INFO reports, before -> after.
#
# Environment: ROUNDS (default 4), SIZES (-d, default 16), TEST (default
# mset), PRE (default "set get lpush lpop"), N (requests, default 100000),
# CLIENTS (default 50), KV_DIR (where the servers' log directories go,
# default /tmp; /dev/shm takes the disk's flush latency out, see kv.sh).
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: bash benches/kv-cell.sh BIN... (strata-kv builds to compare)" >&2
    exit 2
fi
for bin in "$@"; do
    if [ ! -x "$bin" ]; then
        echo "kv-cell: $bin is not an executable" >&2
        exit 2
    fi
done
if [ "$(nproc)" -lt 2 ]; then
    echo "kv-cell: needs 2 CPUs to pin the server and the client apart" >&2
    exit 2
fi
command -v redis-benchmark >/dev/null || { echo "kv-cell: redis-benchmark not found (apt-get install redis-tools)" >&2; exit 2; }

ROUNDS=${ROUNDS:-4}
SIZES=${SIZES:-16}
TEST=${TEST:-mset}
PRE=${PRE:-"set get lpush lpop"}
N=${N:-100000}
CLIENTS=${CLIENTS:-50}
COUNTERS='^(strata_lock_acquisitions|strata_refills|strata_flushes|strata_remote_frees|strata_purges|strata_hole_walked_unlocked|strata_hole_filled_unlocked|strata_hole_fills_unlocked|log_batches):'

# shellcheck source=benches/kv-common.sh
. "$(dirname "$0")/kv-common.sh"
kv_workdir "${KV_DIR:-/tmp}/strata-kv-cell.XXXXXX"

# One test's CSV line from redis-benchmark: requests per second, then the
# latencies in ms (average, minimum, p50, p95, p99, maximum).
bench_line() {
    taskset -c 0 redis-benchmark -p "$1" -c "$CLIENTS" -P 16 -r 100000 -n "$N" -d "$SIZE" -t "$2" --csv 2>/dev/null \
        | tail -1 | tr -d '"'
}

# Requests per second of one test.
bench() {
    bench_line "$1" "$2" | cut -d, -f2
}

counters() {
    redis-cli -p "$1" INFO | tr -d '\r' | grep -E "$COUNTERS" | tr '\n' ' ' || true
}

BINS=("$@")
for round in $(seq "$ROUNDS"); do
  for SIZE in $SIZES; do
    # The order rotates from round to round, as in kv.sh.
    for ((i = 0; i < ${#BINS[@]}; i++)); do
        bin=${BINS[(i + round - 1) % ${#BINS[@]}]}
        rm -rf "$WORK/data"
        kv_start "$WORK/out" "$WORK/err" taskset -c 1 "$bin" --port 0 --dir "$WORK/data"
        port=$PORT
        rates=
        for test in $PRE; do
            kv_wait_compaction "$port"
            rates="$rates$test=$(bench "$port" "$test") "
        done
        kv_wait_compaction "$port"
        # The server's own process: a wrapper script execs the binary.
        before=($(cut -d' ' -f10,14,15 "/proc/$SERVER_PID/stat"))
        counters_before=$(counters "$port")
        IFS=, read -r _ rps _ _ p50 _ p99 _ <<<"$(bench_line "$port" "$TEST")"
        after=($(cut -d' ' -f10,14,15 "/proc/$SERVER_PID/stat"))
        counters_after=$(counters "$port")
        echo "$round $bin d=$SIZE $rates$TEST=$rps p50=$p50 p99=$p99 minflt=$((after[0] - before[0])) utime=$((after[1] - before[1])) stime=$((after[2] - before[2])) [${counters_before}-> ${counters_after}]"
        redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    done
  done
done
