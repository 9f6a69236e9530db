"""Layer normalization: each sample normalised over its own last dims, one node with a closed-form backward.

x: (*lead, *normalized_shape) is seen as X: (M, D), one row per position of the leading dims
(M = prod(lead)) and D = prod(normalized_shape) columns. Batch norm normalises each column over
the rows (docs/batchnorm.md); layer norm is the same with rows and columns swapped, each row over
its D columns, and then the affine part per column. With 1 a column of D ones:
    μ = X1 / D                      row means, (M,)
    Xc = X − μ1ᵀ                    centred rows, (M, D)
    σ² = (Xc ⊙ Xc)1 / D             row variances (biased), (M,)
    s = (σ² + eps)^(−1/2)           inv_std, (M,)
    X̂ = s1ᵀ ⊙ Xc                    normalised rows, (M, D)
    Y = X̂ ⊙ γ + β                   γ, β: (D,) broadcast over the M rows
(M,) vectors such as μ and s are columns broadcast over the D columns; (D,) vectors rows
broadcast over the M rows. Everything is matrix algebra on (M, D): no loop over rows or features.

For NumPy arrays a fused kernel (``minigraph/kernels/cpu.py``, numba) computes the same in one
read of each row per direction; this formula stays the definition the tests hold it to, and
serves wherever no kernel does (``MINIGRAPH_FUSED=0``, no numba, CuPy arrays, empty x).
"""

from __future__ import annotations

import math
from typing import Any

from .. import checks, kernels
from ..backend import column_dot, column_sums, get_array_module
from ..engine import Function, Tensor, apply, as_tensors, verified


@verified
class LayerNorm(Function):
    """x: (*lead, *S) and, when given, weight γ: S, bias β: S -> y: x's shape, with D = prod(S).

    On the (M, D) rows of X (module docstring), with G = dY ⊙ γ the gradient reaching X̂
    (G = dY without a weight):

    dβ = 1ᵀ_M dY
    dγ = 1ᵀ_M (dY ⊙ X̂)
    dX = s ⊙ [G − (G1)/D − X̂ ⊙ ((G ⊙ X̂)1)/D]

    This is batch norm's dX (docs/batchnorm.md §4, with γ = 1 and ddof = 0) transposed: the
    reductions run along each row instead of down each column. The last two terms are the
    paths through μ and through σ².
    """

    __slots__ = ("eps", "shape", "has_weight", "has_bias", "kernel")
    op = "layer_norm"

    def __init__(self, eps: float, shape: tuple[int, ...], has_weight: bool, has_bias: bool) -> None:
        self.eps = eps
        self.shape = shape  # normalized_shape
        self.has_weight = has_weight
        self.has_bias = has_bias
        self.kernel = None  # the fused kernels that ran the forward, if any (minigraph.kernels)

    def rows(self, a: Any) -> Any:
        """a: (*lead, *S) as (M, D): a view when a is contiguous, else a copy."""
        d = math.prod(self.shape)
        return a.reshape(math.prod(a.shape[:a.ndim - len(self.shape)]), d)

    def forward(self, x: Any, *affine: Any) -> Any:
        weight = affine[0].reshape(-1) if self.has_weight else None
        bias = affine[-1].reshape(-1) if self.has_bias else None
        rows = self.rows(x)
        self.kernel = kernels.layer_norm(rows, *(a for a in (weight, bias) if a is not None))
        if self.kernel is not None:  # the formula below, fused into one read of each row
            y, saved = self.kernel.layer_norm_forward(rows, weight, bias, self.eps)
            if any(self.needs_grad):
                self.saved = saved
            return y.reshape(x.shape)
        xp = get_array_module(x)
        # Sums over D = 0 columns are 0; dividing by 1 instead keeps 0/0 out (y is empty anyway).
        d = max(rows.shape[1], 1)
        mean = rows @ xp.ones(rows.shape[1], dtype=x.dtype) / d  # row sums as a matrix-vector product
        normalised = rows - mean[:, None]
        # Two-pass variance: E[x²] − E[x]² cancels catastrophically for large means.
        # column_dot of the transposes is (Xc ⊙ Xc)1, the per-row sums of squares.
        inv_std = 1.0 / xp.sqrt(column_dot(normalised.T, normalised.T) / d + self.eps)
        normalised *= inv_std[:, None]
        y = normalised * weight if weight is not None else normalised.copy()
        if bias is not None:
            y += bias
        if any(self.needs_grad):
            # X̂ is kept only for dX and dγ; dβ needs nothing.
            keep = self.needs_grad[0] or (self.has_weight and self.needs_grad[1])
            self.saved = (normalised if keep else None, inv_std, weight)
        return y.reshape(x.shape)

    def backward(self, grad_output: Any) -> tuple:
        grad_rows = self.rows(grad_output)
        wanted = iter(self.needs_grad[1:])
        needs = (self.needs_grad[0], self.has_weight and next(wanted), self.has_bias and next(wanted))
        if self.kernel is not None:
            grad_x, grad_weight, grad_bias = self.kernel.layer_norm_backward(self.saved, grad_rows, needs)
        else:
            normalised, inv_std, weight = self.saved
            grad_x = self.input_gradient(grad_rows, normalised, inv_std, weight) if needs[0] else None
            grad_weight = column_dot(grad_rows, normalised) if needs[1] else None
            grad_bias = column_sums(grad_rows) if needs[2] else None
        grads = [shaped(grad_x, grad_output.shape)]
        for given, grad in ((self.has_weight, grad_weight), (self.has_bias, grad_bias)):
            if given:
                grads.append(shaped(grad, self.shape))
        return tuple(grads)

    @staticmethod
    def input_gradient(grad_rows: Any, normalised: Any, inv_std: Any, weight: Any) -> Any:
        """dX: (M, D) from dY: (M, D), X̂: (M, D), s: (M,) and γ: (D,) or None."""
        xp = get_array_module(grad_rows)
        d = max(grad_rows.shape[1], 1)
        g = grad_rows * weight if weight is not None else grad_rows  # read only below
        through_mean = g @ xp.ones(grad_rows.shape[1], dtype=g.dtype) / d  # (G1)/D
        through_var = column_dot(g.T, normalised.T) / d                     # ((G ⊙ X̂)1)/D
        # dX = s ⊙ [G − (G1)/D − X̂ ⊙ ((G ⊙ X̂)1)/D], built in one new buffer.
        grad_x = normalised * -through_var[:, None]
        grad_x += g
        grad_x -= through_mean[:, None]
        grad_x *= inv_std[:, None]
        return grad_x


