#!/usr/bin/env bash
# strata-kv under redis-benchmark, one build per allocator (Strata, mimalloc,
# the system allocator), runs interleaved.
#
# For each value size: one server per allocator, all started at once on
# fresh directories; redis-benchmark SET, GET, LPUSH, LPOP and MSET with
# -P 16, -r 100000 random keys and -d SIZE, one command per run of
# redis-benchmark, each command run against every server in turn, so that
# the allocators' runs of one command lie seconds apart (in a sweep that
# ran each server's whole sequence before the next, they lay minutes
# apart, and the machine's state drifted in between). Each run starts once
# no server runs a background compaction (INFO's `compacting:0`) and every
# server has gone quiet (no CPU time used over half a second). Then, for
# each server, 90% of the keys are deleted, the anonymous memory is read 2 s
# later (what the service gets back by itself), then a compaction is forced (COMPACT), and the
# peak RSS (VmHWM) and the RSS after that (VmRSS)
# are read from /proc/PID/status, beside the RSS of the same server idle
# just after it started (its fixed cost: binary, runtime, thread stacks).
# The anonymous part of the RSS (RssAnon: heap memory, stacks; not the
# binary's and libraries' pages, which the benchmark's code paths fault in
# whatever the allocator) is read at the same two moments. The servers run
# with glibc's cache of finished threads' stacks off
# (GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0), the same for all three,
# so that the stacks of the benchmark's finished connections, which no
# allocator controls, do not count as heap.
#
# With ROUNDS above 1, the whole sweep runs that many times (the order of
# the allocators rotating from round to round) and every figure is the median of
# the rounds: single runs move a lot on a shared 2-core machine, where the
# background compaction and the log's fsync land at different moments.
#
# With PIN=1 (the default on a machine with 2 CPUs or more), the server runs
# on CPU 1 and redis-benchmark on CPU 0 (taskset), so that the two never
# take turns on one CPU. Unpinned, on a 2-core machine, the scheduler's
# placement of 50 connection threads, the log thread and the client moves
# a build's figures by a factor of up to two from round to round;
# benches/RESULTS.md has the spread both ways.
#
# The single-key commands at 16 and 256 bytes (SET, GET, LPUSH, LPOP), and
# GET at every size, run N_FAST requests, ten times N by default: with N
# they took 0.1-0.2 s per run, and a 0.15 s run of one build moved by more
# than the differences between builds from round to round (benches/RESULTS.md
# has the spread). GET reads the keys SET wrote, so more of them cost
# neither memory nor log; the other commands at 4096 bytes keep N, which
# already takes 2 s or more for the writes (LPOP pops what LPUSH pushed).
#
# The figures of every run are saved, each with its round, with the charts
# drawn from them (`strata-bench kv-chart`: kv-throughput.svg, kv-p99.svg,
# kv-memory.svg) and the table of ratios and rounds won (kv-rounds.md, also
# printed), in $CARGO_TARGET_DIR/strata-report/kv/.
#
# Environment: N (requests per test, default 100000; N_FAST, default 10 N,
# for the single-key commands at 16 and 256 bytes and GET), SIZES (default
# "16 256 4096"), CLIENTS (default 50), ALLOCATORS (default
# "strata mimalloc system"; `strata-huge` adds the Strata build run with
# --huge-pages, `mimalloc-small` the mimalloc build without its
# transparent huge pages), ROUNDS (default 1), PIN (default 1 with 2 CPUs or more),
# KV_DIR (where the servers' log directories go, default /tmp: on this
# machine's disk; /dev/shm puts them in memory, see below),
# CARGO_TARGET_DIR.
#
# Every write command waits for its log record to be on disk (group commit,
# one fdatasync per batch), so with the logs on a disk the write rates
# measure the disk's flush latency as much as the server. KV_DIR=/dev/shm
# (tmpfs, where fdatasync returns at once) leaves the server's own work,
# the allocator's included, as the measure; the code is the same.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-100000}
N_FAST=${N_FAST:-$((N * 10))}
SIZES=${SIZES:-"16 256 4096"}
CLIENTS=${CLIENTS:-50}
ALLOCATORS=${ALLOCATORS:-"strata mimalloc system"}
ROUNDS=${ROUNDS:-1}
if [ "$(nproc)" -ge 2 ]; then PIN=${PIN:-1}; else PIN=0; fi
SERVER_CPUS=()
CLIENT_CPUS=()
if [ "$PIN" = 1 ]; then
    SERVER_CPUS=(taskset -c 1)
    CLIENT_CPUS=(taskset -c 0)
