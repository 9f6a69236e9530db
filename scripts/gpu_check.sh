#!/usr/bin/env bash
# One command that checks minigraph on a GPU machine:  bash scripts/gpu_check.sh LOGDIR
#
# Run from the repository root. It installs nothing (GPU machines here have no network): it runs
# the checkout with PYTHONPATH=. and whatever CuPy, NumPy and torch are installed. Every step has
# its own timeout, so one hang cannot eat the rest; the whole run stays under 8 minutes. Each
# step's output goes to LOGDIR/<step>.log, and the run ends with a summary of exit statuses and
# failing tests (also in LOGDIR/summary.txt). Exit status: 0 only if every step passed.
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
py="${PYTHON:-python}"
start=$SECONDS
results=()

# step NAME SECONDS COMMAND...: run with a timeout, log to LOGDIR/NAME.log, remember the status.
step() {
  local name="$1" limit="$2"
  shift 2
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
x = cupy.arange(1 << 20, dtype=cupy.float32)
total = float((x * 2).sum())
cupy.cuda.Device().synchronize()
assert total == float(2 * (1 << 20) * ((1 << 20) - 1) / 2), total
y = mg.relu(mg.Tensor(x[:6].reshape(2, 3), requires_grad=True))
assert y.device == 'gpu', y.device
print('preflight: CuPy allocates and computes on', backend.default_device())
"; then
  echo "preflight failed; see $logdir/preflight.log"
  cat "$logdir/preflight.log"
fi

# The whole suite on the GPU: never -x, every failure listed. -rs lists skips, so that a GPU
# variant skipped for want of a usable GPU shows up in the summary.
timeout_flag=()
"$py" -c "import pytest_timeout" 2>/dev/null && timeout_flag=(--timeout=120)
step tests 240 "$py" -m pytest -q -rfEs "${timeout_flag[@]}" -p no:cacheprovider

step bench_train_step 60 "$py" benchmarks/train_step.py --quick --device gpu
step bench_bn_backward 40 "$py" benchmarks/bn_backward.py --quick --device gpu
step bench_column_dot 30 "$py" benchmarks/column_dot.py --quick --device gpu
if command -v mpiexec >/dev/null && "$py" -c "import mpi4py" 2>/dev/null; then
  step bench_distributed 60 "$py" benchmarks/distributed.py --quick --device gpu
else
  echo "== bench_distributed: skipped (no mpiexec or mpi4py here)"
fi
step example_train 60 "$py" examples/train.py --device gpu --epochs 3
step example_classify 60 "$py" examples/classify.py --device gpu --epochs 3
step example_seed_question 30 "$py" examples/seed_question.py

{
  echo "== summary ($(( SECONDS - start ))s; logs in $logdir)"
  grep -h "^device 0:\|STAND-IN" "$logdir/environment.log" 2>/dev/null
  failed=0
  for entry in "${results[@]}"; do
    name="${entry% *}" status="${entry##* }"
    [ "$status" -eq 0 ] && verdict=ok || { verdict=FAILED; failed=1; }
    [ "$status" -eq 124 ] && verdict="TIMED OUT"
    printf '  %-22s exit %-4s %s\n' "$name" "$status" "$verdict"
  done
  if [ -f "$logdir/tests.log" ]; then
    tail -n 1 "$logdir/tests.log" | sed 's/^/  tests: /'
    grep -E "^(FAILED|ERROR) " "$logdir/tests.log" | sed 's/^/    /'
    gpu_skips=$(grep -c "SKIPPED.*no usable GPU" "$logdir/tests.log")
    if [ "$gpu_skips" -gt 0 ]; then
      echo "  tests: $gpu_skips GPU variants SKIPPED for want of a usable GPU"
      failed=1
    fi
  fi
  exit "$failed"
} | tee "$logdir/summary.txt"
exit "${PIPESTATUS[0]}"
