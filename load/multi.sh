#!/usr/bin/env bash
# One instance on SQLite against one and two instances on PostgreSQL + Redis,
# and what the Redis round trip costs one instance. Builds release binaries,
# starts its own throw-away PostgreSQL (initdb into a temporary directory; as
# the `postgres` user when run as root) and Redis on free loopback ports, the
# issuer simulator (load/bench-config.toml's [simulator]) as its own process,
# and for each setup fresh switch instances with the rules in
# load/multi-rules.toml (the embedded default's rules plus one velocity rule).
# loadgen drives every setup with the same shape (CONNECTIONS x WINDOW closed
# loop for WARMUP + DURATION, load/scenarios/bench.toml); with two instances
# the connections are split between them, half to each, no proxy in between.
# Stops everything it started on exit. Run by hand; not part of CI.
#
#   load/multi.sh
#   DURATION=30s load/multi.sh
#   SETUPS="pg pg-redis" load/multi.sh     # only the Redis cost
#
# Setups (SETUPS, default all four, in this order):
#   sqlite       one instance, SQLite journal (the embedded default's), risk state in process
#   pg           one instance, PostgreSQL journal, risk state in process
#   pg-redis     one instance, PostgreSQL journal, risk state in Redis
#   pg-redis-x2  two instances (switch-a, switch-b), one PostgreSQL database, one Redis
# Each PostgreSQL setup gets a database of its own; Redis is flushed between setups.
#
# Settings (environment): DURATION (10s), WARMUP (2s), CONNECTIONS (64),
# WINDOW (16), SETUPS, OUT (target/multi: configs, logs, JSON reports),
# PROFILE (release), PG_BIN (newest /usr/lib/postgresql/*/bin), PG_FSYNC (on),
# SIM_THREADS, SWITCH_THREADS, LOADGEN_THREADS (see load/lib-bench.sh).
# Exit status is non-zero if any run counted an error.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
WINDOW=${WINDOW:-16}
SETUPS=${SETUPS:-sqlite pg pg-redis pg-redis-x2}
OUT=${OUT:-target/multi}
PROFILE=${PROFILE:-release}
PG_FSYNC=${PG_FSYNC:-on}
BIN=target/${PROFILE}
RULES=load/multi-rules.toml
SCENARIO=load/scenarios/bench.toml
# lib-bench.sh expects it; here only the simulator reads it.
CONFIG=load/bench-config.toml
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# shellcheck source=load/lib-bench.sh
source load/lib-bench.sh

# ------------------------------------------------------------ what it started
WORK=""
PG_DATA=""
PG_RUNNING=0
REDIS_PID=""

as_root() { [ "$(id -u)" = 0 ]; }

