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
#   DURATION=5s SHAPES="dial dial-tls" load/shapes.sh
#
# Shapes: 4x4 (4 connections × 4 in flight), 64x16, 1000x1 (a terminal
# fleet), open20k (open loop 20 000/s over 64 connections: p99 and p99.9
# from the intended send time), dial (dial-up and GPRS terminals: connect,
# one request, answer, close, DIAL_CONNECTIONS = 64 at a time; requests/s
# is new connections/s, latency includes the connect) and dial-tls (the
# same over TLS, a full or resumed handshake per request). For dial-tls the
# script makes a throw-away CA and a P-256 server certificate for
# "localhost" (openssl) in $OUT/tls, runs a second floor with TLS on
# 127.0.0.1:18601 and a second switch on 127.0.0.1:18584 whose config is
# the embedded default (config/default.toml) with TLS on its listener and
# other ports (metrics 19584, virtual terminal 18081), journal in
# $OUT/switch-tls. Settings: DURATION (10s), WARMUP (2s), SHAPES, OUT
# (target/shapes), PROFILE (release), LOADGEN_THREADS (1), SWITCH_THREADS
# (0: the switch's default), DIAL_CONNECTIONS (64), RUST_LOG for the switch
# (info), BUILD (1; 0 runs the binaries already in target/$PROFILE),
# DURABILITY (unset: the embedded default; commit, async or none: the
# default config with that [journal] durability, to see what the journal
# costs each shape).
set -euo pipefail
cd "$(dirname "$0")/.."

# stop_all (on exit) and wait_for_port, shared with bench.sh and soak.sh;
# sourced first, so the addresses below are this script's own.
# shellcheck source=load/lib-bench.sh
source load/lib-bench.sh

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SHAPES=${SHAPES:-"4x4 64x16 1000x1 open20k"}
OUT=${OUT:-target/shapes}
PROFILE=${PROFILE:-release}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
SWITCH_THREADS=${SWITCH_THREADS:-0}
DURABILITY=${DURABILITY:-}
DIAL_CONNECTIONS=${DIAL_CONNECTIONS:-64}
BIN=$(pwd)/target/${PROFILE}
FLOOR_ADDR=127.0.0.1:18600
SWITCH_ADDR=127.0.0.1:8583
FLOOR_TLS_ADDR=127.0.0.1:18601
SWITCH_TLS_ADDR=127.0.0.1:18584
command -v jq >/dev/null || { echo "shapes.sh needs jq" >&2; exit 2; }
WITH_TLS=false
case " $SHAPES " in *" dial-tls "*) WITH_TLS=true ;; esac
if $WITH_TLS; then
    command -v openssl >/dev/null || { echo "shapes.sh: dial-tls needs openssl" >&2; exit 2; }
fi

# BUILD=0: the binaries in target/$PROFILE as they are.
[ "${BUILD:-1}" = 0 ] || build_binaries
rm -rf "$OUT"
mkdir -p "$OUT/switch"
OUT=$(cd "$OUT" && pwd)

"${BIN}/floor" --bind "$FLOOR_ADDR" >"${OUT}/floor.log" 2>&1 &
PIDS+=($!)
wait_for_port "${FLOOR_ADDR##*:}" floor "${PIDS[-1]}"
# The embedded default, as the README's first command runs it, in a fresh
# directory of its own (its journal, isoswitch.db, goes there).
# With DURABILITY, config/default.toml with that journal mode instead.
SWITCH_ARGS=()
if [ -n "$DURABILITY" ]; then
    grep -q '^# \[journal\]$' config/default.toml && grep -q '^# durability = "commit"$' config/default.toml ||
        { echo "shapes.sh: config/default.toml changed; update the DURABILITY config" >&2; exit 2; }
    sed -e 's|^# \[journal\]$|[journal]|' -e "s|^# durability = \"commit\"\$|durability = \"${DURABILITY}\"|" \
        config/default.toml >"${OUT}/switch/isoswitch.toml"
    SWITCH_ARGS=(--config "${OUT}/switch/isoswitch.toml")
fi
(cd "${OUT}/switch" && RUST_LOG=${RUST_LOG:-info} exec "${BIN}/isoswitch" serve "${SWITCH_ARGS[@]}" \
    --worker-threads "$SWITCH_THREADS") >"${OUT}/switch.log" 2>&1 &
PIDS+=($!)
SWITCH_PID=${PIDS[-1]}
wait_for_port "${SWITCH_ADDR##*:}" switch "$SWITCH_PID"
# The listener is up before the in-process issuer link: a few requests first.
wait_until_approving "$SWITCH_ADDR" switch load/scenarios/default.toml

