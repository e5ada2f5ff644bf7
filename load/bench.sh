#!/usr/bin/env bash
# Benchmark of the switch: builds release binaries, runs the issuer simulator and
# the switch from load/bench-config.toml, then loadgen closed loop (8 × 32) and
# open loop (20 000/s), each for 30 s after a 2 s warmup, and prints one table.
# JOURNALS lists the journal modes to run side by side (default "none commit":
# the cost of journaling, measured in one run).
# Run by hand from anywhere in the repo; not part of CI. Traffic stays on 127.0.0.1.
#
#   load/bench.sh
#   DURATION=10s RATE=10000 load/bench.sh
#   JOURNALS=commit load/bench.sh
#
# Settings (environment): DURATION (30s), WARMUP (2s), CONNECTIONS (8),
# WINDOW (32), RATE (20000), OUT (target/bench: logs and JSON reports),
# PROFILE (release; debug only to check the script), SIM_THREADS, SWITCH_THREADS,
# LOADGEN_THREADS (runtime workers per process; see load/lib-bench.sh).
# Exit status is non-zero if either run counted an error.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-8}
WINDOW=${WINDOW:-32}
RATE=${RATE:-20000}
OUT=${OUT:-target/bench}
JOURNALS=${JOURNALS:-none commit}
CONFIG=load/bench-config.toml
PROFILE=${PROFILE:-release}
BIN=target/${PROFILE}
mkdir -p "$OUT"

# shellcheck source=load/lib-bench.sh
source load/lib-bench.sh
build_binaries

status=0
rows=()
run() {
    local label=$1 report=$2
    shift 2
    echo "== ${label}" >&2
    local code=0
    "${BIN}/loadgen" --to "$SWITCH_ADDR" --scenario load/scenarios/bench.toml --threads "$LOADGEN_THREADS" \
        --duration "$DURATION" --warmup "$WARMUP" --json "$report" "$@" || code=$?
    if [ "$code" -ne 0 ]; then
        status=1
    fi
    local rss
    rss=$(rss_mib "$SWITCH_PID")
    if [ -f "$report" ]; then
        rows+=("$(printf '%-30s %12s %10s %10s %10s %8s %10s' "$label" \
            "$(json_number "$report" throughput_per_s)" \
            "$(json_number "$report" p50)" \
            "$(json_number "$report" p99)" \
            "$(json_number "$report" p99.9)" \
            "$(json_number "$report" total)" \
            "$rss")")
    else
        rows+=("$(printf '%-22s %s' "$label" "no report (loadgen exit ${code})")")
    fi
}

for JOURNAL in $JOURNALS; do
    start_switch_and_simulator
    rm -f "${OUT}/closed-${JOURNAL}.json" "${OUT}/open-${JOURNAL}.json"
    run "${JOURNAL}: closed ${CONNECTIONS}x${WINDOW}" "${OUT}/closed-${JOURNAL}.json" --connections "$CONNECTIONS" --window "$WINDOW"
    run "${JOURNAL}: open ${RATE}/s" "${OUT}/open-${JOURNAL}.json" --connections "$CONNECTIONS" --rate "$RATE"
    stop_switch_and_simulator
done

echo
echo "isoswitch bench: ${DURATION} measured after ${WARMUP} warmup; latency in µs from intended send time;"
echo "journal modes: ${JOURNALS} (commit: each answer waits for its record's group commit);"
echo "switch RSS (VmRSS, MiB) after each run. Reports: ${OUT}/*.json"
printf '%-30s %12s %10s %10s %10s %8s %10s\n' "run" "resp/s" "p50" "p99" "p99.9" "errors" "RSS MiB"
for row in "${rows[@]}"; do
    echo "$row"
done
exit "$status"
