"""Reductions: sum, mean, amax and amin over some axes (or all), optionally keeping them as
size 1; max and min, over all elements or along one axis with the indices.

The backward of a reduction is a broadcast: every element that went into an output
element receives that element's gradient (divided by the count, for the mean). For the
extremes, only the elements that were the extreme receive it: shared equally among ties
(amax, amin, and max/min over all elements), or all of it to the returned index (max/min
along an axis), as in PyTorch.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .. import checks
from ..backend import get_array_module
from ..engine import Function, Tensor, apply, as_tensor, verified, verified_variants


@verified
class Sum(Function):
    """x: shape S -> y: S without the reduced axes (or with them as 1, keepdims).

    y = Σ over the axes of x;  dX = broadcast of dY (reduced axes restored as 1) to S.
    """

    __slots__ = ("axes", "keepdims", "in_shape")
    op = "sum"

    def __init__(self, axes: tuple[int, ...], keepdims: bool, in_shape: tuple) -> None:
        self.axes = axes
        self.keepdims = keepdims
        self.in_shape = in_shape

    def forward(self, x: Any) -> Any:
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad_output: Any) -> tuple:
        return (self.spread(grad_output),)

    def spread(self, grad_output: Any) -> Any:
        """dY back to the input's shape: a broadcast view, so no (N, p) array is written here."""
        kept = tuple(1 if axis in self.axes else size for axis, size in enumerate(self.in_shape))
        return get_array_module(grad_output).broadcast_to(grad_output.reshape(kept), self.in_shape)


@verified
class Mean(Sum):
    """x: shape S -> y: the mean over the axes, n = the number of elements averaged.

    y = (Σ over the axes of x) / n;  dX = broadcast of dY / n to S.
    """

    __slots__ = ("count",)
    op = "mean"

    def __init__(self, axes: tuple[int, ...], keepdims: bool, in_shape: tuple) -> None:
        super().__init__(axes, keepdims, in_shape)
        self.count = math.prod(in_shape[axis] for axis in axes)

    def forward(self, x: Any) -> Any:
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, grad_output: Any) -> tuple:
        return (self.spread(grad_output / self.count),)


@verified
class Var(Sum):
    """x: shape S -> y: the variance over the axes, Σ(x − μ)² / (n − correction), μ their mean.

    dX = broadcast of dY ⊙ 2(X − μ) / (n − correction): the path through μ adds nothing, as
    Σ(X − μ) = 0 over the axes.
    """

    __slots__ = ("scale", "centred")
    op = "var"

    def __init__(self, axes: tuple[int, ...], keepdims: bool, in_shape: tuple, correction: float) -> None:
        super().__init__(axes, keepdims, in_shape)
        divisor = math.prod(in_shape[axis] for axis in axes) - correction
        # No degrees of freedom left: inf (or nan for 0/0), as PyTorch gives, with NumPy's warning.
        self.scale = 1.0 / divisor if divisor > 0 else math.inf

    def forward(self, x: Any) -> Any:
        # Two passes, x − μ first: E[x²] − μ² cancels catastrophically for a large mean.
        centred = x - x.mean(axis=self.axes, keepdims=True)
        if self.needs_grad[0]:
            self.centred = centred
        return (centred * centred).sum(axis=self.axes, keepdims=self.keepdims) * self.scale

    def backward(self, grad_output: Any) -> tuple:
        return (self.spread(grad_output * (2.0 * self.scale)) * self.centred,)


@verified
class Std(Var):
    """x: shape S -> y = √var over the axes (see ``Var``).

    dX = broadcast of dY / ((n − correction) y) ⊙ (X − μ), and 0 where y = 0, as PyTorch's.
    """

    __slots__ = ("y",)
    op = "std"

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).sqrt(super().forward(x))
        self.y = y
        return y

    def backward(self, grad_output: Any) -> tuple:
        # y = 0 only where every X − μ is 0, so dividing by 1 there instead gives PyTorch's 0
        # (not 0/0). A NaN y (an infinite X) keeps its NaN: y > 0 would take it for a 0 and give
        # ±inf. The where() is over y's reduced shape: no (N, p) branch.
        y = self.y
        safe = get_array_module(y).where(y == 0, 1.0, y).astype(y.dtype, copy=False)
        return (self.spread(grad_output * self.scale / safe) * self.centred,)


