"""The ops under ``torch.nn.functional``'s names and argument orders: ``import minigraph.nn.functional as F``.

Imported as ``minigraph.nn.functional`` (``nn.py`` registers this module under that name, as it
does ``minigraph.nn.utils``), so code written against PyTorch reads unchanged::

    import minigraph.nn.functional as F
    h = F.relu(F.batch_norm(x @ W, running_mean, running_var, gamma, beta, training=True))
    loss = F.mse_loss(h @ V, y)

Each function is the op of the same name (``minigraph.relu``, ``minigraph.batch_norm``, ...)
with PyTorch's signature: the same parameter names (``input``, ``target``, ...), so keyword calls
such as ``F.cross_entropy(logits, target=labels)`` read unchanged, and the options PyTorch places
after ``target`` (``reduction``) taken by keyword, as PyTorch code passes them; a third positional
argument, which PyTorch reads as ``weight`` or the deprecated ``size_average``, is refused rather
than read as ``reduction``. The math, the checks and the errors are the op's. One difference,
by design, as everywhere in minigraph: ``linear``'s weight is (in_features, out_features).
"""

from __future__ import annotations

from typing import Any

from . import checks
from .engine import Tensor
from .ops import batch_norm as _batch_norm, dropout as _dropout, linear as _linear
from .ops.bce_loss import binary_cross_entropy_with_logits as _binary_cross_entropy_with_logits
from .ops.cross_entropy import cross_entropy as _cross_entropy, nll_loss as _nll_loss
from .ops.elementwise import sigmoid as _sigmoid, tanh as _tanh
from .ops.layer_norm import layer_norm as _layer_norm
from .ops.mse_loss import mse_loss as _mse_loss
from .ops.robust_loss import huber_loss as _huber_loss, l1_loss as _l1_loss, smooth_l1_loss as _smooth_l1_loss
from .ops.relu import elu as _elu, leaky_relu as _leaky_relu, relu as _relu, silu as _silu, softplus as _softplus
from .ops.softmax import log_softmax as _log_softmax, softmax as _softmax

__all__ = ["batch_norm", "binary_cross_entropy_with_logits", "cross_entropy", "dropout", "elu", "huber_loss",
           "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax", "mse_loss", "nll_loss", "relu", "sigmoid",
           "silu", "smooth_l1_loss", "softmax", "softplus", "tanh"]


def _not_in_place(owner: str, inplace: Any) -> None:
    """Refuse ``inplace=True``: minigraph's ops return new tensors (backward needs the inputs
    it saved), so overwriting the input is not offered; False, PyTorch's default, is accepted."""
    if checks.flag(owner, "inplace", inplace):
        raise ValueError(f"{owner}: got inplace=True; minigraph's ops always return a new tensor. "
                         f"Expected inplace=False (the default): write x = {owner.split('.')[-1]}(x, ...)")


