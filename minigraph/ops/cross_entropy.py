"""Cross-entropy of class scores against integer labels or class probabilities, through a stable
log-softmax."""

from __future__ import annotations

from typing import Any

import numpy

from .. import checks
from ..backend import get_array_module, is_gpu_array, join_device
from ..engine import Function, Tensor, apply, as_tensor, is_grad_enabled, verified
from .mse_loss import REDUCTIONS
from .shape import check_range, data_array
from .softmax import log_softmax_along


def label_weights(weight: Any, labels: Any, kept: Any) -> Any:
    """aᵢ: each row's label's class weight (``weight``: (C,) or None), 0 where ``kept`` (N,) is 0;
    None when every aᵢ is 1."""
    row_weight = None if weight is None else weight[labels]
    if kept is not None:
        row_weight = kept if row_weight is None else row_weight * kept
    return row_weight


def row_gradients(grad_output: Any, reduction: str, denominator: Any, n: int, kept: Any = None) -> Any:
    """gᵢ: the gradient reaching each of the n rows' losses, (n,): dLᵢ ("none"), dL ("sum") or
    dL / denominator ("mean"; the denominator may be a 0-d device array), and 0 where ``kept``
    (N,) is 0: an ignored row gets no gradient, as in PyTorch, even where a "mean" over only
    ignored rows makes dL / 0 infinite (its weight 0 times that would be NaN)."""
    xp = get_array_module(grad_output)
    if reduction == "none":
        scale = grad_output
    else:
        scale = xp.broadcast_to(grad_output / denominator if reduction == "mean" else grad_output, (n,))
    return scale if kept is None else xp.where(kept > 0, scale, 0).astype(scale.dtype, copy=False)


@verified
class CrossEntropy(Function):
    """logits Z: (N, C), labels y: (N,) integers in [0, C) -> a scalar (mean, sum) or (N,) (none).

    With the row max mᵢ (so that exp never overflows), Lᵢ = mᵢ + log Σⱼ exp(Zᵢⱼ − mᵢ) and
    log-probabilities log Pᵢⱼ = Zᵢⱼ − Lᵢ. Each row has a weight aᵢ = w[yᵢ] (class weights w: (C,),
    else 1) and a mask rᵢ (0 where yᵢ = ignore_index, else 1; aᵢ is 0 there too). With label
    smoothing ε and W = Σ_c w_c (C without weights):
      ℓᵢ = (1 − ε)·aᵢ·(−log Pᵢ,yᵢ) + (ε / C)·rᵢ·Σ_c w_c (−log Pᵢc)
      mean: L = Σᵢ ℓᵢ / Σᵢ aᵢ     sum: L = Σᵢ ℓᵢ     none: Lᵢ = ℓᵢ
    (PyTorch's normalisation: with weights, the mean divides by the labels' total weight.)
    With P = softmax(Z) row by row and gᵢ = dL / Σa (mean), dL (sum) or dLᵢ (none):
      dZᵢ = gᵢ·[((1 − ε)·aᵢ + (ε / C)·rᵢ·W)·Pᵢ − (1 − ε)·aᵢ·onehot(yᵢ) − (ε / C)·rᵢ·w]
    formed on the logits' device, the one-hot as a subtraction at [arange(N), y]: no one-hot array.
    Without weights, ignored labels or smoothing this is (P − onehot(y))·g.
    """

    __slots__ = ("labels", "reduction", "weight", "kept", "smoothing", "row_weight", "denominator")
    op = "cross_entropy"

    def __init__(self, labels: Any, reduction: str, weight: Any = None, kept: Any = None,
                 smoothing: float = 0.0) -> None:
        self.labels = labels  # data, not an input: no gradient flows to it (ignored rows: 0)
        self.reduction = reduction
        self.weight = weight  # (C,) class weights, or None
        self.kept = kept  # (N,) 1 where the label is not ignore_index, 0 where it is; None: all kept
        self.smoothing = smoothing

    def forward(self, logits: Any) -> Any:
        xp = get_array_module(logits)
        n, classes = logits.shape
        rows = xp.arange(n)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exps = xp.exp(shifted)
        sums = exps.sum(axis=1)
        log_sums = xp.log(sums)
        losses = log_sums - shifted[rows, self.labels]  # −log P at each row's label
        row_weight = label_weights(self.weight, self.labels, self.kept)
        if row_weight is not None:
            losses = losses * row_weight
        eps = self.smoothing
        if eps:
            # Σ_c w_c (−log Pᵢc) = W·log Σexp − Σ_c w_c·shiftedᵢc
            if self.weight is None:
                smooth = classes * log_sums - shifted.sum(axis=1)
            else:
                smooth = self.weight.sum() * log_sums - shifted @ self.weight
            if self.kept is not None:
                smooth = smooth * self.kept
            losses = (1.0 - eps) * losses + (eps / classes) * smooth
        self.row_weight = row_weight
        self.denominator = n if row_weight is None else row_weight.sum()  # no host read: stays on device
        if self.needs_grad[0]:
            exps /= sums[:, None]  # in place: exps becomes the softmax P, all backward needs
            self.saved = (exps,)
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / self.denominator if self.reduction == "mean" else total

    def backward(self, grad_output: Any) -> tuple:
        (probs,) = self.saved
        xp = get_array_module(probs)
        n, classes = probs.shape
        eps, a, kept, weight = self.smoothing, self.row_weight, self.kept, self.weight
        g = row_gradients(grad_output, self.reduction, self.denominator, n, kept)
        label_part = g if a is None else g * a  # gᵢ·aᵢ
        if eps:
            label_part = (1.0 - eps) * label_part
            spread = g * (eps / classes) if kept is None else g * kept * (eps / classes)  # gᵢ·rᵢ·ε/C
            total_weight = classes if weight is None else weight.sum()
            grad = probs * (label_part + spread * total_weight)[:, None]
            grad -= spread[:, None] if weight is None else spread[:, None] * weight
        else:
            grad = probs * label_part[:, None]
        grad[xp.arange(n), self.labels] -= label_part
        return (grad,)