class _Extreme(Sum):
    """x: shape S -> y = the largest element over the axes (``Amax``; ``Amin``: the smallest).

    dX = M ⊙ broadcast(dY / c), M the mask of the elements equal to their y (NaN counting as
    equal to a NaN y) and c the number of them per y: ties share the gradient equally.
    """

    __slots__ = ()
    pick: str  # "amax" or "amin"

    def __init__(self, axes: tuple[int, ...], keepdims: bool, in_shape: tuple) -> None:
        super().__init__(axes, keepdims, in_shape)
        if any(in_shape[axis] == 0 for axis in axes):  # NumPy's error names no op
            raise ValueError(f"{self.op}: cannot reduce over an axis of size 0 (shape {in_shape}, axes "
                             f"{axes}); expected at least one element to pick from")

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        y = (xp.amax if self.pick == "amax" else xp.amin)(x, axis=self.axes, keepdims=True)
        self.saved = (x, y)
        return y if self.keepdims else y.reshape(tuple(s for a, s in enumerate(x.shape) if a not in self.axes))

    def backward(self, grad_output: Any) -> tuple:
        x, y = self.saved
        xp = get_array_module(x)
        winners = (x == y) | (xp.isnan(x) & xp.isnan(y))
        count = winners.sum(axis=self.axes, keepdims=True).astype(grad_output.dtype)
        kept = grad_output.reshape(y.shape)
        return (winners * (kept / count),)


Amax, Amin = verified_variants(_Extreme, {"Amax": "amax", "Amin": "amin"})


class ExtremeAlong(Function):
    """x: shape S, one axis k -> the largest (``MaxAlong``) or smallest (``MinAlong``) element
    along k, and its index, the first one among ties, as NumPy's argmax and PyTorch's max(dim).

    dX = dY placed at the returned index along k, zeros elsewhere.
    """

    __slots__ = ("axis", "keepdims", "size", "indices")
    pick: str

    def __init__(self, axis: int, keepdims: bool, size: int) -> None:
        self.axis = axis
        self.keepdims = keepdims
        self.size = size  # of x along the axis

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        index = (xp.argmax if self.pick == "max" else xp.argmin)(x, axis=self.axis, keepdims=True)
        self.indices = index  # (S with k as 1): read by the caller, and by backward
        values = xp.take_along_axis(x, index, axis=self.axis)
        return values if self.keepdims else values.squeeze(self.axis)

    def backward(self, grad_output: Any) -> tuple:
        index = self.indices
        xp = get_array_module(index)
        kept = grad_output if self.keepdims else xp.expand_dims(grad_output, self.axis)
        shape = [1] * index.ndim
        shape[self.axis] = self.size
        positions = xp.arange(self.size, dtype=index.dtype).reshape(shape)
        return (xp.where(positions == index, kept, 0).astype(grad_output.dtype, copy=False),)


MaxAlong, MinAlong = verified_variants(ExtremeAlong, {"MaxAlong": "max", "MinAlong": "min"})


class ExtremeResult(NamedTuple):
    """What ``max(x, dim)`` and ``min(x, dim)`` return, as ``torch.return_types.max``:
    ``values`` (a Tensor) and ``indices`` (an int64 NumPy/CuPy array on x's device)."""

    values: Tensor
    indices: Any


def _alias(op: str, name: str, value: Any, torch_name: str, torch_value: Any, default: Any) -> Any:
    """NumPy's argument or PyTorch's spelling of it (``dim`` for ``axis``, ``keepdim`` for
    ``keepdims``), so code written for either runs; both at once is an error."""
    if torch_value is None:
        return value
    if value is not default:
        raise TypeError(f"{op}: got both {name}={value!r} and {torch_name}={torch_value!r}; "
                        f"expected one of them ({torch_name} is PyTorch's name for {name})")
    return torch_value