# PostgreSQL refuses to run as root: as root, its programs run as `postgres`.
as_pg() {
    if as_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cleanup() {
    stop_all
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    if [ "$PG_RUNNING" = 1 ]; then
        as_pg "${PG_BIN}/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
        cp "${WORK}/postgres.log" "${OUT}/postgres.log" 2>/dev/null || true
    fi
    if [ -n "$WORK" ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

# A loopback port nothing accepts on now, below the kernel's range of
# ephemeral ports (which the many client connections of a run take from). A
# server that then finds it taken fails to start and says so.
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
    local port
    while :; do
        port=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        if ! (: >"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

hex_key() {
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

start_postgres() {
    if [ -z "${PG_BIN:-}" ]; then
        PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    fi
    if [ -z "$PG_BIN" ] || [ ! -x "${PG_BIN}/initdb" ]; then
        PG_BIN=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
    fi
    [ -x "${PG_BIN}/initdb" ] || die "PostgreSQL's initdb not found; apt-get install postgresql (or set PG_BIN)"
    if as_root; then
        id postgres >/dev/null 2>&1 || die "running as root, PostgreSQL needs the postgres user (apt-get install postgresql creates it)"
        chown postgres: "$WORK"
    fi
    PG_DATA="${WORK}/pg"
    as_pg "${PG_BIN}/initdb" -D "$PG_DATA" -U isoswitch --auth=trust -E UTF8 >"${OUT}/initdb.log" 2>&1 ||
        die "initdb failed; see ${OUT}/initdb.log"
    local try
    for try in 1 2 3 4 5; do
        PG_PORT=$(free_port)
        if as_pg "${PG_BIN}/pg_ctl" -D "$PG_DATA" -l "${WORK}/postgres.log" -w -t 30 \
            -o "-p ${PG_PORT} -k ${WORK} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=${PG_FSYNC}" \
            start >/dev/null 2>&1; then
            PG_RUNNING=1
            return
        fi
    done
    tail -n 20 "${WORK}/postgres.log" >&2 || true
    die "PostgreSQL did not start"
}

# The postmaster and its backends.
postgres_pids() {
    local postmaster
    postmaster=$(head -n 1 "${PG_DATA}/postmaster.pid" 2>/dev/null) || return 0
    echo "$postmaster"
    pgrep -P "$postmaster" || true
}

start_redis() {
    command -v redis-server >/dev/null || die "redis-server not found; apt-get install redis-server"
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
        >"${OUT}/redis.log" 2>&1 &
    REDIS_PID=$!
    wait_for_port "$REDIS_PORT" redis "$REDIS_PID"
}

flush_redis() {
    if command -v redis-cli >/dev/null; then
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" flushall >/dev/null
    fi
}

# ------------------------------------------------------------ one setup's processes
SIM_PID=""
SWITCH_PIDS=()
SWITCH_ADDRS=()

start_simulator() {
    SIM_PORT=$(free_port)
    RUST_LOG=${RUST_LOG:-warn} "${BIN}/isoswitch" issuer-sim --config "$CONFIG" --bind "127.0.0.1:${SIM_PORT}" \
        --worker-threads "$SIM_THREADS" >"${OUT}/issuer-sim.log" 2>&1 &
    SIM_PID=$!
    PIDS+=("$SIM_PID")
    wait_for_port "$SIM_PORT" issuer-sim "$SIM_PID"
}

# write_switch_config FILE ID RRN_DIGIT PORT METRICS_PORT JOURNAL_TOML REDIS(yes|no)
write_switch_config() {
    local file=$1 id=$2 digit=$3 port=$4 metrics=$5 journal=$6 redis=$7
    {
        cat <<EOF
# Written by load/multi.sh.
[[listener]]
name = "pos"
bind = "127.0.0.1:${port}"
channel = "pos"
max_connections = 1000

[[issuer]]
name = "sim"
endpoints = ["127.0.0.1:${SIM_PORT}"]
connections = 2
timeout_ms = 5000

[[route]]
name = "all"
bins = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
issuer = "sim"

[metrics]
bind = "127.0.0.1:${metrics}"

[journal]
${journal}

[instance]
id = "${id}"
rrn_digit = ${digit}

EOF
        if [ "$redis" = yes ]; then
            printf '[risk]\nstate = "redis://127.0.0.1:%s"\n\n' "$REDIS_PORT"
        fi
        cat "$RULES"
    } >"$file"
}

# start_switch ID RRN_DIGIT JOURNAL_TOML REDIS(yes|no)
start_switch() {
    local id=$1 digit=$2 journal=$3 redis=$4
    local port metrics config="${OUT}/${SETUP}-${id}.toml"
    port=$(free_port)
    metrics=$(free_port)
    write_switch_config "$config" "$id" "$digit" "$port" "$metrics" "$journal" "$redis"
    RUST_LOG=${RUST_LOG:-warn} "${BIN}/isoswitch" serve --config "$config" --worker-threads "$SWITCH_THREADS" \
        >"${OUT}/${id}.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    SWITCH_PIDS+=("$pid")
    SWITCH_ADDRS+=("127.0.0.1:${port}")
    wait_for_port "$port" "$id" "$pid"
    wait_until_approving "127.0.0.1:${port}" "$id" "$SCENARIO"
}

stop_setup() {
    stop_all
    PIDS=()
    SWITCH_PIDS=()
    SWITCH_ADDRS=()
    SIM_PID=""
}

# ------------------------------------------------------------ where the CPU went
CLK_TCK=$(getconf CLK_TCK)
declare -A TICKS_BEFORE=()

# User + system ticks of one process so far (0 once it has gone).
ticks_of() {
    if [ -r "/proc/$1/stat" ]; then
        sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
    else
        echo 0
    fi
}

group_pids() {
    case $1 in
    switch) echo "${SWITCH_PIDS[@]}" ;;
    sim) echo "$SIM_PID" ;;
    postgres) if [ "$PG_RUNNING" = 1 ]; then postgres_pids; fi ;;
    redis) echo "$REDIS_PID" ;;
    esac
}

# Busy ticks of the whole machine (every core, every process).
machine_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

snapshot_cpu() {
    TICKS_BEFORE=()
    local group pid
    for group in switch sim postgres redis; do
        for pid in $(group_pids "$group"); do
            TICKS_BEFORE[$pid]=$(ticks_of "$pid")
        done
    done
    MACHINE_BEFORE=$(machine_ticks)
    WALL_BEFORE=$(date +%s.%N)
}

# Cores a group kept busy since snapshot_cpu (a process started since then
# counts from zero).
cores_since() {
    local group=$1 pid total=0 now
    for pid in $(group_pids "$group"); do
        now=$(ticks_of "$pid")
        total=$((total + now - ${TICKS_BEFORE[$pid]:-0}))
    done
    awk -v t="$total" -v hz="$CLK_TCK" -v w="$WALL_SECONDS" 'BEGIN { printf "%.2f", t / hz / w }'
}

# ------------------------------------------------------------ measuring
status=0
rows=()
declare -A THROUGHPUT=()

run_loadgen() {
    local report=$1 addr=$2 connections=$3
    "${BIN}/loadgen" --to "$addr" --scenario "$SCENARIO" --threads "$LOADGEN_THREADS" \
        --connections "$connections" --window "$WINDOW" --duration "$DURATION" --warmup "$WARMUP" \
        --json "$report" --quiet
}

# Drives every instance of the setup at once, CONNECTIONS split between them,
# and adds one row: throughput summed, p50 and p99 of the slower instance,
# errors summed, cores per process group.
measure() {
    local label=$1 n=${#SWITCH_ADDRS[@]} i
    local per=$((CONNECTIONS / n))
    local reports=() pids=()
    echo "== ${label}: ${n} x ${per} connections x ${WINDOW} in flight" >&2
    snapshot_cpu
    for i in $(seq 0 $((n - 1))); do
        reports+=("${OUT}/${SETUP}-$((i + 1)).json")
        rm -f "${reports[$i]}"
        run_loadgen "${reports[$i]}" "${SWITCH_ADDRS[$i]}" "$per" &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || status=1
    done
    WALL_SECONDS=$(awk -v a="$WALL_BEFORE" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    local cores=() group
    for group in switch sim postgres redis; do
        cores+=("$(cores_since "$group")")
    done
    local machine
    machine=$(awk -v t="$(($(machine_ticks) - MACHINE_BEFORE))" -v hz="$CLK_TCK" -v w="$WALL_SECONDS" \
        'BEGIN { printf "%.2f", t / hz / w }')
    local tput=0 p50=0 p99=0 errors=0 report
    for report in "${reports[@]}"; do
        [ -f "$report" ] || {
            rows+=("$(printf '%-34s %s' "$label" "no report from loadgen: ${report}")")
            status=1
            return
        }
        tput=$(awk -v a="$tput" -v b="$(json_number "$report" throughput_per_s)" 'BEGIN { printf "%.0f", a + b }')
        p50=$(awk -v a="$p50" -v b="$(json_number "$report" p50)" 'BEGIN { m = (b + 0 > a + 0) ? b : a; print m }')
        p99=$(awk -v a="$p99" -v b="$(json_number "$report" p99)" 'BEGIN { m = (b + 0 > a + 0) ? b : a; print m }')
        errors=$((errors + $(json_number "$report" total)))
    done
    THROUGHPUT[$SETUP]=$tput
    rows+=("$(printf '%-34s %3s %9s %8s %8s %7s   %6s %6s %6s %6s %7s' "$label" "$n" "$tput" "$p50" "$p99" "$errors" \
        "${cores[0]}" "${cores[1]}" "${cores[2]}" "${cores[3]}" "$machine")")
}

# ------------------------------------------------------------ the setups
build_binaries
WORK=$(mktemp -d "${TMPDIR:-/tmp}/isoswitch-multi.XXXXXX")
ISOSWITCH_JOURNAL_KEY=$(hex_key)
ISOSWITCH_RISK_STATE_KEY=$(hex_key)
export ISOSWITCH_JOURNAL_KEY ISOSWITCH_RISK_STATE_KEY

needs_pg=0
needs_redis=0
for SETUP in $SETUPS; do
    case $SETUP in
    sqlite) ;;
    pg) needs_pg=1 ;;
    pg-redis | pg-redis-x2) needs_pg=1 needs_redis=1 ;;
    *) die "unknown setup ${SETUP}; expected sqlite, pg, pg-redis or pg-redis-x2" ;;
    esac
