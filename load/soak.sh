#!/usr/bin/env bash
# Soak test: the bench setup (load/bench-config.toml) under a fixed open-loop
# rate for 10 minutes, sampling the switch's resident memory every 10 s, to show
# leaks or growth that a 30 s benchmark hides. Run by hand; not part of CI.
# Traffic stays on 127.0.0.1.
#
#   load/soak.sh
#   RATE=2000 DURATION=30m load/soak.sh
#
# Settings (environment): RATE (5000), DURATION (10m), CONNECTIONS (8),
# SAMPLE_S (10), OUT (target/soak: logs, rss.csv, report.json),
# PROFILE (release; debug only to check the script), SIM_THREADS, SWITCH_THREADS,
# LOADGEN_THREADS (runtime workers per process; see load/lib-bench.sh).
# Exit status is loadgen's: non-zero if any error was counted.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-5000}
DURATION=${DURATION:-10m}
CONNECTIONS=${CONNECTIONS:-8}
SAMPLE_S=${SAMPLE_S:-10}
OUT=${OUT:-target/soak}
CONFIG=load/bench-config.toml
PROFILE=${PROFILE:-release}
BIN=target/${PROFILE}
mkdir -p "$OUT"

# shellcheck source=load/lib-bench.sh
source load/lib-bench.sh
build_binaries

start_switch_and_simulator

"${BIN}/loadgen" --to "$SWITCH_ADDR" --scenario load/scenarios/bench.toml --threads "$LOADGEN_THREADS" \
    --connections "$CONNECTIONS" --rate "$RATE" --duration "$DURATION" --warmup 5s \
    --json "${OUT}/report.json" >"${OUT}/loadgen.txt" 2>"${OUT}/loadgen.log" &
LOADGEN_PID=$!
PIDS+=("$LOADGEN_PID")

echo "soak: ${RATE}/s for ${DURATION}; switch RSS every ${SAMPLE_S} s (also in ${OUT}/rss.csv)"
echo "elapsed_s,rss_mib" >"${OUT}/rss.csv"
started=$SECONDS
first=""
max=0
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
    rss=$(rss_mib "$SWITCH_PID")
    elapsed=$((SECONDS - started))
    echo "${elapsed},${rss}" >>"${OUT}/rss.csv"
    printf '[%5ss] switch RSS %s MiB  | %s\n' "$elapsed" "$rss" "$(tail -n 1 "${OUT}/loadgen.log" 2>/dev/null)"
    if [ -z "$first" ]; then first=$rss; fi
    if [ "$rss" != "-" ] && awk -v a="$rss" -v b="$max" 'BEGIN { exit !(a > b) }'; then max=$rss; fi
    # Wake at the next sample time or as soon as loadgen ends.
    for _ in $(seq 1 $((SAMPLE_S * 10))); do
        kill -0 "$LOADGEN_PID" 2>/dev/null || break
        sleep 0.1
    done
done
code=0
wait "$LOADGEN_PID" || code=$?
last=$(rss_mib "$SWITCH_PID")
echo
cat "${OUT}/loadgen.txt"
echo "switch RSS: ${first} MiB at start, ${max} MiB at most, ${last} MiB at the end"
exit "$code"