def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002 (torch's name)
    """max(input, 0) elementwise: input: any shape -> same shape. ``inplace`` must be False."""
    _not_in_place("F.relu", inplace)
    return _relu(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:  # noqa: A002
    """input where input > 0, ``negative_slope``·input elsewhere: any shape -> same shape."""
    _not_in_place("F.leaky_relu", inplace)
    return _leaky_relu(input, negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002 (torch's name)
    """input where input > 0, alpha·(e^input − 1) elsewhere: any shape -> same shape."""
    _not_in_place("F.elu", inplace)
    return _elu(input, alpha)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:  # noqa: A002
    """log(1 + e^(beta·input)) / beta, and input where beta·input > threshold: any shape -> same shape."""
    return _softplus(input, beta, threshold)


def silu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002 (torch's name)
    """input·σ(input): any shape -> same shape."""
    _not_in_place("F.silu", inplace)
    return _silu(input)


def softmax(input: Tensor, dim: int | None = None) -> Tensor:  # noqa: A002 (torch's name)
    """e^input normalised along ``dim`` (required: PyTorch's implicit choice is deprecated)."""
    return _softmax(input, dim)


def log_softmax(input: Tensor, dim: int | None = None) -> Tensor:  # noqa: A002 (torch's name)
    """log(softmax(input, dim)), computed stably; ``dim`` required as for ``softmax``."""
    return _log_softmax(input, dim)


def tanh(input: Tensor) -> Tensor:  # noqa: A002 (torch's name)
    """tanh(input) elementwise: any shape -> same shape."""
    return _tanh(input)


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002 (torch's name)
    """1 / (1 + exp(−input)) elementwise: any shape -> same shape."""
    return _sigmoid(input)


def mse_loss(input: Tensor, target: Tensor, *, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Squared error of input against target, both (N, ...) of one shape: the mean ("mean"), the
    sum ("sum") or each element ("none", input's shape)."""
    return _mse_loss(input, target, reduction)


def cross_entropy(input: Tensor, target: Any, weight: Any = None, *, ignore_index: int = -100,  # noqa: A002
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross-entropy: input (N, C) class scores, target (N,) integer labels in [0, C) or
    ``ignore_index`` (a NumPy or CuPy array) or (N, C) class probabilities (input's dtype),
    ``weight`` (C,) class weights or None -> the mean over rows ("mean": weighted for labels,
    over N for probabilities), the sum ("sum") or (N,) ("none"); ``label_smoothing`` in [0, 1]."""
    return _cross_entropy(input, target, reduction, weight=weight, ignore_index=ignore_index,
                          label_smoothing=label_smoothing)


def nll_loss(input: Tensor, target: Any, weight: Any = None, *, ignore_index: int = -100,  # noqa: A002
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood: input (N, C) log-probabilities (``F.log_softmax(z, dim=1)``), target
    (N,) integer labels in [0, C) or ``ignore_index``, ``weight`` (C,) class weights or None -> the
    weighted mean ("mean"), the sum ("sum") or (N,) ("none")."""
    return _nll_loss(input, target, reduction, weight=weight, ignore_index=ignore_index)


def binary_cross_entropy_with_logits(input: Tensor, target: Any, weight: Any = None, *,  # noqa: A002
                                     reduction: str = "mean", pos_weight: Any = None) -> Tensor:
    """Sigmoid and binary cross-entropy in one stable node: input (logits) and target (in [0, 1])
    of one shape (N, ...) and dtype; ``weight`` and ``pos_weight`` (the positive class's weight,
    (C,) for (N, C)) broadcast to input's shape -> the mean over all elements ("mean"), the sum
    ("sum") or input's shape ("none"). target gets a gradient when it requires one."""
    return _binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight)


def l1_loss(input: Tensor, target: Any, *, reduction: str = "mean") -> Tensor:  # noqa: A002 (torch's name)
    """Absolute error of input against target, both (N, ...) of one shape: the mean ("mean"),
    the sum ("sum") or each element ("none", input's shape)."""
    return _l1_loss(input, target, reduction)


def smooth_l1_loss(input: Tensor, target: Any, *, reduction: str = "mean",  # noqa: A002 (torch's name)
                   beta: float = 1.0) -> Tensor:
    """Smooth L1 of input against target, both (N, ...) of one shape: d²/(2·beta) where
    |d| < beta, else |d| − beta/2 (beta >= 0; 0 gives L1), reduced as ``l1_loss``."""
    return _smooth_l1_loss(input, target, reduction, beta)


def huber_loss(input: Tensor, target: Any, reduction: str = "mean",  # noqa: A002 (torch's name)
               delta: float = 1.0) -> Tensor:
    """Huber loss of input against target, both (N, ...) of one shape: d²/2 where |d| < delta,
    else delta·(|d| − delta/2) (delta > 0), reduced as ``l1_loss``. PyTorch's third parameter
    here is ``reduction`` itself, so it may be passed by position, as there."""
    return _huber_loss(input, target, reduction, delta)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002 (torch's name)
    """``input @ weight + bias``: input: (N, in), weight: (in, out) (the transpose of PyTorch's
    layout, as ``nn.Linear.weight`` here), bias: (out,) or None -> (N, out)."""
    return _linear.linear(input, weight, bias)


def batch_norm(input: Tensor, running_mean: Any, running_var: Any,  # noqa: A002 (torch's name)
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.batch_norm``'s order and defaults (evaluation unless ``training``):
    input: (N, p) or (N, p, L); running statistics: (p,) arrays or Tensors, or None with ``training=True``;
    weight (gamma), bias (beta): (p,) or None. ``minigraph.batch_norm`` with ``ddof=0``."""
    return _batch_norm.batch_norm(input, weight, bias, running_mean, running_var, training=training,
                                     momentum=momentum, eps=eps)


def layer_norm(input: Tensor, normalized_shape: int | tuple[int, ...],  # noqa: A002 (torch's name)
               weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.layer_norm``: input: (*, *normalized_shape) normalised over its last
    len(normalized_shape) dims; weight, bias: normalized_shape or None -> input's shape.
    ``minigraph.layer_norm``."""
    return _layer_norm(input, normalized_shape, weight, bias, eps)


def dropout(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002 (torch's name)
            inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1 − p) when ``training``
    (PyTorch's default here is True, unlike ``nn.Dropout``, which follows ``train()``/``eval()``).
    Masks come from the device's default generator (``minigraph.manual_seed`` seeds it).
    ``inplace`` must be False. input: any shape -> same shape."""
    _not_in_place("F.dropout", inplace)
    return _dropout.dropout(input, p, training)
