#!/usr/bin/env bash
# The whole test suite from a fresh machine, in one command:
#   installs what the tests need (system packages incl. Prometheus Alertmanager, the tansu
#   broker cached across runs and built in the background on first use, the OpenFeature flagd
#   Python provider), runs cargo fmt --check, cargo clippy -D warnings (all targets, so the
#   benches are compiled too; with the default features, as plain `cargo clippy` runs it; with
#   `e2e`; and the library without the `kafka` feature, as the fuzz targets build it) and the
#   unit tests, which need no service; then starts tansu (sqlite storage) and Alertmanager on
#   free loopback ports and runs the integration tests (`--features e2e`: the in-process tier
#   that plain `cargo test` runs, plus the tests against these services), and every fuzz target
#   for DRIFTD_FUZZ_SECONDS (default 30) each through scripts/fuzz.sh (nightly Rust and
#   cargo-fuzz installed and the instrumented build cached in ~/.cache/driftd, like the broker).
# Idempotent: cached installs are reused and the services of an earlier run are stopped first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${DRIFTD_CACHE:-$HOME/.cache/driftd}
TANSU_VERSION=0.6.0
TANSU_ROOT=$CACHE/tansu-$TANSU_VERSION
TANSU=$TANSU_ROOT/bin/tansu
SERVICES=$ROOT/.test-services

log() { echo "==> $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Besides the build tools: Alertmanager and Prometheus (promtool, amtool) for the alert and
# dashboard tests, and for the deploy/ tests (tests/it/deploy.rs) kubectl (its built-in
# kustomize renders deploy/k8s; the package comes from the Kubernetes/Cloud SDK apt repository
# this machine kind has, Debian's own kubernetes-client is too old for kustomize v5),
# systemd-analyze (package systemd) and docker-compose (validates the stack without a daemon);
# chromium and chromium-driver for the on-call page's browser test (tests/it/ui_e2e.rs).
install_system_packages() {
  local missing=()
  for pkg in pkg-config libssl-dev zlib1g-dev make gcc g++ prometheus-alertmanager prometheus openssl \
    kubectl systemd docker-compose chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

# The broker's first build takes about 17 minutes on 2 cores; it runs in the background (a process
# group of its own, so a failed run can stop it) while the checks that need no broker run: fmt,
# clippy and the unit tests. wait_tansu then waits for it.
install_tansu_in_background() {
  if [ -x "$TANSU" ]; then
    return
  fi
  log "building tansu $TANSU_VERSION into $TANSU_ROOT in the background (about 17 minutes on 2 cores; cached afterwards; log: $SERVICES/tansu-build.log)"
  mkdir -p "$CACHE"
  setsid cargo install tansu --version "$TANSU_VERSION" --features libsql,dynostore --locked \
    --root "$TANSU_ROOT" >"$SERVICES/tansu-build.log" 2>&1 &
  echo $! >"$SERVICES/tansu-build.pid"
}

wait_tansu() {
  if [ -f "$SERVICES/tansu-build.pid" ]; then
    log "waiting for the tansu build"
    if ! wait "$(cat "$SERVICES/tansu-build.pid")"; then
      tail -n 50 "$SERVICES/tansu-build.log" >&2
      echo "building tansu failed (log above and in $SERVICES/tansu-build.log)" >&2
      exit 1
    fi
    rm -f "$SERVICES/tansu-build.pid"
  fi
  if [ ! -x "$TANSU" ]; then
    echo "tansu is not at $TANSU after its build" >&2
    exit 1
  fi
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
  # Selenium drives Debian's chromium through chromium-driver, both given by path (its driver
  # manager downloads nothing then).
  if ! python3 -c 'import selenium' 2>/dev/null; then
    log "installing selenium (PyPI)"
    python3 -m pip install -q selenium==4.51.0
  fi
  # The Kubernetes API's schemas, offline: the rendered manifests are validated against them.
  if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    log "installing kubernetes-validate (PyPI)"
    python3 -m pip install -q kubernetes-validate==1.37.0
  fi
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
  # The background builds are process groups of their own (setsid): cargo and rustc with them.
  local build
  for build in fuzz-build tansu-build; do
    if [ -f "$SERVICES/$build.pid" ]; then
      kill -- -"$(cat "$SERVICES/$build.pid")" 2>/dev/null || true
      rm -f "$SERVICES/$build.pid"
    fi
  done
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
mkdir -p "$SERVICES"
trap stop_services EXIT
stop_services
install_tansu_in_background
install_python_packages

log "cargo fmt --check"
cargo fmt --check
log "cargo clippy --all-targets -- -D warnings (the default features, as a contributor runs it)"
cargo clippy --all-targets -- -D warnings
log "cargo clippy --all-targets --features e2e -- -D warnings"
cargo clippy --all-targets --features e2e -- -D warnings
log "cargo clippy --no-default-features --all-targets -- -D warnings (the fuzz targets' build)"
cargo clippy --no-default-features --all-targets -- -D warnings
# The unit tests need no service, so they run while a first tansu build may still be going.
log "cargo test --features e2e --lib --bins (the unit tests)"
cargo test --features e2e --lib --bins

wait_tansu
start_tansu
start_alertmanager
# The fuzz targets' first, instrumented build (8 minutes cold, seconds once cached) runs beside the
# integration tests, which mostly wait on the broker and on timers; at the lowest priority, so
# the tests' driftd processes keep the CPU when they need it. scripts/fuzz.sh below repeats the
# build (a no-op once it succeeded) and so reports any error it had.
log "building the fuzz targets in the background (log: $SERVICES/fuzz-build.log)"
setsid nice -n 19 bash scripts/fuzz.sh build >"$SERVICES/fuzz-build.log" 2>&1 &
echo $! >"$SERVICES/fuzz-build.pid"
log "cargo test --features e2e --test it, then --doc (the integration tests; broker $DRIFTD_TEST_BROKER, Alertmanager $DRIFTD_TEST_ALERTMANAGER)"
cargo test --features e2e --test it
cargo test --features e2e --doc
log "waiting for the fuzz targets' build"
wait "$(cat "$SERVICES/fuzz-build.pid")" || true
rm -f "$SERVICES/fuzz-build.pid"
# 30 s per target keeps the test command's cold run in budget; scripts/fuzz.sh alone runs 60 s.
DRIFTD_FUZZ_SECONDS=${DRIFTD_FUZZ_SECONDS:-30} bash scripts/fuzz.sh
log "all checks passed"