def _reduction(node: type, op: str, x: Tensor, axis: Any, keepdims: bool, dim: Any = None,
               keepdim: Any = None) -> Tensor:
    x = as_tensor(op, "x", x)
    axis = _alias(op, "axis", axis, "dim", dim, None)
    keepdims = checks.flag(op, "keepdims" if keepdim is None else "keepdim",  # the name the caller wrote
                           _alias(op, "keepdims", keepdims, "keepdim", keepdim, False))
    axes = tuple(sorted(checks.axes(op, axis, x.data.ndim)))
    return apply(node(axes, keepdims, x.data.shape), x)


def sum(x: Tensor, axis: int | tuple[int, ...] | None = None,  # noqa: A001 (NumPy's name)
        keepdims: bool = False, *, dim: int | tuple[int, ...] | None = None,
        keepdim: bool | None = None) -> Tensor:
    """Sum over ``axis`` (an int, a tuple of ints, negatives from the end; None: all axes).

    x: shape S -> S without those axes, or with them as size 1 when ``keepdims``.
    Also ``x.sum(axis, keepdims)``; PyTorch's ``dim=`` and ``keepdim=`` are accepted for them.
    """
    return _reduction(Sum, "sum", x, axis, keepdims, dim, keepdim)


def mean(x: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False, *,
         dim: int | tuple[int, ...] | None = None, keepdim: bool | None = None) -> Tensor:
    """Mean over ``axis`` (as ``sum``). The mean over no elements is nan, as in NumPy.

    Also ``x.mean(axis, keepdims)``; PyTorch's ``dim=`` and ``keepdim=`` are accepted for them.
    """
    return _reduction(Mean, "mean", x, axis, keepdims, dim, keepdim)


