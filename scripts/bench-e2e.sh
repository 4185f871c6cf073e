#!/usr/bin/env bash
# End-to-end throughput: events/s from a real broker (tansu, sqlite storage) through `driftd run`
# (release build) until every event is applied, against a raw consume loop with the same client
# settings that only counts messages (examples/raw_consume.rs), on the same topic in the same run.
# Produces N events first with `driftd gen`, then times each consumer alone: wall time by polling
# /metrics, CPU from the process's utime + stime, both from the first message to the last (the
# consumer-group join left out), and driftd's peak RSS.
#   usage: scripts/bench-e2e.sh [EVENTS]        (default 200000)
# Needs tansu: run scripts/test.sh once, or set TANSU=/path/to/tansu.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
TANSU=${TANSU:-$HOME/.cache/driftd/tansu-0.6.0/bin/tansu}
WORK=$(mktemp -d)
cleanup() {
  # driftd first (it commits to the broker), then the broker.
  [ -n "${DRIFTD_PID:-}" ] && kill "$DRIFTD_PID" 2>/dev/null && wait "$DRIFTD_PID" 2>/dev/null
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KPORT=$(port)
APORT=$(port)
cargo build --release -q --example raw_consume
BIN=target/release/driftd
RAW=target/release/examples/raw_consume
cpu() { awk '{sub(/.*\) /, ""); print ($12 + $13) / 100}' "/proc/$1/stat"; }
(cd "$WORK" && exec "$TANSU" --listener-url "tcp://127.0.0.1:$KPORT" --advertised-listener-url "tcp://127.0.0.1:$KPORT" \
  --storage-engine sqlite://tansu.db >tansu.log 2>&1) &
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break; sleep 0.2; done
TOPIC=bench-$$
"$TANSU" topic create "$TOPIC" --partitions 3 --broker "tcp://127.0.0.1:$KPORT" >/dev/null 2>&1 || true
echo "producing $N events to $TOPIC ..." >&2
"$BIN" gen --brokers "127.0.0.1:$KPORT" --topic "$TOPIC" --rate 0 --count "$N" --deployments 6 2>&1 | tail -1 >&2
"$BIN" run --brokers "127.0.0.1:$KPORT" --topic "$TOPIC" --group "bench-$$" --admin-addr "127.0.0.1:$APORT" 2>"$WORK/driftd.log" &
DRIFTD_PID=$!
start=$(date +%s.%N)
first=""
first_n=0
while :; do
  applied=$(curl -s "http://127.0.0.1:$APORT/metrics" | awk '/^driftd_events_total\{outcome="applied"\}/ {print $2}')
  applied=${applied:-0}
  if [ -z "$first" ] && [ "$applied" -gt 0 ]; then first=$(date +%s.%N); first_n=$applied; first_cpu=$(cpu "$DRIFTD_PID"); fi
  [ "$applied" -ge "$N" ] && break
  sleep 0.05
done
end=$(date +%s.%N)
end_cpu=$(cpu "$DRIFTD_PID")
peak_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$DRIFTD_PID/status")
echo "raw consume loop on the same topic ..." >&2
raw=$("$RAW" "127.0.0.1:$KPORT" "$TOPIC" "raw-$$" "$N")
python3 - "$N" "$start" "$first" "$first_n" "$end" "$first_cpu" "$end_cpu" "$peak_kib" "$raw" <<'PY'
import json, sys
n, s, f, fn, e = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
cpu0, cpu1, peak, raw = float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8]), json.loads(sys.argv[9])
steady = n - fn
d_rate, d_cpu = steady / (e - f), (cpu1 - cpu0) / steady * 1e6
r_rate, r_cpu = raw["messages"] / raw["wall_s"], raw["cpu_s"] / raw["messages"] * 1e6
print(f"{n} events applied {e - s:.2f} s after start ({n / (e - s):,.0f} events/s including group join)")
print(f"driftd run:   {d_rate:,.0f} events/s steady state, {d_cpu:.2f} us CPU/event, peak RSS {peak / 1024:,.0f} MiB")
print(f"raw consumer: {r_rate:,.0f} messages/s, {r_cpu:.2f} us CPU/message")
print(f"driftd / raw: wall rate {d_rate / r_rate:.0%}, CPU per event {d_cpu / r_cpu:.2f}x")
PY
