#!/usr/bin/env bash
# Builds the consent-string fuzz target with libFuzzer instrumentation on
# stable Rust (no cargo-fuzz, no nightly, no sanitizer) and fuzzes it.
#
#   tests/fuzz/run.sh [seconds=600] [extra libFuzzer flags...]
#
# The corpus grows in tests/fuzz/corpus/ (seeded from tests/fuzz/seeds/, the
# fixture strings); crashes land in tests/fuzz/artifacts/. Exit status is
# libFuzzer's: non-zero if it found a crash.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true

triple="$(rustc -vV | sed -n 's/^host: //p')"

# The same coverage flags `cargo fuzz build --sanitizer none` passes. `--target`
# keeps them away from build scripts (which would not link). Debug assertions
# and overflow checks come from this crate's [profile.release].
export RUSTFLAGS="${RUSTFLAGS:-} \
 -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 --cfg fuzzing"

# Start from the main crate's pinned dependency versions.
cp ../../Cargo.lock Cargo.lock
cargo build --release --target "$triple" --bin consent_strings

mkdir -p corpus artifacts
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
exec "target/$triple/release/consent_strings" \
  -max_total_time="$seconds" \
  -max_len=4096 \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  -artifact_prefix=artifacts/ \
  "$@" \
  corpus seeds
