# Shared by bench.sh, soak.sh and multi.sh (sourced, not run): build the
# binaries, start the issuer simulator and the switch from
# load/bench-config.toml, wait until they accept traffic, and stop them on
# exit; shapes.sh takes only stop_all and wait_for_port. Starting expects
# BIN, CONFIG, OUT and PROFILE to be set.
#
# Runtime worker threads per process (SIM_THREADS, SWITCH_THREADS,
# LOADGEN_THREADS): 0 = each command's default (one per core, but one on two
# cores or fewer; loadgen: one).
SIM_THREADS=${SIM_THREADS:-0}
SWITCH_THREADS=${SWITCH_THREADS:-0}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}

# The switch's journal: commit (the default: an approval waits for its
# record's commit), async, or none (in memory: the cost of journaling off).
JOURNAL=${JOURNAL:-commit}

# Extra arguments for issuer-sim (soak.sh --hostile adds --record).
SIM_ARGS=()

SWITCH_PORT=18583
SIM_PORT=19100
SWITCH_ADDR="127.0.0.1:${SWITCH_PORT}"
PIDS=()

stop_all() {
    # Only the processes this script started, by their ids.
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Waits until something accepts on 127.0.0.1:$1 (opens and closes a connection,
# sends nothing), at most 10 s.
wait_for_port() {
    local port=$1 name=$2 pid=$3 try
    for try in $(seq 1 100); do
        if (: >"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$(basename "$0"): ${name} exited; its log: ${OUT}/${name}.log" >&2
            tail -n 20 "${OUT}/${name}.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): ${name} did not listen on port ${port} within 10 s; see ${OUT}/${name}.log" >&2
    exit 1
}

refuse_busy_port() {
    if (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "$(basename "$0"): port $1 is already in use; stop whatever listens there first" >&2
        exit 1
    fi
}

stop_switch_and_simulator() {
    stop_all
    PIDS=()
}

start_switch_and_simulator() {
    refuse_busy_port "$SIM_PORT"
    refuse_busy_port "$SWITCH_PORT"
    RUST_LOG=${RUST_LOG:-warn} "${BIN}/isoswitch" issuer-sim --config "$CONFIG" --worker-threads "${SIM_THREADS}" "${SIM_ARGS[@]}" >"${OUT}/issuer-sim.log" 2>&1 &
    SIM_PID=$!
    PIDS+=("$SIM_PID")
    wait_for_port "$SIM_PORT" issuer-sim "$SIM_PID"
    # A fresh journal in OUT each start, in the mode JOURNAL names.
    local switch_config="${OUT}/switch-${JOURNAL}.toml"
    rm -f "${OUT}/journal-${JOURNAL}.db" "${OUT}/journal-${JOURNAL}.db-wal" "${OUT}/journal-${JOURNAL}.db-shm"
    {
        cat "$CONFIG"
        printf '\n[journal]\npath = "journal-%s.db"\ndurability = "%s"\n' "$JOURNAL" "$JOURNAL"
    } >"$switch_config"
    RUST_LOG=${RUST_LOG:-warn} "${BIN}/isoswitch" serve --config "$switch_config" --worker-threads "${SWITCH_THREADS}" >"${OUT}/switch.log" 2>&1 &
    SWITCH_PID=$!
    PIDS+=("$SWITCH_PID")
    wait_for_port "$SWITCH_PORT" switch "$SWITCH_PID"
    wait_until_approving "$SWITCH_ADDR" switch load/scenarios/bench.toml
}

# wait_until_approving ADDR NAME SCENARIO [LOADGEN ARGS...]: the listener is
# up before the issuer link has signed on; a few single requests tell when
# the whole path through ADDR answers 00. At most 20 tries, half a second
# apart; then the script stops, pointing at ${OUT}/NAME.log.
wait_until_approving() {
    local addr=$1 name=$2 scenario=$3 try
    shift 3
    for try in $(seq 1 20); do
        if "${BIN}/loadgen" --to "$addr" --scenario "$scenario" \
            --connections 1 --window 1 --requests 5 --timeout-ms 2000 --quiet "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    echo "$(basename "$0"): ${name} does not approve yet after 20 tries; see ${OUT}/${name}.log" >&2
    exit 1
}

# Resident set size of a process in MiB (VmRSS), or "-" once it has gone.
rss_mib() {
    if [ -r "/proc/$1/status" ]; then
        awk '/^VmRSS:/ { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) printf "-" }' "/proc/$1/status"
    else
        printf -- "-"
    fi
}

# A number from loadgen's JSON report: json_number FILE KEY (keys used here are unique).
json_number() {
    grep -o "\"$2\": [0-9.]*" "$1" | head -n 1 | awk '{ print $2 }'
}

# Builds isoswitch and loadgen: release for measurements, PROFILE=debug only to
# check a script quickly.
build_binaries() {
    if [ "$PROFILE" = release ]; then
        cargo build --release -p isoswitch -p loadgen --bins
    else
        cargo build -p isoswitch -p loadgen --bins
    fi
}
