#!/usr/bin/env bash
# Runs the measurements of BENCHMARKS.md on this machine, in one go, and prints one line per
# run (the load generator's table row, or Redis's summary). The server is pinned to
# SERVER_CPU, the load generator to BENCH_CPU; the 2-shard run uses SERVER_CPU and BENCH_CPU,
# so on a 2-CPU machine it shares a CPU with the generator.
#
#   bench/benchmarks.sh                       # everything, JSON reports under target/benchmarks
#   SECTIONS="redis put" bench/benchmarks.sh  # some sections only
#
# Sections: redis put shards batch floor open fanout placement storm scaling scaling-control
# memory. Environment:
# SERVER_CPU (0), BENCH_CPU (1), DURATION (8 s per run), OUT (target/benchmarks), BUILD (1: build
# the release binaries first; 0: use those in $BIN, default target/release, as they are),
# SERVER_ARGS (more options for every server started, like `--spin-before-park-us 200`).
# The memory section (not in the default set, ~1 minute) fills one shard with ~1,000,000 keys of
# ~64-byte values and prints resident bytes per key; with STEADY_SECONDS=600 it then overwrites
# them for 10 minutes at STEADY_RATE (20,000) ops/s and prints RSS every 30 s.
# The scaling section (not in the default set) needs a machine with spare CPUs: it runs 1, 2, 4…
# shards (SCALE_SHARDS, "1 2 4 8") on the first N CPUs of SCALE_SERVER_CPUS ("0 1 2 3 4 5 6 7"),
# 50 connections and maps per shard, with the generator on SCALE_BENCH_CPUS ("8-15").
# scaling-control runs N independent 1-shard servers instead (server i on the i-th of
# SCALE_SERVER_CPUS, its own generator on CPU SCALE_CONTROL_BENCH_FIRST + i, default 8): the
# sum is what N cores of this machine give with no traffic between shards. Both warm up for
# SCALE_WARMUP seconds (3) before measuring.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
DURATION=${DURATION:-8}
OUT=${OUT:-target/benchmarks}
SECTIONS=${SECTIONS:-redis put shards batch floor open fanout placement storm}
# Scaling runs warm up longer: every shard holds 500,000 keys whatever N is, and at N shards each
# fills more slowly, so with the usual 1 s a larger share of its measured writes would be inserts.
SCALE_WARMUP=${SCALE_WARMUP:-3}
BIN=${BIN:-target/release}
# The write workload of every put run: 50 connections, one map each (no connection gets events
# of another's writes), OP_BATCH of 10, values of about 64 bytes like redis-benchmark -d 64.
PUT_ARGS=(--conns 50 --batch 10 --maps 50 --value-bytes 40)
# Keys per connection of the put runs (--keys): 10,000, so 500,000 keys in all. redis-benchmark
# writes one key unless given -r, so each side is also run the other's way: Redis over 500,000
# random keys (-r 500000) and shardgrid with one key per connection (put-1-shard-hot-keys),
# which keeps every key's record, tree leaf and change entry in cache as Redis's one key is.
REDIS_KEYS=500000

mkdir -p "$OUT"
if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release -q -p shardgrid -p shardgrid-bench
fi

SERVER_PID=""
PORT=""
start_server() { # CPU list, extra server args...
    local cpus=$1
    shift
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of options
    "$BIN/shardgrid" --no-auth --storage memory --port 0 --host 127.0.0.1 --cores "$cpus" ${SERVER_ARGS:-} "$@" \
        >"$OUT/server.stdout" 2>"$OUT/server.stderr" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        PORT=$(sed -n 's/^PORT=//p' "$OUT/server.stdout")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    echo "server did not start" >&2
    exit 1
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}
trap stop_server EXIT

run() { # label, bench CPU, scenario and its arguments...; prints every row of its table
    local label=$1 cpus=$2
    shift 2
    "$BIN/shardgrid-bench" "$@" --url "ws://127.0.0.1:$PORT/ws" --cores "$cpus" --quiet \
        --duration "$DURATION" --json "$OUT/$label.json" | grep -v '^scenario' |
        while IFS= read -r row; do printf '%-28s %s\n' "$label" "$row"; done
}

ops_per_s() { # JSON report -> the first row's ops/s, rounded
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rows"][0]["ops_per_s"]))' "$1"
}

want() { [[ " $SECTIONS " == *" $1 "* ]]; }

echo "# $(date -u +%FT%TZ) $(nproc) CPUs, server CPU $SERVER_CPU, generator CPU $BENCH_CPU, ${DURATION}s per run"

