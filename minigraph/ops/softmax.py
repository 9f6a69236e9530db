"""Softmax and log-softmax along one axis, and log-sum-exp over axes, each one node with its
closed-form backward.

Along the axis k, with m = max_k X (subtracted so that no exponent overflows) and
Σ the sum along k, broadcast back over it:
    softmax:      Y = e^(X − m) / Σ e^(X − m)
    log_softmax:  Y = X − m − log Σ e^(X − m)
    logsumexp:    Y = m + log Σ e^(X − m)   (over one or more axes, reduced)

For a classifier's loss use ``cross_entropy``, which fuses log-softmax with the loss in one node.
"""

from __future__ import annotations

from typing import Any

from .. import checks
from ..backend import get_array_module
from ..engine import Function, Tensor, apply, as_tensor, verified


def shifted(x: Any, axis: int | None) -> Any:
    """X − m, m the max along ``axis`` (kept as size 1): a new array whose exp cannot overflow.
    An empty x is copied as it is (nothing to shift; NumPy's max refuses an empty axis)."""
    xp = get_array_module(x)
    return x - xp.max(x, axis=axis, keepdims=True) if x.size else x.copy()


def log_softmax_along(x: Any, axis: int | None) -> Any:
    """log softmax(x) along ``axis`` on arrays: X − m − log Σ e^(X − m) (``cross_entropy`` uses it too)."""
    xp = get_array_module(x)
    y = shifted(x, axis)
    y -= xp.log(xp.exp(y).sum(axis=axis, keepdims=True))
    return y


class _AlongAxis(Function):
    """x: shape S -> y: shape S, normalised along ``axis`` (None for a 0-d x: its one element)."""

    __slots__ = ("axis",)

    def __init__(self, axis: int | None) -> None:
        self.axis = axis


@verified
class Softmax(_AlongAxis):
    """Y = e^(X − m) / Σ_k e^(X − m).

    dX = Y ⊙ (dY − Σ_k (dY ⊙ Y)): the Jacobian diag(y) − y yᵀ of each slice, applied
    without forming it.
    """

    __slots__ = ()
    op = "softmax"

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).exp(shifted(x, self.axis))
        y /= y.sum(axis=self.axis, keepdims=True)  # one exp, reused: not e^(X − m) again for the sum
        self.saved = (y,)
        return y

    def backward(self, grad_output: Any) -> tuple:
        (y,) = self.saved
        weighted = grad_output * y
        grad_x = weighted - y * weighted.sum(axis=self.axis, keepdims=True)
        return (grad_x,)


@verified
class LogSoftmax(_AlongAxis):
    """Y = X − m − log Σ_k e^(X − m).

    dX = dY − e^Y ⊙ Σ_k dY   (e^Y is the softmax).
    """

    __slots__ = ()
    op = "log_softmax"

    def forward(self, x: Any) -> Any:
        y = log_softmax_along(x, self.axis)
        self.saved = (y,)
        return y

    def backward(self, grad_output: Any) -> tuple:
        (y,) = self.saved
        xp = get_array_module(y)
        return (grad_output - xp.exp(y) * grad_output.sum(axis=self.axis, keepdims=True),)


@verified
class LogSumExp(Function):
    """x: shape S -> y = log Σ e^X over the axes (reduced, or kept as 1 with ``keepdims``).

    Y = m + log Σ e^(X − m), m the max over the axes (0 where it is ±inf, so that a slice of
    −inf gives −inf and one holding +inf gives +inf, not nan).
    dX = dY ⊙ e^(X − Y), dY and Y broadcast back: the softmax over the axes.
    """

    __slots__ = ("axes", "keepdims")
    op = "logsumexp"

    def __init__(self, axes: tuple[int, ...], keepdims: bool) -> None:
        self.axes = axes
        self.keepdims = keepdims

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        top = xp.max(x, axis=self.axes, keepdims=True) if x.size else xp.zeros((1,) * x.ndim, dtype=x.dtype)
        top = xp.where(xp.isfinite(top), top, 0).astype(x.dtype, copy=False)
        y = xp.log(xp.exp(x - top).sum(axis=self.axes, keepdims=True)) + top  # kept as 1: broadcasts back
        if self.needs_grad[0]:
            self.saved = (x, y)
        return y if self.keepdims else y.squeeze(self.axes)

    def backward(self, grad_output: Any) -> tuple:
        x, y = self.saved
        xp = get_array_module(x)
        kept = grad_output if self.keepdims else xp.expand_dims(grad_output, self.axes)
        return (kept * xp.exp(x - y),)


def logsumexp(x: Tensor, dim: int | tuple[int, ...], keepdim: bool = False) -> Tensor:
    """log Σ e^x over ``dim`` (an int or a tuple; required, as in ``torch.logsumexp``), computed
    without overflow. x: shape S -> S without those axes (as 1 with ``keepdim``)."""
    x = as_tensor("logsumexp", "x", x)
    keepdim = checks.flag("logsumexp", "keepdim", keepdim)
    if dim is None:
        raise TypeError("logsumexp: got dim=None; expected the axis or axes to reduce, e.g. logsumexp(x, dim=1)")
    axes = tuple(sorted(checks.axes("logsumexp", dim, x.data.ndim, name="dim")))
    return apply(LogSumExp(axes, keepdim), x)


def _along(node: type, op: str, x: Tensor, dim: Any) -> Tensor:
    x = as_tensor(op, "x", x)
    if dim is None:  # torch's implicit choice of axis is deprecated; guessing it would hide a bug
        raise TypeError(f"{op}: got dim=None; expected the axis to normalise along, e.g. "
                        f"{op}(x, dim=1) for the classes of x: (N, C)")
    if isinstance(dim, (tuple, list)):  # checks.axes takes several; a slice is along one axis only
        raise TypeError(f"{op}: got dim={dim!r}; expected one integer axis, e.g. {op}(x, dim=1)")
    ndim = x.data.ndim
    (axis,) = checks.axes(op, dim, ndim or 1, name="dim")  # a 0-d x has the axis 0 (or -1), as in torch
    return apply(node(axis if ndim else None), x)


def softmax(x: Tensor, dim: int | None = None) -> Tensor:
    """e^x normalised to sum to 1 along ``dim`` (required), as ``torch.softmax``. x: any shape ->
    the same shape. Stable for any finite x: the largest element along dim is subtracted first."""
    return _along(Softmax, "softmax", x, dim)


def log_softmax(x: Tensor, dim: int | None = None) -> Tensor:
    """log(softmax(x, dim)) computed without the log of a small number, as ``torch.log_softmax``.
    x: any shape -> the same shape."""
    return _along(LogSoftmax, "log_softmax", x, dim)
