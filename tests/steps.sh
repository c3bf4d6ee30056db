# Step runner shared by tests/run-all.sh (sourced, not run): runs each step,
# whatever the earlier ones did, counts the passes and failures, and prints
# a summary that names the failed steps. tests/tests/steps.rs checks it on
# an induced failure.

passed=0
failed=0
failures=()

# step NAME COMMAND [ARG...]: runs the command and records whether it passed.
step() {
    local name=$1
    shift
    echo
    echo "==> $name"
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "==> $name: ok ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "==> $name: FAILED ($((SECONDS - start)) s)"
    fi
}

# summary: the failed steps, one per line, then the count line.
summary() {
    echo
    if ((failed)); then
        printf 'failed step: %s\n' "${failures[@]}"
    fi
    echo "run-all: $passed passed, $failed failed"
}

# finish: prints the summary; its status (the script's last) is non-zero if
# any step failed.
finish() {
    summary
    ((failed == 0))
}
