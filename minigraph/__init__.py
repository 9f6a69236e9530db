"""minigraph: a small reverse-mode autograd engine for networks written as matrix algebra.

Runs on NumPy, or on CuPy when a GPU is usable. See README.md.
"""

from . import backend
from .backend import manual_seed
from .engine import Function, Tensor, apply, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck
from . import ops  # noqa: F401  (binds the Tensor operators)
from .ops.add import add
from .ops.batch_norm import batch_norm
from .ops.bce_loss import binary_cross_entropy_with_logits
from .ops.cross_entropy import cross_entropy, nll_loss
from .ops.dropout import dropout
from .ops.device import cast
from .ops.elementwise import (  # noqa: F401 (abs, pow: see __all__)
    abs, clamp, clip, div, exp, log, maximum, minimum, mul, neg, pow, sigmoid, sqrt, sub, tanh)
from .ops.layer_norm import layer_norm
from .ops.linear import linear
from .ops.matmul import matmul
from .ops.mse_loss import mse_loss
from .ops.reduce import (  # noqa: F401 (sum, max, min: see __all__)
    amax, amin, argmax, argmin, max, mean, min, std, sum, var)
from .ops.robust_loss import huber_loss, l1_loss, smooth_l1_loss
from .ops.relu import elu, leaky_relu, relu, silu, softplus
from .ops.softmax import log_softmax, logsumexp, softmax
from .ops.shape import (  # noqa: F401 (t: see __all__)
    cat, clone, flatten, permute, reshape, squeeze, stack, t, transpose, unsqueeze)
from . import nn, optim, viz  # noqa: E402  (they build on the names above)

__version__ = "0.1.0"

# minigraph.sum, pow, abs, max and min are left out of __all__: `from minigraph import *` would
# otherwise replace the builtins of those names in the importing module (and t, a common variable name).
__all__ = [
    "Function", "GradcheckError", "Tensor", "add", "amax", "amin", "apply", "argmax", "argmin", "backend",
    "batch_norm", "binary_cross_entropy_with_logits", "cast", "cat", "clamp", "clip", "clone", "cross_entropy",
    "div", "dropout", "elu", "enable_grad", "exp", "flatten", "gradcheck", "huber_loss", "is_grad_enabled",
    "l1_loss", "layer_norm", "leaky_relu", "linear", "log", "log_softmax", "logsumexp", "manual_seed", "matmul",
    "maximum", "mean", "minimum", "mse_loss", "mul", "neg", "nll_loss", "nn", "no_grad", "optim", "permute", "relu",
    "reshape", "set_grad_enabled", "sigmoid", "silu", "smooth_l1_loss", "softmax", "softplus", "sqrt", "squeeze",
    "stack", "std", "sub", "tanh", "transpose", "unsqueeze", "var", "viz",
]