def shaped(a: Any, shape: tuple[int, ...]) -> Any:
    """a reshaped to ``shape``, or a itself (None too) when it has that shape already.

    Not a view of itself: the engine hands a new array that owns its memory to .grad as it is,
    but copies a view (it cannot tell whose memory a view shares), 16 MiB at (4096, 1024) float32.
    """
    return a if a is None or a.shape == shape else a.reshape(shape)


def normalized_shape_of(owner: str, normalized_shape: Any) -> tuple[int, ...]:
    """``normalized_shape`` (an int, or a non-empty tuple or list of ints >= 0) as a tuple, or an
    error naming ``owner``."""
    # torch.Size is a tuple; a single int is one dim, as nn.LayerNorm(64) takes it.
    entries = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    if not entries:
        raise ValueError(f"{owner}: got normalized_shape={normalized_shape!r}; expected at least one "
                         f"dim to normalise over, e.g. (x.shape[-1],)")
    return tuple(checks.integer(owner, "normalized_shape", entry, low=0) for entry in entries)


def layer_norm(x: Tensor, normalized_shape: int | tuple[int, ...], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer norm of x: (*lead, *normalized_shape) over its last len(normalized_shape) dims,
    as ``torch.nn.functional.layer_norm``: y = (x − mean) / sqrt(var + eps) ⊙ weight + bias,
    mean and biased variance over those dims for each position of the leading dims.

    weight (γ), bias (β): shape normalized_shape, or None (scale 1, shift 0); each may be given
    without the other. y: x's shape. Raw arrays join the device of the Tensors among the operands.
    """
    shape = normalized_shape_of("layer_norm", normalized_shape)
    eps = checks.real("layer_norm", "eps", eps, low=0.0)
    names = ["x"] + [name for name, value in (("weight", weight), ("bias", bias)) if value is not None]
    values = [x] + [value for value in (weight, bias) if value is not None]
    tensors = as_tensors("layer_norm", names, values)
    x = tensors[0]
    if x.data.ndim < len(shape) or x.data.shape[x.data.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: x has shape {x.data.shape} but normalized_shape is {shape}; "
                         f"expected x's last {len(shape)} dim(s) to be {shape}, e.g. "
                         f"normalized_shape=x.shape[-1:] to normalise over the last dim")
    for name, tensor in zip(names[1:], tensors[1:]):
        if tensor.data.shape != shape:
            raise ValueError(f"layer_norm: {name} has shape {tensor.data.shape}; expected "
                             f"normalized_shape {shape}")
    return apply(LayerNorm(eps, shape, weight is not None, bias is not None), *tensors)
