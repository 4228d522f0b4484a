#!/usr/bin/env bash
# Runs the release st_proactor under Valgrind memcheck, for make valgrind: the
# integration tests start this script in place of the server (ST_PROACTOR).  Each run
# writes its report to $VALGRIND_LOGS/<pid>.log; any error or leak makes the server exit
# with status 99, which fails the test that started it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
logs=${VALGRIND_LOGS:-$root/build/valgrind}
mkdir -p "$logs"
exec valgrind --tool=memcheck --quiet --error-exitcode=99 --exit-on-first-error=no \
    --leak-check=full --show-leak-kinds=definite,indirect,possible \
    --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes \
    --fair-sched=yes --log-file="$logs/%p.log" "$root/st_proactor" "$@"
