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
import numbers
from typing import Any, Callable, Sequence

import numpy

from . import backend

_grad_enabled = True


def is_grad_enabled() -> bool:
    """False inside ``no_grad()``."""
    return _grad_enabled


class no_grad:
    """Context manager (or decorator): ops inside record no graph.

    Results computed under it have ``requires_grad=False``. The switch is
    process-wide, not per thread as in PyTorch.
    """

    def __init__(self) -> None:
        self._previous: list[bool] = []  # a stack, so one instance can be nested in itself

    def __enter__(self) -> None:
        global _grad_enabled
        self._previous.append(_grad_enabled)
        _grad_enabled = False

    def __exit__(self, *exc_info: Any) -> None:
        global _grad_enabled
        _grad_enabled = self._previous.pop()

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return func(*args, **kwargs)

        return wrapper


_RELEASED = object()  # sentinel in Function.saved once backward has freed it


def _reuses_grad_buffers(backward: Callable) -> Callable:
    """Mark an op's ``backward`` as taking part in the engine's buffer reuse (this package's ops).

    The marked ``backward(grad_output, overwrite=False)`` promises to return
    only ``grad_output`` itself or new arrays it keeps no reference to, so the
    engine knows which gradient buffers it alone holds. When it passes
    ``overwrite=True``, grad_output is such a buffer and backward may write a
    result into it instead of allocating. The mark sits on the method, not the
    class: a subclass that overrides backward is outside the protocol, and its
    backward is called with grad_output alone, as any Function's is.
    """
    backward._reuses_grad_buffers = True
    return backward


class Function:
    """One node of the graph.

    Subclasses implement ``forward(*arrays) -> array`` and
    ``backward(grad_output) -> tuple`` with one gradient (or None) per input.
    ``forward`` stores what ``backward`` needs in ``self.saved``; it may read
    ``self.needs_grad`` (one bool per input) to save only what will be used.
    """

    __slots__ = ("needs_grad", "edges", "leaf_versions", "generation", "saved", "out_shape")
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
    if type(first) is numpy.ndarray:
        # The common case, decided without asking the backend about CuPy.
        for a in arrays[1:]:
            if type(a) is not numpy.ndarray or a.dtype != dtype:
                break
        else:
            return
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
                f"minigraph does not promote silently: convert the data (array.astype(...)) or "
                f"build the layer with the data's dtype, e.g. nn.Linear(..., dtype=numpy.{first.dtype})."
            )


def apply(fn: Function, *inputs: "Tensor") -> "Tensor":
    """Run ``fn`` on the inputs' arrays and, if any input wants a gradient, record it."""
    arrays = [t.data for t in inputs]
    if len(arrays) > 1:
        _check_operands(fn, arrays)
    if _grad_enabled:
        needs_grad = tuple([t.requires_grad for t in inputs])
        record = any(needs_grad)
    else:
        needs_grad = (False,) * len(inputs)
        record = False
    fn.needs_grad = needs_grad
    fn.saved = ()
    out = Tensor.__new__(Tensor)
    out.data = fn.forward(*arrays)
    out._grad = None
    out.requires_grad = record
    if record:
        out._version = None  # not a leaf: nothing updates it in place
        edges = []
        leaf_versions = []
        generation = 0
        for t, wants in zip(inputs, needs_grad):
            creator = t._creator
            if creator is None:  # every leaf input, wanted or not: its array may be saved
                leaf_versions.append((t._version, t._version[0], t.data.shape))
            if not wants:
                edges.append(None)
                continue
            if creator is None:
                edges.append(t)  # a leaf: its .grad is filled in
            else:
                edges.append(creator)
                if creator.generation > generation:
                    generation = creator.generation
        fn.edges = tuple(edges)
        fn.leaf_versions = tuple(leaf_versions)
        fn.generation = generation + 1
        fn.out_shape = out.data.shape
        out._creator = fn
    else:
        out._creator = None
        out._version = [0]
    return out


def _accumulate_leaf(leaf: "Tensor", grad: Any, shared: bool) -> None:
    # A gradient someone else may hold too (one an op passed straight through,
    # the caller's own, one sent to two inputs, or any from a Function outside
    # the buffer protocol) is copied, so that editing one .grad in place can
    # change nothing else.
    if shared:
        grad = grad.copy()
    leaf._grad = grad if leaf._grad is None else leaf._grad + grad


def _check_leaf_versions(fn: Function) -> None:
    """Raise before ``fn``'s backward if a leaf it read was updated in place since."""
    for cell, version, shape in fn.leaf_versions:
        if cell[0] != version:
            _raise_modified_leaf(fn, shape)


