"""Losses that grow linearly in the error, for outliers: l1_loss, smooth_l1_loss and huber_loss,
all one node: a quadratic inside |d| < b joined to a line outside."""

from __future__ import annotations

from typing import Any

from .. import checks
from ..backend import get_array_module
from ..engine import Function, Tensor, apply, verified
from .mse_loss import elementwise_upstream, loss_operands, reduced


@verified
class RobustLoss(Function):
    """input x, target t: same shape -> a scalar (mean, sum) or x's shape (none).

    With d = x − t, a threshold b >= 0 and a scale s > 0:
      ℓ = s·d²/(2b) where |d| < b,  s·(|d| − b/2) elsewhere
    smooth_l1_loss(beta) is s = 1, b = beta; huber_loss(delta) is s = b = delta (delta·smooth L1,
    whose quadratic is d²/2); l1_loss is b = 0, s = 1 (ℓ = |d|: the quadratic has no room).
      mean: L = Σ ℓ / n   sum: L = Σ ℓ   none: L = ℓ
    With g = dL / n (mean), dL (sum) or dLᵢ (none):
      dx = g·clip(s·d/b, −s, s) for b > 0,  g·sign(d) for b = 0    dt = −dx
    sign(0) = 0: no gradient at a perfect fit, as PyTorch. At NaN, PyTorch's l1 gives 0 and its
    smooth l1 and Huber give NaN; so do these (clip keeps a NaN, sign's NaN becomes 0).
    """

    __slots__ = ("reduction", "threshold", "scale")
    op = "smooth_l1_loss"

    def __init__(self, reduction: str, threshold: float, scale: float) -> None:
        self.reduction = reduction
        self.threshold = threshold
        self.scale = scale

    def forward(self, input: Any, target: Any) -> Any:  # noqa: A002
        xp = get_array_module(input)
        diff = input - target
        distance = xp.abs(diff)
        b, s = self.threshold, self.scale
        losses = s * (distance - 0.5 * b) if b else distance
        if b:  # with b = 0 no |d| < b, and d²/(2b) would be 0/0 (a warning) in the unused branch
            losses = xp.where(distance < b, (0.5 * s / b) * (diff * diff), losses)
        if any(self.needs_grad):
            self.saved = (diff,)
        return reduced(losses, self.reduction)

    def backward(self, grad_output: Any) -> tuple:
        (diff,) = self.saved
        xp = get_array_module(diff)
        b, s = self.threshold, self.scale
        if b:
            slope = xp.clip(diff * (s / b), -s, s)
        else:
            # PyTorch's sign of NaN is 0 here, NumPy's NaN.
            slope = xp.nan_to_num(xp.sign(diff), nan=0.0)
        grad_input = slope * elementwise_upstream(grad_output, self.reduction, diff.size)
        needs_input, needs_target = self.needs_grad
        return (grad_input if needs_input else None, -grad_input if needs_target else None)


@verified
class L1Loss(RobustLoss):
    __doc__ = RobustLoss.__doc__
    __slots__ = ()
    op = "l1_loss"


@verified
class HuberLoss(RobustLoss):
    __doc__ = RobustLoss.__doc__
    __slots__ = ()
    op = "huber_loss"


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002 (torch's name)
    """Absolute error |input − target| of identical shapes (N, ...): its mean over all elements
    ("mean"), sum ("sum") or each element ("none"). Gradient sign(input − target), 0 at 0."""
    input, target = loss_operands("l1_loss", ("input", "target"), input, target, reduction)  # noqa: A001
    return apply(L1Loss(reduction, 0.0, 1.0), input, target)


def smooth_l1_loss(input: Tensor, target: Any, reduction: str = "mean",  # noqa: A002 (torch's name)
                   beta: float = 1.0) -> Tensor:
    """Smooth L1 of input and target of identical shapes (N, ...), as PyTorch's: with
    d = input − target, d²/(2·beta) where |d| < beta, else |d| − beta/2; ``beta`` >= 0, and
    beta = 0 is ``l1_loss``. reduction: "mean" (all elements), "sum" or "none" (input's shape)."""
    beta = checks.real("smooth_l1_loss", "beta", beta, low=0.0, example="beta=1.0")
    input, target = loss_operands("smooth_l1_loss", ("input", "target"), input, target, reduction)  # noqa: A001
    return apply(RobustLoss(reduction, beta, 1.0), input, target)


def huber_loss(input: Tensor, target: Any, reduction: str = "mean",  # noqa: A002 (torch's name)
               delta: float = 1.0) -> Tensor:
    """Huber loss of input and target of identical shapes (N, ...), as PyTorch's: with
    d = input − target, d²/2 where |d| < delta, else delta·(|d| − delta/2), i.e. delta times
    ``smooth_l1_loss`` with beta = delta; ``delta`` > 0. reduction: "mean" (all elements), "sum"
    or "none" (input's shape)."""
    delta = checks.real("huber_loss", "delta", delta, low=0.0, low_open=True, example="delta=1.0")
    input, target = loss_operands("huber_loss", ("input", "target"), input, target, reduction)  # noqa: A001
    return apply(HuberLoss(reduction, delta, delta), input, target)
