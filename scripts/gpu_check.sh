#!/usr/bin/env bash
# One command that checks minigraph on a GPU machine:  bash scripts/gpu_check.sh LOGDIR
#
# Run from the repository root. It installs nothing (GPU machines here have no network): it runs
# the checkout with PYTHONPATH=. and whatever CuPy, NumPy and torch are installed. Every step has
# its own timeout, so one hang cannot eat the rest, and no step may run past the whole run's
# budget (GPU_CHECK_BUDGET seconds, default 450), so that the summary is written within 8 minutes
# even when steps hang: a step with no time left is not run, and counts as failed. If the preflight
# fails, nothing after it runs. Each step's output goes to LOGDIR/<step>.log, and the run ends with
# a summary of exit statuses and failing tests (also in LOGDIR/summary.txt). Exit status: 0 only
# if every step passed. PYTHON names the interpreter (default python3: images need not have a
# plain `python`).
#
# On a CPU machine, the same script runs against the CuPy stand-in (NOT a GPU):
#   PYTHONPATH=tests/standin bash scripts/gpu_check.sh /tmp/gpu_check
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

logdir="${1:?usage: bash scripts/gpu_check.sh LOGDIR}"
mkdir -p "$logdir" || exit 2
logdir="$(cd "$logdir" && pwd)"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export MINIGRAPH_DEVICE=gpu
py="${PYTHON:-python3}"
budget="${GPU_CHECK_BUDGET:-450}"
start=$SECONDS
results=()

