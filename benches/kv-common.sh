# Shared by benches/kv.sh, benches/kv-cell.sh and benches/kv-callgrind.sh
# (sourced, not run): the work directory and its clean-up, the server build
# of each allocator name, starting a strata-kv server, and waiting for its
# background compaction.

# Makes the work directory $WORK (mktemp template $1), removed on exit
# together with any server still running ($SERVER_PID, and those whose
# pids a script keeps in the array SERVER_PIDS).
kv_workdir() {
    WORK=$(mktemp -d "$1")
    SERVER_PID=
    SERVER_PIDS=()
    trap kv_cleanup EXIT
    trap 'exit 1' INT TERM
}

kv_cleanup() {
    local pid
    for pid in $SERVER_PID "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}

# Starts `COMMAND...` (a strata-kv server given --port 0) in the background
# with stdout to OUT and stderr to ERR, and waits for the port it prints:
# sets SERVER_PID and PORT, or says why and exits.
kv_start() {
    local out=$1 err=$2
    shift 2
    # Emptied here, before the server starts: the background job opens OUT
    # when it gets to run, and the loop below must never read the previous
    # server's port from a file not yet truncated.
    : >"$out"
    : >"$err"
    GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0 "$@" >"$out" 2>"$err" &
    SERVER_PID=$!
    PORT=
    for _ in $(seq 1 200); do
        PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" 2>/dev/null || true)
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    echo "server did not start: $*" >&2
    cat "$err" >&2
    exit 1
}

# Waits (up to a minute) until the server on port $1 runs no background
# compaction (INFO's `compacting:0`); returns 1 if it still does then.
kv_wait_compaction() {
    for _ in $(seq 1 600); do
        if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "the server on port $1 (pid $SERVER_PID) has exited" >&2
            return 1
        fi
        redis-cli -p "$1" INFO | tr -d '\r' | grep -qx 'compacting:0' && return 0
        sleep 0.1
    done
    echo "compaction did not finish on port $1" >&2
    return 1
}

# The CPU time (utime + stime in /proc/PID/stat, in clock ticks) of each
# process given, one per line.
kv_cpu_ticks() {
    local pid
    for pid in "$@"; do
        awk '{ print $14 + $15 }' "/proc/$pid/stat" || return 1
    done
}

# Waits (up to 20 s) until none of the processes given has used CPU time
# over the same half second: a server that has just answered a benchmark
# still closes connections and, a few hundred milliseconds later, returns
# what the run freed, and that work must not land in the next run's
# window. All are watched in each window, so several servers cost one
# wait, not one each. Returns 1 if they never went quiet together.
kv_wait_quiet() {
    local before after
    before=$(kv_cpu_ticks "$@" 2>/dev/null) || return 1
    for _ in $(seq 1 40); do
        sleep 0.5
        after=$(kv_cpu_ticks "$@" 2>/dev/null) || return 1
        [ "$after" = "$before" ] && return 0
        before=$after
    done
    echo "the processes $* did not go quiet" >&2
    return 1
}

# The build (cargo feature alloc-NAME), the environment and the server
# options of each allocator name: `strata-huge` is the Strata build run
# with --huge-pages; `mimalloc-small` is the mimalloc build with its
# transparent huge page advice off (MIMALLOC_ALLOW_THP=0), on small pages
# as Strata is by default.
build_of() { case $1 in strata-huge) echo strata ;; mimalloc-small) echo mimalloc ;; *) echo "$1" ;; esac; }
environment_of() { case $1 in mimalloc-small) echo MIMALLOC_ALLOW_THP=0 ;; esac; }
options_of() { case $1 in strata-huge) echo --huge-pages ;; esac; }

# Builds strata-kv for every name in $ALLOCATORS into $WORK/strata-kv-NAME
# (needs $ROOT and $CARGO_TARGET_DIR), then puts back the default build
# (Strata) as target/release/strata-kv, so that the binary a user runs next
# is the one its name promises.
kv_build_servers() {
    local a
    for a in $ALLOCATORS; do
        echo "building strata-kv with alloc-$(build_of "$a")" >&2
        cargo build --release -q -p strata-kv --no-default-features --features "alloc-$(build_of "$a")" --manifest-path "$ROOT/Cargo.toml"
        cp "$CARGO_TARGET_DIR/release/strata-kv" "$WORK/strata-kv-$a"
    done
    cargo build --release -q -p strata-kv --manifest-path "$ROOT/Cargo.toml"
}
