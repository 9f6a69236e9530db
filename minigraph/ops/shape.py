"""Shape ops: transpose, reshape (and the forms of both PyTorch names: permute, flatten, squeeze,
unsqueeze, t), clone, expand, cat, stack and indexing. They move elements and change no value.

Each backward puts dY back where its elements came from: the inverse permutation for
transpose, the input's shape for reshape, each input's slice of dY for cat and stack, and for
indexing a scatter into zeros, which adds up the gradients of elements read more than once
(``x[[0, 0, 1]]``).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy

from .. import checks
from ..backend import get_array_module, is_gpu_array, join_device
from ..engine import Function, Tensor, apply, as_tensor, as_tensors, verified
from .add import sum_to_shape


# --- transpose and reshape -------------------------------------------------------------------
@verified
class Transpose(Function):
    """x: shape S -> y = x with its axes permuted: y.shape[i] = S[axes[i]].

    dX = dY with the inverse permutation (for 2-D: dX = dYᵀ).
    """

    __slots__ = ("axes", "inverse")
    op = "transpose"

    def __init__(self, axes: tuple[int, ...]) -> None:
        self.axes = axes
        self.inverse = tuple(int(axis) for axis in numpy.argsort(axes))

    def forward(self, x: Any) -> Any:
        return x.transpose(self.axes)

    def backward(self, grad_output: Any) -> tuple:
        return (grad_output.transpose(self.inverse),)


@verified
class Reshape(Function):
    """x: shape S -> y: shape T with the same elements in row-major order (prod S = prod T).

    dX = dY reshaped to S.
    """

    __slots__ = ("in_shape", "out_shape")
    op = "reshape"

    def __init__(self, in_shape: tuple, out_shape: tuple) -> None:
        self.in_shape = in_shape
        self.out_shape = out_shape

    def forward(self, x: Any) -> Any:
        return x.reshape(self.out_shape)

    def backward(self, grad_output: Any) -> tuple:
        return (grad_output.reshape(self.in_shape),)


def transpose(x: Tensor, axes: tuple[int, ...] | None = None) -> Tensor:
    """x with its axes permuted (NumPy's meaning): None reverses them, so a 2-D x gives xᵀ.

    x: shape S, axes a permutation of range(x.ndim) (negatives allowed) -> y.shape[i] = S[axes[i]].
    Also ``x.T`` (all axes reversed) and ``x.transpose(1, 0)``.
    """
    x = as_tensor("transpose", "x", x)
    ndim = x.data.ndim
    order = tuple(reversed(range(ndim))) if axes is None else _permutation("transpose", "axes", axes, x)
    return apply(Transpose(order), x)


def transpose_method(x: Tensor, *axes: Any) -> Tensor:
    """``x.transpose()``, ``x.transpose(1, 0)`` or ``x.transpose((1, 0))``: NumPy's meaning.

    ``x.transpose(0, 1)`` on a 2-D x is refused: NumPy reads it as the order unchanged, PyTorch
    as a swap of the two, and each reader would expect the other's answer without a word.
    """
    ndim = x.ndim
    if len(axes) == 2 and all(isinstance(a, numbers.Integral) for a in axes) and ndim != 1:
        if ndim == 2 and axes[0] % 2 == 0 and axes[1] % 2 == 1:
            raise ValueError(f"transpose: got x.transpose{axes} on a 2-D tensor, which NumPy reads as no "
                             f"change and PyTorch as a swap; expected x.T or x.t() to swap, or x itself")
        if ndim > 2 and all(-ndim <= a < ndim for a in axes):  # PyTorch's swap of two dims
            order = list(range(ndim))
            order[axes[0]], order[axes[1]] = order[axes[1]], order[axes[0]]
            raise ValueError(f"transpose: got x.transpose{axes} on a tensor of shape {x.shape}; expected "
                             f"a permutation of all {ndim} axes (NumPy's meaning). To swap two, as "
                             f"PyTorch's transpose does: x.permute{tuple(order)}")
    return transpose(x, axes_or_shape(axes) if axes else None)


def axes_or_shape(args: tuple) -> Any:
    """``f(1, 0)`` and ``f((1, 0))`` alike, as NumPy's ``transpose`` and ``reshape`` methods take."""
    return args[0] if len(args) == 1 and (args[0] is None or isinstance(args[0], (tuple, list))) else args


def _permutation(op: str, name: str, axes: Any, x: Tensor) -> tuple[int, ...]:
    """``axes`` as a permutation of x's axes (negatives allowed), or a ValueError naming ``op``."""
    order = checks.axes(op, axes, x.data.ndim, name=name)
    if len(order) != x.data.ndim:
        raise ValueError(f"{op}: got {name}={axes!r} for a tensor of shape {x.data.shape}; "
                         f"expected a permutation of {tuple(range(x.data.ndim))}")
    return order


def reshape(x: Tensor, shape: int | tuple[int, ...]) -> Tensor:
    """x with the same elements in the new ``shape``; one entry may be -1 (inferred).

    x: shape S -> shape ``shape`` (prod must match). Also ``x.reshape(2, -1)``.
    """
    x = as_tensor("reshape", "x", x)
    entries = shape if isinstance(shape, (tuple, list)) else (shape,)
    sizes = [checks.integer("reshape", "shape entry", entry, low=-1) for entry in entries]
    size = x.data.size
    known = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1 or (-1 in sizes and (known == 0 or size % known)) or \
            (-1 not in sizes and known != size):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.data.shape} ({size} "
                         f"elements) into {tuple(sizes)}; expected sizes whose product is {size}, "
                         f"with at most one -1 standing for the rest")
    out_shape = tuple(size // known if s == -1 else s for s in sizes)
    return apply(Reshape(x.data.shape, out_shape), x)


# --- PyTorch's names for reshapes and permutations ----------------------------------------
def dimension(owner: str, name: str, value: Any) -> int:
    """An integer dimension (negative allowed), or a TypeError naming ``owner`` and ``name``."""
    try:
        if isinstance(value, bool):
            raise TypeError  # True is no dimension, though operator.index takes it
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{owner}: got {name}={value!r}; expected an integer dimension "
                        f"(negative counts from the end)") from None


