#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time and fails on a crash:
#   bash scripts/fuzz.sh            (DRIFTD_FUZZ_SECONDS per target, default 60)
#   bash scripts/fuzz.sh build      (only the tools and the instrumented build: scripts/test.sh
#                                    runs it in the background while the integration tests run)
# Installs what it needs if missing — nightly Rust (minimal profile) and cargo-fuzz, cached in
# ~/.cache/driftd like the test command's broker — and is idempotent. scripts/test.sh runs it.
# The targets build driftd without its `kafka` feature, so the first, instrumented build of
# every dependency skips librdkafka; it is cached in ~/.cache/driftd/fuzz-target afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${DRIFTD_CACHE:-$HOME/.cache/driftd}
CARGO_FUZZ_VERSION=0.13.2
CARGO_FUZZ_ROOT=$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION
CARGO_FUZZ=$CARGO_FUZZ_ROOT/bin/cargo-fuzz
# The fuzz build (every dependency instrumented) is cached across clones: only the first run on
# a machine builds the dependencies.
FUZZ_TARGET_DIR=$CACHE/fuzz-target
# The targets in fuzz/fuzz_targets/, each run for FUZZ_SECONDS.
FUZZ_TARGETS=(decode config snapshot)
FUZZ_SECONDS=${DRIFTD_FUZZ_SECONDS:-60}

log() { echo "==> $*" >&2; }

# cargo-fuzz needs nightly Rust (sanitizer and coverage flags); stable stays the default.
install_fuzz_tools() {
  if ! rustup toolchain list | grep -q '^nightly-'; then
    log "installing the nightly Rust toolchain for cargo-fuzz (about 15 s)"
    rustup toolchain install nightly --profile minimal
  fi
  if [ ! -x "$CARGO_FUZZ" ]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION into $CARGO_FUZZ_ROOT (about 2 minutes; cached afterwards)"
    mkdir -p "$CACHE"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$CARGO_FUZZ_ROOT"
  fi
}

# `cargo +nightly fuzz`, with exactly the cargo-fuzz installed above (cargo would prefer another
# one in ~/.cargo/bin) and the cached target directory.
cargo_fuzz() {
  RUSTUP_TOOLCHAIN=nightly CARGO_TARGET_DIR="$FUZZ_TARGET_DIR" "$CARGO_FUZZ" fuzz "$@"
}

# Runs each fuzz target for FUZZ_SECONDS from the committed seeds in fuzz/corpus/<target>; what
# it discovers goes to a corpus cached outside the clone, so the committed one stays as it is
# and later runs start from further in. A crash fails the run, naming the saved input.
build_fuzz_targets() {
  install_fuzz_tools
  log "cargo fmt --check (fuzz targets)"
  cargo fmt --manifest-path fuzz/Cargo.toml --check
  log "cargo +nightly fuzz build (release with debug assertions, AddressSanitizer)"
  cargo_fuzz build
}

run_fuzz_targets() {
  build_fuzz_targets
  local target grown out
  for target in "${FUZZ_TARGETS[@]}"; do
    grown=$CACHE/fuzz-corpus/$target
    out=$FUZZ_TARGET_DIR/$target.log
    mkdir -p "$grown"
    log "fuzzing $target for ${FUZZ_SECONDS}s (log: $out)"
    if ! cargo_fuzz run "$target" "$grown" "fuzz/corpus/$target" -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 >"$out" 2>&1; then
      tail -n 60 "$out" >&2
      echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/. Reproduce with" \
        "cargo +nightly fuzz run $target <input>, fix the bug, and commit the input to" \
        "fuzz/corpus/$target/" >&2
      exit 1
    fi
    grep -E '^Done |stat::(number_of_executed_units|average_exec_per_sec|new_units_added)' "$out" >&2
  done
}

if [ "${1:-}" = build ]; then
  build_fuzz_targets
  log "fuzz targets built"
else
  run_fuzz_targets
  log "fuzzing passed"
fi
