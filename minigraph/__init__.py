"""minigraph: a small reverse-mode autograd engine for networks written as matrix algebra.

Runs on NumPy, or on CuPy when a GPU is usable. See README.md.
"""

from . import backend
from .engine import Function, Tensor, apply, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .ops import add, batch_norm, linear, matmul, mse_loss, relu
from . import nn, optim, viz  # noqa: E402  (they build on the names above)

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "Tensor", "add", "apply", "backend", "batch_norm",
    "gradcheck", "is_grad_enabled", "linear", "matmul", "mse_loss", "nn", "no_grad", "optim", "relu", "viz",
]