def amax(x: Tensor, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
    """The largest element over ``dim`` (an int, a tuple, None: all), as ``torch.amax``. Ties
    share the gradient equally. x: shape S -> S without those axes (as 1 with ``keepdim``)."""
    return _reduction(Amax, "amax", x, dim, keepdim)


def amin(x: Tensor, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
    """The smallest element over ``dim``, as ``amax``."""
    return _reduction(Amin, "amin", x, dim, keepdim)


def _extreme(pick: str, x: Tensor, dim: Any, keepdim: bool) -> Any:
    from .elementwise import maximum, minimum  # (a module-level import would be circular)

    if isinstance(dim, Tensor):  # torch.max(a, b): the elementwise larger
        if keepdim is not False:
            raise TypeError(f"{pick}: got a Tensor and keepdim; expected {pick}(x), {pick}(x, dim, "
                            f"keepdim) or {pick}(a, b)")
        return (maximum if pick == "max" else minimum)(x, dim)
    x = as_tensor(pick, "x", x)
    if dim is None:
        if x.data.size == 0:  # checked here, where the name the caller used is known
            raise ValueError(f"{pick}: got an empty tensor (shape {x.data.shape}); expected at least one "
                             f"element to pick from")
        return _reduction(Amax if pick == "max" else Amin, pick, x, None, keepdim)
    keepdim = checks.flag(pick, "keepdim", keepdim)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{pick}: got dim={dim!r}; expected one integer axis (for several, use "
                        f"a{pick}(x, dim), which returns no indices)")
    (axis,) = checks.axes(pick, dim, x.data.ndim, name="dim")
    if x.data.shape[axis] == 0:
        raise IndexError(f"{pick}: the axis {dim} has size 0; expected at least one element to pick from")
    fn = (MaxAlong if pick == "max" else MinAlong)(axis, keepdim, x.data.shape[axis])
    values = apply(fn, x)
    # The caller gets a copy: backward reads fn.indices, and an edit of the caller's array in
    # place (idx += 1) must not move the gradient (PyTorch refuses such an edit at backward).
    indices = fn.indices if keepdim else fn.indices.squeeze(axis)
    return ExtremeResult(values, indices.astype("int64", copy=True))


def max(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001 (torch.max's name)
    """As ``torch.max``: ``max(x)`` the largest element (ties share the gradient); ``max(x, dim,
    keepdim=False)`` a named pair (values, indices) along one axis, the gradient going to the
    index (the first among ties); ``max(a, b)`` the elementwise ``maximum``."""
    return _extreme("max", x, dim, keepdim)


def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001 (torch.min's name)
    """As ``torch.min``: the smallest, like ``max``."""
    return _extreme("min", x, dim, keepdim)


def _arg_extreme(op: str, x: Tensor, dim: int | None, keepdim: bool) -> Any:
    """The index of the largest (``op`` "argmax") or smallest element, as ``torch.argmax``."""
    x = as_tensor(op, "x", x)
    keepdim = checks.flag(op, "keepdim", keepdim)
    data = x.data
    xp = get_array_module(data)
    pick = xp.argmax if op == "argmax" else xp.argmin
    if dim is None:  # the index into the flattened x
        if data.size == 0:
            raise ValueError(f"{op}: got an empty tensor (shape {data.shape}) and dim=None; expected "
                             f"at least one element, or a dim to reduce")
        # asarray: NumPy's argmax gives a scalar, not a 0-d array, where the result is 0-d.
        index = xp.asarray(pick(data.reshape(-1)))
        return index.reshape((1,) * data.ndim if keepdim else ()).astype("int64", copy=False)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{op}: got dim={dim!r}; expected one integer axis or None")
    (axis,) = checks.axes(op, dim, data.ndim or 1, name="dim")  # a 0-d x has an axis 0, as in torch
    if data.ndim == 0:
        return xp.zeros((), dtype="int64")
    if data.shape[axis] == 0:
        raise IndexError(f"{op}: the axis {dim} has size 0; expected at least one element to pick from")
    return xp.asarray(pick(data, axis=axis, keepdims=keepdim)).astype("int64", copy=False)


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:
    """The index of the largest element, as ``torch.argmax``: over all of x (an index into
    x flattened, 0-d) or along ``dim`` (x: shape S -> S without dim, or with it as 1 with
    ``keepdim``). The first index among ties; a NaN counts as the largest. Indices are data,
    not part of the graph: an int64 NumPy/CuPy array on x's device, like ``max(x, dim).indices``."""
    return _arg_extreme("argmax", x, dim, keepdim)


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:
    """The index of the smallest element, as ``torch.argmin``; see ``argmax``."""
    return _arg_extreme("argmin", x, dim, keepdim)


def _variance(node: type, op: str, x: Tensor, dim: Any, unbiased: Any, keepdim: bool,
              correction: Any) -> Tensor:
    x = as_tensor(op, "x", x)
    if unbiased is not None and correction is not None:
        raise TypeError(f"{op}: got both unbiased={unbiased!r} and correction={correction!r}; expected "
                        f"one of them (unbiased=True is correction=1, False is correction=0)")
    if correction is None:
        correction = 1 if unbiased is None else int(checks.flag(op, "unbiased", unbiased))
    correction = checks.real(op, "correction", correction, low=0.0)
    keepdim = checks.flag(op, "keepdim", keepdim)
    axes = tuple(sorted(checks.axes(op, dim, x.data.ndim, name="dim")))
    return apply(node(axes, keepdim, x.data.shape, correction), x)


def var(x: Tensor, dim: int | tuple[int, ...] | None = None, unbiased: bool | None = None,
        keepdim: bool = False, *, correction: float | None = None) -> Tensor:
    """The variance over ``dim`` (an int, a tuple, None: all), as ``torch.var``: Σ(x − μ)² divided
    by n − ``correction`` (1 by default, Bessel's; or ``unbiased=False`` for n). x: shape S ->
    S without those axes (as 1 with ``keepdim``)."""
    return _variance(Var, "var", x, dim, unbiased, keepdim, correction)


def std(x: Tensor, dim: int | tuple[int, ...] | None = None, unbiased: bool | None = None,
        keepdim: bool = False, *, correction: float | None = None) -> Tensor:
    """The standard deviation √var, as ``torch.std`` (see ``var``); its gradient is 0 where it is 0."""
    return _variance(Std, "std", x, dim, unbiased, keepdim, correction)
