"""Binary cross-entropy of logits against targets in [0, 1], in one node, stable for any logit."""

from __future__ import annotations

from typing import Any

import numpy

from ..backend import get_array_module, join_device
from ..engine import Function, Tensor, apply, verified
from .cross_entropy import weight_data
from .elementwise import stable_sigmoid, stable_softplus
from .mse_loss import elementwise_upstream, loss_operands, reduced


@verified
class BinaryCrossEntropyWithLogits(Function):
    """logits x, targets t: same shape -> a scalar (mean, sum) or x's shape (none).

    With sp = log(1 + e⁻ˣ) = −log σ(x) = max(−x, 0) + log(1 + e^−|x|) (no overflow for any x),
    weights w (else 1) and positive-class weights p (else 1), both broadcast to x's shape, and
    l = 1 + (p − 1)·t:
      ℓ = w·[(1 − t)·x + l·sp]       (x·(1 − t) + sp is −t·log σ(x) − (1 − t)·log(1 − σ(x)))
      mean: L = Σ ℓ / n (n = x.size, weights or not, as PyTorch)   sum: L = Σ ℓ   none: L = ℓ
    With g = dL / n (mean), dL (sum) or dLᵢ (none):
      dx = g·w·(l·σ(x) − p·t)        (σ(x) − t without p)
      dt = g·w·((p − 1)·sp − x)      (−x without p)
    """

    __slots__ = ("reduction", "weight", "pos_weight")
    op = "binary_cross_entropy_with_logits"

    def __init__(self, reduction: str, weight: Any = None, pos_weight: Any = None) -> None:
        self.reduction = reduction
        self.weight = weight  # broadcasts to the logits' shape; None: all 1
        self.pos_weight = pos_weight  # the same; None: all 1

    def forward(self, logits: Any, targets: Any) -> Any:
        xp = get_array_module(logits)
        softplus_neg, exp_neg_abs = stable_softplus(xp, -logits)  # sp = −log σ(x), and e^−|x|
        scaled = softplus_neg if self.pos_weight is None else (1 + (self.pos_weight - 1) * targets) * softplus_neg
        losses = (1 - targets) * logits + scaled
        if self.weight is not None:
            losses *= self.weight
        if any(self.needs_grad):
            self.saved = (logits, targets, exp_neg_abs, softplus_neg)
        return reduced(losses, self.reduction)

    def backward(self, grad_output: Any) -> tuple:
        logits, targets, exp_neg_abs, softplus_neg = self.saved
        xp = get_array_module(logits)
        g = elementwise_upstream(grad_output, self.reduction, logits.size)
        if self.weight is not None:
            g = g * self.weight
        pos_weight = self.pos_weight
        needs_logits, needs_targets = self.needs_grad
        grad_logits = grad_targets = None
        if needs_logits:
            sigmoid = stable_sigmoid(xp, logits, exp_neg_abs)
            if pos_weight is None:
                grad_logits = (sigmoid - targets) * g
            else:
                grad_logits = ((1 + (pos_weight - 1) * targets) * sigmoid - pos_weight * targets) * g
        if needs_targets:
            grad_targets = -logits * g if pos_weight is None else ((pos_weight - 1) * softplus_neg - logits) * g
        return (grad_logits, grad_targets)


def binary_cross_entropy_with_logits(input: Tensor, target: Any, weight: Any = None,  # noqa: A002 (torch's name)
                                     reduction: str = "mean", pos_weight: Any = None) -> Tensor:
    """Sigmoid and binary cross-entropy in one stable node, as PyTorch's function of that name.

    input: logits x of any shape (N, ...); target: probabilities t in [0, 1] of x's exact shape
    and dtype (not checked to lie in [0, 1], nor in PyTorch), a Tensor (which gets a gradient
    when it requires one, as in PyTorch) or an array. Per element
    ℓ = w·[(1 − t)·x + (1 + (p − 1)·t)·log(1 + e⁻ˣ)], finite for any finite x (±1000 included).
    ``weight`` w and ``pos_weight`` p (the weight of the positive class, e.g. negatives/positives
    per class): arrays, lists or Tensors that need no gradient, broadcast against x by NumPy's
    rules (so p of shape (C,) weighs the last dim of (N, C)) but never beyond x's shape.
    reduction: "mean" (over all n elements, weights or not, as PyTorch), "sum" or "none" (x's shape).
    """
    op = "binary_cross_entropy_with_logits"
    input, target = loss_operands(op, ("input", "target"), input, target, reduction)  # noqa: A001
    weights = [None if value is None else _broadcast_weight(op, name, value, input)
               for name, value in (("weight", weight), ("pos_weight", pos_weight))]
    return apply(BinaryCrossEntropyWithLogits(reduction, *weights), input, target)


def _broadcast_weight(op: str, name: str, value: Any, input: Tensor) -> Any:  # noqa: A002
    """``value`` as an array of the input's dtype on its device that broadcasts to the input's
    shape, or a clear error."""
    value = weight_data(op, name, value, input, f"an array, a Tensor or a list of numbers that broadcasts "
                                                f"to the input's shape {input.shape}")
    shape = input.data.shape
    try:
        fits = value.dtype.kind in "iuf" and numpy.broadcast_shapes(value.shape, shape) == shape
    except ValueError:  # the shapes do not broadcast at all
        fits = False
    if not fits:
        raise ValueError(f"{op}: got {name} of shape {value.shape} and dtype {value.dtype}; expected real "
                         f"numbers whose shape broadcasts to the input's shape {shape} without growing it, "
                         f"e.g. ({shape[-1] if shape else 1},) to weigh the last dim")
    return join_device(op, name, value, input.device).astype(input.dtype, copy=False)