if want redis && command -v redis-server >/dev/null; then
    taskset -c "$SERVER_CPU" redis-server --port 6399 --save '' --appendonly no >/dev/null &
    REDIS_PID=$!
    sleep 0.5
    printf '%-28s %s\n' "redis SET -c50 -P10 -d64" \
        "$(taskset -c "$BENCH_CPU" redis-benchmark -p 6399 -t set -c 50 -P 10 -d 64 -n 3000000 -q | tr '\r' '\n' | tail -n 2 | head -n 1)"
    printf '%-28s %s\n' "redis SET -c50 -P10 -r$REDIS_KEYS" \
        "$(taskset -c "$BENCH_CPU" redis-benchmark -p 6399 -t set -c 50 -P 10 -d 64 -r "$REDIS_KEYS" -n 3000000 -q | tr '\r' '\n' | tail -n 2 | head -n 1)"
    printf '%-28s %s\n' "redis SET -c1 -P1 -d64" \
        "$(taskset -c "$BENCH_CPU" redis-benchmark -p 6399 -t set -c 1 -P 1 -d 64 -n 100000 -q | tr '\r' '\n' | tail -n 2 | head -n 1)"
    kill "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null || true
fi

if want put || want open; then
    start_server "$SERVER_CPU"
    run put-1-shard "$BENCH_CPU" put "${PUT_ARGS[@]}"
    stop_server
    if want put; then
        start_server "$SERVER_CPU"
        run put-1-shard-hot-keys "$BENCH_CPU" put "${PUT_ARGS[@]}" --keys 1
        stop_server
    fi
fi

if want shards; then
    start_server "$SERVER_CPU,$BENCH_CPU"
    run put-2-shards "$BENCH_CPU" put "${PUT_ARGS[@]}"
    stop_server
fi

if want batch; then
    for batch in 1 10 100; do
        start_server "$SERVER_CPU"
        run "put-batch-$batch" "$BENCH_CPU" put --conns 50 --batch "$batch" --maps 50 --value-bytes 40
        stop_server
    done
fi

if want floor; then
    start_server "$SERVER_CPU"
    run floor-1-conn-batch-1 "$BENCH_CPU" put --conns 1 --batch 1 --value-bytes 40
    stop_server
fi

if want open; then
    peak=$(ops_per_s "$OUT/put-1-shard.json")
    for percent in 25 50 75; do
        start_server "$SERVER_CPU"
        run "open-${percent}pct-of-$peak" "$BENCH_CPU" put "${PUT_ARGS[@]}" --rate $((peak * percent / 100))
        stop_server
    done
fi

if want fanout; then
    # FANOUT_BENCH_CPUS: the generator's CPUs for these runs (default BENCH_CPU). One generator
    # thread receiving every subscriber's frames falls behind before the server does.
    for subscribers in 1 100 1000; do
        start_server "$SERVER_CPU"
        run "fanout-$subscribers-subs" "${FANOUT_BENCH_CPUS:-$BENCH_CPU}" fanout --subscribers "$subscribers" --writers 1 --rate 400
        stop_server
    done
fi

if want placement; then
    # The tuning.md advice measured: the generator on the server's CPU instead of its own.
    start_server "$SERVER_CPU"
    run put-generator-same-cpu "$SERVER_CPU" put "${PUT_ARGS[@]}"
    stop_server
fi

if want storm; then
    start_server "$SERVER_CPU"
    printf '%-28s %s\n' connect-storm-2000x3 "$("$BIN/shardgrid-bench" connect-storm --url "ws://127.0.0.1:$PORT/ws" \
        --cores "$BENCH_CPU" --conns 2000 --rounds 3 --quiet --json "$OUT/connect-storm.json" | tail -n 1)"
    stop_server
fi

# CPU time (user + system, in clock ticks) a process has used so far; 0 once it is gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

if want scaling; then
    read -r -a server_cpus <<<"${SCALE_SERVER_CPUS:-0 1 2 3 4 5 6 7}"
    one=""
    for shards in ${SCALE_SHARDS:-1 2 4 8}; do
        cpus=$(IFS=,; echo "${server_cpus[*]:0:$shards}")
        start_server "$cpus"
        run "scaling-$shards-shards" "${SCALE_BENCH_CPUS:-8-15}" put --conns $((50 * shards)) --batch 10 \
            --maps $((50 * shards)) --value-bytes 40 --warmup "$SCALE_WARMUP" &
        run_pid=$!
        # CPU use of server and generator over 2 s in the middle of the measured window, in
        # CPUs (1.0 = one CPU busy all the time), to tell which side was the limit.
        sleep $((SCALE_WARMUP + DURATION / 2))
        bench_pid=$(pgrep -n -f "shardgrid-bench put" || true)
        s0=$(cpu_ticks "$SERVER_PID") b0=$(cpu_ticks "$bench_pid")
        sleep 2
        s1=$(cpu_ticks "$SERVER_PID") b1=$(cpu_ticks "$bench_pid")
        wait "$run_pid"
        stop_server
        ops=$(ops_per_s "$OUT/scaling-$shards-shards.json")
        one=${one:-$ops}
        printf '%-28s %s ops/s, %s x one shard, %s x (N x one shard); CPUs busy: server %s, generator %s\n' \
            "scaling-$shards-shards" "$ops" "$(python3 -c "print(round($ops / $one, 2))")" \
            "$(python3 -c "print(round($ops / ($one * $shards), 2))")" \
            "$(python3 -c "print(round(($s1 - $s0) / 200, 2))")" "$(python3 -c "print(round(($b1 - $b0) / 200, 2))")"
    done
