#!/usr/bin/env bash
# Builds and runs Tailplane's coverage-guided fuzzers (libFuzzer with AddressSanitizer).
#
#   scripts/fuzz.sh build [TARGET...]           build into .build-fuzz/ (all targets by default)
#   scripts/fuzz.sh run TARGET [libFuzzer flags] fuzz from the committed corpus (new inputs go to
#                                                .build-fuzz/corpus/TARGET; crashes to .build-fuzz/crashes/)
#   scripts/fuzz.sh smoke [RUNS]                 build, then run every target over its corpus plus RUNS inputs
#
# Targets live in Fuzz/TARGET/ (Fuzz.swift, corpus/, dictionary.txt). A target is compiled with the module
# it fuzzes as one Swift module, so normal `swift build` never sees it. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
OUT=.build-fuzz
TARGETS=(policy-compiler)

sources() {
    case "$1" in
        policy-compiler) find Sources/PolicyEngine -name '*.swift' | sort ;;
        *) echo "unknown fuzz target: $1 (targets: ${TARGETS[*]})" >&2; exit 2 ;;
    esac
}

build() {
    mkdir -p "$OUT"
    for target in "$@"; do
        echo "building fuzz-$target" >&2
        # shellcheck disable=SC2046
        swiftc -O -g -sanitize=fuzzer,address -parse-as-library -swift-version 6 \
            -module-name "Fuzz_${target//-/_}" $(sources "$target") "Fuzz/$target/Fuzz.swift" \
            -o "$OUT/fuzz-$target"
    done
}

run() {
    local target=$1
    shift
    mkdir -p "$OUT/corpus/$target" "$OUT/crashes/$target"
    "$OUT/fuzz-$target" "$OUT/corpus/$target" "Fuzz/$target/corpus" -dict="Fuzz/$target/dictionary.txt" \
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
        for target in "${TARGETS[@]}"; do run "$target" -runs="$runs"; done
        ;;
    *)
        sed -n '2,11p' "$0"
        exit 2
        ;;
esac