@verified
class CrossEntropyProbabilities(Function):
    """logits Z: (N, C), class probabilities T: (N, C) -> a scalar (mean, sum) or (N,) (none).

    With log Pᵢc = Zᵢc − mᵢ − log Σⱼ exp(Zᵢⱼ − mᵢ) (mᵢ the row max), class weights w: (C,) (else 1)
    and label smoothing ε, the target mixed with the uniform one T′ = (1 − ε)·T + ε/C and
    Uᵢc = w_c·T′ᵢc:
      ℓᵢ = −Σ_c Uᵢc·log Pᵢc
      mean: L = Σᵢ ℓᵢ / N     sum: L = Σᵢ ℓᵢ     none: Lᵢ = ℓᵢ
    (PyTorch's normalisation: the mean divides by N, weights or not.) With P = softmax(Z) row by
    row and gᵢ = dL / N (mean), dL (sum) or dLᵢ (none):
      dZᵢ = gᵢ·(sᵢ·Pᵢ − Uᵢ),  sᵢ = Σ_c Uᵢc   (sᵢ = 1 for unweighted T whose rows sum to 1)
      dTᵢc = −gᵢ·(1 − ε)·w_c·log Pᵢc
    Whole-array formulas: a few (N, C) temporaries, no loop over rows.
    """

    __slots__ = ("reduction", "weight", "smoothing")
    op = "cross_entropy"

    def __init__(self, reduction: str, weight: Any = None, smoothing: float = 0.0) -> None:
        self.reduction = reduction
        self.weight = weight  # (C,) class weights, or None
        self.smoothing = smoothing

    def forward(self, logits: Any, targets: Any) -> Any:
        n, classes = logits.shape
        log_probs = log_softmax_along(logits, 1)
        eps = self.smoothing
        mixed = (1.0 - eps) * targets + eps / classes if eps else targets  # T′
        weighted = mixed if self.weight is None else mixed * self.weight  # U
        losses = -(weighted * log_probs).sum(axis=1)
        if any(self.needs_grad):
            self.saved = (log_probs, weighted)
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / n if self.reduction == "mean" else total

    def backward(self, grad_output: Any) -> tuple:
        log_probs, weighted = self.saved
        xp = get_array_module(log_probs)
        n = log_probs.shape[0]
        if self.reduction == "none":
            g = grad_output[:, None]  # gᵢ down each row
        else:
            g = grad_output / n if self.reduction == "mean" else grad_output  # 0-d: broadcasts
        needs_logits, needs_targets = self.needs_grad
        grad_logits = grad_targets = None
        if needs_logits:
            grad_logits = xp.exp(log_probs) * weighted.sum(axis=1, keepdims=True)  # sᵢ·Pᵢ
            grad_logits -= weighted
            grad_logits *= g
        if needs_targets:
            grad_targets = log_probs * (-(1.0 - self.smoothing) * g)
            if self.weight is not None:
                grad_targets *= self.weight
        return (grad_logits, grad_targets)