def in_range(owner: str, name: str, dim: int, ndim: int, shape: tuple) -> int:
    """``dim`` made non-negative for a tensor of ``ndim`` dimensions, or an IndexError naming the
    input's ``shape`` (not ``ndim``, which is 1 for a 0-d input)."""
    if not -ndim <= dim < ndim:
        raise IndexError(f"{owner}: {name}={dim} is out of range for an input of shape {shape}; "
                         f"expected one in [{-ndim}, {ndim - 1}]")
    return dim % ndim


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1, *, owner: str = "flatten") -> Tensor:
    """The dimensions ``start_dim`` to ``end_dim`` (inclusive) merged into one, as
    ``torch.flatten``: x: (d0, d1, ..., dk) -> (d0·d1·...·dk) by default; a 0-d x -> (1,)."""
    start_dim, end_dim = dimension(owner, "start_dim", start_dim), dimension(owner, "end_dim", end_dim)
    x = as_tensor(owner, "x", x)
    ndim = x.ndim or 1
    start, end = (in_range(owner, name, dim, ndim, x.shape)
                  for name, dim in (("start_dim", start_dim), ("end_dim", end_dim)))
    if start > end:
        raise ValueError(f"{owner}: start_dim={start_dim} comes after end_dim={end_dim} for "
                         f"an input of {x.ndim} dimensions; expected start_dim <= end_dim")
    shape = x.shape or (1,)
    return reshape(x, (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:]))


