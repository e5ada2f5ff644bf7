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
idle=$(rss_mib "$SWITCH_PID")

"${BIN}/loadgen" --to "$SWITCH_ADDR" --scenario load/scenarios/bench.toml --threads "$LOADGEN_THREADS" \
    --connections "$CONNECTIONS" --rate "$RATE" --duration "$DURATION" --warmup 5s \
    --json "${OUT}/report.json" >"${OUT}/loadgen.txt" 2>"${OUT}/loadgen.log" &
LOADGEN_PID=$!
PIDS+=("$LOADGEN_PID")

echo "soak: ${RATE}/s for ${DURATION}; switch RSS every ${SAMPLE_S} s (also in ${OUT}/rss.csv)"
echo "elapsed_s,rss_mib" >"${OUT}/rss.csv"
started=$SECONDS
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
    rss=$(rss_mib "$SWITCH_PID")
    elapsed=$((SECONDS - started))
    echo "${elapsed},${rss}" >>"${OUT}/rss.csv"
    printf '[%5ss] switch RSS %s MiB  | %s\n' "$elapsed" "$rss" "$(tail -n 1 "${OUT}/loadgen.log" 2>/dev/null)"
    # Wake at the next sample time or as soon as loadgen ends.
    for _ in $(seq 1 $((SAMPLE_S * 10))); do
        kill -0 "$LOADGEN_PID" 2>/dev/null || break
        sleep 0.1
    done
done
code=0
wait "$LOADGEN_PID" || code=$?
# After the load, still running: the samples above are 10 s apart, so the
# peak comes from the kernel's high-water mark (VmHWM), not from them.
last=$(rss_mib "$SWITCH_PID")
echo "$((SECONDS - started)),${last}" >>"${OUT}/rss.csv"
peak=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) printf "-" }' \
    "/proc/${SWITCH_PID}/status" 2>/dev/null || printf -- "-")
echo
cat "${OUT}/loadgen.txt"
echo "switch RSS: ${idle} MiB idle before the load, ${last} MiB after it; peak ${peak} MiB (VmHWM)"
exit "$code"
