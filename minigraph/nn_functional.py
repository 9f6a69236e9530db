"""The ops under ``torch.nn.functional``'s names and argument orders: ``import minigraph.nn.functional as F``.

Imported as ``minigraph.nn.functional`` (``nn.py`` registers this module under that name, as it
does ``minigraph.nn.utils``), so code written against PyTorch reads unchanged::

    import minigraph.nn.functional as F
    h = F.relu(F.batch_norm(x @ W, running_mean, running_var, gamma, beta, training=True))
    loss = F.mse_loss(h @ V, y)

Each function is the op of the same name (``minigraph.relu``, ``minigraph.batch_norm``, ...)
with PyTorch's signature; the math, the checks and the errors are the op's. One difference,
by design, as everywhere in minigraph: ``linear``'s weight is (in_features, out_features).
"""

from __future__ import annotations

from typing import Any

from .engine import Tensor
from .ops import batch_norm as _batch_norm, dropout as _dropout, linear as _linear
from .ops.cross_entropy import cross_entropy
from .ops.elementwise import sigmoid, tanh
from .ops.mse_loss import mse_loss
from .ops.relu import relu

__all__ = ["batch_norm", "cross_entropy", "dropout", "linear", "mse_loss", "relu", "sigmoid", "tanh"]


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002 (torch's name)
    """``input @ weight + bias``: input: (N, in), weight: (in, out) (the transpose of PyTorch's
    layout, as ``nn.Linear.weight`` here), bias: (out,) or None -> (N, out)."""
    return _linear.linear(input, weight, bias)


def batch_norm(input: Tensor, running_mean: Any, running_var: Any,  # noqa: A002 (torch's name)
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.batch_norm``'s order and defaults (evaluation unless ``training``):
    input: (N, p); running statistics: (p,) arrays or Tensors, or None with ``training=True``;
    weight (gamma), bias (beta): (p,) or None. ``minigraph.batch_norm`` with ``ddof=0``."""
    return _batch_norm.batch_norm(input, weight, bias, running_mean, running_var, training=training,
                                     momentum=momentum, eps=eps)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:  # noqa: A002 (torch's name)
    """Zero each element with probability ``p`` and scale the rest by 1/(1 − p) when ``training``
    (PyTorch's default here is True, unlike ``nn.Dropout``, which follows ``train()``/``eval()``).
    Masks come from the device's default generator (``minigraph.manual_seed`` seeds it)."""
    return _dropout.dropout(input, p, training)
