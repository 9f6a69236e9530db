"""minigraph: a small reverse-mode autograd engine for networks written as matrix algebra.

Runs on NumPy, or on CuPy when a GPU is usable. See README.md.
"""

from . import backend
from .engine import Function, Tensor, apply, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from . import ops  # noqa: F401  (binds the Tensor operators)
from .ops.add import add
from .ops.batch_norm import batch_norm
from .ops.linear import linear
from .ops.matmul import matmul
from .ops.mse_loss import mse_loss
from .ops.relu import relu
from . import nn, optim, viz  # noqa: E402  (they build on the names above)

__version__ = "0.1.0"

__all__ = [
    "Function", "GradcheckError", "Tensor", "add", "apply", "backend", "batch_norm",
    "gradcheck", "is_grad_enabled", "linear", "matmul", "mse_loss", "nn", "no_grad", "optim", "relu", "viz",
]