def squeeze(x: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """x without its size-1 dimensions: all of them, or those named by ``dim`` (an int or a
    tuple) that have size 1; a named one of another size stays, as in ``torch.squeeze``.
    x: (2, 1, 3) -> (2, 3)."""
    x = as_tensor("squeeze", "x", x)
    if dim is None:
        drop = {axis for axis, size in enumerate(x.shape) if size == 1}
    else:
        named = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = {in_range("squeeze", "dim", dimension("squeeze", "dim", d), x.ndim or 1, x.shape) for d in named}
        drop = {axis for axis in axes if x.ndim and x.shape[axis] == 1}
    return reshape(x, tuple(size for axis, size in enumerate(x.shape) if axis not in drop))


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """x with a new dimension of size 1 at ``dim``, in [−ndim−1, ndim] as in ``torch.unsqueeze``.
    x: (2, 3) with dim=1 -> (2, 1, 3); with dim=-1 -> (2, 3, 1)."""
    x = as_tensor("unsqueeze", "x", x)
    axis = in_range("unsqueeze", "dim", dimension("unsqueeze", "dim", dim), x.ndim + 1, x.shape)
    return reshape(x, (*x.shape[:axis], 1, *x.shape[axis:]))


def permute(x: Tensor, *dims: Any) -> Tensor:
    """x with its dimensions in the order ``dims``, a permutation, as ``torch.permute``:
    ``x.permute(0, 2, 1)`` or ``permute(x, (0, 2, 1))``; the same as ``transpose(x, dims)``."""
    order = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    x = as_tensor("permute", "x", x)
    return apply(Transpose(_permutation("permute", "dims", order, x)), x)


def t(x: Tensor) -> Tensor:
    """xᵀ for a 2-D x and x itself for 0-d and 1-d, as ``torch.t``; more dimensions are refused."""
    x = as_tensor("t", "x", x)
    if x.ndim > 2:
        raise ValueError(f"t: got a tensor of shape {x.shape}; expected at most 2 dimensions "
                         f"(for more, permute(x, dims))")
    return transpose(x)


@verified
class Clone(Function):
    """x: shape S -> a copy of x in an array of its own.  dX = dY."""

    __slots__ = ()
    op = "clone"

    def forward(self, x: Any) -> Any:
        return x.copy()

    def backward(self, grad_output: Any) -> tuple:
        return (grad_output,)


def clone(x: Tensor) -> Tensor:
    """A copy of x in the graph, as ``torch.clone``: writing into the copy's ``.data`` leaves
    x alone. ``x.detach().clone()`` is a copy outside the graph."""
    return apply(Clone(), as_tensor("clone", "x", x))


@verified
class Expand(Reshape):
    """x: shape S -> y: shape T, x broadcast to T (NumPy's rules: new leading axes, and axes of
    size 1 stretched), as a read-only view: no copy.

    dX = sum_to_shape(dY, S): the sum over the axes the broadcast stretched.
    """

    __slots__ = ()
    op = "expand"

    def forward(self, x: Any) -> Any:
        return get_array_module(x).broadcast_to(x, self.out_shape)

    def backward(self, grad_output: Any) -> tuple:
        return (sum_to_shape(grad_output, self.in_shape),)


def expand(x: Tensor, *sizes: Any) -> Tensor:
    """x broadcast to ``sizes``, as ``torch.Tensor.expand``: ``x.expand(4, 3)`` or
    ``x.expand((4, 3))``; -1 keeps a size; new axes go in front. A read-only view, no copy.
    x: (1, 3) -> (4, 3); x: (3,) -> (2, 4, 3) with sizes (2, 4, 3)."""
    x = as_tensor("expand", "x", x)
    wanted = axes_or_shape(sizes)
    wanted = tuple(wanted) if isinstance(wanted, (tuple, list)) else (wanted,)
    shape = x.data.shape
    lead = len(wanted) - len(shape)
    sizes_ok = lead >= 0 and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in wanted)
    if sizes_ok:
        out = tuple(shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(wanted))
        sizes_ok = all(s >= 0 for s in out) and all(
            old in (1, new) for old, new in zip(shape, out[lead:]))
    if not sizes_ok:
        raise ValueError(f"expand: cannot expand a tensor of shape {shape} to {tuple(wanted)}; expected at "
                         f"least {len(shape)} sizes, the last {len(shape)} equal to x's or -1 where x's is not 1 "
                         f"(only sizes of 1 stretch)")
    return apply(Expand(shape, out), x)


def expand_as(x: Tensor, other: Tensor) -> Tensor:
    """x broadcast to ``other``'s shape (see ``expand``)."""
    return expand(x, as_tensor("expand_as", "other", other).data.shape)


# --- joining ---------------------------------------------------------------------------------
@verified
class Cat(Function):
    """x₁: S₁, ..., xₘ: Sₘ, equal but along axis k -> y: their concatenation along k.

    dXᵢ = the slice of dY along k where xᵢ sits (a view).
    """

    __slots__ = ("axis", "bounds")
    op = "cat"

    def __init__(self, axis: int, sizes: list[int]) -> None:
        self.axis = axis
        self.bounds = numpy.cumsum([0, *sizes]).tolist()

    def forward(self, *xs: Any) -> Any:
        return get_array_module(xs[0]).concatenate(xs, axis=self.axis)

    def backward(self, grad_output: Any) -> tuple:
        lead = (slice(None),) * self.axis
        return tuple(grad_output[(*lead, slice(start, stop))] if needs else None
                     for start, stop, needs in zip(self.bounds, self.bounds[1:], self.needs_grad))


