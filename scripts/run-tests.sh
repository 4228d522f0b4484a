#!/usr/bin/env bash
# Runs one Criterion test binary and records its counts.
#
#   scripts/run-tests.sh [--no-aslr] LABEL BINARY [VAR=VALUE...]
#
# Runs BINARY with VAR=VALUE in its environment, prints Criterion's output and then its
# synthesis line prefixed by "[LABEL]", and appends "LABEL<TAB>passed<TAB>failed<TAB>skipped"
# to $TEST_RESULTS (default build/test-results.txt).  A binary that dies or times out
# before its synthesis, or exits non-zero with no failing test (a sanitizer report after
# a test body, say), counts one more failure.  Exits 1 if anything failed.
#
# --no-aslr runs the binary (and all it starts) without address-space randomisation: the
# TSan variant needs it (see tests/support/criterion_tsan.c).
#
# Environment: TEST_JOBS (2) tests at once; TEST_BINARY_TIMEOUT (600) seconds for the
# whole binary.  Criterion 2.4.1 has no default per-test timeout (--timeout only lowers
# the .timeout that a test or suite sets), so each test or TestSuite sets .timeout.
set -uo pipefail

wrap=()
if [ "${1:-}" = --no-aslr ]; then
    wrap=(setarch "$(uname -m)" -R)
    shift
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 [--no-aslr] LABEL BINARY [VAR=VALUE...]" >&2
    exit 2
fi
label=$1
bin=$2
shift 2

root=$(cd "$(dirname "$0")/.." && pwd)
results=${TEST_RESULTS:-$root/build/test-results.txt}
jobs=${TEST_JOBS:-2}
limit=${TEST_BINARY_TIMEOUT:-600}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

record() { # record PASSED FAILED SKIPPED
    mkdir -p "$(dirname "$results")"
    printf '%s\t%d\t%d\t%d\n' "$label" "$1" "$2" "$3" >>"$results"
}

if [ ! -x "$bin" ]; then
    echo "[$label] FAILED: no test binary $bin"
    record 0 1 0
    exit 1
fi

log=$bin.log
tap=$bin.tap
rm -f "$log" "$tap"

echo "==== [$label] $bin"
env "$@" timeout -k 30 "$limit" "${wrap[@]}" "$bin" --jobs "$jobs" --color=never --tap="$tap" \
    2>&1 </dev/null | tee "$log"
rc=${PIPESTATUS[0]}

synthesis=$(grep -a 'Synthesis: Tested:' "$log" | tail -n 1 | sed 's/^.*Synthesis:/Synthesis:/')
passed=0 failed=0 skipped=0
if [ -n "$synthesis" ]; then
    passed=$(sed -n 's/.*Passing: \([0-9]*\).*/\1/p' <<<"$synthesis")
    failed=$(sed -n 's/.*Failing: \([0-9]*\).*/\1/p' <<<"$synthesis")
    echo "[$label] $synthesis"
    # A test whose body passed but whose process then died (a leak report at exit, a
    # crash in .fini) is only a warning to Criterion; here it is a failure.
    late=$(grep -a -c 'crashed during its setup or teardown' "$log")
    if [ "$late" -gt 0 ]; then
        echo "[$label] FAILED: $late test(s) crashed during setup or teardown (see above)"
        passed=$((passed > late ? passed - late : 0))
        failed=$((failed + late))
    fi
    if [ -f "$tap" ]; then
        skipped=$(grep -a -c '^ok .*# SKIP' "$tap")
        if [ "$skipped" -gt 0 ]; then
            echo "[$label] SKIPPED $skipped test(s):"
            grep -a '^ok .*# SKIP' "$tap" | sed 's/^ok - /    /'
        fi
    fi
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        echo "[$label] FAILED: $bin exited with status $rc"
        failed=1
    fi
else
    case $rc in
    124 | 137) echo "[$label] FAILED: $bin timed out after ${limit}s, before its synthesis" ;;
    *) echo "[$label] FAILED: $bin ended (status $rc) before its synthesis" ;;
    esac
    failed=$((failed + 1))
fi

record "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
