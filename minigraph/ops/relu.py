"""Rectified linear units and their smooth cousins: relu max(x, 0); leaky_relu (slope·x below 0);
elu (α(eˣ − 1) below 0); softplus (log(1 + eˣ), a smooth relu); silu (x·σ(x))."""

from __future__ import annotations

from typing import Any

from .. import checks
from ..backend import get_array_module
from ..engine import Function, Tensor, apply, as_tensor, verified
from .elementwise import stable_sigmoid, stable_softplus


@verified
class ReLU(Function):
    """x: any shape -> y: same shape.

    dX = dY ⊙ 1[y ≠ 0]   (equivalently 1[not y ≤ 0], as y ≥ 0 or NaN; the subgradient at 0 is taken as 0, and a NaN input passes dY
    through, both as in PyTorch: a NaN must reach the gradients, not vanish). One difference:
    an infinite or NaN dY where y ≤ 0 gives NaN here (∞·0), where PyTorch's select gives 0.
    """

    __slots__ = ()
    op = "relu"

    def forward(self, x: Any) -> Any:
        y = get_array_module(x).maximum(x, 0)
        self.saved = (y,)  # the mask is recomputed from y: no extra array kept
        return y

    def backward(self, grad_output: Any) -> tuple:
        (y,) = self.saved
        # y = max(x, 0) is positive, zero or NaN, so "not y <= 0" is "y != 0": one comparison.
        # Not "y > 0": NaN > 0 is False, which would zero the gradient of a NaN input and hide
        # the divergence upstream of it. A multiply, not where(): on NumPy where() branches per
        # element and took 9x as long at 4096x512 (7.5 vs 0.8 ms).
        return (grad_output * (y != 0),)


def relu(x: Tensor) -> Tensor:
    """Elementwise max(x, 0). x: any shape."""
    return apply(ReLU(), as_tensor("relu", "x", x))


@verified
class LeakyReLU(Function):
    """x: any shape -> y = x ⊙ S, S = 1[x > 0] + slope·1[not x > 0].

    dX = dY ⊙ S: the slope at 0 and at NaN (whose y is NaN), as PyTorch's.
    """

    __slots__ = ("slope",)
    op = "leaky_relu"

    def __init__(self, slope: float) -> None:
        self.slope = slope

    def forward(self, x: Any) -> Any:
        # S by arithmetic, not where(): a branch per element costs ~9x on NumPy (see ReLU).
        # Built so that each entry is exactly 1 or the slope (1 − slope + slope need not be 1).
        positive = x > 0
        scale = (~positive).astype(x.dtype)
        scale *= self.slope
        scale += positive
        self.saved = (scale,)
        return x * scale

    def backward(self, grad_output: Any) -> tuple:
        (scale,) = self.saved
        return (grad_output * scale,)


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    """x where x > 0, ``negative_slope``·x elsewhere, as ``torch.nn.functional.leaky_relu``.
    x: any shape -> the same shape."""
    slope = checks.real("leaky_relu", "negative_slope", negative_slope)
    return apply(LeakyReLU(slope), as_tensor("leaky_relu", "x", x))


@verified
class ELU(Function):
    """x: any shape -> y = x where x > 0, α(eˣ − 1) elsewhere.

    dX = dY ⊙ (1 where x > 0, α eˣ elsewhere): α at 0, as PyTorch's.
    """

    __slots__ = ("alpha",)
    op = "elu"

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        positive = x > 0
        negative_part = xp.minimum(x, 0)  # keeps eˣ from overflowing where x is large
        # The slope α eˣ where x <= 0, 1 elsewhere: eˣ itself, not expm1 + 1, which is 0 in
        # float32 from x < −17 on.
        slope = xp.where(positive, 1.0, self.alpha * xp.exp(negative_part)).astype(x.dtype, copy=False)
        self.saved = (slope,)
        return xp.where(positive, x, self.alpha * xp.expm1(negative_part))  # expm1: accurate near 0

    def backward(self, grad_output: Any) -> tuple:
        (slope,) = self.saved
        return (grad_output * slope,)


@verified
class Softplus(Function):
    """x: any shape -> y = log(1 + e^(βx)) / β, and y = x where βx > threshold (as PyTorch's).

    dX = dY ⊙ σ(βx), and dY where βx > threshold.
    """

    __slots__ = ("beta", "threshold")
    op = "softplus"

    def __init__(self, beta: float, threshold: float) -> None:
        self.beta = beta
        self.threshold = threshold

    def forward(self, x: Any) -> Any:
        xp = get_array_module(x)
        z = x * self.beta
        linear = z > self.threshold
        smooth, e = stable_softplus(xp, z)
        smooth /= self.beta
        self.saved = (z, e, linear)
        return xp.where(linear, x, smooth)

    def backward(self, grad_output: Any) -> tuple:
        z, e, linear = self.saved
        xp = get_array_module(z)
        slope = xp.where(linear, 1.0, stable_sigmoid(xp, z, e)).astype(z.dtype, copy=False)
        return (grad_output * slope,)


@verified
class SiLU(Function):
    """x: any shape -> y = x σ(x) (also called swish).  dX = dY ⊙ σ(x)(1 + x(1 − σ(x)))."""

    __slots__ = ()
    op = "silu"

    def forward(self, x: Any) -> Any:
        s = stable_sigmoid(get_array_module(x), x)
        self.saved = (x, s)
        return x * s

    def backward(self, grad_output: Any) -> tuple:
        x, s = self.saved
        return (grad_output * (s * (1 + x * (1 - s))),)


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    """x where x > 0, α(eˣ − 1) elsewhere, as ``torch.nn.functional.elu``. x: any shape."""
    alpha = checks.real("elu", "alpha", alpha)
    return apply(ELU(alpha), as_tensor("elu", "x", x))


def softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + e^(βx)) / β, linear (x) where βx > threshold, as ``torch.nn.functional.softplus``.
    x: any shape; β > 0."""
    beta = checks.real("softplus", "beta", beta, low=0.0, low_open=True)
    threshold = checks.real("softplus", "threshold", threshold, infinite=True)
    return apply(Softplus(beta, threshold), as_tensor("softplus", "x", x))


def silu(x: Tensor) -> Tensor:
    """x σ(x), as ``torch.nn.functional.silu``. x: any shape."""
    return apply(SiLU(), as_tensor("silu", "x", x))
