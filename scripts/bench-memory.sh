#!/usr/bin/env bash
# Memory per cohort, everything included: the peak resident set of `driftd replay` (release
# build) holding N cohorts — cohort windows and distributions, detection state, the per-cohort
# metric series and the final publication — for each N given, with the default windows and
# segment keys locale and channel (16 cohorts per generated deployment, about 20 events each).
#   usage: scripts/bench-memory.sh [N ...]      (default: 100 1000 10000 100000)
# 100,000 cohorts needs several GiB of memory and a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${*:-100 1000 10000 100000}
cargo build --release -q
BIN=target/release/driftd
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf '[cohorts]\nsegment_keys = ["locale", "channel"]\nmax_cohorts = 1000000\n' >"$WORK/driftd.toml"
for n in $SIZES; do
  deployments=$(((n + 15) / 16))
  events=$((n * 20))
  "$BIN" gen --count "$events" --rate 1000 --deployments "$deployments" --seed 5 \
    --start 2026-11-29T05:00:00Z --output "$WORK/events.jsonl" 2>/dev/null
  python3 - "$BIN" "$WORK" "$n" "$events" <<'PY'
import resource, subprocess, sys, time
binary, work, n, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
start = time.time()
subprocess.run([binary, "replay", "--config", f"{work}/driftd.toml", "--input", f"{work}/events.jsonl"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(f"{n:>7} cohorts ({events:,} events): peak RSS {peak_kib / 1024:,.0f} MiB, "
      f"{peak_kib / n:,.1f} KiB per cohort, {time.time() - start:.1f} s")
PY
  rm -f "$WORK/events.jsonl"
done
