"""Data-parallel training over MPI: ``init``, ``DistributedDataParallel``, synchronized batch norm.

One process per slice of the data (one per GPU on a GPU machine), launched with ``mpiexec``::

    mpiexec -n 4 python -m mpi4py train.py

``python -m mpi4py`` turns an uncaught exception on any process into ``MPI_Abort`` for the whole
job, so one failing process ends the job instead of leaving the others waiting forever in a
collective. ``init()`` also installs an exception hook that does the same for plain
``python train.py`` launches. In the script::

    from minigraph import nn, optim, distributed as dist
    dist.init()
    model = dist.DistributedDataParallel(
        nn.Sequential(nn.Linear(10, 16), nn.SyncBatchNorm(16), nn.ReLU(), nn.Linear(16, 1)))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = nn.MSELoss()(model(x_shard), y_shard)   # this process's rows; any number, even 0
    opt.zero_grad(); loss.backward(); opt.step()   # .grad is the whole batch's gradient

What is assumed of the loss, and why the result is exact for shards of any size: each
process's loss is the mean over its own rows of a per-row loss of the model's output (e.g.
``MSELoss()`` with its default mean), plus terms that are the same on every process. Then the
loss of the whole batch is L = Σ_r (n_r / N)·L_r over processes r with n_r rows, N = Σ n_r, and
its gradient at process r's output is (n_r / N)·dL_r/dY_r. DDP multiplies the gradient arriving
at the model's output by P·n_r/N (P processes) before it flows on, so that every process's dY is
P times the gradient of the one global loss. That matters inside the model:
SyncBatchNorm's backward sums column sums of dY over processes, which is only right if each dY
already belongs to the global loss. After the backward pass, one all-reduce per bucket
averages the parameter gradients over processes; the average of P·(each process's share) is
the sum of the shares, which is the whole batch's gradient. Averaging (rather than summing)
also leaves terms that are identical on every process (a penalty on the weights) counted once,
and keeps gradient accumulation over several backward passes right, as in PyTorch.

The engine knows nothing of this module: DDP registers a hook on the model's output
(``Tensor.register_hook``), which queues the all-reduce to run when the backward pass ends
(``engine.queue_callback``). ``nn.SyncBatchNorm`` is ``BatchNorm1d`` until ``init()`` installs
``sync_batch_norm`` for it. mpi4py is imported by ``init()`` alone, so ``sync_batch_norm`` with
any all-reduce callable (e.g. simulated processes in one test) needs no MPI.

Collectives: MPI for NumPy arrays; for CuPy arrays NCCL (``cupy.cuda.nccl``, one GPU per process,
``init()`` picks GPU local_rank mod the node's GPU count), or, when NCCL is missing or two
processes share a GPU, MPI on host copies. Every process must make the same collective calls in
the same order: the same model, the same number of forward and backward passes in training mode.
``DistributedDataParallel`` checks the first part (one small collective at construction) and
raises the same error on every process when the models differ.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any, Callable

import numpy

from . import backend, checks, engine, nn
from .backend import column_dot, column_sums, get_array_module
from .engine import Tensor, apply, verified
from .ops.batch_norm import BatchNorm, checked_operands, over_channels

__all__ = [
    "DistributedDataParallel", "all_reduce", "barrier", "broadcast", "get_rank", "get_world_size",
    "init", "is_initialized", "sync_batch_norm", "transport",
]

AllReduce = Callable[[Any], Any]  # array -> its elementwise sum over processes (may reuse the array)

_INSTALL_HINT = "pip install 'minigraph[mpi]' (mpi4py and MPICH)"


# --- the processes of the job and their collectives ------------------------------------------
class _World:
    """MPI.COMM_WORLD: this process's rank, the job's size, and arrays summed over it."""

    def __init__(self, mpi: Any) -> None:
        self.mpi = mpi
        self.comm = mpi.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        node = self.comm.Split_type(mpi.COMM_TYPE_SHARED)  # the processes on this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.gpu_collectives: _NcclCollectives | _HostStagedCollectives | None = None

    def all_reduce(self, array: Any) -> Any:
        """Sum ``array`` (contiguous, writable) over every process, in place; returns it."""
        if backend.is_gpu_array(array):
            return self._gpu().all_reduce(array)
        return self.host_all_reduce(array)

    def broadcast(self, array: Any, root: int = 0) -> Any:
        """Overwrite ``array`` on every process with process ``root``'s; returns it."""
        if backend.is_gpu_array(array):
            return self._gpu().broadcast(array, root)
        return self.host_broadcast(array, root)

    def host_all_reduce(self, array: numpy.ndarray) -> numpy.ndarray:
        self.comm.Allreduce(self.mpi.IN_PLACE, array, op=self.mpi.SUM)
        return array

    def host_broadcast(self, array: numpy.ndarray, root: int) -> numpy.ndarray:
        self.comm.Bcast(array, root=root)
        return array

    def _gpu(self) -> "_NcclCollectives | _HostStagedCollectives":
        # Chosen at the first collective on a CuPy array, which every process reaches together.
        if self.gpu_collectives is None:
            self.gpu_collectives = _gpu_collectives(self)
        return self.gpu_collectives


