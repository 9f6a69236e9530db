"""The ops: one small Function subclass per file, forward and backward on arrays.

Each file pairs the node (array math, written once against ``xp``) with the
public function that validates arguments and calls ``engine.apply``.
"""

from .add import add
from .batch_norm import batch_norm
from .linear import linear
from .matmul import matmul
from .mse_loss import mse_loss
from .relu import relu

__all__ = ["add", "batch_norm", "linear", "matmul", "mse_loss", "relu"]