TLS_ARGS=()
if $WITH_TLS; then
    # A throw-away CA and a server certificate for "localhost" signed by it.
    tls=${OUT}/tls
    mkdir -p "$tls" "${OUT}/switch-tls"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=shapes-ca -keyout "${tls}/ca.key" -out "${tls}/ca.pem"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
            -keyout "${tls}/server.key" -out "${tls}/server.csr"
        printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
            >"${tls}/server.ext"
        openssl x509 -req -in "${tls}/server.csr" -CA "${tls}/ca.pem" -CAkey "${tls}/ca.key" -CAcreateserial \
            -days 2 -extfile "${tls}/server.ext" -out "${tls}/server.pem"
    } >"${tls}/openssl.log" 2>&1 || { echo "shapes.sh: openssl failed; see ${tls}/openssl.log" >&2; exit 1; }
    TLS_ARGS=(--tls-ca "${tls}/ca.pem" --tls-server-name localhost)
    "${BIN}/floor" --bind "$FLOOR_TLS_ADDR" --tls-cert "${tls}/server.pem" --tls-key "${tls}/server.key" \
        >"${OUT}/floor-tls.log" 2>&1 &
    PIDS+=($!)
    wait_for_port "${FLOOR_TLS_ADDR##*:}" floor-tls "${PIDS[-1]}"
    # The embedded default with TLS on its listener and ports of its own; the
    # journal goes beside the config file.
    config=${OUT}/switch-tls/isoswitch.toml
    grep -q '^bind = "127.0.0.1:8583"$' config/default.toml && grep -q '^idle_timeout_s = 300$' config/default.toml ||
        { echo "shapes.sh: config/default.toml changed; update the dial-tls config" >&2; exit 2; }
    sed -e "s|^bind = \"127.0.0.1:8583\"\$|bind = \"${SWITCH_TLS_ADDR}\"|" \
        -e "s|^idle_timeout_s = 300\$|&\ntls = { cert = \"${tls}/server.pem\", key = \"${tls}/server.key\" }|" \
        -e 's|^bind = "127.0.0.1:9583"$|bind = "127.0.0.1:19584"|' \
        -e 's|^bind = "127.0.0.1:8080"$|bind = "127.0.0.1:18081"|' \
        config/default.toml >"$config"
    (cd "${OUT}/switch-tls" && RUST_LOG=${RUST_LOG:-info} exec "${BIN}/isoswitch" serve --config "$config" \
        --worker-threads "$SWITCH_THREADS") >"${OUT}/switch-tls.log" 2>&1 &
    PIDS+=($!)
    wait_for_port "${SWITCH_TLS_ADDR##*:}" switch-tls "${PIDS[-1]}"
    wait_until_approving "$SWITCH_TLS_ADDR" switch-tls load/scenarios/default.toml "${TLS_ARGS[@]}"
fi

# run TARGET NAME REPORT ARGS...: one loadgen run; prints nothing.
run() {
    local to=$1 name=$2 report=$3
    shift 3
    local extra=()
    case "$name" in floor-*) extra=(--any-code) ;; esac
    "${BIN}/loadgen" --to "$to" --scenario load/scenarios/default.toml --threads "$LOADGEN_THREADS" \
        --duration "$DURATION" --warmup "$WARMUP" --quiet --json "$report" "${extra[@]}" "$@" \
        >"${OUT}/${name}.txt" 2>"${OUT}/${name}.log" || true
}

field() { jq -r "$2" "$1" 2>/dev/null || echo "-"; }
ms() { awk -v us="$1" 'BEGIN { if (us == "-" || us == "null") print "-"; else printf "%.2f ms", us / 1000 }'; }

printf '%-46s %14s %14s %8s  %s\n' "shape" "floor /s" "isoswitch /s" "share" "latency floor | switch (p50, p99, p99.9)"
for shape in $SHAPES; do
    floor_to=$FLOOR_ADDR
    switch_to=$SWITCH_ADDR
    case "$shape" in
        4x4) args=(--connections 4 --window 4) ;;
        64x16) args=(--connections 64 --window 16) ;;
        1000x1) args=(--connections 1000 --window 1) ;;
        open20k) args=(--connections 64 --rate 20000) ;;
        dial) args=(--connect-per-request --connections "$DIAL_CONNECTIONS") ;;
        dial-tls)
            args=(--connect-per-request --connections "$DIAL_CONNECTIONS")
            floor_to=$FLOOR_TLS_ADDR
            switch_to=$SWITCH_TLS_ADDR
            ;;
        *) echo "shapes.sh: unknown shape ${shape}" >&2; exit 2 ;;
    esac
    label="${shape} ($(echo "${args[*]}" | sed 's/--//g'))"
    [ "$shape" = dial-tls ] && args+=("${TLS_ARGS[@]}")
    run "$floor_to" "floor-${shape}" "${OUT}/floor-${shape}.json" "${args[@]}"
    run "$switch_to" "switch-${shape}" "${OUT}/switch-${shape}.json" "${args[@]}"
    f=$(field "${OUT}/floor-${shape}.json" .throughput_per_s)
    s=$(field "${OUT}/switch-${shape}.json" .throughput_per_s)
    share=$(awk -v f="$f" -v s="$s" 'BEGIN { if (f + 0 > 0) printf "%.0f %%", 100 * s / f; else print "-" }')
    lat() { echo "$(ms "$(field "$1" '.latency_us.p50')"), $(ms "$(field "$1" '.latency_us.p99')"), $(ms "$(field "$1" '.latency_us["p99.9"]')")"; }
    errors=$(field "${OUT}/switch-${shape}.json" .errors.total)
    printf '%-46s %14.0f %14.0f %8s  %s | %s  (switch errors %s)\n' "$label" \
        "$f" "$s" "$share" "$(lat "${OUT}/floor-${shape}.json")" "$(lat "${OUT}/switch-${shape}.json")" "$errors"
done
echo "reports: ${OUT}/*.json; switch log: ${OUT}/switch.log ($(wc -c <"${OUT}/switch.log") bytes)"
