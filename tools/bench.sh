#!/usr/bin/env bash
# Side-by-side fan-out benchmark: st_proactor (every backend x dispatch mode) against
# Redis pub/sub, NATS and `ncat --chat`, in one run on this machine, with one load
# generator (tools/chatbench).  Prints markdown tables (stdout) with ratios to Redis;
# progress goes to stderr.  Every server this script starts is stopped by PID.
#
#   tools/bench.sh           the full run (make bench; about 20 minutes)
#   tools/bench.sh --quick   a one-minute subset (make bench-quick)
#   tools/bench.sh --cluster the cluster tables only (make bench-cluster; about 3 minutes)
#   tools/bench.sh --compare OLD_BINARY [NAME]
#                            this build against another st_proactor (make bench-compare
#                            REV=...): the same runs, interleaved, in one go (about 3 minutes;
#                            BENCH_ROUNDS=N for more rounds than 3)
#
# Needs: make all chatbench, and redis-server, nats-server, ncat (scripts/deps.sh bench).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=full
server_old=
case "${1:-}" in
--quick) mode=quick ;;
--cluster) mode=cluster ;;
--compare) mode=compare server_old=${2:-} old_label=${3:-${2:-}} ;;
"") ;;
*) echo "usage: $0 [--quick | --cluster | --compare OLD_BINARY [NAME]]" >&2; exit 2 ;;
esac
if [ "$mode" = compare ] && [ ! -x "$server_old" ]; then
    echo "--compare needs the other st_proactor binary" >&2
    exit 2
fi

bench=build/release/chatbench
server=./st_proactor
[ -x "$bench" ] && [ -x "$server" ] || { echo "run 'make all chatbench' first" >&2; exit 1; }
for c in redis-server nats-server ncat; do
    command -v "$c" >/dev/null || { echo "$c missing: scripts/deps.sh bench" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
fd_hard=$(ulimit -Hn)

tmp=$(mktemp -d)
spid=
spids=() # every process of the server under test (a cluster: its nodes, then Redis)
stop_server() {
    local p
    for p in "${spids[@]}" $spid; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    spid=
    spids=()
}
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # PID...: user + system ticks of them all
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() { # below the ephemeral range, so no client socket of an earlier run holds it
    local p lo hi
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (lo - 10000)))
        port_open "$p" || { echo "$p"; return; }
    done
    echo "no free port" >&2
    exit 1
}

# wait_listening FILE: the port st_proactor printed in FILE
wait_listening() {
    local p=
    for _ in $(seq 200); do grep -q Listening "$1" && break; sleep 0.05; done
    p=$(sed -n 's/^Listening on port: \[\([0-9]*\)\].*/\1/p' "$1")
    [ -n "$p" ] || { cat "$1" >&2; echo "st_proactor did not start" >&2; exit 1; }
    echo "$p"
}

