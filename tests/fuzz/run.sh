#!/usr/bin/env bash
# Builds one fuzz target with libFuzzer instrumentation on stable Rust (no
# cargo-fuzz, no nightly, no sanitizer) and fuzzes it.
#
#   tests/fuzz/run.sh <target> [seconds=600] [extra libFuzzer flags...]
#
# Targets are the files in tests/fuzz/fuzz_targets/: consent_strings,
# requests, tokens, manifests. Each has its own directories: the corpus
# grows in tests/fuzz/corpus/<target>/ (seeded from tests/fuzz/seeds/<target>/,
# which make_seeds.py writes) and crashes land in
# tests/fuzz/artifacts/<target>/. Exit status is libFuzzer's: non-zero if it
# found a crash.
set -euo pipefail

cd "$(dirname "$0")"

targets="$(cd fuzz_targets && ls -- *.rs | sed 's/\.rs$//' | tr '\n' ' ')"
usage() {
  echo "usage: $0 <target> [seconds=600] [extra libFuzzer flags...]" >&2
  echo "targets: $targets" >&2
  exit 2
}
target="${1:-}"
[[ -n "$target" && -f "fuzz_targets/$target.rs" ]] || usage
shift
seconds="${1:-600}"
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || usage

# Inputs longer than this are not tried. Manifests are tens of KB (the
# bundled ones are ~44 KB); everything else is a short string or message.
case "$target" in
  manifests) max_len=65536 ;;
  *) max_len=4096 ;;
esac

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
cargo build --release --target "$triple" --bin "$target"

mkdir -p "corpus/$target" "seeds/$target" "artifacts/$target"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
exec "target/$triple/release/$target" \
  -max_total_time="$seconds" \
  -max_len="$max_len" \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  -artifact_prefix="artifacts/$target/" \
  "$@" \
  "corpus/$target" "seeds/$target"
