#!/usr/bin/env bash
# Soak test: the switch in front of the issuer simulator under a fixed
# open-loop rate for 10 minutes, sampling the switch's resident memory and
# open file descriptors every 10 s, to show leaks or growth that a 30 s
# benchmark hides. Run by hand; not part of CI. Traffic stays on 127.0.0.1.
#
#   load/soak.sh                      # load/bench-config.toml, every answer 00
#   load/soak.sh --hostile            # load/hostile-config.toml, see below
#   RATE=2000 DURATION=30m load/soak.sh
#
# --hostile: the issuer misbehaves for three cards (late approvals, silence,
# closing its link; load/hostile-config.toml), and beside loadgen's terminals
# `hostile` (load/src/bin/hostile.rs) runs misbehaving ones: idle connections,
# garbage and zero-length frames, frames cut by a close, oversize headers, a
# byte a second, floods past the in-flight limit, unsolicited responses. At
# the end, after the store-and-forward queue has drained, it checks that
# nothing was lost: loadgen and hostile each saw every request answered once
# with its own answer; every 91 in the journal has exactly one reversal,
# acknowledged; the issuer (its --record file) released no original twice; the
# outstanding-request gauge is back to 0. Needs sqlite3, jq and curl.
#
# Settings (environment): RATE (5000; 2000 with --hostile), DURATION (10m),
# CONNECTIONS (8), SAMPLE_S (10), OUT (target/soak or target/soak-hostile:
# logs, samples.csv, report.json), PROFILE (release; debug only to check the
# script), SIM_THREADS, SWITCH_THREADS, LOADGEN_THREADS (runtime workers per
# process; see load/lib-bench.sh), IDLE (200 hostile idle connections).
# Exit status: non-zero if loadgen or hostile counted an error or a check failed.
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTILE=0
if [ "${1:-}" = "--hostile" ]; then
    HOSTILE=1
elif [ $# -gt 0 ]; then
    echo "usage: load/soak.sh [--hostile]" >&2
    exit 2
fi
if [ "$HOSTILE" = 1 ]; then
    for tool in sqlite3 jq curl; do
        command -v "$tool" >/dev/null || { echo "soak.sh --hostile needs ${tool}" >&2; exit 2; }
    done
    RATE=${RATE:-2000}
    OUT=${OUT:-target/soak-hostile}
    CONFIG=load/hostile-config.toml
    SCENARIO=load/scenarios/hostile.toml
else
    RATE=${RATE:-5000}
    OUT=${OUT:-target/soak}
    CONFIG=load/bench-config.toml
    SCENARIO=load/scenarios/bench.toml
fi
DURATION=${DURATION:-10m}
CONNECTIONS=${CONNECTIONS:-8}
SAMPLE_S=${SAMPLE_S:-10}
IDLE=${IDLE:-200}
PROFILE=${PROFILE:-release}
BIN=target/${PROFILE}
mkdir -p "$OUT"

# shellcheck source=load/lib-bench.sh
source load/lib-bench.sh
build_binaries
if [ "$HOSTILE" = 1 ]; then
    rm -f "${OUT}/issuer-record.jsonl"
    SIM_ARGS=(--record "${OUT}/issuer-record.jsonl")
fi

start_switch_and_simulator
idle=$(rss_mib "$SWITCH_PID")
open_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

"${BIN}/loadgen" --to "$SWITCH_ADDR" --scenario "$SCENARIO" --threads "$LOADGEN_THREADS" \
    --connections "$CONNECTIONS" --rate "$RATE" --duration "$DURATION" --warmup 5s \
    --json "${OUT}/report.json" >"${OUT}/loadgen.txt" 2>"${OUT}/loadgen.log" &
LOADGEN_PID=$!
PIDS+=("$LOADGEN_PID")
if [ "$HOSTILE" = 1 ]; then
    "${BIN}/hostile" --to "$SWITCH_ADDR" --duration "$DURATION" --idle "$IDLE" \
        >"${OUT}/hostile.txt" 2>"${OUT}/hostile.log" &
    HOSTILE_PID=$!
    PIDS+=("$HOSTILE_PID")
fi

echo "soak: ${RATE}/s for ${DURATION}$([ "$HOSTILE" = 1 ] && echo ", hostile terminals and issuer faults");" \
    "switch RSS and open files every ${SAMPLE_S} s (also in ${OUT}/samples.csv)"
echo "elapsed_s,rss_mib,open_fds" >"${OUT}/samples.csv"
started=$SECONDS
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
    rss=$(rss_mib "$SWITCH_PID")
    fds=$(open_fds "$SWITCH_PID")
    elapsed=$((SECONDS - started))
    echo "${elapsed},${rss},${fds}" >>"${OUT}/samples.csv"
    printf '[%5ss] switch RSS %s MiB, %s open files | %s\n' "$elapsed" "$rss" "$fds" \
        "$(tail -n 1 "${OUT}/loadgen.log" 2>/dev/null)"
    # Wake at the next sample time or as soon as loadgen ends.
    for _ in $(seq 1 $((SAMPLE_S * 10))); do
        kill -0 "$LOADGEN_PID" 2>/dev/null || break
        sleep 0.1
    done
done
code=0
wait "$LOADGEN_PID" || code=$?
hostile_code=0
if [ "$HOSTILE" = 1 ]; then
    wait "$HOSTILE_PID" || hostile_code=$?
fi
# After the load, still running: the samples above are 10 s apart, so the
# peak comes from the kernel's high-water mark (VmHWM), not from them.
last=$(rss_mib "$SWITCH_PID")
last_fds=$(open_fds "$SWITCH_PID")
echo "$((SECONDS - started)),${last},${last_fds}" >>"${OUT}/samples.csv"
peak=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) printf "-" }' \
    "/proc/${SWITCH_PID}/status" 2>/dev/null || printf -- "-")
