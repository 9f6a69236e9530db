"""The engine: tensors, the nodes that made them, and the backward order.

The engine knows nothing about any op's math. An op is a ``Function``
subclass with ``forward`` and ``backward`` on raw arrays; ``apply`` runs it and
records it in the graph, and ``run_backward`` walks the graph.

Ownership, which is what keeps memory predictable:

* a Tensor holds the Function that made it (``_creator``);
* a Function holds, for each input, the input's own Function (or the input
  itself when it is a leaf that wants ``.grad``), plus the arrays it chose to
  save. It never holds its output, so there is no reference cycle, and a
  step's memory goes the moment its last tensor does, with no help from the
  garbage collector. Intermediate tensors are not kept alive by the graph
  either: only what an op saves is.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from typing import Any, Callable, Sequence

import numpy

from . import backend

_grad_enabled = True


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``."""
    return _grad_enabled


class no_grad:
    """Context manager (or decorator): ops inside record no graph.

    Results computed under it have ``requires_grad=False``.
    """

    def __enter__(self) -> None:
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc_info: Any) -> None:
        global _grad_enabled
        _grad_enabled = self._previous

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return func(*args, **kwargs)

        return wrapper


_RELEASED = object()  # sentinel in Function.saved once backward has freed it


class Function:
    """One node of the graph.

    Subclasses implement ``forward(*arrays) -> array`` and
    ``backward(grad_output) -> tuple`` with one gradient (or None) per input.
    ``forward`` stores what ``backward`` needs in ``self.saved``; it may read
    ``self.needs_grad`` (one bool per input) to save only what will be used.
    """

    __slots__ = ("needs_grad", "edges", "generation", "saved", "out_shape")
    op = ""  # the public function's name, used in error messages

    def forward(self, *arrays: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad_output: Any) -> tuple:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.op or type(self).__name__


def _check_operands(fn: Function, arrays: Sequence[Any]) -> None:
    """All operands of one op must share a device and a dtype."""
    first = arrays[0]
    dtype = first.dtype
    on_gpu = backend.is_gpu_array(first)
    for a in arrays[1:]:
        if backend.is_gpu_array(a) != on_gpu:
            devices = ", ".join(repr(backend.device_of(x)) for x in arrays)
            raise TypeError(
                f"{fn.name}: operands are on different devices ({devices}); expected one device. "
                f"Move them first, e.g. tensor.to('gpu') or tensor.to('cpu')."
            )
        if a.dtype != dtype:
            dtypes = ", ".join(str(x.dtype) for x in arrays)
            raise TypeError(
                f"{fn.name}: operands have different dtypes ({dtypes}); expected one dtype. "
                f"minigraph does not promote silently: convert one, e.g. "
                f"Tensor(t.data.astype('float64'))."
            )


def apply(fn: Function, *inputs: "Tensor") -> "Tensor":
    """Run ``fn`` on the inputs' arrays and, if any input wants a gradient, record it."""
    arrays = [t.data for t in inputs]
    if len(arrays) > 1:
        _check_operands(fn, arrays)
    needs_grad = tuple(t.requires_grad for t in inputs) if _grad_enabled else (False,) * len(inputs)
    record = any(needs_grad)
    fn.needs_grad = needs_grad
    fn.saved = ()
    out = Tensor.__new__(Tensor)
    out.data = fn.forward(*arrays)
    out._grad = None
    out.requires_grad = record
    if record:
        edges = []
        generation = 0
        for t, wants in zip(inputs, needs_grad):
            if not wants:
                edges.append(None)
                continue
            creator = t._creator
            if creator is None:
                edges.append(t)  # a leaf: its .grad is filled in
            else:
                edges.append(creator)
                if creator.generation > generation:
                    generation = creator.generation
        fn.edges = tuple(edges)
        fn.generation = generation + 1
        fn.out_shape = out.data.shape
        out._creator = fn
    else:
        out._creator = None
    return out