def _check_gradients(fn: Function, grads: Any) -> None:
    """A backward must return one gradient (or None) per input, shaped like that input."""
    if type(grads) is not tuple or len(grads) != len(fn.edges):
        got = f"a tuple of {len(grads)}" if type(grads) is tuple else type(grads).__name__
        raise RuntimeError(f"{fn.name}.backward returned {got}; expected a tuple of "
                           f"{len(fn.edges)} gradients, one per input (None allowed)")
    for index, (edge, grad) in enumerate(zip(fn.edges, grads)):
        if edge is None or grad is None:
            continue
        expected = edge.data.shape if type(edge) is Tensor else edge.out_shape
        if getattr(grad, "shape", None) != expected:
            raise RuntimeError(f"{fn.name}.backward returned a gradient of shape "
                               f"{getattr(grad, 'shape', type(grad).__name__)} for input {index}; "
                               f"expected {expected}, the input's shape")


def _raise_modified_leaf(fn: Function, shape: tuple) -> None:
    raise RuntimeError(
        f"backward: a leaf of shape {shape} that {fn.name} used was modified in place "
        f"(e.g. by optimizer.step() or load_state_dict()) after the graph was built, so the "
        f"arrays {fn.name} saved may no longer match it and its gradient would be wrong. "
        f"Call backward() before step(), or run the forward pass again."
    )


def _returned_once(grad: Any, grads: tuple) -> bool:
    """True when ``grad`` is the only entry of ``grads`` that is this very array."""
    count = 0
    for g in grads:
        if g is grad:
            count += 1
    return count == 1


def run_backward(root: "Tensor", grad: Any, retain_graph: bool) -> None:
    """Propagate ``grad`` (the gradient of the output ``root``) to every leaf.

    Order: a max-heap on ``generation`` (1 + the largest generation among a
    node's inputs), so a node runs only after every node that consumes its
    output. Iterative, so chains of any length work. Gradients reaching the
    same node are summed; intermediate gradients are dropped once used.

    Buffer reuse: a gradient only the engine holds (a new array from a backward
    marked ``_reuses_grad_buffers``, or a sum made here, handed to exactly one
    node) reaches that node's backward with ``overwrite=True``, so ReLU and
    eval-mode batch norm write their results into it instead of allocating. ``grad``
    itself belongs to the caller and is never overwritten, nor is any array a
    leaf's ``.grad`` holds.
    """
    fn = root._creator
    if fn is None:
        _accumulate_leaf(root, grad, shared=True)
        return
    pending = {fn: grad}
    owned: set[Function] = set()  # nodes whose pending gradient only the engine holds
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
        if fn.leaf_versions:
            _check_leaf_versions(fn)
        backward = fn.backward
        reuses = getattr(backward, "_reuses_grad_buffers", False)
        output_owned = reuses and fn in owned
        if reuses:
            grads = backward(grad_output, output_owned)
        else:  # the package's ops are held to this by gradcheck; anyone else's at run time
            grads = backward(grad_output)
            _check_gradients(fn, grads)
        if not retain_graph:
            fn.saved = _RELEASED
        for edge, grad in zip(fn.edges, grads):
            if edge is None or grad is None:
                continue
            # Only the engine holds ``grad`` if the op made it (or passed on a buffer
            # the engine owned) and sent it nowhere else.
            exclusive = reuses and (output_owned or grad is not grad_output) and \
                (len(grads) == 1 or _returned_once(grad, grads))
            if type(edge) is Tensor:
                # A buffer nobody else holds can become the leaf's .grad without a copy.
                _accumulate_leaf(edge, grad, shared=not exclusive)
            elif edge in pending:
                pending[edge] = pending[edge] + grad
                owned.add(edge)  # the sum is a new array
            else:
                pending[edge] = grad
                heapq.heappush(heap, (-edge.generation, next(tie), edge))
                if exclusive:
                    owned.add(edge)


_FLOAT_DTYPES = ("float32", "float64")


def _as_float_array(data: Any, device: str | None) -> Any:
    """Turn user data into a float32/float64 array, placed by ``backend.placed``'s device rule."""
    if isinstance(data, Tensor):  # re-wrapping a tensor keeps its device unless told otherwise
        return data.data if device is None else backend.to_device(data.data, device)
    if isinstance(data, numpy.generic):
        data = numpy.asarray(data)  # a NumPy scalar keeps its dtype, like an array
    if isinstance(data, numpy.ndarray) and type(data) is not numpy.ndarray:
        if isinstance(data, numpy.ma.MaskedArray):
            raise TypeError("Tensor: got a masked array; minigraph has no masks, so its ops would "
                            "silently use the hidden values. Pass data.filled(value) or "
                            "data.compressed() instead")
        data = numpy.asarray(data)  # np.matrix and other subclasses change what * and @ mean
    if isinstance(data, numpy.ndarray) or backend.is_gpu_array(data):
        kind = data.dtype.kind
        if kind in "biu":
            data = data.astype(backend.get_array_module(data).float64)  # autograd needs floats
        elif data.dtype.name not in _FLOAT_DTYPES:
            hint = (" float16 overflows at 65504 and loses sums; compute in float32"
                    if data.dtype.name == "float16" else "")
            raise TypeError(f"Tensor: got an array of dtype {data.dtype}; expected float32 or "
                            f"float64 (integers and booleans become float64).{hint}")
        return backend.placed(data, device)
    try:
        array = numpy.asarray(data)
        if array.dtype.kind not in "biuf":  # None or strings would become NaN or fail later
            raise TypeError(f"its elements are {array.dtype.name}")
        array = array.astype(numpy.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Tensor: cannot make a float array from {type(data).__name__} ({exc}); "
            f"expected a NumPy/CuPy array, a nested list of numbers or a number"
        ) from None
    return backend.placed(array, device)