class _HostStagedCollectives:
    """CuPy arrays summed by MPI through host copies: for machines without NCCL, or with
    several processes per GPU (NCCL refuses two ranks on one device)."""

    def __init__(self, world: _World, reason: str) -> None:
        self.world = world
        self.name = f"MPI through host memory ({reason})"

    def all_reduce(self, array: Any) -> Any:
        import cupy

        host = array.get()
        self.world.host_all_reduce(host)
        array[...] = cupy.asarray(host)
        return array

    def broadcast(self, array: Any, root: int) -> Any:
        import cupy

        host = array.get()
        self.world.host_broadcast(host, root)
        array[...] = cupy.asarray(host)
        return array


class _NcclCollectives:
    """CuPy arrays summed by NCCL on the current stream, one GPU per process; the NCCL id is
    made by process 0 and broadcast over MPI."""

    name = "NCCL"

    def __init__(self, world: _World, nccl: Any) -> None:
        self.nccl = nccl
        unique_id = nccl.get_unique_id() if world.rank == 0 else None
        unique_id = world.comm.bcast(unique_id, root=0)
        self.comm = nccl.NcclCommunicator(world.size, unique_id, world.rank)
        self.types = {numpy.dtype(numpy.float32): nccl.NCCL_FLOAT32,
                      numpy.dtype(numpy.float64): nccl.NCCL_FLOAT64,
                      numpy.dtype(numpy.int64): nccl.NCCL_INT64}  # BatchNorm1d's num_batches_tracked

    def _call(self, array: Any) -> tuple:
        import cupy

        if array.dtype not in self.types or not array.flags.c_contiguous:
            raise TypeError(f"distributed: NCCL collectives take contiguous float32/float64/int64 arrays; "
                            f"got {array.dtype}, contiguous={array.flags.c_contiguous}")
        return array.data.ptr, array.size, self.types[array.dtype], cupy.cuda.get_current_stream().ptr

    def all_reduce(self, array: Any) -> Any:
        pointer, count, dtype, stream = self._call(array)
        self.comm.allReduce(pointer, pointer, count, dtype, self.nccl.NCCL_SUM, stream)
        return array

    def broadcast(self, array: Any, root: int) -> Any:
        pointer, count, dtype, stream = self._call(array)
        self.comm.bcast(pointer, count, dtype, root, stream)
        return array