# start_server NAME: starts it, sets spid (spids), port and proto.  Names: redis, nats,
# ncat, st:BACKEND:DISPATCH, chat (chat mode, alone), cluster:N (N chat-mode nodes sharing
# one Redis; port is then their ports, comma-separated, for chatbench); old/NAME is NAME
# with the --compare binary.
start_server() {
    local name=$1 out=$tmp/server.out bin=$server
    case "$name" in old/*) bin=$server_old name=${name#old/} ;; esac
    : >"$out"
    proto=line
    case "$name" in
    chat)
        "$bin" --flood 0 -q --port 0 >"$out" 2>&1 &
        spid=$!
        port=$(wait_listening "$out")
        return
        ;;
    cluster:*)
        local n=${name#cluster:} rport i ports=()
        rport=$(free_port)
        redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no \
            --protected-mode no --client-output-buffer-limit 'pubsub 0 0 0' \
            --dir "$tmp" --logfile "$tmp/redis.log" >"$out" 2>&1 &
        spids+=($!)
        for _ in $(seq 200); do port_open "$rport" && break; sleep 0.05; done
        for i in $(seq "$n"); do
            "$bin" --flood 0 -q --port 0 --cluster "redis://127.0.0.1:$rport" \
                --node-name "n$i" >"$tmp/node$i.out" 2>&1 &
            spids=($! "${spids[@]}")
            ports+=("$(wait_listening "$tmp/node$i.out")")
        done
        sleep 0.3 # every node subscribed
        port=$(IFS=,; echo "${ports[*]}")
        return
        ;;
    st:*)
        local b d
        IFS=: read -r _ b d <<<"$name"
        "$bin" --raw --flood 0 -q --port 0 --backend "$b" --dispatch "$d" >"$out" 2>&1 &
        spid=$!
        port=$(wait_listening "$out")
        return
        ;;
    redis)
        proto=redis
        port=$(free_port)
        # No persistence, no output-buffer limit for subscribers, loopback only.
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --protected-mode no --client-output-buffer-limit 'pubsub 0 0 0' \
            --maxclients 200000 --dir "$tmp" --logfile "$tmp/redis.log" >"$out" 2>&1 &
        spid=$!
        ;;
    nats)
        proto=nats
        port=$(free_port)
        # Slow-consumer limit raised as far as it goes (1 GB pending), long write deadline.
        cat >"$tmp/nats.conf" <<EOF
listen: "127.0.0.1:$port"
max_pending: 1073741824
write_deadline: "60s"
max_connections: 200000
EOF
        nats-server -c "$tmp/nats.conf" >"$out" 2>&1 &
        spid=$!
        ;;
    ncat)
        port=$(free_port)
        ncat -l -k --chat --max-conns 200000 127.0.0.1 "$port" >"$out" 2>&1 &
        spid=$!
        ;;
    esac
    for _ in $(seq 200); do
        port_open "$port" && return
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.05
    done
    cat "$out" >&2
    [ "$name" = redis ] && tail -5 "$tmp/redis.log" >&2
    echo "$name did not start" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# Results: R[workload|server|key]=value

declare -A R
servers_st_all=(st:auto:pool st:epoll:pool st:io_uring:pool st:epoll:inline st:io_uring:inline
    st:epoll:thread st:io_uring:thread)
others=(redis nats ncat)

label() {
    case "$1" in
    old/*) echo "$(label "${1#old/}") — $old_label" ;;
    st:auto:pool) echo "st_proactor (default: ${auto_backend}, pool)" ;;
    st:*) IFS=: read -r _ b d <<<"$1"; echo "st_proactor $b, $d" ;;
    chat) echo "st_proactor, one server alone" ;;
    cluster:1) echo "st_proactor, one server + Redis (--cluster)" ;;
    cluster:*) echo "st_proactor, ${1#cluster:} servers + Redis (--cluster)" ;;
    redis) echo "Redis $redis_v pub/sub" ;;
    nats) echo "NATS $nats_v" ;;
    ncat) echo "ncat $ncat_v --chat" ;;
    esac
}

keys="deliveries_per_s lost reordered duplicated damaged order_mismatches p50_us p90_us p99_us
p999_us max_us deliveries expected sent end self foreign"

# run_load WORKLOAD SERVER ROUND ARGS...: one chatbench run against a fresh server.
run_load() {
    local w=$1 s=$2 r=$3
    shift 3
    if [ "$r" -gt 1 ] && [ -n "${R["$w|$s|1|failed"]:-}" ]; then
        R["$w|$s|$r|failed"]=1 # it could not run the first time; it will not now
        return
    fi
    start_server "$s"
    local extra=()
    [ "$s" = ncat ] && extra=(--connect-rate 500) # ncat listens with a backlog of 10
    local res cpu0 cpu1
    cpu0=$(cpu_ticks "${spids[@]}" $spid)
    res=$("$bench" --proto "$proto" --port "$port" "${extra[@]}" "$@" 2>"$tmp/cb.err" |
        grep '^RESULT' || true)
    cpu1=$(cpu_ticks "${spids[@]}" $spid)
    stop_server
    if [ -z "$res" ]; then
        log "  $w $(label "$s") round $r: no result ($(tail -1 "$tmp/cb.err"))"
        R["$w|$s|$r|failed"]=1
        R["$w|$s|why"]=$(tail -1 "$tmp/cb.err" | sed 's/^chatbench: could not run: //; s/|/-/g')
        return
    fi
    for k in $keys; do
        R["$w|$s|$r|$k"]=$(sed -n "s/.* $k=\([^ ]*\).*/\1/p" <<<"$res")
    done
    # server CPU (user + system, all threads) per delivery, connecting included
    R["$w|$s|$r|cpu_ns"]=$(awk -v a="$cpu0" -v b="$cpu1" -v d="${R["$w|$s|$r|deliveries"]}" \
        -v hz="$clk_tck" 'BEGIN { if (d > 0) printf "%.0f", (b - a) * 1e9 / hz / d }')
    log "  $w $(label "$s") round $r: $(sed -n 's/.* deliveries_per_s=\([^ ]*\).*/\1/p' <<<"$res") deliveries/s, lost $(sed -n 's/.* lost=\([^ ]*\).*/\1/p' <<<"$res"), p99 $(sed -n 's/.* p99_us=\([^ ]*\).*/\1/p' <<<"$res") us"
}

