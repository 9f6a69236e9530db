"""The ops: one small Function subclass per file (or per family), forward and backward on arrays.

Each file pairs the node (array math, written once against ``xp``) with the public
function that validates arguments and calls ``engine.apply``. ``minigraph.ops.<file>`` is
always the module; the functions are exported from ``minigraph`` itself
(``minigraph.relu``). This package also binds the Tensor operators and methods, so the
engine needs to import no op.
"""

from ..engine import Tensor
from . import (add, batch_norm, cross_entropy, device, dropout, elementwise, linear, matmul,
               mse_loss, reduce, relu, shape, softmax)

__all__ = ["add", "batch_norm", "cross_entropy", "device", "dropout", "elementwise", "linear",
           "matmul", "mse_loss", "reduce", "relu", "shape", "softmax"]


def _reflected(op):  # other <op> tensor, for the forms where the left operand is not a Tensor
    return lambda self, other: op(other, self)


Tensor.__add__ = add.add
Tensor.__radd__ = _reflected(add.add)
Tensor.__sub__ = elementwise.sub
Tensor.__rsub__ = _reflected(elementwise.sub)
Tensor.__mul__ = elementwise.mul
Tensor.__rmul__ = _reflected(elementwise.mul)
Tensor.__truediv__ = elementwise.div
Tensor.__rtruediv__ = _reflected(elementwise.div)
Tensor.__pow__ = elementwise.pow
Tensor.__rpow__ = _reflected(elementwise.pow)
Tensor.__neg__ = elementwise.neg
Tensor.__matmul__ = matmul.matmul
Tensor.__rmatmul__ = _reflected(matmul.matmul)
Tensor.__getitem__ = shape.getitem

Tensor.__abs__ = elementwise.abs

Tensor.abs = elementwise.abs
Tensor.sqrt = elementwise.sqrt
Tensor.clamp = elementwise.clamp
Tensor.clip = elementwise.clamp
Tensor.maximum = elementwise.maximum
Tensor.minimum = elementwise.minimum
Tensor.max = reduce.max
Tensor.min = reduce.min
Tensor.amax = reduce.amax
Tensor.amin = reduce.amin
Tensor.argmax = reduce.argmax
Tensor.argmin = reduce.argmin
Tensor.exp = elementwise.exp
Tensor.log = elementwise.log
Tensor.tanh = elementwise.tanh
Tensor.sigmoid = elementwise.sigmoid
Tensor.relu = relu.relu
Tensor.softmax = softmax.softmax
Tensor.log_softmax = softmax.log_softmax
Tensor.pow = elementwise.pow
Tensor.sum = reduce.sum
Tensor.mean = reduce.mean
Tensor.T = property(shape.transpose, doc="The tensor with its axes reversed: xᵀ for a 2-D x.")
Tensor.transpose = shape.transpose_method
Tensor.reshape = lambda self, *sizes: shape.reshape(self, shape.axes_or_shape(sizes))
Tensor.view = Tensor.reshape  # a new node, its data a view of x's where NumPy/CuPy can make one
Tensor.permute = shape.permute
Tensor.flatten = shape.flatten
Tensor.squeeze = shape.squeeze
Tensor.unsqueeze = shape.unsqueeze
Tensor.t = shape.t
Tensor.clone = shape.clone
Tensor.var = reduce.var
Tensor.expand = shape.expand
Tensor.expand_as = shape.expand_as
Tensor.logsumexp = softmax.logsumexp
# PyTorch's method spellings of the operators, for code written with them.
Tensor.add = add.add
Tensor.sub = elementwise.sub
Tensor.mul = elementwise.mul
Tensor.div = elementwise.div
Tensor.neg = elementwise.neg
Tensor.matmul = matmul.matmul
Tensor.mm = matmul.matmul
Tensor.square = lambda self: elementwise.pow(self, 2)
Tensor.std = reduce.std