def _gpu_collectives(world: _World) -> _NcclCollectives | _HostStagedCollectives:
    """NCCL when every process can use it, else host staging: all processes choose the same."""
    import cupy

    nccl, reason = None, ""
    try:
        from cupy.cuda import nccl  # type: ignore[no-redef]
        if not getattr(nccl, "available", True):
            reason = "CuPy has no NCCL library"
    except ImportError:
        reason = "cupy.cuda.nccl cannot be imported"
    if not reason:
        gpus = cupy.cuda.runtime.getDeviceCount()
        if world.local_size > gpus:
            reason = f"{world.local_size} processes share {gpus} GPU(s) on one machine"
    reasons = [r for r in world.comm.allgather(reason) if r]
    if reasons:
        return _HostStagedCollectives(world, reasons[0])
    return _NcclCollectives(world, nccl)


_world: _World | None = None


def init(abort_on_exception: bool = True) -> None:
    """Join the job's processes (``MPI.COMM_WORLD``). Call it once, first, on every process.

    Selects this process's GPU (local rank modulo the machine's GPU count) when CuPy sees GPUs
    and ``MINIGRAPH_DEVICE`` is not ``cpu``, before anything allocates on one. With several
    processes it switches ``nn.SyncBatchNorm`` to global statistics and, unless
    ``abort_on_exception=False``, installs an exception hook that prints an uncaught exception
    and calls ``MPI_Abort``, so that the other processes do not wait forever (``python -m
    mpi4py`` does the same). Calling it again does nothing.
    """
    global _world
    if _world is not None:
        return
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed.init: mpi4py cannot be imported ({exc}); install it and an "
                          f"MPI library with {_INSTALL_HINT}") from None
    world = _World(MPI)
    _select_gpu(world)
    _world = world
    if world.size > 1:
        nn.synchronized_batch_norm = lambda *args, **kwargs: sync_batch_norm(
            *args, **kwargs, all_reduce=world.all_reduce)
        if abort_on_exception:
            _abort_on_uncaught_exception(world)


def _select_gpu(world: _World) -> None:
    if os.environ.get("MINIGRAPH_DEVICE", "auto").strip().lower() == "cpu":
        return
    try:
        import cupy

        gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, or no driver: backend's device rule finds the CPU
        return
    if gpus > 0:
        cupy.cuda.Device(world.local_rank % gpus).use()


def _abort_on_uncaught_exception(world: _World) -> None:
    def print_and_abort(kind: type, value: BaseException, tb: Any) -> None:
        text = "".join(traceback.format_exception(kind, value, tb)) + (
            f"minigraph.distributed: process {world.rank} of {world.size} raised; aborting the job "
            f"(MPI_Abort)\n")
        sys.stderr.flush()
        try:  # one write, so the launcher forwards the whole report or none of it
            os.write(2, text.encode(errors="replace"))
        except OSError:
            pass
        # MPICH's launcher may drop output it has not forwarded yet when the abort tears the
        # job down (seen here: a traceback cut in half); give it a moment first.
        time.sleep(0.5)
        world.comm.Abort(1)

    sys.excepthook = print_and_abort


def is_initialized() -> bool:
    """True once ``init()`` has run in this process."""
    return _world is not None


def _require_world(what: str) -> _World:
    if _world is None:
        raise RuntimeError(f"{what}: minigraph.distributed is not initialized; call "
                           f"minigraph.distributed.init() first, on every process")
    return _world


def get_rank() -> int:
    """This process's rank in 0 .. world size − 1."""
    return _require_world("get_rank").rank


def get_world_size() -> int:
    """The number of processes in the job."""
    return _require_world("get_world_size").size


def _checked_buffer(what: str, array: Any) -> Any:
    if not (isinstance(array, numpy.ndarray) or backend.is_gpu_array(array)):
        raise TypeError(f"{what}: got a {type(array).__name__}; expected a NumPy or CuPy array "
                        f"(for a Tensor pass tensor.data)")
    if not array.flags.c_contiguous or not backend.can_update_in_place(array):
        raise ValueError(f"{what}: the array is not contiguous and writable; the collective "
                         f"works in place, so pass a contiguous copy, e.g. array.copy()")
    return array