echo
cat "${OUT}/loadgen.txt"
echo "switch RSS: ${idle} MiB idle before the load, ${last} MiB after it; peak ${peak} MiB (VmHWM); ${last_fds} open files after"
# Growth over the run: the sample at a fifth of it (warm) against the last.
awk -F, 'NR > 1 { rss[n] = $2; fds[n] = $3; n++ }
    END { if (n > 5) { w = int(n / 5); printf "growth from %d s to the end: RSS %+.1f MiB, open files %+d\n", w * '"$SAMPLE_S"', rss[n-1] - rss[w], fds[n-1] - fds[w] } }' \
    "${OUT}/samples.csv"
if [ "$HOSTILE" = 0 ]; then
    exit "$code"
fi

echo
cat "${OUT}/hostile.txt"
failed=0
check() { # check DESCRIPTION ACTUAL EXPECTED
    if [ "$2" = "$3" ]; then
        echo "ok    $1: $2"
    else
        echo "FAIL  $1: $2, expected $3"
        failed=1
    fi
}
db="${OUT}/journal-${JOURNAL}.db"
q() { sqlite3 -readonly "$db" "$1"; }
# Reversals still queued are delivered with backoff; wait for the queue to
# drain (at most 2 minutes) before counting.
for _ in $(seq 1 120); do
    [ "$(q "SELECT count(*) FROM saf WHERE state = 'pending'")" = 0 ] && break
    sleep 1
done
outstanding=$(curl -sf "http://127.0.0.1:19583/metrics" |
    awk '/^isoswitch_issuer_outstanding/ { sum += $2 } END { printf "%d", sum }')
# A 91 is either a timeout or lost link (sent: it must be reversed) or "no
# live link" (decided by the switch, never sent: nothing to reverse, and the
# issuer must not have seen it).
timeouts=$(q "SELECT count(*) FROM txn WHERE response_code = '91' AND decided_by = 'timeout'")
unavailable=$(q "SELECT count(*) FROM txn WHERE response_code = '91' AND decided_by = 'switch'")
unreversed=$(q "SELECT count(*) FROM txn t WHERE response_code = '91' AND decided_by = 'timeout'
    AND NOT EXISTS (SELECT 1 FROM saf s WHERE s.txn_id = t.id AND s.kind = 'reversal')")
q "SELECT upstream_stan || ' ' || pan_masked || ' ' || amount FROM txn
    WHERE response_code = '91' AND decided_by = 'switch'" | sort >"${OUT}/unsent.txt"
jq -r 'select(.mti == "0100" or .mti == "0200") | "\(.stan) \(.pan) \(.amount)"' \
    "${OUT}/issuer-record.jsonl" | sort >"${OUT}/issuer-requests.txt"
unsent_seen=$(comm -12 "${OUT}/unsent.txt" "${OUT}/issuer-requests.txt" | wc -l)
reversals=$(q "SELECT count(*) FROM saf WHERE kind = 'reversal'")
acknowledged=$(q "SELECT count(*) FROM saf WHERE kind = 'reversal' AND state = 'acknowledged'")
released_twice=$(jq -r 'select(.reversal == "released") | "\(.original_stan) \(.original_transmission)"' \
    "${OUT}/issuer-record.jsonl" | sort | uniq -d | wc -l)
reversed_at_issuer=$(jq -r 'select(.reversal) | "\(.original_stan) \(.original_transmission)"' \
    "${OUT}/issuer-record.jsonl" | sort -u | wc -l)
transactions=$(q "SELECT count(*) FROM txn")
echo
echo "journal: ${transactions} transactions; 91: ${timeouts} timeouts or lost links, ${unavailable} with no" \
    "live link (not sent); ${reversals} reversals queued (${acknowledged} acknowledged); the issuer saw" \
    "reversals of ${reversed_at_issuer} originals"
check "loadgen exit status (every request answered once, its own answer, expected code)" "$code" 0
check "hostile exit status (floods and slow requests answered once each, their own)" "$hostile_code" 0
check "timeouts (91) in the journal without a reversal" "$unreversed" 0
check "91s for want of a live link that the issuer saw anyway" "$unsent_seen" 0
check "reversals not acknowledged after the drain" "$((reversals - acknowledged))" 0
check "originals the issuer reversed, against reversals acknowledged" "$reversed_at_issuer" "$acknowledged"
check "originals the issuer released twice" "$released_twice" 0
check "requests outstanding at the issuer (gauge)" "$outstanding" 0
exit "$failed"