# step NAME SECONDS COMMAND...: run with a timeout (capped by what is left of the budget, less 12 s
# for timeout's kill grace and the summary), log to LOGDIR/NAME.log, remember the status.
step() {
  local name="$1" limit="$2"
  shift 2
  local left=$(( budget - (SECONDS - start) - 12 ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 1 ]; then  # (timeout 0 would mean no limit at all)
    echo "== $name: NOT RUN, the ${budget}s budget is spent" | tee "$logdir/$name.log"
    results+=("$name not-run")
    return 1
  fi
  echo "== $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$logdir/$name.log" 2>&1
  local status=$?
  [ "$status" -eq 124 ] && echo "TIMED OUT after ${limit}s" >>"$logdir/$name.log"
  results+=("$name $status")
  echo "   exit $status ($(( SECONDS - start ))s elapsed)"
  return "$status"
}

step environment 60 bash -c "
  date -u; uname -a; echo
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo 'nvidia-smi: not found'; fi; echo
  $py - <<'PY'
import platform, numpy
print('python', platform.python_version(), '| numpy', numpy.__version__)
try:
    import cupy
    print('cupy', cupy.__version__, 'from', cupy.__file__)
    if getattr(cupy, 'IS_STANDIN', False):
        print('*** this is the CuPy STAND-IN from tests/standin: NOT a GPU ***')
    name = cupy.cuda.runtime.getDeviceProperties(0)['name']
    print('device 0:', name.decode() if isinstance(name, bytes) else name, '| driver', cupy.cuda.runtime.driverGetVersion(),
          '| runtime', cupy.cuda.runtime.runtimeGetVersion())
except Exception as exc:
    print('cupy: unavailable:', type(exc).__name__, exc)
try:
    import torch
    print('torch', torch.__version__, '| cuda available:', torch.cuda.is_available())
except Exception as exc:
    print('torch: unavailable:', type(exc).__name__, exc)
PY"

# Fail fast if CuPy cannot allocate and compute: nothing after this would mean anything.
if ! step preflight 20 "$py" -c "
import minigraph as mg
from minigraph import backend
if not backend.is_gpu_available():
    raise SystemExit('preflight: the GPU is not usable: ' + backend.gpu_unavailable_reason())
import cupy
# float64: every partial sum is an integer below 2**53, so the total is exact in any summation
# order (a float32 sum of these values is not: CUB's order rounds it by an ulp or more).
x = cupy.arange(1 << 20, dtype=cupy.float64)
total = float((x * 2).sum())
cupy.cuda.Device().synchronize()
assert total == float(2 * (1 << 20) * ((1 << 20) - 1) / 2), total
y = mg.relu(mg.Tensor(x[:6].reshape(2, 3), requires_grad=True))
assert y.device == 'gpu', y.device
print('preflight: CuPy allocates and computes on', backend.default_device())
"; then
  echo "preflight failed; see $logdir/preflight.log"
  cat "$logdir/preflight.log"
  preflight_failed=1
fi

if [ -n "${preflight_failed:-}" ]; then
  echo "== the remaining steps are not run: the preflight failed"
  for name in tests bench_train_step bench_bn_backward bench_bn_gpu bench_column_dot example_train example_classify \
      example_seed_question; do
    echo "NOT RUN: the preflight failed" >"$logdir/$name.log"  # (no stale log from an earlier run)
    results+=("$name not-run")
  done
else
  # The whole suite on the GPU: never -x, every failure listed. -rs lists skips, so that a GPU
  # variant skipped for want of a usable GPU shows up in the summary.
  timeout_flag=()
  "$py" -c "import pytest_timeout" 2>/dev/null && timeout_flag=(--timeout=120)
  # Several worker processes where pytest-xdist is installed (GPU_CHECK_WORKERS, default 4; 0 runs
  # the suite in this one process): CuPy compiles each of the suite's hundreds of kernels on first
  # use, and the workers share that work through CuPy's on-disk kernel cache.
  workers=()
  if [ "${GPU_CHECK_WORKERS:-4}" != 0 ] && "$py" -c "import xdist" 2>/dev/null; then
    workers=(-n "${GPU_CHECK_WORKERS:-4}")
  fi
  step tests 240 "$py" -m pytest -q -rfEs "${timeout_flag[@]}" "${workers[@]}" -p no:cacheprovider

  step bench_train_step 60 "$py" benchmarks/train_step.py --quick --device gpu
  step bench_bn_backward 40 "$py" benchmarks/bn_backward.py --quick --device gpu
  step bench_bn_gpu 40 "$py" benchmarks/bn_gpu.py --quick
  step bench_column_dot 30 "$py" benchmarks/column_dot.py --quick --device gpu
  # mpiexec as the benchmark finds it: beside the interpreter, else on PATH.
  if "$py" -c "import mpi4py, pathlib, shutil, sys
assert (pathlib.Path(sys.executable).parent / 'mpiexec').exists() or shutil.which('mpiexec')" 2>/dev/null
  then
    step bench_distributed 60 "$py" benchmarks/distributed.py --quick --device gpu
  else
    echo "== bench_distributed: skipped (no mpiexec or mpi4py here)"
  fi
  step example_train 60 "$py" examples/train.py --device gpu --epochs 3
  step example_classify 60 "$py" examples/classify.py --device gpu --epochs 3
  step example_seed_question 30 "$py" examples/seed_question.py
fi

{
  echo "== summary ($(( SECONDS - start ))s; logs in $logdir)"
  grep -h "^device 0:\|STAND-IN" "$logdir/environment.log" 2>/dev/null
  failed=0
  for entry in "${results[@]}"; do
    name="${entry% *}" status="${entry##* }"
    if [ "$status" = not-run ]; then verdict="NOT RUN"; failed=1
    elif [ "$status" -eq 0 ]; then verdict=ok
    else verdict=FAILED; failed=1
    fi
    [ "$status" = 124 ] && verdict="TIMED OUT"
    printf '  %-22s exit %-4s %s\n' "$name" "$status" "$verdict"
  done
  if [ -f "$logdir/tests.log" ]; then
    tail -n 1 "$logdir/tests.log" | sed 's/^/  tests: /'
    grep -E "^(FAILED|ERROR) " "$logdir/tests.log" | sed 's/^/    /'
    # pytest -rs groups skips: "SKIPPED [COUNT] file:line: reason"; add up the counts.
    gpu_skips=$(sed -n 's/^SKIPPED \[\([0-9]*\)\].*no usable GPU.*/\1/p' "$logdir/tests.log" |
                awk '{ n += $1 } END { print n + 0 }')
    if [ "$gpu_skips" -gt 0 ]; then
      echo "  tests: $gpu_skips GPU variants SKIPPED for want of a usable GPU"
      failed=1
    fi
  fi
  exit "$failed"
} | tee "$logdir/summary.txt"
exit "${PIPESTATUS[0]}"
