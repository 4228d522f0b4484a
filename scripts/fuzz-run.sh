#!/usr/bin/env bash
# Runs libFuzzer targets for a bounded time each and records the outcome.
#
#   scripts/fuzz-run.sh SECONDS TARGET...
#
# Runs build/fuzz/fuzz_TARGET for SECONDS seconds from its seed corpus
# (tests/fuzz/corpus/TARGET, read only) and its working corpus (build/fuzz/corpus-TARGET,
# where new finds go); prints one line per target ("N runs in S s, no failure"), keeps the
# log in build/fuzz/fuzz_TARGET.log, and with $TEST_RESULTS set appends
# "fuzz TARGET<TAB>passed<TAB>failed<TAB>0" to it.  A failing input is saved as
# build/fuzz/crash-TARGET-* and the end of the log is printed.  Exits 1 if any failed.
set -uo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 SECONDS TARGET..." >&2
    exit 2
fi
seconds=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

# session: the server loop thread frees memory after each input ends, so libFuzzer's
# per-input leak check would run (and find nothing) on every input, halving the rate;
# leaks are what the AddressSanitizer test runs and make valgrind check.
extra_session=(-detect_leaks=0)

failed=0
for t in "$@"; do
    bin=build/fuzz/fuzz_$t
    log=build/fuzz/fuzz_$t.log
    mkdir -p "build/fuzz/corpus-$t"
    extra_var="extra_$t[@]"
    if [ ! -x "$bin" ]; then
        echo "fuzz_$t: FAILED: no binary $bin (make fuzz)"
        ok=0
    elif timeout -k 10 $((seconds + 120)) "$bin" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="build/fuzz/crash-$t-" ${!extra_var+"${!extra_var}"} \
        "build/fuzz/corpus-$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz_$t: ${runs:-?} runs in $seconds s, no failure"
        ok=1
    else
        tail -n 40 "$log"
        echo "fuzz_$t: FAILED (log: $log)"
        ok=0
    fi
    [ $ok = 1 ] || failed=1
    if [ -n "${TEST_RESULTS:-}" ]; then
        printf 'fuzz %s\t%d\t%d\t0\n' "$t" "$ok" $((1 - ok)) >>"$TEST_RESULTS"
    fi
done
exit $failed