def all_reduce(array: Any) -> Any:
    """Sum ``array`` elementwise over every process, in place, and return it.

    array: a contiguous, writable NumPy or CuPy array of the same shape and dtype everywhere.
    A collective: every process must call it, in the same order as its other collectives.
    """
    return _require_world("all_reduce").all_reduce(_checked_buffer("all_reduce", array))


def broadcast(array: Any, root: int = 0) -> Any:
    """Overwrite ``array`` on every process with process ``root``'s, in place; returns it."""
    world = _require_world("broadcast")
    root = checks.integer("broadcast", "root", root, low=0, high=world.size)
    return world.broadcast(_checked_buffer("broadcast", array), root)


def barrier() -> None:
    """Wait until every process has called ``barrier()``."""
    _require_world("barrier").comm.Barrier()


def transport(device: str = "cpu") -> str:
    """How arrays on ``device`` ('cpu' or 'gpu') are summed across processes: 'MPI', 'NCCL', or
    'MPI through host memory (why)'. For 'gpu' this may be a collective (the first GPU call)."""
    world = _require_world("transport")
    if backend.check_device(device) == "cpu":
        return "MPI"
    backend.require_gpu("distributed.transport('gpu')")
    return world._gpu().name


# --- synchronized batch norm: the math, given any all-reduce --------------------------------
@verified
class SyncBatchNormFunction(BatchNorm):
    """Training-mode batch norm of x: (n_r, p) with the statistics of all processes' rows.

    ``all_reduce(array) -> array`` sums over processes. The quantities that cross rows are
    column sums, and column sums of row blocks add up, so every formula of ``BatchNorm`` holds
    unchanged with these sums (N = Σ n_r):

      forward   1ᵀX and n_r         -> μ = Σ1ᵀX / N          (all-reduce 1)
                1ᵀ(Xc ⊙ Xc)         -> σ² = Σ1ᵀ(Xc⊙Xc)/(N−d)  (all-reduce 2: two-pass variance)
      backward  1ᵀdY, 1ᵀ(dY ⊙ Xc)   -> the global dβ, dγ in dX (all-reduce 3)

    dγ and dβ are returned for this process's rows only: DistributedDataParallel combines them
    with the other parameters' gradients. The sums travel in float64, which keeps N exact.
    """

    __slots__ = ("all_reduce", "n")
    op = "sync_batch_norm"

    def __init__(self, all_reduce: AllReduce, eps: float, ddof: int, momentum: float,
                 running_mean: Any = None, running_var: Any = None) -> None:
        super().__init__(eps, ddof, momentum, running_mean, running_var)
        self.all_reduce = all_reduce

    def _summed(self, *parts: Any) -> Any:
        """The concatenated (p,) parts summed over processes, in float64, as one message."""
        xp = get_array_module(parts[0])
        return self.all_reduce(xp.concatenate([xp.asarray(part, dtype=xp.float64) for part in parts]))

    def forward(self, x: Any, gamma: Any, beta: Any) -> Any:
        xp = get_array_module(x)
        p = x.shape[1]
        totals = self._summed(column_sums(x), xp.full(1, x.shape[0]))
        n = int(totals[p])  # the whole batch's rows: the same number on every process
        if n < 2 or self.ddof >= n:
            # Decided from global values, so every process raises this together.
            need = "more than 1 value per feature" if n < 2 else f"ddof={self.ddof} < N"
            raise ValueError(f"sync_batch_norm: expected {need} over all processes when training; "
                             f"got N = {n} rows in the whole batch, all processes together")
        mean = (totals[:p] / n).astype(x.dtype)
        centred = x - mean
        # Two-pass variance across processes: the centred sums, after the global mean is known.
        sum_sq = self._summed(column_dot(centred, centred)).astype(x.dtype)
        self.n = n
        return self.normalise(centred, mean, sum_sq, n, gamma, beta)

    def backward(self, grad_output: Any) -> tuple:
        centred, inv_std, gamma = self.saved
        needs_x, needs_gamma, needs_beta = self.needs_grad
        p = centred.shape[1]
        grad_beta = column_sums(grad_output)  # this process's rows
        dot = column_dot(grad_output, centred)
        # Always all-reduced, whatever needs_grad says: every process must make the same calls.
        totals = self._summed(grad_beta, dot).astype(centred.dtype)
        grad_x = None
        if needs_x:
            grad_x = self.input_gradient(grad_output, totals[:p], inv_std * totals[p:], self.n)
        return grad_x, inv_std * dot if needs_gamma else None, grad_beta if needs_beta else None