# median over rounds of one key; sum of counters over rounds
median() { # w s key
    local vals=() r
    for r in $(seq "$rounds"); do
        [ -n "${R["$1|$2|$r|$3"]:-}" ] && vals+=("${R["$1|$2|$r|$3"]}")
    done
    [ ${#vals[@]} -gt 0 ] || { echo "-"; return; }
    printf '%s\n' "${vals[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
total() { # w s key
    local t=0 r v any=0
    for r in $(seq "$rounds"); do
        v=${R["$1|$2|$r|$3"]:-}
        [ -n "$v" ] && { t=$((t + v)); any=1; }
    done
    [ $any = 1 ] && echo "$t" || echo "-"
}
failed_rounds() {
    local n=0 r
    for r in $(seq "$rounds"); do [ -n "${R["$1|$2|$r|failed"]:-}" ] && n=$((n + 1)); done
    echo "$n"
}

fmt_rate() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2fM", v / 1e6 }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f×", a / b }'; }

check_fail=0
check_clean() { # w s: st_proactor must lose nothing
    local k v
    for k in lost reordered duplicated damaged order_mismatches; do
        v=$(total "$1" "$2" "$k")
        if [ "$v" != 0 ]; then
            log "CHECK FAILED: $1 $(label "$2"): $k=$v"
            check_fail=1
        fi
    done
    if [ "$(failed_rounds "$1" "$2")" != 0 ]; then
        log "CHECK FAILED: $1 $(label "$2"): a round did not run"
        check_fail=1
    fi
}

fanout_table() { # w title servers...
    local w=$1 title=$2 s
    shift 2
    local base; base=$(median "$w" redis deliveries_per_s)
    echo
    echo "### $title"
    echo
    echo "Median of $rounds rounds; counters summed over the rounds."
    echo
    echo "| server | deliveries/s | × Redis | server CPU per delivery | lost | reordered | duplicated | damaged | order mismatches | p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "$@"; do
        local d; d=$(median "$w" "$s" deliveries_per_s)
        local note=""
        [ "$(failed_rounds "$w" "$s")" != 0 ] && note=" (did not run: ${R["$w|$s|why"]:-see log})"
        local c; c=$(median "$w" "$s" cpu_ns)
        echo "| $(label "$s")$note | $(fmt_rate "$d") | $(ratio "$d" "$base") | ${c/#-/-}$([ "$c" != - ] && echo " ns") | $(total "$w" "$s" lost) | $(total "$w" "$s" reordered) | $(total "$w" "$s" duplicated) | $(total "$w" "$s" damaged) | $(total "$w" "$s" order_mismatches) | $(fmt_ms "$(median "$w" "$s" p99_us)") |"
        case "$s" in st:* | chat | cluster:*) check_clean "$w" "$s" ;; esac
    done
}

latency_table() { # w title servers...
    local w=$1 title=$2 s
    shift 2
    local base; base=$(median "$w" redis p99_us)
    echo
    echo "### $title"
    echo
    echo "| server | deliveries/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 ÷ Redis p99 | lost | reordered | order mismatches |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "$@"; do
        local note=""
        [ "$(failed_rounds "$w" "$s")" != 0 ] && note=" (did not run: ${R["$w|$s|why"]:-see log})"
        local p99; p99=$(median "$w" "$s" p99_us)
        echo "| $(label "$s")$note | $(fmt_rate "$(median "$w" "$s" deliveries_per_s)") | $(fmt_ms "$(median "$w" "$s" p50_us)") | $(fmt_ms "$(median "$w" "$s" p90_us)") | $(fmt_ms "$p99") | $(fmt_ms "$(median "$w" "$s" p999_us)") | $(fmt_ms "$(median "$w" "$s" max_us)") | $(ratio "$p99" "$base") | $(total "$w" "$s" lost) | $(total "$w" "$s" reordered) | $(total "$w" "$s" order_mismatches) |"
        case "$s" in st:* | chat | cluster:*) check_clean "$w" "$s" ;; esac
    done
}

