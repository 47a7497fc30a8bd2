#!/usr/bin/env bash
# Every performance figure of BENCHMARKS.md, re-runnable:
#  1. handler CPU per record (criterion) and the Powertools (Python) baseline on the same events;
#  2. batch latency vs concurrency, cold start and peak RSS (local stand-ins, no AWS);
#  3. the release Lambda binaries' sizes.
# The reset-vs-Scan figures come from scripts/bench-reset.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

cargo bench --locked --bench handler -- --noplot 2>&1 | grep -E "^plan/|time:|thrpt:"
tiersync_us() {
  python3 -c "import json,sys; e=json.load(open('target/criterion/plan/$1_records/new/estimates.json')); print(round(e['median']['point_estimate']/$1/1000, 3))"
}

venv=.venv-bench
scripts/venv.sh "$venv" requirements-bench.txt
echo
echo "| event | tiersync µs/record | Powertools µs/record | ratio |"
echo "|---|---|---|---|"
for n in 1000 10000; do
  ours=$(tiersync_us $n)
  theirs=$("$venv/bin/python" benches/powertools_baseline.py "target/bench-events/mix-$n.json" | python3 -c "import json,sys; print(json.load(sys.stdin)['us_per_record'])")
  echo "| $n records | $ours | $theirs | $(python3 -c "print(round($theirs/$ours))")x |"
done
echo
cargo bench --locked --bench latency -- "$@"
echo
# The bench profile inherits release (opt-level 2, fat LTO, strip), so these are the shipped sizes.
cargo build --release --locked --bin sync-lambda --bin reset-lambda 2>&1 | tail -1
for b in sync-lambda reset-lambda; do
  bytes=$(stat -c %s "target/release/$b")
  echo "$b: $bytes bytes = $(python3 -c "print(round($bytes/1048576, 2))") MiB (anchor <= 8 MiB)"
done