def sync_batch_norm(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    running_mean: Any = None,
    running_var: Any = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    ddof: int = 0,
    *,
    all_reduce: AllReduce,
) -> Tensor:
    """Training-mode ``batch_norm`` of this process's rows x: (n_r, p) with the whole batch's
    statistics; ``all_reduce(array) -> array`` sums an array over the processes. A batch of
    sequences x: (n_r, p, L) counts as its n_r·L rows of p channels, as in ``batch_norm``.

    Each process calls it with its own rows (any n_r >= 0) and the same gamma, beta: (p,) and
    arguments; each gets its rows of the output of ``batch_norm`` on the concatenated batch, and
    its running statistics (if given) are updated with the global mean and unbiased global
    variance. Three all-reduces: two of (p + 1) and p numbers forward, one of 2p backward.
    Arguments are checked here, before any collective, except those whose limit is the global
    row count N (N > 1, ddof < N), which every process checks on the same N.
    """
    x, gamma, beta, running_mean, running_var = checked_operands(
        "sync_batch_norm", x, gamma, beta, running_mean, running_var, True)
    eps = checks.real("sync_batch_norm", "eps", eps, low=0.0)
    ddof = checks.integer("sync_batch_norm", "ddof", ddof, low=0)
    momentum = checks.real("sync_batch_norm", "momentum", momentum, low=0.0, high=1.0)
    return over_channels(x, lambda rows: apply(
        SyncBatchNormFunction(all_reduce, eps, ddof, momentum, running_mean, running_var), rows, gamma, beta))


# --- DistributedDataParallel ---------------------------------------------------------------
class _Bucket:
    """Parameters of one dtype and device whose gradients travel as one message."""

    def __init__(self, params: list[Tensor]) -> None:
        self.params = params
        self.sizes = [p.data.size for p in params]
        self.nbytes = sum(self.sizes) * params[0].data.dtype.itemsize

    def reduce(self, world: _World) -> None:
        """Each parameter's ``.grad`` becomes its average over processes.

        One message: the gradients flattened (zeros for a missing one), then one has-gradient
        flag per parameter, so that a parameter no process has a gradient for stays None.
        """
        like = self.params[0].data
        xp = get_array_module(like)
        grads = [p.grad for p in self.params]
        flags = xp.asarray([g is not None for g in grads], dtype=like.dtype)
        flat = xp.concatenate([g.reshape(-1) if g is not None else xp.zeros(size, dtype=like.dtype)
                               for g, size in zip(grads, self.sizes)] + [flags])
        world.all_reduce(flat)
        total = sum(self.sizes)
        present = backend.to_device(flat[total:], "cpu")
        values = flat[:total]
        values /= world.size
        offset = 0
        for param, size, count in zip(self.params, self.sizes, present):
            # Views into this step's fresh buffer: no copy, and nothing later writes into it.
            param.grad = values[offset:offset + size].reshape(param.data.shape) if count else None
            offset += size


def _plan_buckets(params: list[Tensor], cap_bytes: float) -> list[_Bucket]:
    """Buckets in reverse registration order (about the order backward completes gradients,
    which an overlapping reducer would want), one dtype and device each, each up to
    ``cap_bytes`` unless one parameter alone is larger."""
    open_lists: dict[tuple, list[Tensor]] = {}
    planned: list[list[Tensor]] = []
    for param in reversed(params):
        key = (backend.device_of(param.data), param.data.dtype)
        current = open_lists.get(key)
        if current and (sum(p.data.nbytes for p in current) + param.data.nbytes > cap_bytes):
            current = None
        if current is None:
            current = open_lists[key] = []
            planned.append(current)
        current.append(param)
    return [_Bucket(group) for group in planned]


