"""Reductions: sum and mean over some axes (or all), optionally keeping them as size 1.

The backward of a reduction is a broadcast: every element that went into an output
element receives that element's gradient (divided by the count, for the mean).
"""

from __future__ import annotations

import math
from typing import Any

from .. import checks
from ..backend import get_array_module
from ..engine import Function, Tensor, apply, as_tensor, verified


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
