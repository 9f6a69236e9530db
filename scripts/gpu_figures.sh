#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md reports, in one command:  bash scripts/gpu_figures.sh LOGDIR [--quick]
#
# Run from the repository root on a GPU machine, after (or instead of) scripts/gpu_check.sh; it
# installs nothing and runs the checkout with PYTHONPATH=. like that script. Steps, each under its
# own timeout, logs and JSON lines in LOGDIR:
#   bn_gpu       benchmarks/bn_gpu.py: batch norm's kernels, node, formula, PyTorch, copies
#   train_step   benchmarks/train_step.py --device gpu (TRAIN_STEP_ROUNDS rounds, default 2)
#   train_gpu    examples/train.py --synthetic ROWS --batch-size 4096 --device gpu: wall seconds
#   train_cpu    the same with --device cpu, on the same machine, after the GPU run
# ROWS is 200000 (the figure issue 8 asks for); --quick runs the benchmarks' quick modes and
# trains on 2000 rows for 2 epochs, a smoke test (tests/test_gpu_check.py runs it on the stand-in).
# Ends with a summary (also LOGDIR/summary.txt); exit status 0 only if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

logdir="${1:?usage: bash scripts/gpu_figures.sh LOGDIR [--quick]}"
quick="${2:-}"
mkdir -p "$logdir" || exit 2
logdir="$(cd "$logdir" && pwd)"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
bench_flags=(--json)
train_flags=(--synthetic 200000 --batch-size 4096)
if [ "$quick" = --quick ]; then
  bench_flags=(--json --quick)
  train_flags=(--synthetic 2000 --batch-size 256 --epochs 2)
fi
results=()

# timed NAME SECONDS COMMAND...: run under a timeout into LOGDIR/NAME.log; record status and wall seconds.
timed() {
  local name="$1" limit="$2"
  shift 2
  echo "== $name (timeout ${limit}s): $*"
  local start end status
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >"$logdir/$name.log" 2>&1
  status=$?
  end=$(date +%s.%N)
  results+=("$name $status $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')")
}

timed bn_gpu 90 "$py" benchmarks/bn_gpu.py "${bench_flags[@]}"
timed train_step 200 "$py" benchmarks/train_step.py --device gpu --rounds "${TRAIN_STEP_ROUNDS:-2}" "${bench_flags[@]}"
timed train_gpu 150 "$py" examples/train.py "${train_flags[@]}" --device gpu
timed train_cpu 240 "$py" examples/train.py "${train_flags[@]}" --device cpu

{
  echo "== summary (logs in $logdir)"
  failed=0
  for entry in "${results[@]}"; do
    read -r name status seconds <<<"$entry"
    verdict=ok
    [ "$status" -ne 0 ] && verdict=FAILED && failed=1
    [ "$status" -eq 124 ] && verdict="TIMED OUT"
    printf '  %-12s exit %-4s %-10s wall %6s s\n' "$name" "$status" "$verdict" "$seconds"
  done
  for name in train_gpu train_cpu; do  # the examples' own line: epochs, and training time alone
    grep -h "epochs in" "$logdir/$name.log" 2>/dev/null | sed "s/^/  $name: /"
  done
  grep -v '^{' "$logdir/bn_gpu.log" 2>/dev/null | tail -n 25
  grep -v '^{' "$logdir/train_step.log" 2>/dev/null | tail -n 12
  exit "$failed"
} | tee "$logdir/summary.txt"
exit "${PIPESTATUS[0]}"
