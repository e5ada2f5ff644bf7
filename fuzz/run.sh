#!/bin/sh
# Builds the fuzz targets on the stable toolchain (libFuzzer with coverage
# instrumentation, no sanitizer: what `cargo fuzz run -s none` does) and runs
# each for SECONDS (default 60), seeded from seeds/<target>/; new inputs go to
# corpus/<target>/, crashes to artifacts/<target>/. With cargo-fuzz and a
# nightly toolchain, `cargo +nightly fuzz run <target> corpus/<target> seeds/<target>`
# does the same with AddressSanitizer.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -eu
cd "$(dirname "$0")"
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"decode frame_2b frame_4b frame_2a frame_4a config jpos_xml moov_json hotlist"}
triple=x86_64-unknown-linux-gnu
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target "$triple" --bins
for target in $targets; do
    mkdir -p "corpus/$target" "artifacts/$target"
    "target/$triple/release/$target" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" "corpus/$target" "seeds/$target" \
        2>&1 | tail -n 12 | sed "s|^|$target: |"
done