def _model_signature(module: nn.Module) -> list[tuple]:
    """What must be identical on every process: layer types, then each parameter's and buffer's
    name, shape, dtype and device, and whether a parameter is frozen, in order."""
    layers = [("layer", name or "(root)", type(m).__name__) for name, m in module.named_modules()]
    # A parameter frozen on some processes only would get their zeros averaged into the others'
    # gradients: every .grad silently a fraction of the whole batch's.
    arrays = [(kind, name, tuple(a.shape), str(a.dtype), backend.device_of(a), frozen)
              for kind, named in (("parameter", ((n, p.data, not p.requires_grad)
                                                 for n, p in module.named_parameters())),
                                  ("buffer", ((n, b, False) for n, b in module.named_buffers())))
              for name, a, frozen in named]
    return layers + arrays


def _check_same_model(world: _World, module: nn.Module, buckets: list[_Bucket]) -> None:
    """One allgather of the signatures; every process sees them all and raises the same error.

    The gradient buckets are part of it: a process packing its gradients otherwise would send
    messages of other lengths, and MPI would abort the job with 'Message truncated'."""
    signature = _model_signature(module) + [("buckets", tuple(len(b.params) for b in buckets))]
    signatures = world.comm.allgather(signature)
    reference = signatures[0]
    problems = []
    for rank, signature in enumerate(signatures[1:], start=1):
        if signature == reference:
            continue
        first = next((pair for pair in zip(reference, signature) if pair[0] != pair[1]), None)
        if first is None:
            problems.append(f"process {rank} has {len(signature)} layers, parameters and buffers, "
                            f"process 0 has {len(reference)}")
        else:
            problems.append(f"process {rank} has {_describe_entry(first[1])} where process 0 has "
                            f"{_describe_entry(first[0])}")
    if problems:
        raise ValueError("DistributedDataParallel: the model differs between processes: "
                         + "; ".join(problems) + ". Expected the same layers, and parameters and "
                         "buffers of the same names, shapes, dtypes and devices, the same "
                         "parameters frozen and the same bucket_cap_mb, on every process (build "
                         "the model and its DistributedDataParallel the same way everywhere)")


def _describe_entry(entry: tuple) -> str:
    if entry[0] == "layer":
        return f"layer {entry[1]!r} of type {entry[2]}"
    if entry[0] == "buckets":
        return f"gradient buckets of {list(entry[1])} parameters (from bucket_cap_mb)"
    kind, name, shape, dtype, device, frozen = entry
    return f"{kind} {name!r} of shape {shape}, {dtype} on {device!r}" + (
        ", frozen (requires_grad=False)" if frozen else "")


def _broadcast_state(world: _World, module: nn.Module) -> None:
    """Every parameter and buffer takes process 0's values: one message per dtype and device."""
    params = list(module.parameters())
    arrays = [p.data for p in params] + list(module.buffers())
    groups: dict[tuple, list[Any]] = {}
    for array in arrays:
        groups.setdefault((backend.device_of(array), array.dtype), []).append(array)
    for group in groups.values():
        xp = get_array_module(group[0])
        flat = world.broadcast(xp.concatenate([a.reshape(-1) for a in group]), root=0)
        if world.rank != 0:
            offset = 0
            for array in group:
                array[...] = flat[offset:offset + array.size].reshape(array.shape)
                offset += array.size
    for param in params:
        param._version[0] += 1  # graphs built before the broadcast can no longer backward
    for layer in module.modules():
        layer._state_overwritten()  # e.g. BatchNorm1d's host copy of its count: process 0's now


def _holds_trainable_tensor(value: Any) -> bool:
    """True when ``value`` is, or a tuple, list or dict (nested) holds, a Tensor that needs a gradient."""
    if isinstance(value, Tensor):
        return value.requires_grad
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, (tuple, list)) and any(_holds_trainable_tensor(v) for v in value)