def _accumulate_leaf(leaf: "Tensor", grad: Any, grad_output: Any) -> None:
    # A gradient an op passed straight through (add with no broadcasting) is the
    # very array other consumers receive too; give the leaf its own copy so that
    # editing one .grad in place cannot change another.
    if grad is grad_output:
        grad = grad.copy()
    leaf._grad = grad if leaf._grad is None else leaf._grad + grad


def run_backward(root: "Tensor", grad: Any, retain_graph: bool) -> None:
    """Propagate ``grad`` (the gradient of the output ``root``) to every leaf.

    Order: a max-heap on ``generation`` (1 + the largest generation among a
    node's inputs), so a node runs only after every node that consumes its
    output. Iterative, so chains of any length work. Gradients reaching the
    same node are summed; intermediate gradients are dropped once used.
    """
    fn = root._creator
    if fn is None:
        _accumulate_leaf(root, grad, grad)
        return
    pending = {fn: grad}
    tie = itertools.count()  # heap entries never compare Functions
    heap = [(-fn.generation, next(tie), fn)]
    while heap:
        fn = heapq.heappop(heap)[2]
        grad_output = pending.pop(fn)
        if fn.saved is _RELEASED:
            raise RuntimeError(
                f"Trying to backward through the graph a second time ({fn.name} already freed "
                f"its saved arrays). Specify retain_graph=True on the first backward() call "
                f"if you need to backward through the graph again."
            )
        grads = fn.backward(grad_output)
        if not retain_graph:
            fn.saved = _RELEASED
        for edge, grad in zip(fn.edges, grads):
            if edge is None or grad is None:
                continue
            if type(edge) is Tensor:
                _accumulate_leaf(edge, grad, grad_output)
            elif edge in pending:
                pending[edge] = pending[edge] + grad
            else:
                pending[edge] = grad
                heapq.heappush(heap, (-edge.generation, next(tie), edge))


