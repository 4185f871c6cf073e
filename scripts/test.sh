#!/usr/bin/env bash
# The whole test suite from a fresh machine, in one command:
#   installs what the tests need (system packages, the tansu broker, cached across runs),
#   starts tansu on a free loopback port with sqlite storage, then runs
#   cargo fmt --check, cargo clippy -D warnings, every test, and a compile check of the benches.
# Idempotent: cached installs are reused and the broker of an earlier run is stopped first.
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

install_system_packages() {
  local missing=()
  for pkg in pkg-config libssl-dev zlib1g-dev make gcc g++ python3; do
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
  log "installing tansu $TANSU_VERSION into $TANSU_ROOT (about 8 minutes on 2 cores; cached afterwards)"
  mkdir -p "$CACHE"
  cargo install tansu --version "$TANSU_VERSION" --features libsql,dynostore --locked --root "$TANSU_ROOT"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_tansu() {
  if [ -f "$SERVICES/tansu.pid" ]; then
    kill "$(cat "$SERVICES/tansu.pid")" 2>/dev/null || true
    rm -f "$SERVICES/tansu.pid"
  fi
}

start_tansu() {
  stop_tansu
  mkdir -p "$SERVICES"
  rm -f "$SERVICES"/tansu.db*
  local port
  port=$(free_port)
  log "starting tansu on 127.0.0.1:$port (log: $SERVICES/tansu.log)"
  (
    cd "$SERVICES"
    nohup "$TANSU" \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "sqlite://tansu.db" >tansu.log 2>&1 &
    echo $! >tansu.pid
  )
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export DRIFTD_TEST_BROKER="127.0.0.1:$port"
      return
    fi
    if ! kill -0 "$(cat "$SERVICES/tansu.pid")" 2>/dev/null; then
      cat "$SERVICES/tansu.log" >&2
      echo "tansu exited during start-up" >&2
      exit 1
    fi
    sleep 0.2
  done
  cat "$SERVICES/tansu.log" >&2
  echo "tansu did not accept connections on port $port within 20s" >&2
  exit 1
}

install_system_packages
install_tansu
start_tansu
trap stop_tansu EXIT

log "cargo fmt --check"
cargo fmt --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
log "cargo test (broker $DRIFTD_TEST_BROKER)"
cargo test -- --nocapture
log "cargo bench --no-run"
cargo bench --no-run
log "all checks passed"