# idle_run SERVER K SOURCES [HOLD_ARGS]: sets I[server|key]
declare -A I
idle_run() {
    local s=$1 k=$2 src=$3
    start_server "$s"
    local extra=()
    [ "$s" = ncat ] && extra=(--connect-rate 2000)
    local res
    res=$("$bench" --proto "$proto" --port "$port" --idle "$k" --sources "$src" \
        --server-pid "$spid" --settle 2 --timeout 120 "${extra[@]}" 2>"$tmp/cb.err" |
        grep '^RESULT' || true)
    stop_server
    for key in conns reached rss_before_kb rss_after_kb bytes_per_conn server_closed; do
        I["$s|$key"]=$(sed -n "s/.* $key=\([^ ]*\).*/\1/p" <<<"$res")
    done
    log "  idle $k $(label "$s"): ${I["$s|bytes_per_conn"]:-?} B/conn, ${I["$s|conns"]:-?} open"
    [ -n "$res" ] || log "    ($(tail -1 "$tmp/cb.err"))"
}

idle_table() { # k servers...
    local k=$1 s
    shift
    local base=${I["redis|bytes_per_conn"]:-}
    echo
    echo "### Memory: $k idle connections"
    echo
    echo "Server RSS (VmRSS) before and after $k connections opened and settled."
    echo
    echo "| server | connections held | RSS before | RSS after | bytes per connection | × Redis |"
    echo "|---|---:|---:|---:|---:|---:|"
    for s in "$@"; do
        local b=${I["$s|bytes_per_conn"]:-}
        echo "| $(label "$s") | ${I["$s|conns"]:--} | ${I["$s|rss_before_kb"]:--} kB | ${I["$s|rss_after_kb"]:--} kB | ${b:--} | $(ratio "${b:--}" "${base:--}") |"
        case "$s" in st:*)
            if [ "${I["$s|reached"]:-0}" != 1 ] || [ "${b%.*}" -gt 1024 ] 2>/dev/null; then
                log "CHECK FAILED: idle $(label "$s"): ${b:-no result} B/conn, reached=${I["$s|reached"]:-0}"
                check_fail=1
            fi ;;
        esac
    done
}

# ---------------------------------------------------------------------------

redis_v=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
nats_v=$(nats-server --version | sed -n 's/.*v\([0-9.]*\).*/\1/p')
ncat_v=$(ncat --version 2>&1 | sed -n 's/.*Version \([^ ]*\).*/\1/p')
"$server" --raw --port 0 >"$tmp/probe.out" 2>&1 &
spid=$!
for _ in $(seq 100); do grep -q Listening "$tmp/probe.out" && break; sleep 0.05; done
stop_server
auto_backend=$(sed -n 's/.*: backend \([a-z_]*\).*/\1/p' "$tmp/probe.out" | head -1)
[ -n "$auto_backend" ] || auto_backend=auto

if [ "$mode" = compare ]; then
    rounds=${BENCH_ROUNDS:-3}
    st_servers=()
    msgs=1000
    lat_s=3
elif [ "$mode" = cluster ]; then
    rounds=3
    st_servers=()
    msgs=2000
    lat_s=5
elif [ "$mode" = quick ]; then
    rounds=1
    st_servers=(st:auto:pool st:epoll:thread)
    msgs=1000
    lat_s=3
else
    rounds=3
    st_servers=()
    for s in "${servers_st_all[@]}"; do # the default row already is auto's backend with pool
        [ "$s" = "st:$auto_backend:pool" ] || st_servers+=("$s")
    done
    msgs=2000
    lat_s=5
fi
all_servers=("${st_servers[@]}" "${others[@]}")

cat <<EOF
# st_proactor benchmark ($mode run)

- Date: $(date -u '+%Y-%m-%d %H:%M UTC')
- Machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r); descriptor hard limit $fd_hard
- st_proactor $(git rev-parse --short HEAD 2>/dev/null || echo '?'), built with $(${CC:-gcc} --version | head -1); default backend here: $auto_backend
- Redis $redis_v, NATS $nats_v, ncat $ncat_v (Debian packages)
- Load generator: tools/chatbench (epoll; two threads for throughput, one for latency and idle),
  on the same machine and CPUs as the server, loopback, 64-byte messages. Every server is
  started fresh for every run.
