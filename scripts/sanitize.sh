#!/usr/bin/env bash
# Runs the whole test suite under a sanitizer, in its own build folder.
#
#   scripts/sanitize.sh address [swift test flags]   AddressSanitizer (+ LeakSanitizer)  -> .build-asan/
#   scripts/sanitize.sh thread  [swift test flags]   ThreadSanitizer                     -> .build-tsan/
#
# Suppressions, each with its reason, are in scripts/sanitizers/; docs/fuzzing.md lists them. A report
# fails the run: sanitizers halt on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
kind=${1:-}
case "$kind" in
    address) out=.build-asan ;;
    thread) out=.build-tsan ;;
    *)
        sed -n '2,8p' "$0"
        exit 2
        ;;
esac
shift
here=$(pwd)/scripts/sanitizers
# A sanitizer report ends the process with an exit code (not abort()), and Swift's own crash backtracer,
# which would spend minutes symbolising a sanitized test binary, stays off.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:suppressions=$here/asan.supp${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$here/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
swift build --build-tests --build-path "$out" --sanitize="$kind"
swift test --skip-build --build-path "$out" --sanitize="$kind" --no-parallel "$@"