done
if [ "$needs_pg" = 1 ]; then
    start_postgres
fi
if [ "$needs_redis" = 1 ]; then
    start_redis
fi

n=0
for SETUP in $SETUPS; do
    n=$((n + 1))
    start_simulator
    journal=""
    if [ "$SETUP" != sqlite ]; then
        "${PG_BIN}/createdb" -h 127.0.0.1 -p "$PG_PORT" -U isoswitch "multi_${n}"
        journal="url = \"postgresql://isoswitch@127.0.0.1:${PG_PORT}/multi_${n}\""
    else
        rm -f "${OUT}/journal-sqlite.db" "${OUT}/journal-sqlite.db-wal" "${OUT}/journal-sqlite.db-shm"
        journal='path = "journal-sqlite.db"'
    fi
    if [ "$needs_redis" = 1 ]; then
        flush_redis
    fi
    case $SETUP in
    sqlite)
        start_switch switch-a 1 "$journal" no
        measure "SQLite, risk state in process"
        ;;
    pg)
        start_switch switch-a 1 "$journal" no
        measure "PostgreSQL, risk state in process"
        ;;
    pg-redis)
        start_switch switch-a 1 "$journal" yes
        measure "PostgreSQL + Redis"
        ;;
    pg-redis-x2)
        start_switch switch-a 1 "$journal" yes
        start_switch switch-b 2 "$journal" yes
        measure "PostgreSQL + Redis, two instances"
        ;;
    esac
    stop_setup
