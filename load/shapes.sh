#!/usr/bin/env bash
# Speed as a user measures it: the embedded default switch (`isoswitch serve`
# with no config: journal in SQLite, commit mode, in-process issuer) against
# the floor host (load/src/bin/floor.rs: answers each frame by flipping its
# MTI), side by side for each traffic shape, one after the other in one run,
# and the switch's throughput as a share of the floor's. Run by hand; not part
# of CI. Traffic stays on 127.0.0.1.
#
#   load/shapes.sh
#   DURATION=30s SHAPES="4x4 1000x1" load/shapes.sh
#
# Shapes: 4x4 (4 connections × 4 in flight), 64x16, 1000x1 (a terminal
# fleet), open20k (open loop 20 000/s over 64 connections: p99 and p99.9
# from the intended send time). Settings: DURATION (10s), WARMUP (2s),
# SHAPES, OUT (target/shapes), PROFILE (release), LOADGEN_THREADS (1),
# SWITCH_THREADS (0: the switch's default), RUST_LOG for the switch (info).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SHAPES=${SHAPES:-"4x4 64x16 1000x1 open20k"}
OUT=${OUT:-target/shapes}
PROFILE=${PROFILE:-release}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
SWITCH_THREADS=${SWITCH_THREADS:-0}
BIN=$(pwd)/target/${PROFILE}
FLOOR_ADDR=127.0.0.1:18600
SWITCH_ADDR=127.0.0.1:8583
command -v jq >/dev/null || { echo "shapes.sh needs jq" >&2; exit 2; }

if [ "$PROFILE" = release ]; then
    cargo build --release -p isoswitch -p loadgen --bins
else
    cargo build -p isoswitch -p loadgen --bins
fi
rm -rf "$OUT"
mkdir -p "$OUT/switch"

PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for ADDR NAME PID
    local port=${1##*:} try
    for try in $(seq 1 100); do
        (: >"/dev/tcp/127.0.0.1/${port}") 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { echo "shapes.sh: $2 exited; see ${OUT}/$2.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "shapes.sh: $2 did not listen on $1 within 10 s" >&2
    exit 1
}

"${BIN}/floor" --bind "$FLOOR_ADDR" >"${OUT}/floor.log" 2>&1 &
PIDS+=($!)
wait_for "$FLOOR_ADDR" floor "${PIDS[-1]}"
# The embedded default, as the README's first command runs it, in a fresh
# directory of its own (its journal, isoswitch.db, goes there).
(cd "${OUT}/switch" && RUST_LOG=${RUST_LOG:-info} exec "${BIN}/isoswitch" serve --worker-threads "$SWITCH_THREADS") \
    >"${OUT}/switch.log" 2>&1 &
PIDS+=($!)
SWITCH_PID=${PIDS[-1]}
wait_for "$SWITCH_ADDR" switch "$SWITCH_PID"
# The listener is up before the in-process issuer link: a few requests first.
for _ in $(seq 1 50); do
    "${BIN}/loadgen" --to "$SWITCH_ADDR" --scenario load/scenarios/default.toml --connections 1 --window 1 \
        --requests 5 --timeout-ms 2000 --quiet >/dev/null 2>&1 && break
    sleep 0.2
done

# run TARGET NAME REPORT ARGS...: one loadgen run; prints nothing.
run() {
    local to=$1 name=$2 report=$3
    shift 3
    local extra=()
    [ "$to" = "$FLOOR_ADDR" ] && extra=(--any-code)
    "${BIN}/loadgen" --to "$to" --scenario load/scenarios/default.toml --threads "$LOADGEN_THREADS" \
        --duration "$DURATION" --warmup "$WARMUP" --quiet --json "$report" "${extra[@]}" "$@" \
        >"${OUT}/${name}.txt" 2>"${OUT}/${name}.log" || true
}

field() { jq -r "$2" "$1" 2>/dev/null || echo "-"; }
ms() { awk -v us="$1" 'BEGIN { if (us == "-" || us == "null") print "-"; else printf "%.2f ms", us / 1000 }'; }

printf '%-34s %14s %14s %8s  %s\n' "shape" "floor /s" "isoswitch /s" "share" "latency floor | switch (p50, p99, p99.9)"
for shape in $SHAPES; do
    case "$shape" in
        4x4) args=(--connections 4 --window 4) ;;
        64x16) args=(--connections 64 --window 16) ;;
        1000x1) args=(--connections 1000 --window 1) ;;
        open20k) args=(--connections 64 --rate 20000) ;;
        *) echo "shapes.sh: unknown shape ${shape}" >&2; exit 2 ;;
    esac
    run "$FLOOR_ADDR" "floor-${shape}" "${OUT}/floor-${shape}.json" "${args[@]}"
    run "$SWITCH_ADDR" "switch-${shape}" "${OUT}/switch-${shape}.json" "${args[@]}"
    f=$(field "${OUT}/floor-${shape}.json" .throughput_per_s)
    s=$(field "${OUT}/switch-${shape}.json" .throughput_per_s)
    share=$(awk -v f="$f" -v s="$s" 'BEGIN { if (f + 0 > 0) printf "%.0f %%", 100 * s / f; else print "-" }')
    lat() { echo "$(ms "$(field "$1" '.latency_us.p50')"), $(ms "$(field "$1" '.latency_us.p99')"), $(ms "$(field "$1" '.latency_us["p99.9"]')")"; }
    errors=$(field "${OUT}/switch-${shape}.json" .errors.total)
    printf '%-34s %14.0f %14.0f %8s  %s | %s  (switch errors %s)\n' "${shape} ($(echo "${args[*]}" | sed 's/--//g'))" \
        "$f" "$s" "$share" "$(lat "${OUT}/floor-${shape}.json")" "$(lat "${OUT}/switch-${shape}.json")" "$errors"
done
echo "reports: ${OUT}/*.json; switch log: ${OUT}/switch.log ($(wc -c <"${OUT}/switch.log") bytes)"
