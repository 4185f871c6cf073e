#!/usr/bin/env bash
# The whole test suite from a fresh machine, in one command:
#   installs what the tests need (system packages incl. Prometheus Alertmanager, the tansu
#   broker cached across runs, the OpenFeature flagd Python provider), starts tansu (sqlite
#   storage) and Alertmanager on free loopback ports, then runs
#   cargo fmt --check, cargo clippy -D warnings, every test of both tiers (`--features e2e`:
#   the in-process tier that plain `cargo test` runs, plus the tests against these services),
#   a compile check of the benches, and each cargo-fuzz target for a bounded time (nightly Rust
#   and cargo-fuzz are installed if missing; DRIFTD_FUZZ_SECONDS per target, default 60).
# Idempotent: cached installs are reused and the services of an earlier run are stopped first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${DRIFTD_CACHE:-$HOME/.cache/driftd}
TANSU_VERSION=0.6.0
TANSU_ROOT=$CACHE/tansu-$TANSU_VERSION
TANSU=$TANSU_ROOT/bin/tansu
SERVICES=$ROOT/.test-services
CARGO_FUZZ_VERSION=0.13.2
CARGO_FUZZ_ROOT=$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION
CARGO_FUZZ=$CARGO_FUZZ_ROOT/bin/cargo-fuzz
# The fuzz build (every dependency instrumented) is cached across clones like tansu: only the
# first run on a machine builds the dependencies.
FUZZ_TARGET_DIR=$CACHE/fuzz-target
# The targets in fuzz/fuzz_targets/ that the test command runs, each for FUZZ_SECONDS.
FUZZ_TARGETS=(decode config)
FUZZ_SECONDS=${DRIFTD_FUZZ_SECONDS:-60}

log() { echo "==> $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_system_packages() {
  local missing=()
  for pkg in pkg-config libssl-dev zlib1g-dev make gcc g++ prometheus-alertmanager openssl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

install_tansu() {
  if [ -x "$TANSU" ]; then
    return
  fi
  log "installing tansu $TANSU_VERSION into $TANSU_ROOT (about 20 minutes on 2 cores; cached afterwards)"
  mkdir -p "$CACHE"
  cargo install tansu --version "$TANSU_VERSION" --features libsql,dynostore --locked --root "$TANSU_ROOT"
}

install_python_packages() {
  if ! python3 -c 'import openfeature.contrib.provider.flagd' 2>/dev/null; then
    log "installing the OpenFeature flagd provider (PyPI)"
    python3 -m pip install -q openfeature-sdk openfeature-provider-flagd
  fi
  # standardwebhooks: the independent verifier of driftd's signed webhooks; bcrypt: the
  # password hash of the Alertmanager the TLS + basic-auth test starts.
  if ! python3 -c 'import standardwebhooks, bcrypt' 2>/dev/null; then
    log "installing the Standard Webhooks reference library and bcrypt (PyPI)"
    python3 -m pip install -q standardwebhooks bcrypt
  fi
}

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
run_fuzz_targets() {
  install_fuzz_tools
  log "cargo fmt --check (fuzz targets)"
  cargo fmt --manifest-path fuzz/Cargo.toml --check
  log "cargo +nightly fuzz build (release with debug assertions, AddressSanitizer)"
  cargo_fuzz build
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

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_service() {
  if [ -f "$SERVICES/$1.pid" ]; then
    kill "$(cat "$SERVICES/$1.pid")" 2>/dev/null || true
    rm -f "$SERVICES/$1.pid"
  fi
}

stop_services() {
  stop_service tansu
  stop_service alertmanager
}

# Waits until service $1 accepts connections on port $2. Returns 1 if it exited during
# start-up (e.g. another process took the port between free_port and its bind), so the caller
# can retry on a new port; fails the run if it neither exits nor listens within 20 s.
wait_port() { # name port
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$(cat "$SERVICES/$1.pid")" 2>/dev/null; then
      cat "$SERVICES/$1.log" >&2
      echo "$1 exited during start-up" >&2
      return 1
    fi
    sleep 0.2
  done
  cat "$SERVICES/$1.log" >&2
  echo "$1 did not accept connections on port $2 within 20s" >&2
  exit 1
}

# Starts service $1 with function $2 PORT, on a new free port up to three times: a port handed
# out by free_port can be taken by someone else before the service binds it.
start_on_free_port() { # name start-function
  local port
  for _ in 1 2 3; do
    port=$(free_port)
    "$2" "$port"
    if wait_port "$1" "$port"; then
      STARTED_PORT=$port
      return
    fi
  done
  echo "$1 could not start on a free port after three tries" >&2
  exit 1
}

launch_alertmanager() { # port
  log "starting Alertmanager on 127.0.0.1:$1 (log: $SERVICES/alertmanager.log)"
  nohup prometheus-alertmanager \
    --config.file="$SERVICES/alertmanager/alertmanager.yml" \
    --storage.path="$SERVICES/alertmanager/data" \
    --web.listen-address="127.0.0.1:$1" \
    --cluster.listen-address= >"$SERVICES/alertmanager.log" 2>&1 &
  echo $! >"$SERVICES/alertmanager.pid"
}

start_alertmanager() {
  stop_service alertmanager
  mkdir -p "$SERVICES/alertmanager"
  rm -rf "$SERVICES/alertmanager/data"
  printf 'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n' >"$SERVICES/alertmanager/alertmanager.yml"
  start_on_free_port alertmanager launch_alertmanager
  export DRIFTD_TEST_ALERTMANAGER="http://127.0.0.1:$STARTED_PORT"
}

launch_tansu() { # port
  log "starting tansu on 127.0.0.1:$1 (log: $SERVICES/tansu.log)"
  (
    cd "$SERVICES"
    nohup "$TANSU" \
      --listener-url "tcp://127.0.0.1:$1" \
      --advertised-listener-url "tcp://127.0.0.1:$1" \
      --storage-engine "sqlite://tansu.db" >tansu.log 2>&1 &
    echo $! >tansu.pid
  )
}

start_tansu() {
  stop_service tansu
  mkdir -p "$SERVICES"
  rm -f "$SERVICES"/tansu.db*
  start_on_free_port tansu launch_tansu
  export DRIFTD_TEST_BROKER="127.0.0.1:$STARTED_PORT"
}

install_system_packages
install_python_packages
install_tansu
mkdir -p "$SERVICES"
trap stop_services EXIT
start_tansu
start_alertmanager

log "cargo fmt --check"
cargo fmt --check
log "cargo clippy --all-targets --features e2e -- -D warnings"
cargo clippy --all-targets --features e2e -- -D warnings
log "cargo test --features e2e (broker $DRIFTD_TEST_BROKER, Alertmanager $DRIFTD_TEST_ALERTMANAGER)"
cargo test --features e2e
log "cargo bench --no-run"
cargo bench --no-run
run_fuzz_targets
log "all checks passed"
