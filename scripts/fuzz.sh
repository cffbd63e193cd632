#!/usr/bin/env bash
# Builds and runs Tailplane's coverage-guided fuzzers (libFuzzer with AddressSanitizer).
#
#   scripts/fuzz.sh build [TARGET...]             build into .build-fuzz/ (all targets by default)
#   scripts/fuzz.sh run TARGET [libFuzzer flags]  fuzz from the committed corpus (new inputs go to
#                                                 .build-fuzz/corpus/TARGET; crashes to .build-fuzz/crashes/)
#   scripts/fuzz.sh smoke [RUNS]                  build, then run every target over its corpus plus RUNS inputs
#   scripts/fuzz.sh campaign SECONDS [TARGET...]   each target for 10,000,000 runs or SECONDS of its own CPU
#                                                 time, whichever comes first (CPU time, so a busy machine
#                                                 does not shorten the run); figures in
#                                                 .build-fuzz/campaign-TARGET.log
#                                                 (TAILPLANE_FUZZ_PREBUILT=1: run the fuzzers as built, so
#                                                 edits made since do not rebuild them mid-campaign)
#   scripts/fuzz.sh list                          the targets
#
# Targets live in Fuzz/TARGET/ (Fuzz.swift, corpus/, dictionary.txt). They are package targets only when
# TAILPLANE_FUZZ=1, so a normal `swift build` never sees them. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
# A failed precondition traps and libFuzzer saves the input; Swift's own crash handler would only add noise.
export SWIFT_BACKTRACE=enable=no
# See the file for why each suppression is there.
export LSAN_OPTIONS="suppressions=$(pwd)/Fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
OUT=.build-fuzz
BIN=$OUT/release
TARGETS=(policy-compiler fleet-render otlp-json api-apply opamp-session opamp-transport csr)

build() {
    for target in "$@"; do
        if [ ! -d "Fuzz/$target" ]; then
            echo "unknown fuzz target: $target (targets: ${TARGETS[*]})" >&2
            exit 2
        fi
        echo "building fuzz-$target" >&2
        # --sanitize makes SwiftPM link libFuzzer and instrument C code, but it hands swiftc one -sanitize=
        # flag per sanitizer and swiftc keeps only the last: Swift code would get ASan and no coverage, and
        # the fuzzer would be blind to it. -Xswiftc comes last, so this combined flag wins.
        # -enable-testing: targets reach internal API (@testable import), as the unit tests do.
        TAILPLANE_FUZZ=1 swift build -c release --build-path "$OUT" --sanitize=fuzzer --sanitize=address \
            -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing --product "fuzz-$target"
    done
}

run() {
    local target=${1:?which target? (scripts/fuzz.sh list)}
    shift
    [ -x "$BIN/fuzz-$target" ] || build "$target"
    mkdir -p "$OUT/corpus/$target" "$OUT/crashes/$target"
    "$BIN/fuzz-$target" "$OUT/corpus/$target" "Fuzz/$target/corpus" -dict="Fuzz/$target/dictionary.txt" \
        -artifact_prefix="$OUT/crashes/$target/" -print_final_stats=1 "$@"
}

case "${1:-}" in
    build)
        shift
        if [ $# -eq 0 ]; then build "${TARGETS[@]}"; else build "$@"; fi
        ;;
    run)
        shift
        run "$@"
        ;;
    smoke)
        runs=${2:-20000}
        build "${TARGETS[@]}"
        for target in "${TARGETS[@]}"; do
            echo "smoke: fuzz-$target over its corpus plus $runs runs" >&2
            # A fresh corpus directory each time: the smoke run proves the committed seeds still pass.
            rm -rf "$OUT/corpus/smoke-$target"
            mkdir -p "$OUT/corpus/smoke-$target" "$OUT/crashes/$target"
            log="$OUT/smoke-$target.log"
            if ! "$BIN/fuzz-$target" "$OUT/corpus/smoke-$target" "Fuzz/$target/corpus" \
                -dict="Fuzz/$target/dictionary.txt" -artifact_prefix="$OUT/crashes/$target/" \
                -runs="$runs" -seed=1 -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
                tail -n 60 "$log" >&2
                echo "fuzz-$target failed; its input is in $OUT/crashes/$target/" >&2
                exit 1
            fi
            grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^#[0-9]+ +DONE" "$log" >&2 || true
        done
        ;;
    campaign)
        seconds=${2:?how many seconds of CPU time per target}
        shift 2
        targets=("$@")
        [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
        [ "${TAILPLANE_FUZZ_PREBUILT:-0}" = 1 ] || build "${targets[@]}"
        ticks=$(getconf CLK_TCK)
        for target in "${targets[@]}"; do
            log="$OUT/campaign-$target.log"
            echo "campaign: fuzz-$target for 10,000,000 runs or ${seconds}s of CPU time -> $log" >&2
            started=$(date +%s)
            # -timeout is wall-clock time: 30 s leaves room for a machine that is busy with other work.
            # -max_total_time is only a backstop (eight times the CPU budget in wall-clock time), should the
            # CPU-time watch below lose track of the fuzzer.
            run "$target" -runs=10000000 -timeout=30 -max_total_time=$((seconds * 8)) >"$log" 2>&1 &
            runner=$!
            used=0
            # libFuzzer counts wall-clock time only, so the CPU time is watched here: at the limit SIGINT
            # makes libFuzzer print its final figures and exit.
            while kill -0 "$runner" 2>/dev/null; do
                sleep 5
                fuzzer=$(pgrep -P "$runner" -f "fuzz-$target" | head -n 1) || continue
                read -r -a fields 2>/dev/null <"/proc/$fuzzer/stat" || continue
                used=$(((fields[13] + fields[14]) / ticks))
                if [ "$used" -ge "$seconds" ]; then kill -INT "$fuzzer" 2>/dev/null || true; fi
            done
            status=0
            wait "$runner" || status=$?
            # 72 is libFuzzer's exit code after SIGINT.
            if [ "$status" -ne 0 ] && [ "$status" -ne 72 ]; then
                echo "fuzz-$target stopped on a finding; its input is in $OUT/crashes/$target/ (see $log)" >&2
            fi
            echo "campaign: fuzz-$target used ${used}s of CPU time in $(($(date +%s) - started))s" | tee -a "$log" >&2
            grep -E "^#[0-9]+ +(DONE|NEW|REDUCE|pulse)" "$log" | tail -n 1 >&2 || true
        done
        ;;
    list)
        printf '%s\n' "${TARGETS[@]}"
        ;;
    *)
        sed -n '2,16p' "$0"
        exit 2
        ;;
esac