fi

if want scaling-control; then
    read -r -a server_cpus <<<"${SCALE_SERVER_CPUS:-0 1 2 3 4 5 6 7}"
    for shards in ${SCALE_SHARDS:-1 2 4 8}; do
        pids=() run_pids=()
        for ((i = 0; i < shards; i++)); do
            "$BIN/shardgrid" --no-auth --storage memory --port 0 --host 127.0.0.1 --cores "${server_cpus[$i]}" \
                >"$OUT/control-$i.stdout" 2>/dev/null &
            pids+=($!)
        done
        for ((i = 0; i < shards; i++)); do
            port=""
            for _ in $(seq 1 100); do
                port=$(sed -n 's/^PORT=//p' "$OUT/control-$i.stdout")
                [ -n "$port" ] && break
                sleep 0.05
            done
            "$BIN/shardgrid-bench" put --url "ws://127.0.0.1:$port/ws" --cores $((${SCALE_CONTROL_BENCH_FIRST:-8} + i)) \
                --quiet --warmup "$SCALE_WARMUP" --duration "$DURATION" --json "$OUT/control-$shards-$i.json" \
                "${PUT_ARGS[@]}" >/dev/null &
            run_pids+=($!)
        done
        wait "${run_pids[@]}"
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
        total=0
        for ((i = 0; i < shards; i++)); do
            total=$((total + $(ops_per_s "$OUT/control-$shards-$i.json")))
        done
        one_control=${one_control:-$total}
        printf '%-28s %s ops/s in all, %s x one\n' "control-$shards-independent" "$total" \
            "$(python3 -c "print(round($total / $one_control, 2))")"
    done
fi

if want memory; then
    start_server "$SERVER_CPU"
    idle_kib=$(awk '/^VmRSS/{print $2}' "/proc/$SERVER_PID/status")
    # 50 maps of 21,000 keys each, written at random until nearly every key exists.
    "$BIN/shardgrid-bench" put --url "ws://127.0.0.1:$PORT/ws" --cores "$BENCH_CPU" --quiet --conns 50 --batch 10 \
        --maps 50 --keys 21000 --value-bytes 40 --duration "${FILL_SECONDS:-40}" --json "$OUT/memory-fill.json" >/dev/null
    rss_kib=$(awk '/^VmRSS/{print $2}' "/proc/$SERVER_PID/status")
    keys=$(python3 -c 'import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print(sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith("shardgrid_records")))' "$PORT")
    printf '%-28s %s keys, RSS %s KiB (idle %s KiB), %s bytes per key\n' memory-per-key "$keys" "$rss_kib" \
        "$idle_kib" "$(( (rss_kib - idle_kib) * 1024 / keys ))"
    # STEADY_SECONDS > 0: then overwrite those keys at STEADY_RATE ops/s (open loop) for that
    # long, printing RSS every 30 s.
    if [ "${STEADY_SECONDS:-0}" -gt 0 ]; then
        "$BIN/shardgrid-bench" put --url "ws://127.0.0.1:$PORT/ws" --cores "$BENCH_CPU" --quiet --conns 50 \
            --batch 10 --maps 50 --keys 21000 --value-bytes 40 --rate "${STEADY_RATE:-20000}" --warmup 0 \
            --duration "$STEADY_SECONDS" --json "$OUT/memory-steady.json" >/dev/null &
        steady_pid=$!
        for ((elapsed = 30; elapsed <= STEADY_SECONDS; elapsed += 30)); do
            sleep 30
            printf '%-28s %4s s: RSS %s KiB\n' memory-steady "$elapsed" \
                "$(awk '/^VmRSS/{print $2}' "/proc/$SERVER_PID/status")"
        done
        wait "$steady_pid"
    fi
    stop_server
fi