class Tensor:
    """An array plus what is needed to differentiate through it.

    ``Tensor(data, requires_grad=False, device=None)``: ``data`` is a NumPy or
    CuPy array (a float array keeps its dtype, integers become float64, and it
    stays on its device unless ``device`` is given), a nested list or a number
    (float64, on ``backend.default_device()`` unless ``device`` is given).
    """

    # _version: [count] of in-place updates of a leaf's data (optimizers, load_state_dict),
    # a list so that tensors sharing the array share it; backward refuses a graph built
    # before an update. None on non-leaves, which nothing updates in place.
    __slots__ = ("data", "requires_grad", "_grad", "_creator", "_version", "__weakref__")
    # Make `array + tensor` and `array @ tensor` defer to Tensor.__radd__ / __rmatmul__.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, device: str | None = None) -> None:
        self.data = _as_float_array(data, device)
        self.requires_grad = bool(requires_grad)
        self._grad = None
        self._creator = None
        # Tensors sharing one array share one version counter, so an in-place update
        # through either is seen by graphs that saved the other.
        shares = isinstance(data, Tensor) and data.data is self.data and data._version is not None
        self._version = data._version if shares else [0]

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
        out._version = self._version if self._version is not None else [0]  # same array, same counter
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
            if backend.is_gpu_array(grad) and not backend.is_gpu_array(self.data):
                raise TypeError(f"backward: grad is on 'gpu' but the output is on {self.device!r}; "
                                f"expected the same device (grad.get() brings it to the host)")
            grad = xp.asarray(grad)  # host data goes to the output's device, as in any op
            if grad.shape != self.data.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}; expected the output's "
                                 f"shape {self.data.shape}")
            if grad.dtype != self.data.dtype:
                raise TypeError(f"backward: grad has dtype {grad.dtype}; expected the output's "
                                f"dtype {self.data.dtype}")
        run_backward(self, grad, retain_graph)

    # --- operators ------------------------------------------------------
    # The ops import this module, so the operator functions are looked up once,
    # on first use, rather than by an import statement on every call.
    def __matmul__(self, other: Any) -> "Tensor":
        return (_matmul or _load_operators()[1])(self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return (_matmul or _load_operators()[1])(other, self)

    def __add__(self, other: Any) -> "Tensor":
        return (_add or _load_operators()[0])(self, other)

    def __radd__(self, other: Any) -> "Tensor":
        return (_add or _load_operators()[0])(other, self)


_add: Callable | None = None
_matmul: Callable | None = None


def _load_operators() -> tuple[Callable, Callable]:
    """(add, matmul) for the Tensor operators, imported on first use and kept."""
    global _add, _matmul
    from .ops.add import add
    from .ops.matmul import matmul

    _add, _matmul = add, matmul
    return add, matmul


def as_tensor(op: str, name: str, value: Any, like: Tensor | None = None) -> Tensor:
    """Coerce an op's argument to a Tensor.

    Tensors pass through. Host arrays become constants on ``like``'s device (on
    the default device without ``like``); GPU arrays stay where they are. A
    Python number becomes a constant with ``like``'s dtype and device. Anything
    else is a TypeError naming ``op`` and the argument.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numpy.ndarray) or backend.is_gpu_array(value):
        device = like.device if like is not None and not backend.is_gpu_array(value) else None
        return Tensor(value, device=device)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and like is not None:
        xp = backend.get_array_module(like.data)
        return Tensor(xp.asarray(value, dtype=like.data.dtype))
    raise TypeError(f"{op}: {name} must be a Tensor or an array; got {type(value).__name__}")


def as_tensors(op: str, names: Sequence[str], values: Sequence[Any]) -> list[Tensor]:
    """``as_tensor`` for each operand, with the first Tensor among them as ``like`` for the rest."""
    like = next((v for v in values if isinstance(v, Tensor)), None)
    return [as_tensor(op, name, value, like) for name, value in zip(names, values)]