fi
KEYSPACE=100000
TESTS=set,get,lpush,lpop,mset

# shellcheck source=benches/kv-common.sh
. "$ROOT/benches/kv-common.sh"
kv_workdir "${KV_DIR:-/tmp}/strata-kv-bench.XXXXXX"

kv_build_servers
# The chart tool, built before the long run so that a build error shows at once.
cargo build --release -q -p strata-benches --bin strata-bench --manifest-path "$ROOT/Cargo.toml"

status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# RESP for DEL of 9 keys in every 10 (key:000000000001 .. 9, 11 .. 19, ...),
# the names redis-benchmark -r uses.
awk -v n=$KEYSPACE 'BEGIN {
    for (i = 0; i < n; i += 10) {
        printf "*10\r\n$3\r\nDEL\r\n";
        for (j = 1; j < 10; j++) printf "$16\r\nkey:%012d\r\n", i + j;
    }
}' >"$WORK/del.resp"

RESULTS=$WORK/results.csv
MEMORY=$WORK/memory.csv
DELETED=$WORK/deleted.csv
: >"$RESULTS"
: >"$MEMORY"
: >"$DELETED"

# The allocators' order rotates from round to round (round 2 starts with
# the second), so that none always runs first or after the same neighbour.
rotated() {
    local -a list=($ALLOCATORS)
    local n=${#list[@]} i
    for ((i = 0; i < n; i++)); do echo "${list[(i + $1 - 1) % n]}"; done
}

# Runs redis-benchmark's command $1 against the server of allocator $2 at
# the loop's value size $d, and appends its line, with the round $round,
# to $RESULTS.
run_test() {
    local t=$1 a=$2 requests=$N
    if [ "$t" = get ] || { [ "$t" != mset ] && [ "$d" -le 256 ]; }; then requests=$N_FAST; fi
    # A guard against a redis-benchmark that stalls (it spins when it
    # cannot connect); the run is then tried again.
    for try in 1 2; do
        if timeout 300 "${CLIENT_CPUS[@]}" redis-benchmark -h 127.0.0.1 -p "${PORT_OF[$a]}" -c "$CLIENTS" -P 16 -r $KEYSPACE -n "$requests" -d "$d" \
            -t "$t" --csv >"$WORK/bench.csv" 2>/dev/null; then
            break
        fi
        echo "redis-benchmark failed or stalled (try $try)" >&2
    done
    awk -F, -v r="$round" -v a="$a" -v d="$d" 'NR > 1 { gsub(/"/, ""); print r "," a "," d "," $1 "," $2 "," $5 "," $7 }' "$WORK/bench.csv" >>"$RESULTS"
}

# Waits until no server of this size runs a background compaction and each
# has gone quiet (see kv_wait_quiet).
settle() {
    local a
    for a in "${ORDER[@]}"; do
        SERVER_PID=${PID_OF[$a]}
        kv_wait_compaction "${PORT_OF[$a]}" || true
    done
    SERVER_PID=
    kv_wait_quiet "${SERVER_PIDS[@]}" || true
}

declare -A PID_OF PORT_OF IDLE_OF ANON_IDLE_OF
for round in $(seq 1 "$ROUNDS"); do
for d in $SIZES; do
    mapfile -t ORDER < <(rotated "$round")
    for a in "${ORDER[@]}"; do
        dir=$WORK/data-$a-$d
        rm -rf "$dir"
        kv_start "$WORK/server-$a.out" "$WORK/server-$a.err" \
            "${SERVER_CPUS[@]}" env $(environment_of "$a") "$WORK/strata-kv-$a" --port 0 --dir "$dir" $(options_of "$a")
        PID_OF[$a]=$SERVER_PID
        PORT_OF[$a]=$PORT
        SERVER_PIDS+=("$SERVER_PID")
        SERVER_PID=
        redis-cli -p "$PORT" PING >/dev/null
        IDLE_OF[$a]=$(status_kb "${PID_OF[$a]}" VmRSS)
        ANON_IDLE_OF[$a]=$(status_kb "${PID_OF[$a]}" RssAnon)
        echo "round $round: $a d=$d on port $PORT" >&2
    done
    # Each command runs against every server in turn, so that the
    # allocators' runs of one command lie seconds apart. Each run starts
    # once every server has finished the compaction that earlier writes
    # set off, and has gone quiet: otherwise a build that ran the earlier
    # commands faster meets its own background compaction, or another
    # server's, in a later run's window, and that run's figure measures
    # something else.
    for t in ${TESTS//,/ }; do
        for a in "${ORDER[@]}"; do
            settle
            run_test "$t" "$a"
        done
    done
    for a in "${ORDER[@]}"; do
        port=${PORT_OF[$a]}
        pid=${PID_OF[$a]}
        dir=$WORK/data-$a-$d
        keys_before=$(redis-cli -p "$port" DBSIZE)
        peak=$(status_kb "$pid" VmHWM)
        redis-cli -p "$port" --pipe <"$WORK/del.resp" >/dev/null
        # What the service gets back by itself, with no COMPACT: the
        # anonymous memory 2 s after the deletes.
        sleep 2
        echo "$a,$d,$(status_kb "$pid" RssAnon),${ANON_IDLE_OF[$a]}" >>"$DELETED"
        redis-cli -p "$port" COMPACT >/dev/null
        sleep 2
        rss=$(status_kb "$pid" VmRSS)
        anon=$(status_kb "$pid" RssAnon)
        keys=$(redis-cli -p "$port" DBSIZE)
        redis-cli -p "$port" INFO memory | tr -d '\r' >"$WORK/info-$a-$d-$round.txt"
        live=$(awk -F: '$1 == "strata_bytes_live" { print $2 }' "$WORK/info-$a-$d-$round.txt")
        disk=$(du -sk "$dir" | cut -f1)
        echo "$a,$d,$keys_before,$keys,$peak,$rss,${live:-0},$disk,${IDLE_OF[$a]},$anon,${ANON_IDLE_OF[$a]}" >>"$MEMORY"
        redis-cli -p "$port" SHUTDOWN >/dev/null 2>&1 || true
        wait "$pid" 2>/dev/null || true
        rm -rf "$dir"
    done
    SERVER_PIDS=()
done
done

# The median of column $2 of CSV file $1 for each distinct key formed by the
# columns before it (sorted by key, then value): one line per key, "key,median".
median_by() {
    local file=$1 column=$2
    awk -F, -v c="$column" '{ key = $1; for (i = 2; i < c; i++) key = key "," $i; print key "\t" $c }' "$file" |
        sort -t"$(printf '\t')" -k1,1 -k2,2g |
        awk -F'\t' '
            function flush() { if (n) print last "," (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2) }
            $1 != last { flush(); n = 0; last = $1 }
            { v[++n] = $2 }
            END { flush() }'
}

echo
echo "strata-kv, redis-benchmark -P 16 -c $CLIENTS -r $KEYSPACE -n $N (-n $N_FAST for GET, and for SET, LPUSH and LPOP at 16 and 256 bytes), one command per run, each after any compaction (MSET: 10 keys per request); latency in ms"
printf '%-14s %6s %-15s %12s %8s %8s\n' allocator size command rps p50 p99
# $RESULTS: round,allocator,size,command,rps,p50,p99.
cut -d, -f2-5 "$RESULTS" >"$WORK/rps.csv"
cut -d, -f2-4,6 "$RESULTS" >"$WORK/p50.csv"
cut -d, -f2-4,7 "$RESULTS" >"$WORK/p99.csv"
join -t, <(median_by "$WORK/rps.csv" 4 | sed 's/,/|/; s/,/|/' | sort) \
    <(median_by "$WORK/p50.csv" 4 | sed 's/,/|/; s/,/|/' | sort) |
    join -t, - <(median_by "$WORK/p99.csv" 4 | sed 's/,/|/; s/,/|/' | sort) |
    tr '|' , | sort -t, -k2,2n -k3,3 -k1,1 | while IFS=, read -r a d cmd rps p50 p99; do
    printf '%-14s %6s %-15s %12.0f %8.3f %8.3f\n' "$a" "$d" "$cmd" "$rps" "$p50" "$p99"
done

echo
echo "memory: idle RSS just after start; peak RSS (VmHWM) during the run; RSS after deleting 90% of the"
echo "keys and COMPACT (+2 s); estimate = keys x (16-byte key + value + 64 bytes of index per entry);"
echo "ratio = RSS after / estimate; net ratio = (RSS after - idle RSS) / estimate; strata_live = the heap"
echo "bytes Strata counts live after COMPACT (the program's own data, index, buffers; Strata build only);"
echo "anon = RssAnon after COMPACT less RssAnon idle (heap and stacks, no code pages), in MiB and as a"
echo "multiple of strata_live (the same program state under every allocator)"
[ "$ROUNDS" -gt 1 ] && echo "(medians of $ROUNDS rounds, each column on its own)"
for column in 3 4 5 6 7 8 9 10 11; do
    cut -d, -f1,2,"$column" "$MEMORY" >"$WORK/memory-$column.csv"
    median_by "$WORK/memory-$column.csv" 3 | sed 's/,/|/' | sort >"$WORK/memory-$column.median"
done
# strata_live of the Strata build at each size, for the anon ratio of all three.
declare -A strata_live=()
while IFS=, read -r key live; do
    [ "${key%%|*}" = strata ] && strata_live[${key#*|}]=$live
done <"$WORK/memory-7.median"
printf '%-14s %6s %8s %8s %9s %10s %10s %10s %7s %9s %12s %9s %9s %10s\n' allocator size keys0 keys1 idle_MiB peak_MiB after_MiB est_MiB ratio net_ratio strata_live disk_KiB anon_MiB anon/live
join -t, "$WORK/memory-3.median" "$WORK/memory-4.median" | join -t, - "$WORK/memory-5.median" |
    join -t, - "$WORK/memory-6.median" | join -t, - "$WORK/memory-7.median" |
    join -t, - "$WORK/memory-8.median" | join -t, - "$WORK/memory-9.median" |
    join -t, - "$WORK/memory-10.median" | join -t, - "$WORK/memory-11.median" |
    tr '|' , | sort -t, -k2,2n -k1,1 | while IFS=, read -r a d k0 k1 peak rss live disk idle anon anon_idle; do
    awk -v a="$a" -v d="$d" -v k0="$k0" -v k1="$k1" -v peak="$peak" -v rss="$rss" -v live="$live" -v disk="$disk" -v idle="$idle" \
        -v anon="$anon" -v anon_idle="$anon_idle" -v slive="${strata_live[$d]:-0}" 'BEGIN {
        est = k1 * (16 + d + 64)
        net_anon = (anon - anon_idle) * 1024
        printf "%-14s %6s %8.0f %8.0f %9.1f %10.1f %10.1f %10.1f %7.2f %9.2f %12s %9.0f %9.2f %10s\n", a, d, k0, k1, idle / 1024, peak / 1024, rss / 1024, est / 1048576, rss * 1024 / est, (rss - idle) * 1024 / est, (live > 0 ? sprintf("%.0f", live) : "-"), disk, net_anon / 1048576, (slive > 0 ? sprintf("%.2f", net_anon / slive) : "-")
    }'
done

echo
echo "memory after the deletes alone (no COMPACT; +2 s): RssAnon less RssAnon idle, MiB"
[ "$ROUNDS" -gt 1 ] && echo "(medians of $ROUNDS rounds)"
printf '%-14s %6s %9s\n' allocator size anon_MiB
awk -F, '{ print $1 "," $2 "," $3 - $4 }' "$DELETED" >"$WORK/deleted-net.csv"
median_by "$WORK/deleted-net.csv" 3 | sort -t, -k2,2n -k1,1 | awk -F, '{ printf "%-14s %6s %9.1f\n", $1, $2, $3 / 1024 }'

# Every run's figures, kept with a header, and the charts drawn from them
# (strata-bench kv-chart): throughput and p99 of each allocator ÷
# mimalloc's, and the memory after compaction ÷ the live heap.
REPORT=$CARGO_TARGET_DIR/strata-report/kv
mkdir -p "$REPORT"
rm -f "$REPORT"/info-*.txt
for info in "$WORK"/info-*.txt; do
    if [ -e "$info" ]; then cp "$info" "$REPORT/"; fi
done
{ echo "round,allocator,size,command,rps,p50_ms,p99_ms"; cat "$RESULTS"; } >"$REPORT/kv-runs.csv"
{ echo "allocator,size,keys_before,keys_after,peak_kib,rss_kib,live_bytes,disk_kib,idle_kib,anon_kib,anon_idle_kib"; cat "$MEMORY"; } >"$REPORT/kv-memory.csv"
{ echo "allocator,size,anon_deleted_kib,anon_idle_kib"; cat "$DELETED"; } >"$REPORT/kv-deleted.csv"
echo
if [[ " $ALLOCATORS " == *" mimalloc "* ]]; then
    "$CARGO_TARGET_DIR/release/strata-bench" kv-chart --runs "$REPORT/kv-runs.csv" --memory "$REPORT/kv-memory.csv" --out "$REPORT"
else
    echo "kv.sh: no charts (they compare with mimalloc, which did not run); the figures are in $REPORT"
fi
