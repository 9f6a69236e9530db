"""The ops: one small Function subclass per file (or per family), forward and backward on arrays.

Each file pairs the node (array math, written once against ``xp``) with the public
function that validates arguments and calls ``engine.apply``. ``minigraph.ops.<file>`` is
always the module; the functions are exported from ``minigraph`` itself
(``minigraph.relu``). This package also binds the Tensor operators, so the engine needs
to import no op.
"""

from ..engine import Tensor
from . import add, batch_norm, device, linear, matmul, mse_loss, relu

__all__ = ["add", "batch_norm", "device", "linear", "matmul", "mse_loss", "relu"]


def _reflected(op):  # other <op> tensor, for the forms where the left operand is not a Tensor
    return lambda self, other: op(other, self)


Tensor.__add__ = add.add
Tensor.__radd__ = _reflected(add.add)
Tensor.__matmul__ = matmul.matmul
Tensor.__rmatmul__ = _reflected(matmul.matmul)
