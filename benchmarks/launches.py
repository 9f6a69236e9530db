"""How many CuPy calls that launch work one training step makes: minigraph against hand-written CuPy.

Counted, not timed, on the CuPy stand-in (tests/standin), which runs anywhere: a profiler hook
sees every call from outside the stand-in into it, and calls that only read metadata or make a
view (``.shape``, ``.dtype``, ``.T``, ``.reshape``, ``x[i]`` ...: no kernel on a real GPU) are left
out, and so is ``xp.asarray`` of a device array it returns as it is. On a GPU where the step is
launch-bound, this count times the cost of one call (``train_step.py``'s ``call`` row) is a lower
bound on its host time: the Python between the calls adds to it. The stand-in has no CUDA, so
minigraph's batch norm runs its formula here; the step as it runs on a GPU is estimated by taking
out every call made from within ``ops/batch_norm.py`` and adding the fused kernels'
``KERNEL_LAUNCHES`` per layer.

    python benchmarks/launches.py            # N = 256; --json for one JSON line; --quick: N = 64
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "standin"), str(ROOT), str(Path(__file__).resolve().parent)]
os.environ["MINIGRAPH_DEVICE"] = "gpu"  # before minigraph is imported: every array on the stand-in

import bench_common as common  # noqa: E402
import cupy  # noqa: E402  (the stand-in: it is first on the path)
import numpy  # noqa: E402
import train_step  # noqa: E402

# The stand-in's entry points that never launch work: attribute lookups (a method found this way
# is counted when it is called), views (indexing is taken as one: neither step indexes with
# arrays, which would gather), iteration (its items are views) and bookkeeping.
NOT_WORK = frozenset({"__getattr__", "__getitem__", "__iter__", "__setattr__", "__init__", "__len__", "__repr__",
                      "__format__", "flags", "get_array_module", "broadcast_to", "synchronize", "record", "use",
                      "__enter__", "__exit__"})
# Operations, by name, that read metadata, make a view or allocate without writing: no kernel.
NO_KERNEL = frozenset({"reshape", "view", "transpose", "swapaxes", "squeeze", "expand_dims", "ravel",
                       "empty", "empty_like", "may_share_memory", "shares_memory", "result_type"})
# minigraph/kernels/gpu.py: statistics partial, merge, normalise; gradient partial, merge, input gradient.
KERNEL_LAUNCHES = 6
BATCH_NORM_OP = str(ROOT / "minigraph" / "ops" / "batch_norm.py")


def operation(frame: Any) -> str | None:
    """The name of the operation a call into the stand-in performs, or None if it launches no work."""
    entry, local = frame.f_code.co_name, frame.f_locals
    if entry in NOT_WORK:
        return None
    if entry == "op":  # an operator (__add__, __isub__, __gt__ ...): the name it was made with
        return local["name"]
    if entry in ("call", "__array_function__"):  # a NumPy function or method on stand-in arrays
        name = getattr(local["func"], "__name__", "?")
    elif entry == "__call__":  # a ufunc (_Ufunc)
        name = local["self"].__name__
    elif entry == "__array_ufunc__":  # numpy.<ufunc>(stand-in array)
        name = local["ufunc"].__name__
    elif entry == "asarray":  # a device array of the asked dtype passes through
        source, dtype = local["a"], local["dtype"]
        passes = type(source) is cupy.ndarray and (dtype is None or source.dtype == numpy.dtype(dtype))
        return None if passes else entry
    else:  # __setitem__, array, get, __bool__ ...: the stand-in's own definitions
        name = entry
    return None if name in NO_KERNEL else name


def count_calls(fn: Callable[[], Any], within: str | None = None) -> collections.Counter:
    """Run ``fn`` once; the stand-in calls it made that launch work, by (caller file:function, callee).

    ``within``: a source file's path; count only the calls made while a function of that file is
    running (on the stack), directly or through others.
    """
    if not getattr(cupy, "IS_STANDIN", False):
        raise RuntimeError("launches.py counts calls on the CuPy stand-in, but `import cupy` found a real "
                           "CuPy; run it where tests/standin comes first (this script puts it first)")
    standin, counts = cupy.__file__, collections.Counter()

    def inside(frame: Any) -> bool:
        while frame is not None:
            if frame.f_code.co_filename == within:
                return True
            frame = frame.f_back
        return False

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event != "call" or frame.f_code.co_filename != standin:
            return
        caller = frame.f_back
        if caller is None or caller.f_code.co_filename == standin:
            return  # the stand-in's own inner calls: one user call is counted once
        callee = operation(frame)
        if callee is None or (within is not None and not inside(caller)):
            return
        where = os.path.relpath(caller.f_code.co_filename, ROOT)
        counts[(f"{where}:{caller.f_code.co_name}", callee)] += 1

    before = sys.getprofile()
    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(before)
    return counts


def measure(n: int) -> dict:
    """The counts for one step of each kind at batch size ``n``, after two steps to warm up."""
    params = train_step.initial_parameters()
    x, y = train_step.make_data(n)
    minigraph_step = train_step.Library("minigraph", "gpu").step(params, x, y)
    hand_step = train_step.hand_written_step(cupy, params, x, y)
    results = {}
    for name, fn in (("minigraph step", minigraph_step), ("hand-written step", hand_step)):
        fn(), fn()  # the first calls allocate the hand-written buffers and the optimizer's state
        counts = count_calls(fn)
        results[name] = {"calls": sum(counts.values()),
                         "by_caller": {f"{where} {callee}": k for (where, callee), k in counts.most_common()}}
    batch_norm = sum(count_calls(minigraph_step, within=BATCH_NORM_OP).values())
    results["minigraph step, within batch norm"] = {"calls": batch_norm}
    results["minigraph step, batch norm fused (estimate)"] = {
        "calls": results["minigraph step"]["calls"] - batch_norm + train_step.HIDDEN * KERNEL_LAUNCHES}
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=256, help="batch rows (the count does not depend on it)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    parser.add_argument("--quick", action="store_true", help="N = 64, as the other scripts' smoke tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 64
    results = measure(args.n)
    print(f"CuPy calls that launch work, counted on the stand-in, widths {train_step.WIDTHS}, N = {args.n}")
    print(common.format_table(["what", "calls"], [[name, r["calls"]] for name, r in results.items()]))
    common.emit({"benchmark": "launches", "n": args.n, "kernel_launches_per_layer": KERNEL_LAUNCHES,
                 "results": results}, args.json)
    return results


if __name__ == "__main__":
    main()