def _as_float_array(data: Any, device: str | None) -> Any:
    """Turn user data into a float array on the right device."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, numpy.ndarray) or backend.is_gpu_array(data):
        xp = backend.get_array_module(data)
        if data.dtype.kind == "c":
            raise TypeError(f"Tensor: got a complex array ({data.dtype}); expected real floats")
        if data.dtype.kind not in "f":
            if data.dtype.kind not in "biu":
                raise TypeError(f"Tensor: got an array of dtype {data.dtype}; expected numbers")
            data = data.astype(xp.float64)  # autograd needs floats
        return data if device is None else backend.to_device(data, device)
    try:
        array = numpy.asarray(data, dtype=numpy.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Tensor: cannot make a float array from {type(data).__name__} ({exc}); "
            f"expected a NumPy/CuPy array, a nested list of numbers or a number"
        ) from None
    return backend.to_device(array, device or backend.default_device())


class Tensor:
    """An array plus what is needed to differentiate through it.

    ``Tensor(data, requires_grad=False, device=None)``: ``data`` is a NumPy or
    CuPy array (a float array keeps its dtype, integers become float64, and it
    stays on its device unless ``device`` is given), a nested list or a number
    (float64, on ``backend.default_device()`` unless ``device`` is given).
    """

    __slots__ = ("data", "requires_grad", "_grad", "_creator", "__weakref__")
    # Make `array + tensor` and `array @ tensor` defer to Tensor.__radd__ / __rmatmul__.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, device: str | None = None) -> None:
        self.data = _as_float_array(data, device)
        self.requires_grad = bool(requires_grad)
        self._grad = None
        self._creator = None

    # --- attributes -----------------------------------------------------
    @property
    def grad(self) -> Any:
        """The accumulated gradient: an array like ``data``, or None."""
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is not None:
            if isinstance(value, Tensor):
                value = value.data
            if getattr(value, "shape", None) != self.data.shape or value.dtype != self.data.dtype:
                raise ValueError(
                    f"Tensor.grad: got {getattr(value, 'shape', type(value).__name__)} "
                    f"{getattr(value, 'dtype', '')}; expected an array of shape {self.data.shape} "
                    f"and dtype {self.data.dtype}, or None"
                )
            if backend.is_gpu_array(value) != backend.is_gpu_array(self.data):
                raise TypeError(f"Tensor.grad: got an array on {backend.device_of(value)!r}; "
                                f"expected one on {self.device!r}")
        self._grad = value

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def device(self) -> str:
        """``'cpu'`` or ``'gpu'``."""
        return backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        """True for tensors the user made (no recorded creator)."""
        return self._creator is None

    @property
    def grad_fn(self) -> Function | None:
        """The Function that made this tensor, or None for a leaf."""
        return self._creator

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = f", grad_fn={self._creator.name}" if self._creator is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        return f"Tensor({self.data!r}, device={self.device!r}{grad})"

    # --- conversion ---------------------------------------------------
    def numpy(self) -> numpy.ndarray:
        """A host (NumPy) copy of the data."""
        if backend.is_gpu_array(self.data):
            return self.data.get()
        return self.data.copy()

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        if self.data.size != 1:
            raise ValueError(f"Tensor.item: got shape {self.data.shape}; expected one element")
        return float(self.data.reshape(()))

    def detach(self) -> "Tensor":
        """A new leaf sharing ``data``, outside any graph."""
        out = Tensor.__new__(Tensor)
        out.data, out.requires_grad, out._grad, out._creator = self.data, False, None, None
        return out

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device`` ('cpu', 'gpu', 'auto'); gradients flow back across."""
        device = backend.check_device(device)
        if device == self.device:
            return self
        from .ops.device import ToDevice

        return apply(ToDevice(device), self)

    # --- autograd -----------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into every leaf's ``.grad``.

        ``grad``: array or Tensor shaped like ``self``; may be omitted only for a
        one-element tensor. With ``retain_graph=False`` the graph's saved arrays
        are freed, and a second backward through it raises RuntimeError.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no grad_fn; "
                "create the leaves with requires_grad=True (and not under no_grad())"
            )
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for one-element outputs; "
                    f"got shape {self.data.shape}. Pass grad=<array of shape {self.data.shape}>."
                )
            grad = xp.ones_like(self.data)
        else:
            if isinstance(grad, Tensor):
                grad = grad.data
            if backend.is_gpu_array(grad) != backend.is_gpu_array(self.data):
                raise TypeError(f"backward: grad is on {backend.device_of(grad)!r} but the output "
                                f"is on {self.device!r}; expected the same device")
            grad = xp.asarray(grad)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}; expected the output's "
                                 f"shape {self.data.shape}")
            if grad.dtype != self.data.dtype:
                raise TypeError(f"backward: grad has dtype {grad.dtype}; expected the output's "
                                f"dtype {self.data.dtype}")
        run_backward(self, grad, retain_graph)

    # --- operators ------------------------------------------------------
    def __matmul__(self, other: Any) -> "Tensor":
        from .ops.matmul import matmul

        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        from .ops.matmul import matmul

        return matmul(other, self)

    def __add__(self, other: Any) -> "Tensor":
        from .ops.add import add

        return add(self, other)

    def __radd__(self, other: Any) -> "Tensor":
        from .ops.add import add

        return add(other, self)


def as_tensor(op: str, name: str, value: Any, like: Tensor | None = None) -> Tensor:
    """Coerce an op's argument to a Tensor.

    Tensors pass through; arrays become constants; a Python number becomes a
    constant with ``like``'s dtype and device. Anything else is a TypeError
    naming ``op`` and the argument.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numpy.ndarray) or backend.is_gpu_array(value):
        return Tensor(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and like is not None:
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(value, dtype=like.data.dtype))
    raise TypeError(f"{op}: {name} must be a Tensor or an array; got {type(value).__name__}")