done

echo
echo "isoswitch multi: ${DURATION} measured after ${WARMUP} warmup, closed loop, ${CONNECTIONS} connections"
echo "x ${WINDOW} in flight (split between the instances), $(nproc) cores; latency in µs (the slower"
echo "instance's); rules: ${RULES}; PostgreSQL fsync=${PG_FSYNC}. Cores: CPU time / wall time per"
echo "process group over the run; machine: every process (loadgen and anything else running)."
printf '%-34s %3s %9s %8s %8s %7s   %6s %6s %6s %6s %7s\n' "setup" "n" "resp/s" "p50" "p99" "errors" \
    "switch" "sim" "pg" "redis" "machine"
for row in "${rows[@]}"; do
    echo "$row"
done
if [ -n "${THROUGHPUT[pg]:-}" ] && [ -n "${THROUGHPUT[pg-redis]:-}" ]; then
    # (Comparisons in parentheses: mawk reads a bare > in print as a redirection.)
    awk -v inproc="${THROUGHPUT[pg]}" -v redis="${THROUGHPUT[pg-redis]}" 'BEGIN {
        cost = (inproc > 0) ? (1 - redis / inproc) * 100 : 0
        verdict = (cost > 30) ? "over the 30 % limit" : "within the 30 % limit"
        printf "Redis cost: one instance on PostgreSQL, %.0f/s with risk state in Redis against %.0f/s in process: %.1f %% (%s)\n", redis, inproc, cost, verdict
    }'
fi
echo "Configs, logs and loadgen reports: ${OUT}"
exit "$status"