- Settings: st_proactor \`--raw --flood 0\` (the original relay, no rate limit; other limits at
  their defaults), in the cluster tables chat mode with \`--flood 0\`; Redis without persistence and with no pub/sub output-buffer limit; NATS
  with max_pending 1 GB and write_deadline 60 s; \`ncat -l -k --chat\`.
- st_proactor rows: backend (io_uring, epoll) and dispatch: \`pool\` (worker threads, the
  default), \`inline\` (handlers on the I/O thread), \`thread\` (a new thread per message: the
  original design).
EOF

# ---------------------------------------------------------------------------
# Before and after (--compare): the relay, chat mode and chat mode with Redis, each build
# in turn in every round, so that both see the same machine; then idle memory.
if [ "$mode" = compare ]; then
    cmp_modes=(st:auto:pool chat cluster:1)
    cmp_servers=()
    for s in "${cmp_modes[@]}"; do cmp_servers+=("$s" "old/$s"); done
    log "== before and after"
    for r in $(seq "$rounds"); do
        for s in "${cmp_servers[@]}"; do
            run_load fan100 "$s" "$r" --clients 100 --messages "$msgs" --size 64 --threads 2
            run_load lat1m "$s" "$r" --clients 100 --publishers 10 --rate 1010 \
                --duration "$lat_s" --size 64
        done
    done
    for s in st:auto:pool old/st:auto:pool; do idle_run "$s" 10000 2; done
    echo
    echo "## This build against $old_label"
    echo
    echo "Rows: \`--raw\` (the default pool dispatch, auto backend), chat mode, and chat mode"
    echo "with \`--cluster\` (one server and its Redis), each this build and the one before,"
    echo "alternating in every round. × Redis is empty: Redis does not run here."
    fanout_table fan100 "Throughput: 100 clients, all publishing $msgs messages" "${cmp_servers[@]}"
    latency_table lat1m "Latency: 100 clients, 10 publishing 1010 messages/s each" "${cmp_servers[@]}"
    idle_table 10000 st:auto:pool old/st:auto:pool
    echo
    echo "### After ÷ before (medians of $rounds rounds)"
    echo
    echo "| mode | deliveries/s | server CPU per delivery | p99 (fixed rate) |"
    echo "|---|---:|---:|---:|"
    for s in "${cmp_modes[@]}"; do
        echo "| $(label "$s") | $(ratio "$(median fan100 "$s" deliveries_per_s)" "$(median fan100 "old/$s" deliveries_per_s)") | $(ratio "$(median fan100 "$s" cpu_ns)" "$(median fan100 "old/$s" cpu_ns)") | $(ratio "$(median lat1m "$s" p99_us)" "$(median lat1m "old/$s" p99_us)") |"
    done
    exit $check_fail
fi

if [ "$mode" != cluster ]; then
log "== fan-out"
for r in $(seq "$rounds"); do
    for s in "${all_servers[@]}"; do
        [ "$mode" = full ] && run_load fan10 "$s" "$r" --clients 10 --messages "$msgs" --size 64 \
            --threads 2
        run_load fan100 "$s" "$r" --clients 100 --messages "$msgs" --size 64 --threads 2
        [ "$mode" = full ] && run_load fan1000 "$s" "$r" --clients 1000 --publishers 20 \
            --messages "$msgs" --size 64 --timeout 120 --threads 2
    done
done

echo
echo "## Fan-out throughput"
echo
echo "Each publisher keeps at most 64 of its messages in flight; a message counts as done when"
echo "every other client has it, so the rate is what the slowest receiver sustains. The load"
echo "generator runs two threads and needs about 100 ns of CPU per delivery; it shares the"
echo "machine's CPUs with the server, so at the top it, not the server, sets the pace: the"
echo "server's own CPU time per delivery (user + system, all threads, from /proc) shows what each"
echo "server costs."
[ "$mode" = full ] && fanout_table fan10 "10 clients, all publishing $msgs messages" "${all_servers[@]}"
fanout_table fan100 "100 clients, all publishing $msgs messages" "${all_servers[@]}"
[ "$mode" = full ] && fanout_table fan1000 "1000 clients, 20 publishing $msgs messages" "${all_servers[@]}"

log "== latency"
# 100 clients, 10 publishers at a fixed rate each: every message goes to 99 receivers.
for r in $(seq "$rounds"); do
    for s in "${all_servers[@]}"; do
        [ "$mode" = full ] && run_load lat100k "$s" "$r" --clients 100 --publishers 10 \
            --rate 101 --duration "$lat_s" --size 64
        run_load lat1m "$s" "$r" --clients 100 --publishers 10 --rate 1010 --duration "$lat_s" \
            --size 64
    done
done
echo
echo "## Latency at a fixed rate"
echo
echo "100 clients, 10 of them publishing at a fixed rate for $lat_s s; latency from each"
echo "message's *scheduled* send time to its arrival (no coordinated omission). Each figure is"
echo "the median over $rounds round(s); counters are summed. On this shared machine the same"
echo "configuration can differ by a third from one run to the next, mostly in the tail."
[ "$mode" = full ] && latency_table lat100k "About 100,000 deliveries/s (10 × 101 messages/s × 99 receivers)" "${all_servers[@]}"
latency_table lat1m "About 1,000,000 deliveries/s (10 × 1010 messages/s × 99 receivers)" "${all_servers[@]}"

log "== idle connections"
if [ "$mode" = full ]; then
    other=epoll
    [ "$auto_backend" = epoll ] && other=io_uring
    idle_servers=(st:auto:pool "st:$other:pool" redis nats ncat)
else
    idle_servers=(st:auto:pool redis)
fi
for s in "${idle_servers[@]}"; do idle_run "$s" 10000 2; done
echo
echo "## Memory per idle connection"
idle_table 10000 "${idle_servers[@]}"

if [ "$mode" = full ]; then
    # As many idle connections as the descriptor limit allows (the load generator and the
    # server each need one per connection), up to 100,000, held while 100 active clients
    # publish; the idle ones are in the same room, so they receive every message too.
    big=$((fd_hard - 300))
    [ "$big" -gt 100000 ] && big=100000
    log "== $big idle connections + 100 active clients"
    start_server st:auto:pool
    "$bench" --port "$port" --idle "$big" --sources 8 --server-pid "$spid" --settle 2 \
        --timeout 120 --hold 45 >"$tmp/idle.out" 2>"$tmp/idle.err" &
    ipid=$!
    for _ in $(seq 1200); do grep -q '^RESULT' "$tmp/idle.out" && break
        kill -0 "$ipid" 2>/dev/null || break; sleep 0.1; done
    act=$("$bench" --port "$port" --clients 100 --publishers 10 --rate 0.1 --duration 30 \
        --size 64 2>"$tmp/cb.err" | grep '^RESULT' || true)
    wait "$ipid" || true
    rss_peak=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$spid/status")
    stop_server
    ires=$(grep '^RESULT' "$tmp/idle.out" || true)
    hres=$(grep '^HOLD' "$tmp/idle.out" || true)
    g() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
    echo
    echo "### $big idle connections held while 100 active clients publish"
    echo
    if [ "$big" -lt 100000 ]; then
        echo "This machine's descriptor hard limit is $fd_hard (and raising it needs privileges"
        echo "the benchmark does not have), so $big connections is the most it can hold; the"
        echo "100,000 target needs \`ulimit -Hn\` above 100,300."
        echo
    fi
    echo "100 active clients, 10 of them publishing 0.1 messages/s each for 30 s. The idle"
    echo "connections are in the same room (\`--raw\` has one), so every message also goes to each"
    echo "of them, one small write per connection: the latency is the time a message takes to reach"
    echo "all $big + 99 recipients, the active ones last (they joined last)."
    echo
    echo "| idle held | bytes per idle connection | closed by server | active: delivered | p50 ms | p99 ms | p99.9 ms | lost | reordered | order mismatches | server peak RSS |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    echo "| $(g conns "$ires") of $big | $(g bytes_per_conn "$ires") | $(g closed_by_server "$hres") | $(g deliveries "$act") of $(g expected "$act") | $(fmt_ms "$(g p50_us "$act")") | $(fmt_ms "$(g p99_us "$act")") | $(fmt_ms "$(g p999_us "$act")") | $(g lost "$act") | $(g reordered "$act") | $(g order_mismatches "$act") | $((rss_peak / 1024)) MB |"
    if [ "$(g reached "$ires")" != 1 ] || [ "$(g lost "$act")" != 0 ] || [ -z "$act" ] ||
        [ "$(g order_mismatches "$act")" != 0 ] || [ "$(g closed_by_server "$hres")" != 0 ]; then
        log "CHECK FAILED: idle+active: $(cat "$tmp/idle.err" "$tmp/cb.err" | tail -2)"
        check_fail=1
    fi
fi


fi # not --cluster

# ---------------------------------------------------------------------------
# Clustering (issue 8): chat mode, clients split between the nodes (client i on node
# i mod n), every line through Redis and back, against one server alone and Redis alone.
cluster_servers=(chat cluster:1 cluster:2 redis)
log "== cluster"
for r in $(seq "$rounds"); do
    for s in "${cluster_servers[@]}"; do
        run_load cfan100 "$s" "$r" --clients 100 --messages "$msgs" --size 64 --threads 2
        run_load clat "$s" "$r" --clients 100 --publishers 10 --rate 1010 --duration "$lat_s" \
            --size 64
    done
done
echo
echo "## Cluster: several servers sharing a room through Redis"
echo
echo "Chat mode (\`--flood 0\`, lines arrive as \`<guestN> ...\`): one server alone; one server"
echo "with \`--cluster\` (every line goes to Redis and is delivered, on its own server too,"
echo "only when it comes back: that is what gives every member on every server the same"
echo "order); two servers with the 100 clients split between them. Redis pub/sub alone is"
echo "the same load straight on Redis. Server CPU counts every process of the row (the nodes"
echo "and their Redis). \"order mismatches\" compares the order of every receiver, on both"
echo "servers, against the others."
fanout_table cfan100 "Throughput: 100 clients, all publishing $msgs messages" "${cluster_servers[@]}"
latency_table clat "Latency: 100 clients, 10 publishing 1010 messages/s each (about 1,000,000 deliveries/s)" "${cluster_servers[@]}"

if [ "$mode" = cluster ]; then
    exit $check_fail
fi

# ---------------------------------------------------------------------------
# Targets (issue 6), from the tables above.
tgt() { # description ok [other]: other = the compared figure, "-" when it did not run
    if [ "${3:-x}" = - ]; then echo "| $1 | n/a: the other server did not run it |"
    elif [ "$2" = 1 ]; then echo "| $1 | met |"
    else echo "| $1 | **missed** |"; fi
}
ge() { awk -v a="$1" -v b="$2" -v k="$3" 'BEGIN { print (a != "-" && b != "-" && a >= k * b) ? 1 : 0 }'; }
echo
echo "## Targets"
echo
echo "| target | result |"
echo "|---|---|"
for w in fan100 fan1000; do
    [ "$mode" = quick ] && [ $w = fan1000 ] && continue
    d=$(median $w st:auto:pool deliveries_per_s)
    for o in "ncat 1.2" "redis 2.5" "nats 2"; do
        read -r name k <<<"$o"
        od=$(median $w "$name" deliveries_per_s)
        tgt "$w: default ≥ $k× $(label "$name") ($(ratio "$d" "$od"))" "$(ge "$d" "$od" "$k")" "$od"
    done
done
for w in lat100k lat1m; do
    [ "$mode" = quick ] && [ $w = lat100k ] && continue
    p=$(median $w st:auto:pool p99_us)
    p9=$(median $w st:auto:pool p999_us)
    tgt "$w: p99 ≤ Redis p99 ($(fmt_ms "$p") vs $(fmt_ms "$(median $w redis p99_us)") ms)" "$(ge "$(median $w redis p99_us)" "$p" 1)"
    tgt "$w: p99.9 ≤ 2× p99 ($(fmt_ms "$p9") vs $(fmt_ms "$p") ms)" "$(ge "$p" "$p9" 0.5)"
done
b=${I["${idle_servers[0]}|bytes_per_conn"]:-99999}
tgt "≤ 1 KiB RSS per idle connection ($b B, $(label "${idle_servers[0]}"))" "$(ge 1024 "$b" 1)"
if [ $check_fail = 0 ]; then
    tgt "st_proactor: 0 lost, reordered, duplicated, damaged, order mismatches, every run" 1
else
    tgt "st_proactor: 0 lost, reordered, duplicated, damaged, order mismatches, every run" 0
fi
exit $check_fail
