"""Mean squared error: L = Σ (pred − target)² / n, or its sum, or elementwise."""

from __future__ import annotations

from typing import Any

from ..backend import sum_of_squares
from ..engine import Function, Tensor, apply, as_tensors, verified

REDUCTIONS = ("mean", "sum", "none")


@verified
class MSELoss(Function):
    """pred, target: same shape -> a scalar (mean/sum) or pred's shape (none).

    With d = pred − target and n = d.size:
      mean: dPred = 2 d dL / n     sum: dPred = 2 d dL     none: dPred = 2 d ⊙ dL
      dTarget = −dPred.
    """

    __slots__ = ("reduction",)
    op = "mse_loss"

    def __init__(self, reduction: str) -> None:
        self.reduction = reduction

    def forward(self, pred: Any, target: Any) -> Any:
        diff = pred - target
        if any(self.needs_grad):
            self.saved = (diff,)
        if self.reduction == "none":
            return diff * diff
        total = sum_of_squares(diff.reshape(-1))  # one pass, no squared temporary
        if self.reduction == "mean":
            total /= diff.size
        return total

    def backward(self, grad_output: Any) -> tuple:
        (diff,) = self.saved
        if self.reduction == "mean":
            grad_output = grad_output / diff.size
        grad_pred = diff * (2 * grad_output)
        needs_pred, needs_target = self.needs_grad
        return (grad_pred if needs_pred else None, -grad_pred if needs_target else None)


def mse_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error between ``pred`` and ``target`` of identical shapes.

    reduction: "mean" (over all elements, as in PyTorch), "sum" or "none".
    Shapes must match exactly: (N, 1) against (N,) would silently broadcast to
    (N, N), so it is an error.
    """
    pred, target = loss_operands("mse_loss", ("pred", "target"), pred, target, reduction)
    return apply(MSELoss(reduction), pred, target)


def loss_operands(op: str, names: tuple[str, str], prediction: Any, target: Any,
                  reduction: str) -> list[Tensor]:
    """The two operands of an elementwise loss ``op`` as Tensors on one device, after checking
    ``reduction`` and that their shapes are identical (the rule every such loss here keeps:
    (N, 1) against (N,) would silently broadcast to (N, N)). Dtypes are checked by ``apply``."""
    prediction, target = as_tensors(op, names, (prediction, target))
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: got reduction={reduction!r}; expected one of {REDUCTIONS}")
    if prediction.data.shape != target.data.shape:
        shape = prediction.data.shape
        raise ValueError(
            f"{op}: {names[0]} has shape {shape} but {names[1]} has shape {target.data.shape}; "
            f"expected identical shapes. Reshape the array before wrapping it, e.g. "
            f"Tensor(y.reshape({shape}))"
        )
    return [prediction, target]


def reduced(losses: Any, reduction: str) -> Any:
    """Elementwise ``losses`` reduced as PyTorch's losses do: their mean over all elements, their
    sum, or themselves ("none")."""
    if reduction == "none":
        return losses
    total = losses.sum()
    return total / losses.size if reduction == "mean" else total


def elementwise_upstream(grad_output: Any, reduction: str, size: int) -> Any:
    """The upstream gradient of each element of a loss reduced by ``reduced``: dL / size (mean)
    or dL (sum), 0-d arrays that broadcast, or dLᵢ itself (none)."""
    return grad_output / size if reduction == "mean" else grad_output