@verified
class Stack(Function):
    """x₁, ..., xₘ: all of shape S -> y: shape S with a new axis of size m at k, yᵢ along k = xᵢ.

    dXᵢ = dY at index i along k (a view).
    """

    __slots__ = ("axis",)
    op = "stack"

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def forward(self, *xs: Any) -> Any:
        return get_array_module(xs[0]).stack(xs, axis=self.axis)

    def backward(self, grad_output: Any) -> tuple:
        lead = (slice(None),) * self.axis
        return tuple(grad_output[(*lead, i)] if needs else None for i, needs in enumerate(self.needs_grad))


def _joined(op: str, tensors: Any) -> list[Tensor]:
    """The tensors to join, as a non-empty list of Tensors (raw arrays join the first Tensor's device)."""
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: got {type(tensors).__name__}; expected a list or tuple of Tensors, "
                        f"e.g. {op}([a, b], dim=0)")
    if not tensors:
        raise ValueError(f"{op}: got an empty sequence; expected at least one Tensor")
    return as_tensors(op, [f"tensors[{i}]" for i in range(len(tensors))], tensors)


def cat(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """The tensors joined along the existing axis ``dim``, as ``torch.cat``: all of one dtype and
    device, with equal shapes but along ``dim``. Shapes (n₁, p), (n₂, p) -> (n₁ + n₂, p) for dim=0."""
    xs = _joined("cat", tensors)
    ndim = xs[0].data.ndim
    if ndim == 0:
        raise ValueError("cat: got 0-d tensors, which have no axis to join along; expected tensors of "
                         "at least one dimension (stack joins 0-d ones along a new axis)")
    (axis,) = checks.axes("cat", dim, ndim, name="dim")
    first = xs[0].data.shape
    for i, x in enumerate(xs):
        shape = x.data.shape
        if len(shape) != ndim or any(a != b for k, (a, b) in enumerate(zip(shape, first)) if k != axis):
            raise ValueError(f"cat: tensors[{i}] has shape {shape} but tensors[0] has {first}; expected "
                             f"shapes equal in every dimension but dim={dim}")
    return apply(Cat(axis, [x.data.shape[axis] for x in xs]), *xs)


def stack(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """The tensors, all of one shape S, joined along a new axis ``dim`` (0 to len(S); negative from
    the end), as ``torch.stack``. m tensors of shape (p,) -> (m, p) for dim=0."""
    xs = _joined("stack", tensors)
    first = xs[0].data.shape
    (axis,) = checks.axes("stack", dim, len(first) + 1, name="dim")
    for i, x in enumerate(xs):
        if x.data.shape != first:
            raise ValueError(f"stack: tensors[{i}] has shape {x.data.shape} but tensors[0] has {first}; "
                             f"expected equal shapes")
    return apply(Stack(axis), *xs)


# --- indexing --------------------------------------------------------------------------------
@verified
class GetItem(Function):
    """x: shape S, key -> y = x[key] (NumPy's indexing rules).

    dX = zeros(S) with dY scattered to the positions that were read: assigned, for basic
    indices and boolean masks (each position is read at most once), and accumulated
    (``add.at``) for integer arrays, where a repeated index must receive the sum.
    """

    __slots__ = ("key", "in_shape", "accumulate")
    op = "getitem"

    def __init__(self, key: tuple, in_shape: tuple, accumulate: bool) -> None:
        self.key = key
        self.in_shape = in_shape
        self.accumulate = accumulate

    def forward(self, x: Any) -> Any:
        return x[self.key]

    def backward(self, grad_output: Any) -> tuple:
        xp = get_array_module(grad_output)
        grad = xp.zeros(self.in_shape, dtype=grad_output.dtype)
        if self.accumulate:
            xp.add.at(grad, self.key, grad_output)  # NumPy, and CuPy >= 13 (cupy.add.at)
        else:
            grad[self.key] = grad_output
        return (grad,)


def data_array(owner: str, name: str, value: Any, device: str) -> Any:
    """An array of integers or booleans given as data (indices, labels, a mask), on ``device``.

    ``value``: a NumPy or CuPy array, or a (nested) list. Host arrays move to ``device``; a GPU
    array with a CPU tensor is a TypeError (``backend.join_device``). An empty list counts as
    integers.
    """
    if isinstance(value, Tensor):
        raise TypeError(f"{owner}: {name} is a Tensor, whose data are floats; expected an integer "
                        f"(or boolean) NumPy/CuPy array, e.g. numpy.array([0, 2])")
    if not isinstance(value, numpy.ndarray) and not is_gpu_array(value):
        array = numpy.asarray(value)
        value = array.astype(numpy.intp) if array.size == 0 else array
    return join_device(owner, name, value, device)


def check_range(owner: str, what: str, indices: Any, low: int, high: int) -> None:
    """IndexError naming ``owner`` unless every integer in ``indices`` is in [low, high).

    CuPy does not check indices: out of range, it wraps around silently. So the check is made
    here, on both devices, at the cost of one device-to-host sync on the GPU.
    """
    if indices.size and bool(((indices < low) | (indices >= high)).any()):
        raise IndexError(f"{owner}: {what} must lie in [{low}, {high}); got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")


def _axes_used(part: Any) -> int:
    """How many axes of x one part of an index consumes."""
    if part is None:
        return 0
    if hasattr(part, "dtype") and part.dtype.kind == "b":
        return part.ndim
    return 1


def index_key(key: Any, x: Tensor) -> tuple[tuple, bool]:
    """``key`` checked for ``x[key]``: (the key as a tuple on x's device, whether it has integer arrays).

    Parts: ints, slices, None, ``...``, integer arrays or lists (rows may repeat), boolean
    arrays (masks). Ints and integer arrays are range-checked (see ``check_range``).
    """
    shape = x.data.shape
    parts = []
    for part in key if isinstance(key, tuple) else (key,):
        if part is None or part is Ellipsis or isinstance(part, slice):
            parts.append(part)
        elif isinstance(part, (bool, numpy.bool_)):
            raise TypeError(f"getitem: got the boolean {part!r} as an index; expected ints, "
                            f"slices, None, ..., integer arrays or boolean arrays")
        elif isinstance(part, numbers.Integral) or (getattr(part, "ndim", None) == 0 and
                                                     getattr(part, "dtype", None) is not None):
            parts.append(checks.integer("getitem", "index", part, low=-(2 ** 63)))
        elif isinstance(part, (list, numpy.ndarray, Tensor)) or is_gpu_array(part):
            array = data_array("getitem", "an index array", part, x.device)
            if array.dtype.kind not in "biu":
                raise TypeError(f"getitem: got an index array of dtype {array.dtype}; expected "
                                f"integers (rows to take) or booleans (a mask)")
            parts.append(array)
        else:
            raise TypeError(f"getitem: got an index of type {type(part).__name__}; expected ints, "
                            f"slices, None, ..., integer arrays or boolean arrays")
    if sum(part is Ellipsis for part in parts) > 1:
        raise IndexError("getitem: got more than one '...'; expected at most one")
    used = sum(_axes_used(part) for part in parts if part is not Ellipsis)
    if used > len(shape):
        raise IndexError(f"getitem: the index uses {used} axes but the tensor has shape {shape}")
    axis = 0
    for part in parts:
        if part is Ellipsis:
            axis += len(shape) - used
            continue
        size = shape[axis] if axis < len(shape) else 0
        if isinstance(part, int):
            if not -size <= part < size:
                raise IndexError(f"getitem: index {part} is out of range for axis {axis} of size "
                                 f"{size} (tensor of shape {shape}); expected [{-size}, {size})")
        elif hasattr(part, "dtype") and part.dtype.kind in "iu":
            check_range("getitem", f"the index array for axis {axis}", part, -size, size)
        elif hasattr(part, "dtype") and part.shape != shape[axis:axis + part.ndim]:
            raise IndexError(f"getitem: a boolean mask of shape {part.shape} at axis {axis}; "
                             f"expected the shape of the axes it selects from, "
                             f"{shape[axis:axis + part.ndim]}")
        axis += _axes_used(part)
    accumulate = any(hasattr(part, "dtype") and part.dtype.kind in "iu" for part in parts)
    return tuple(parts), accumulate


def getitem(x: Tensor, key: Any) -> Tensor:
    """``x[key]``: basic indexing (``x[i]``, ``x[a:b]``, ``x[:, j]``, ``x[None]``, ``x[..., 0]``),
    rows by integer array (``x[idx]``, repeats allowed, their gradients summed) and boolean
    masks (``x[mask]``). Index arrays may be NumPy or CuPy arrays or lists; they follow the
    device rule (host arrays join x's device). x: any shape -> NumPy's result shape.
    """
    x = as_tensor("getitem", "x", x)
    parts, accumulate = index_key(key, x)
    return apply(GetItem(parts, x.data.shape, accumulate), x)