def cross_entropy(logits: Tensor, labels: Any, reduction: str = "mean", *, weight: Any = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy, as ``torch.nn.functional.cross_entropy``.

    logits Z: (N, C) class scores (not probabilities). labels, told apart by shape as in PyTorch:

    - class indices: (N,) integers in [0, C) or equal to ``ignore_index`` (such rows add nothing
      and, for "mean", do not count), a NumPy or CuPy array or a list: data, not a Tensor (host
      labels join the logits' device; checking their range costs one sync on the GPU).
      ``label_smoothing`` ε in [0, 1] makes the target (1 − ε)·onehot + ε/C. "mean" divides by
      the labels' total class weight (N without weights); a "mean" over rows that are all
      ignored is NaN (0/0), as in PyTorch.
    - class probabilities T: floats of the logits' shape (N, C) and dtype, a Tensor (which gets
      a gradient when it requires one) or an array or list (data); rows are meant to be
      distributions, which is not checked (nor in PyTorch). With T′ = (1 − ε)·T + ε/C,
      ℓᵢ = −Σ_c w_c·T′ᵢc·log softmax(Z)ᵢc, and "mean" divides by N, weights or not (PyTorch's
      rule). ``ignore_index`` must be negative (the default -100 is): a distribution has no
      class to ignore, and PyTorch refuses a non-negative one too.

    reduction: "mean", "sum" or "none" (one loss per row, (N,)). ``weight``: (C,) class weights
    (an array or a Tensor that needs no gradient), as PyTorch's.
    """
    logits, ignore_index, weight = _class_loss_arguments("cross_entropy", "logits", "class scores", logits,
                                                         reduction, weight, ignore_index)
    shape = logits.data.shape
    smoothing = checks.real("cross_entropy", "label_smoothing", label_smoothing, low=0.0, high=1.0,
                            example="label_smoothing=0.1")
    if _is_probability_shaped(labels, shape):
        return _cross_entropy_probabilities(logits, labels, reduction, weight, ignore_index, smoothing)
    if isinstance(labels, Tensor):  # a Tensor holds floats: only class probabilities fit
        raise TypeError(f"cross_entropy: labels is a Tensor, whose data are floats; expected an integer "
                        f"NumPy/CuPy array of shape ({shape[0]},) (class indices), or class probabilities "
                        f"of the logits' shape {shape}; got a Tensor of shape {labels.shape}")
    labels, kept = class_labels("cross_entropy", labels, logits, ignore_index, probabilities_too=True)
    return apply(CrossEntropy(labels, reduction, weight, kept, smoothing), logits)


def _class_loss_arguments(op: str, name: str, what: str, scores: Any, reduction: str, weight: Any,
                          ignore_index: Any) -> tuple[Tensor, int, Any]:
    """The checked scores (an (N, C) Tensor, ``what`` per row), ignore_index and class weights
    ((C,) on the scores' device, or None) of a loss over class labels, or errors naming ``op``."""
    scores = as_tensor(op, name, scores)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: got reduction={reduction!r}; expected one of {REDUCTIONS}")
    shape = scores.data.shape
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"{op}: {name} has shape {shape}; expected (N, C) with N, C >= 1: one row of "
                         f"{what} per example")
    ignore_index = checks.integer(op, "ignore_index", ignore_index, low=-(2 ** 63))
    return scores, ignore_index, None if weight is None else class_weights(weight, scores, op)


def class_labels(op: str, labels: Any, scores: Tensor, ignore_index: int, scores_name: str = "logits",
                 probabilities_too: bool = False) -> tuple[Any, Any]:
    """``labels`` as (N,) class indices on the scores' device, checked against scores (N, C),
    and the (N,) mask ``kept`` (1, or 0 where the label is ``ignore_index``; None when nothing is
    ignored); ignored labels are replaced by 0 (any valid index: their rows weigh 0). A clear error
    names ``op`` otherwise (``probabilities_too``: its messages mention class probabilities, the
    other labels ``op`` takes)."""
    shape = scores.data.shape
    also = ", or class probabilities of the logits' shape" if probabilities_too else ""
    labels = data_array(op, "labels", labels, scores.device)
    if labels.shape != shape[:1]:
        raise ValueError(f"{op}: labels have shape {labels.shape}; expected ({shape[0]},), one class index "
                         f"per row of {scores_name} {shape}{also}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels have dtype {labels.dtype}; expected integer class indices, e.g. "
                        f"labels.astype(numpy.int64){also + f' {shape}' if also else ''}")
    xp = get_array_module(labels)
    ignored = labels == ignore_index
    outside = ((labels < 0) | (labels >= shape[1])) & ~ignored
    # One host read for both questions (CuPy does not check indices, so the range must be):
    # any label out of range, and any row to ignore.
    any_outside, any_ignored = (bool(flag) for flag in xp.stack([outside.any(), ignored.any()]).tolist())
    if any_outside:
        check_range(op, "labels", labels[~ignored], 0, shape[1])  # raises, naming their span
    if not any_ignored:
        return labels, None
    return xp.where(ignored, 0, labels), (~ignored).astype(scores.dtype)


def _is_probability_shaped(labels: Any, shape: tuple) -> bool:
    """Whether ``labels`` has the logits' shape (N, C): PyTorch's sign of class probabilities."""
    if isinstance(labels, Tensor) or isinstance(labels, numpy.ndarray) or is_gpu_array(labels):
        return labels.shape == shape
    try:
        return numpy.shape(labels) == shape
    except ValueError:  # a ragged list: data_array names it
        return False


def _cross_entropy_probabilities(logits: Tensor, targets: Any, reduction: str, weight: Any,
                                 ignore_index: int, smoothing: float) -> Tensor:
    """``cross_entropy`` against class probabilities ``targets`` of the logits' shape (N, C);
    ``weight``: checked (C,) class weights or None."""
    shape = logits.data.shape
    if ignore_index >= 0:
        raise ValueError(f"cross_entropy: got ignore_index={ignore_index} with class-probability targets "
                         f"(labels of the logits' shape {shape}); ignore_index applies to class indices "
                         f"only: leave it at its default (-100), as PyTorch requires")
    if not isinstance(targets, Tensor):
        if not (isinstance(targets, numpy.ndarray) or is_gpu_array(targets)):
            targets = numpy.asarray(targets)
            if targets.dtype.kind == "f":  # Python numbers take the logits' dtype
                targets = targets.astype(logits.dtype)
        if targets.dtype.kind != "f":
            raise TypeError(f"cross_entropy: labels of the logits' shape {shape} are class probabilities, "
                            f"which must be floats; got dtype {targets.dtype}. For class indices pass "
                            f"shape ({shape[0]},); for probabilities convert, e.g. "
                            f"labels.astype(numpy.{logits.dtype})")
        targets = as_tensor("cross_entropy", "labels",
                            join_device("cross_entropy", "labels", targets, logits.device), like=logits)
    elif targets.device != logits.device:
        raise TypeError(f"cross_entropy: the class probabilities are on {targets.device!r} but the logits "
                        f"on {logits.device!r}; expected one device: move one, e.g. "
                        f"labels.to({logits.device!r})")
    if targets.dtype != logits.dtype:
        raise TypeError(f"cross_entropy: logits have dtype {logits.dtype} but the class probabilities "
                        f"{targets.dtype}; expected one dtype (minigraph does not promote): convert one, "
                        f"e.g. labels.astype(numpy.{logits.dtype}) for an array")
    return apply(CrossEntropyProbabilities(reduction, weight, smoothing), logits, targets)


def class_weights(weight: Any, logits: Tensor, op: str = "cross_entropy") -> Any:
    """``weight`` as a (C,) array of the logits' dtype on their device, or a clear error naming ``op``."""
    weight = weight_data(op, "weight", weight, logits,
                         "(C,) class weights, an array or a list of numbers (the reduction goes by keyword: "
                         "reduction='mean')")
    classes = logits.data.shape[1]
    if weight.shape != (classes,) or weight.dtype.kind not in "iuf":
        raise ValueError(f"{op}: got weight of shape {weight.shape} and dtype {weight.dtype}; "
                         f"expected ({classes},) real numbers, one weight per class")
    return join_device(op, "weight", weight, logits.device).astype(logits.dtype, copy=False)



@verified
class NLLLoss(Function):
    """log-probabilities X: (N, C), labels y: (N,) -> a scalar (mean, sum) or (N,) (none).

    ℓᵢ = −aᵢ·Xᵢ,yᵢ with aᵢ = w[yᵢ] (class weights w: (C,), else 1; 0 where yᵢ = ignore_index);
    mean: L = Σᵢ ℓᵢ / Σᵢ aᵢ (PyTorch's), sum: Σᵢ ℓᵢ, none: Lᵢ = ℓᵢ. With gᵢ = dL / Σa (mean),
    dL (sum) or dLᵢ (none): dXᵢ,yᵢ = −gᵢ·aᵢ, and 0 elsewhere in the row.
    """

    __slots__ = ("labels", "reduction", "kept", "row_weight", "denominator", "shape")
    op = "nll_loss"

    def __init__(self, labels: Any, reduction: str, weight: Any = None, kept: Any = None) -> None:
        self.labels = labels  # data, not an input
        self.reduction = reduction
        self.kept = kept  # (N,) 0 where the label is ignore_index, else 1; None: all kept
        self.row_weight = label_weights(weight, labels, kept)
        self.denominator = labels.shape[0] if self.row_weight is None else self.row_weight.sum()

    def forward(self, log_probs: Any) -> Any:
        xp = get_array_module(log_probs)
        self.shape = log_probs.shape
        losses = -log_probs[xp.arange(log_probs.shape[0]), self.labels]
        if self.row_weight is not None:
            losses = losses * self.row_weight
        if self.reduction == "none":
            return losses
        total = losses.sum()
        return total / self.denominator if self.reduction == "mean" else total

    def backward(self, grad_output: Any) -> tuple:
        xp = get_array_module(grad_output)
        n = self.shape[0]
        g = row_gradients(grad_output, self.reduction, self.denominator, n, self.kept)
        grad = xp.zeros(self.shape, dtype=grad_output.dtype)
        grad[xp.arange(n), self.labels] = -(g if self.row_weight is None else g * self.row_weight)
        return (grad,)


def nll_loss(log_probs: Tensor, labels: Any, reduction: str = "mean", *, weight: Any = None,
             ignore_index: int = -100) -> Tensor:
    """The negative log-likelihood of ``labels`` under ``log_probs``, as
    ``torch.nn.functional.nll_loss``: log_probs (N, C), e.g. ``log_softmax(z, dim=1)``; labels
    (N,) integers in [0, C) or ``ignore_index`` (a NumPy or CuPy array, as for ``cross_entropy``);
    ``weight``: (C,) class weights. reduction "mean" (divided by the labels' total weight),
    "sum" or "none" ((N,)). ``nll_loss(log_softmax(z, 1), y)`` is ``cross_entropy(z, y)``, which
    does it in one node."""
    log_probs, ignore_index, weight = _class_loss_arguments("nll_loss", "log_probs", "class log-probabilities",
                                                            log_probs, reduction, weight, ignore_index)
    labels, kept = class_labels("nll_loss", labels, log_probs, ignore_index, scores_name="log_probs")
    return apply(NLLLoss(labels, reduction, weight, kept), log_probs)


def weight_data(op: str, name: str, value: Any, like: Tensor, expected: str) -> Any:
    """A loss's constant weights ``value`` (an array, a list, or a Tensor that needs no gradient)
    as an array, lists in ``like``'s dtype, shape and device not yet checked; ``expected`` says
    what fits in the error for anything else. No gradient reaches weights (nor in PyTorch)."""
    if isinstance(value, Tensor):
        if value.requires_grad and is_grad_enabled():
            raise TypeError(f"{op}: got a {name} Tensor that requires grad; {name} gets no gradient here "
                            f"(nor in PyTorch): pass {name}.detach()")
        return value.data
    if isinstance(value, numpy.ndarray) or is_gpu_array(value):
        return value
    try:
        return numpy.asarray(value, dtype=like.dtype)
    except (TypeError, ValueError):  # NumPy's message names neither the op nor the argument
        raise TypeError(f"{op}: got {name}={value!r}; expected {expected}") from None
