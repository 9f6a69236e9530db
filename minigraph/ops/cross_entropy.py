"""Cross-entropy of class scores against integer labels, through a stable log-softmax."""

from __future__ import annotations

from typing import Any

from ..backend import get_array_module
from ..engine import Function, Tensor, apply, as_tensor, verified
from .mse_loss import REDUCTIONS
from .shape import check_range, data_array


@verified
class CrossEntropy(Function):
    """logits Z: (N, C), labels y: (N,) integers in [0, C) -> a scalar (mean, sum) or (N,) (none).

    ℓᵢ = log Σⱼ exp(Zᵢⱼ − mᵢ) − (Zᵢ,yᵢ − mᵢ), with mᵢ the row max, so that exp never overflows.
      mean: L = Σᵢ ℓᵢ / N     sum: L = Σᵢ ℓᵢ     none: Lᵢ = ℓᵢ
    With P = softmax(Z) row by row and w = dL / N (mean), dL (sum) or dLᵢ per row (none):
      dZ = (P − onehot(y)) ⊙ w,
    formed as w·P with w subtracted at [arange(N), y], on the logits' device: no one-hot array.
    """

    __slots__ = ("labels", "reduction")
    op = "cross_entropy"

    def __init__(self, labels: Any, reduction: str) -> None:
        self.labels = labels  # data, not an input: no gradient flows to it
        self.reduction = reduction

    def forward(self, logits: Any) -> Any:
        xp = get_array_module(logits)
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exps = xp.exp(shifted)
        sums = exps.sum(axis=1)
        losses = xp.log(sums) - shifted[xp.arange(n), self.labels]
        if self.needs_grad[0]:
            exps /= sums[:, None]  # in place: exps becomes the softmax P, all backward needs
            self.saved = (exps,)
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / n if self.reduction == "mean" else total

    def backward(self, grad_output: Any) -> tuple:
        (probs,) = self.saved
        n = probs.shape[0]
        if self.reduction == "none":
            weight = grad_output
            grad = probs * weight[:, None]
        else:
            weight = grad_output / n if self.reduction == "mean" else grad_output
            grad = probs * weight
        grad[get_array_module(probs).arange(n), self.labels] -= weight
        return (grad,)


def cross_entropy(logits: Tensor, labels: Any, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy, as ``torch.nn.functional.cross_entropy`` with class-index targets.

    logits: (N, C) class scores (not probabilities); labels: (N,) integers in [0, C), a NumPy or
    CuPy array or a list: data, not a Tensor (host labels join the logits' device; checking
    their range costs one sync on the GPU). reduction: "mean" (over the N rows), "sum" or
    "none" (one loss per row, (N,)). Not supported: class weights, ignore_index, label
    smoothing, probability targets.
    """
    logits = as_tensor("cross_entropy", "logits", logits)
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy: got reduction={reduction!r}; expected one of {REDUCTIONS}")
    shape = logits.data.shape
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"cross_entropy: logits has shape {shape}; expected (N, C) with N, C >= 1: "
                         f"one row of class scores per example")
    labels = data_array("cross_entropy", "labels", labels, logits.device)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels have dtype {labels.dtype}; expected integer class "
                        f"indices, e.g. labels.astype(numpy.int64)")
    if labels.shape != shape[:1]:
        raise ValueError(f"cross_entropy: labels have shape {labels.shape}; expected ({shape[0]},), "
                         f"one class index per row of logits {shape}")
    check_range("cross_entropy", "labels", labels, 0, shape[1])
    return apply(CrossEntropy(labels, reduction), logits)