class DistributedDataParallel(nn.Module):
    """Wraps a model so that, after ``backward()``, every ``.grad`` is the whole batch's gradient.

    At construction: checks that every process has the same model (layer types, parameter and
    buffer names, shapes, dtypes, devices, which parameters are frozen: one allgather; the same
    ValueError on every process if not), then gives every process process 0's parameters and
    buffers. Calling it runs the model on this process's rows; in training (when the output
    needs a gradient) it hooks the output: at the start of backward the hook learns the global
    row count N (one all-reduce), scales the output's gradient by P·n_r/N, and queues the
    gradient all-reduce for the end of backward. That all-reduce packs the gradients into
    buckets of up to ``bucket_cap_mb`` MiB per dtype and device (reverse parameter order), the
    same buckets in the same order on every process, and leaves each ``.grad`` the average over
    processes. See the module docstring for
    what is assumed of the loss. The model's output must be one Tensor (n_r, ...): row i belongs
    to input row i (a tuple or dict of tensors that need gradients is a TypeError). With one
    process this is the model unchanged.

    ``state_dict()`` keys carry the prefix ``module.``, as in PyTorch; save
    ``ddp.module.state_dict()`` for a checkpoint that loads into the plain model.
    """

    def __init__(self, module: nn.Module, bucket_cap_mb: float = 25.0) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"DistributedDataParallel: got a {type(module).__name__}; expected an "
                            f"nn.Module, e.g. nn.Sequential(...)")
        cap = checks.real("DistributedDataParallel", "bucket_cap_mb", bucket_cap_mb, low=0.0,
                          low_open=True, example="bucket_cap_mb=25")
        self.world = _require_world("DistributedDataParallel")
        self.module = module
        self.buckets = _plan_buckets(list(module.parameters()), cap * 2**20)
        if self.world.size > 1:
            _check_same_model(self.world, module, self.buckets)
            _broadcast_state(self.world, module)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """This process's rows through the model; the output is hooked when it needs a gradient."""
        out = self.module(*args, **kwargs)
        if self.world.size > 1 and not isinstance(out, Tensor) and _holds_trainable_tensor(out):
            # Only a returned Tensor is hooked: gradients through any other output would stay
            # this process's own, un-averaged, and the processes' parameters would drift apart.
            raise TypeError(f"DistributedDataParallel: the model returned a {type(out).__name__} "
                            f"holding tensors that need gradients; expected one Tensor (n_r, ...), "
                            f"whose backward DDP weights by rows and follows with the gradient "
                            f"all-reduce. Return the tensor the loss is computed from")
        if self.world.size > 1 and isinstance(out, Tensor) and out.requires_grad:
            if out.ndim == 0:
                raise ValueError("DistributedDataParallel: the model returned a scalar; expected "
                                 "one output row per input row, (n_r, ...), to weight by rows")
            rows = out.shape[0]
            out.register_hook(lambda grad: self._weight_by_rows(rows, grad))
        return out

    def _weight_by_rows(self, rows: int, grad: Any) -> Any:
        """At the model's output, the first step of backward: dY ← (P·n_r/N)·dY."""
        world = self.world
        total = int(world.all_reduce(numpy.array([rows], dtype=numpy.float64))[0])
        if total == 0:
            raise ValueError(f"DistributedDataParallel: the model's output has 0 rows on all "
                             f"{world.size} processes; expected at least one row in the batch")
        # Once per backward pass, however many outputs it reaches: the engine queues an equal
        # callback once. (A flag of ours would outlive a pass that failed before it ran.)
        engine.queue_callback(self._reduce_gradients)
        scale = world.size * rows / total
        return None if scale == 1.0 else grad * scale

    def _reduce_gradients(self) -> None:
        for bucket in self.buckets:  # the same order on every process
            bucket.reduce(self.world)

    def extra_repr(self) -> str:
        return f"world_size={self.world.size}, buckets={len(self.buckets)}"
