#!/usr/bin/env bash
# Side-by-side benchmark of libproactor's backends, in one run on this
# machine: st_proactor --raw under epoll and io_uring (pool dispatch, the
# default), fan-out with 100 clients all publishing 64-byte messages, and
# server memory per idle connection.  Prints a table; every server this
# script starts is stopped by PID.  Usage: tools/bench-backends.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bench=build/release/chatbench
server=./st_proactor
[ -x "$bench" ] && [ -x "$server" ] || { echo "run 'make all chatbench' first" >&2; exit 1; }

pid=
stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap stop EXIT

start() { # backend
    local out; out=$(mktemp)
    "$server" --raw --flood 0 -q --port 0 --backend "$1" >"$out" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do grep -q Listening "$out" && break; sleep 0.05; done
    port=$(sed -n 's/^Listening on port: \[\([0-9]*\)\].*/\1/p' "$out")
    rm -f "$out"
    [ -n "$port" ] || { echo "server ($1) did not start" >&2; exit 1; }
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

printf '%-9s %-6s %14s %6s %9s %9s %12s\n' backend round deliveries/s lost reordered p99_ms idle_B/conn
for r in $(seq "$rounds"); do
    for b in epoll io_uring; do
        start "$b"
        res=$("$bench" --port "$port" --clients 100 --messages 2000 --size 64 | grep '^RESULT')
        stop
        start "$b"
        idle=$("$bench" --port "$port" --idle 10000 --sources 2 --server-pid "$pid" | grep '^RESULT' || true)
        stop
        printf '%-9s %-6s %14s %6s %9s %9s %12s\n' "$b" "$r" \
            "$(echo "$res" | field deliveries_per_s)" "$(echo "$res" | field lost)" \
            "$(echo "$res" | field reordered)" \
            "$(awk -v us="$(echo "$res" | field p99_us)" 'BEGIN { printf "%.1f", us / 1000 }')" \
            "$(echo "$idle" | field bytes_per_conn)"
    done
done
