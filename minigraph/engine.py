"""The engine: tensors, the nodes that made them, and the backward order.

The engine knows no op's math. An op is a ``Function`` subclass with ``forward``
and ``backward`` on raw arrays; ``apply`` runs it and records it in the graph,
and ``run_backward`` walks the graph. The Tensor operators (``a + b``, ``a @ b``,
...) are bound by ``minigraph.ops`` when the package is imported, so this module
imports no op.

Ownership, which keeps memory predictable: a Tensor holds the Function that made
it; a Function holds, for each input, the input's own Function (or the input
itself when it is a leaf that wants ``.grad``), plus the arrays it chose to
save. It never holds its output, so there is no reference cycle, and a step's
memory goes the moment its last tensor does. Only what an op saves outlives the
forward pass.
"""

from __future__ import annotations

import contextvars
import functools
import heapq
import itertools
import numbers
import threading
import types
from typing import Any, Callable, Sequence

import numpy

from . import backend, checks

# Per thread (and per asyncio task), as in PyTorch: a thread that evaluates under no_grad()
# must not switch off recording for another thread that is training.
_grad_enabled = contextvars.ContextVar("minigraph_grad_enabled", default=True)


def is_grad_enabled() -> bool:
    """False inside ``no_grad()`` (in this thread)."""
    return _grad_enabled.get()


class _GradMode:
    """Context manager (or decorator) that sets whether ops record a graph, in this thread only.

    One instance may be entered again while it is active, and from several threads at once.
    """

    _enabled: bool

    def __new__(cls, func: Callable | None = None) -> Any:
        # `@no_grad` without parentheses, as PyTorch 2 allows: the class is called with the
        # function, so the decorated function comes back instead of an instance.
        instance = super().__new__(cls)
        if func is None:
            return instance
        if not callable(func):
            raise TypeError(f"{cls.__name__}: got {func!r}; expected no argument, or a function to "
                            f"decorate (@{cls.__name__} or @{cls.__name__}())")
        instance.__init__()
        return instance(func)

    def __init__(self, func: Callable | None = None) -> None:
        self._tokens = threading.local()  # a stack of ContextVar tokens per thread

    def __enter__(self) -> None:
        stack = self._tokens.__dict__.setdefault("stack", [])
        stack.append(_grad_enabled.set(self._enabled))

    def __exit__(self, *exc_info: Any) -> None:
        _grad_enabled.reset(self._tokens.stack.pop())

    def __call__(self, func: Callable) -> Callable:
        mode = type(self)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with mode():
                return func(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Context manager (or decorator): ops inside record no graph, in this thread only.

    Results computed under it have ``requires_grad=False``. One instance may be
    entered again while it is active, and from several threads at once.
    """

    _enabled = False


class enable_grad(_GradMode):
    """Context manager (or decorator): ops inside record a graph again, even within ``no_grad()``.

    As ``torch.enable_grad``: an optimizer's ``step(closure)`` evaluates the closure under
    it, so the closure's ``backward`` works when ``step`` itself is called under ``no_grad``.
    """

    _enabled = True


class set_grad_enabled:
    """Turn recording on or off, as ``torch.set_grad_enabled(mode)``: at once when called,
    until ``set_grad_enabled(...)`` is called again, or only for a ``with`` block.

    ``with set_grad_enabled(is_training): ...`` restores the previous mode on leaving, and
    ``@set_grad_enabled(mode)`` on a function sets the mode for each of its calls only.
    """

    def __init__(self, mode: bool) -> None:
        mode = checks.flag("set_grad_enabled", "mode", mode)
        self._previous = _grad_enabled.get()
        self._mode = bool(mode)
        _grad_enabled.set(self._mode)

    def __call__(self, func: Callable) -> Callable:
        # As a decorator the mode is for the function's calls: the switch the constructor made
        # when the decorator line ran is undone, as PyTorch's does.
        _grad_enabled.set(self._previous)
        mode = self._mode

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return func(*args, **kwargs)

        return wrapper

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: Any) -> None:
        _grad_enabled.set(self._previous)


_RELEASED = object()  # sentinel in Function.saved once backward has freed it


class Function:
    """One node of the graph.

    Subclasses implement ``forward(*arrays) -> array`` and ``backward(grad_output)
    -> tuple`` with one gradient (or None) per input, each shaped like its input.
    ``forward`` stores what ``backward`` needs in ``self.saved``; it may read
    ``self.needs_grad`` (one bool per input) to save and compute only what will
    be used. An instance is one node: make a new one for every call.
    """

    __slots__ = ("needs_grad", "edges", "leaf_versions", "generation", "saved", "out_shape",
                 "out_dtype", "out_type", "hooks")
    op = ""  # the public function's name, used in error messages

    def forward(self, *arrays: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad_output: Any) -> tuple:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.op or type(self).__name__


# The package's own op classes. The test suite holds each to finite differences, so their
# outputs are not re-checked on every call; anyone else's are (``_check_gradients``). Classes,
# not their backward functions: a subclass inherits ``backward`` but may change what it computes
# from (``FromOutput.derivative``, a ``forward`` that saves other arrays), so it is unproven
# until it is decorated itself.
_VERIFIED_CLASSES: set = set()


def verified(cls: type) -> type:
    """Class decorator for this package's ops: ``cls``'s backward is proven by gradcheck.

    It covers ``cls`` alone: every subclass, whether or not it overrides ``backward``, is
    checked at run time unless it is decorated too.
    """
    _VERIFIED_CLASSES.add(cls)
    return cls


def verified_variants(base: type, ops: dict[str, str]) -> tuple[type, ...]:
    """One ``@verified`` subclass of ``base`` per entry class name -> op name, with ``op`` and
    ``pick`` set to the op name: for node pairs whose math differs only in which extreme they
    take (maximum and minimum, amax and amin), written once in ``base``. The tests gradcheck
    each by its op name."""
    return tuple(verified(type(name, (base,), {"__slots__": (), "__doc__": base.__doc__,
                                               "__module__": base.__module__, "op": op, "pick": op}))
                 for name, op in ops.items())


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


def _is_array(value: Any) -> bool:
    return type(value) is numpy.ndarray or backend.is_gpu_array(value)


def _unscalar(value: Any) -> Any:
    """``value``, or a 0-d array in place of a NumPy scalar: NumPy math on 0-d arrays returns
    scalars, and forward results, gradients and ``.grad`` must stay arrays."""
    return numpy.asarray(value) if isinstance(value, numpy.generic) else value


def apply(fn: Function, *inputs: "Tensor") -> "Tensor":
    """Run ``fn`` on the inputs' arrays and, if any input wants a gradient, record it."""
    if not isinstance(fn, Function):
        what = f"the class {fn.__name__}" if isinstance(fn, type) else f"a {type(fn).__name__}"
        raise TypeError(f"apply: got {what}; expected a Function instance, one per call, e.g. "
                        f"apply({fn.__name__ if isinstance(fn, type) else 'MyOp'}(), x)")
    arrays = [t._data for t in inputs if isinstance(t, Tensor)]
    if len(arrays) != len(inputs):
        bad = next(i for i, t in enumerate(inputs) if not isinstance(t, Tensor))
        raise TypeError(f"apply({fn.name}): input {bad} is a {type(inputs[bad]).__name__}; expected "
                        f"Tensors. Wrap arrays first: minigraph.Tensor(array)")
    if hasattr(fn, "needs_grad"):
        raise RuntimeError(f"apply: this {fn.name} instance was applied already; a Function "
                           f"instance is one node of the graph, so make a new one per call, "
                           f"e.g. apply({type(fn).__name__}(), x)")
    if len(arrays) > 1:
        _check_operands(fn, arrays)
    if _grad_enabled.get():
        needs_grad = tuple([t._requires_grad for t in inputs])
        record = any(needs_grad)
    else:
        needs_grad = (False,) * len(inputs)
        record = False
    fn.needs_grad = needs_grad
    fn.saved = ()
    data = fn.forward(*arrays)
    if not _is_array(data):
        data = _unscalar(data)
        if not _is_array(data):
            raise TypeError(f"{fn.name}.forward returned a {type(data).__name__}; expected an array "
                            f"of the inputs' module (numpy.ndarray or cupy.ndarray), e.g. xp.asarray(value)")
    out = Tensor.__new__(Tensor)
    out._data = data
    out._grad = None
    out._hooks = None
    out._requires_grad = record
    if record:
        out._version = None  # not a leaf: nothing updates it in place
        edges = []
        leaf_versions = []
        generation = 0
        for t, wants in zip(inputs, needs_grad):
            creator = t._creator
            if creator is None:  # every leaf input, wanted or not: its array may be saved
                leaf_versions.append((t._version, t._version[0], t._data.shape))
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
        fn.out_shape = data.shape
        fn.out_dtype = data.dtype
        fn.out_type = type(data)
        fn.hooks = None
        out._creator = fn
    else:
        out._creator = None
        out._version = [0]
    return out


def _check_gradients(fn: Function, grads: Any) -> None:
    """A backward must return one gradient (or None) per input, like that input in shape,
    dtype and device."""
    if type(grads) is not tuple or len(grads) != len(fn.edges):
        got = f"a tuple of {len(grads)}" if type(grads) is tuple else f"a {type(grads).__name__}"
        raise RuntimeError(f"{fn.name}.backward returned {got}; expected a tuple of "
                           f"{len(fn.edges)} gradients, one per input (None allowed)")
    for index, (edge, grad) in enumerate(zip(fn.edges, grads)):
        if edge is None or grad is None:
            continue
        grad = _unscalar(grad)  # a 0-d gradient computed by NumPy; accepted, see _propagate
        shape, dtype, device = (edge._data.shape, edge._data.dtype, edge.device) if isinstance(edge, Tensor) \
            else (edge.out_shape, edge.out_dtype, "cpu" if edge.out_type is numpy.ndarray else "gpu")
        got = getattr(grad, "shape", None), getattr(grad, "dtype", None)
        if not _is_array(grad) or got != (shape, dtype) or backend.device_of(grad) != device:
            what = (f"a {type(grad).__name__}" if not _is_array(grad) else
                    f"shape {grad.shape}, dtype {grad.dtype} on {backend.device_of(grad)!r}")
            raise RuntimeError(f"{fn.name}.backward returned {what} for input {index}; expected an "
                               f"array of the input's shape {shape} and dtype {dtype} on {device!r}")


def _check_leaf_versions(fn: Function) -> None:
    """Raise before ``fn``'s backward if a leaf it read was updated in place since."""
    for cell, version, shape in fn.leaf_versions:
        if cell[0] != version:
            raise RuntimeError(
                f"backward: a leaf of shape {shape} that {fn.name} used was modified in place "
                f"(e.g. by optimizer.step() or load_state_dict()) after the graph was built, so "
                f"the arrays {fn.name} saved may no longer match it and its gradient would be "
                f"wrong. Call backward() before step(), or run the forward pass again."
            )


def _run_hooks(hooks: list, grad: Any, where: str) -> Any:
    """Each hook sees the gradient and may return a replacement of the same shape, dtype and
    device: an array, or a Tensor (its data is taken, as ``backward(grad)`` and ``.grad =`` do)."""
    for hook in hooks:
        result = hook(grad)
        if result is not None:
            result = result._data if isinstance(result, Tensor) else _unscalar(result)
            if not _is_array(result) or result.shape != grad.shape or result.dtype != grad.dtype \
                    or backend.device_of(result) != backend.device_of(grad):
                got = (f"{result.shape} {result.dtype} on {backend.device_of(result)!r}" if _is_array(result)
                       else f"a {type(result).__name__}")
                raise RuntimeError(f"a hook on {where} returned {got}; expected None or an array of "
                                   f"shape {grad.shape}, dtype {grad.dtype} on {backend.device_of(grad)!r}")
            grad = result
    return grad


def _sum(a: Any, b: Any) -> Any:
    """a + b for two gradients, an array even when both are 0-d (NumPy would give a scalar,
    and a 0-d parameter's .grad must stay an array, as its data is)."""
    return _unscalar(a + b)


def _accumulate_leaf(leaf: "Tensor", grad: Any, fresh: bool = False) -> None:
    """Add ``grad`` into ``leaf.grad``. The first gradient becomes ``.grad`` as it is only when
    ``fresh`` (nobody else holds it); otherwise it is copied, since it may be the caller's
    array, one an op passed through, or one sent to two leaves, and editing one ``.grad`` in
    place must change nothing else."""
    if leaf._hooks:
        grad = _run_hooks(leaf._hooks, grad, f"a leaf of shape {leaf.shape}")
        fresh = False  # a hook may have kept it
    if leaf._grad is None:
        leaf._grad = grad if fresh else grad.copy()
    else:
        leaf._grad = _sum(leaf._grad, grad)


def _fresh(grad: Any, grad_output: Any, grads: tuple) -> bool:
    """True when a verified op's ``grad`` is an array it made for this input alone.

    Verified ops return new arrays or views (of ``grad_output``, or a broadcast of a
    small new one), never arrays they saved; so an array that owns its memory, shares
    none with ``grad_output`` and is not returned for two inputs is held by nobody else.
    """
    if grad.base is not None:
        return False
    if type(grad) is type(grad_output) and backend.get_array_module(grad).may_share_memory(grad, grad_output):
        return False  # (arrays on two devices, as after a device move, share nothing)
    return sum(g is grad for g in grads) == 1


_callbacks = contextvars.ContextVar("minigraph_backward_callbacks", default=None)


def queue_callback(callback: Callable[[], None]) -> None:
    """Run ``callback()`` once the backward pass now running has finished (from a hook).

    Callbacks run in the order queued, after every ``.grad`` is complete, and
    only if the pass succeeds. A callback already queued in this pass (the same
    object, or the same method bound to the same object) is not queued again, so
    hooks on several outputs can each ask for it; distinct callables always run,
    whatever their ``==`` says. Distributed training queues its gradient all-reduce
    this way, from a hook on the model's output.
    """
    pending = _callbacks.get()
    if pending is None:
        raise RuntimeError("queue_callback: no backward pass is running; call it from a hook "
                           "registered with Tensor.register_hook")
    if not any(_same_callback(callback, queued) for queued in pending):
        pending.append(callback)


def _same_callback(a: Callable[[], None], b: Callable[[], None]) -> bool:
    """True when a and b are one callback: one object, or one method bound to one object.

    Identity, never ``==`` (which ``callback in pending`` would use): a callable dataclass
    compares by value, so a second, distinct callback would silently not run, and an
    ``__eq__`` returning an array would raise on its truth value. ``obj.method`` is a new
    object at each access, hence the (bound object, function) comparison.
    """
    if a is b:
        return True
    if type(a) is not type(b) or not isinstance(a, (types.MethodType, types.BuiltinMethodType)):
        return False
    if a.__self__ is not b.__self__:
        return False
    if isinstance(a, types.MethodType):
        return a.__func__ is b.__func__
    return a.__name__ == b.__name__  # a method of a built-in type, e.g. some_list.pop


def run_backward(root: "Tensor", grad: Any, retain_graph: bool) -> None:
    """Propagate ``grad`` (the gradient of the output ``root``) to every leaf.

    Order: a max-heap on ``generation`` (1 + the largest generation among a
    node's inputs), so a node runs only after every node that consumes its
    output. Iterative, so chains of any length work. Gradients reaching the same
    node are summed; intermediate gradients are dropped once used.
    """
    callbacks: list = []
    token = _callbacks.set(callbacks)
    try:
        fn = root._creator
        if fn is None:
            _accumulate_leaf(root, grad)
        else:
            _propagate(fn, grad, retain_graph)
    finally:
        _callbacks.reset(token)
    for callback in callbacks:
        callback()


def _propagate(fn: Function, grad: Any, retain_graph: bool) -> None:
    pending = {fn: grad}
    # A leaf reached by several paths (x * x, a weight shared by two layers) gets its
    # contributions summed here first; only the total goes through its hooks into .grad, so
    # a hook runs once per pass and sees the leaf's whole gradient, as in PyTorch. A clipping
    # or recording hook would otherwise act on each partial gradient. The sums are our own
    # arrays (a shared one is copied on arrival), so nothing the pass does later can edit them.
    leaf_grads: dict = {}
    tie = itertools.count()  # heap entries never compare Functions
    heap = [(-fn.generation, next(tie), fn)]
    while heap:
        fn = heapq.heappop(heap)[2]
        grad_output = pending.pop(fn)
        if fn.hooks:
            grad_output = _run_hooks(fn.hooks, grad_output, f"the output of {fn.name}")
        if fn.saved is _RELEASED:
            raise RuntimeError(
                f"Trying to backward through the graph a second time ({fn.name} already freed "
                f"its saved arrays). Specify retain_graph=True on the first backward() call "
                f"if you need to backward through the graph again."
            )
        if fn.leaf_versions:
            _check_leaf_versions(fn)
        grads = fn.backward(grad_output)
        verified = type(fn) in _VERIFIED_CLASSES
        if not verified:
            _check_gradients(fn, grads)
        if not retain_graph:
            fn.saved = _RELEASED
        for edge, grad in zip(fn.edges, grads):
            if edge is None or grad is None:
                continue
            if type(grad) is not numpy.ndarray:  # (the common case skips the call)
                grad = _unscalar(grad)
            if isinstance(edge, Tensor):  # a leaf (a Tensor or nn.Parameter), else a Function
                if edge in leaf_grads:
                    leaf_grads[edge] = _sum(leaf_grads[edge], grad)
                else:
                    leaf_grads[edge] = grad if verified and _fresh(grad, grad_output, grads) else grad.copy()
            elif edge in pending:
                pending[edge] = _sum(pending[edge], grad)
            else:
                pending[edge] = grad
                heapq.heappush(heap, (-edge.generation, next(tie), edge))
    for leaf, total in leaf_grads.items():
        _accumulate_leaf(leaf, total, fresh=True)


_FLOAT_DTYPES = ("float32", "float64")


def _as_float_array(data: Any, device: str | None) -> Any:
    """Turn user data into a float32/float64 array, placed by ``backend.placed``'s device rule."""
    if isinstance(data, Tensor):  # re-wrapping a tensor keeps its device unless told otherwise
        return data._data if device is None else backend.to_device(data._data, device)
    data = _unscalar(data)  # a NumPy scalar keeps its dtype, like an array
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


def device_and_dtype(owner: str, target: Any, dtype: Any, device: Any) -> tuple[str | None, Any]:
    """PyTorch's ``to(...)`` arguments read: ``to("gpu")``, ``to(numpy.float64)``, ``to("gpu",
    numpy.float32)`` or by keyword -> (a checked device or None, the dtype as given or None)."""
    if isinstance(target, str):
        if device is not None:
            raise TypeError(f"{owner}: got the device twice ({target!r} and device={device!r}); "
                            f"expected it once")
        device = target
    elif target is not None:
        if dtype is not None:
            raise TypeError(f"{owner}: got the dtype twice ({target!r} and dtype={dtype!r}); "
                            f"expected it once")
        dtype = target
    return (None if device is None else backend.check_device(device)), dtype


class Tensor:
    """An array plus what is needed to differentiate through it.

    ``Tensor(data, requires_grad=False, device=None)``: ``data`` is a NumPy or
    CuPy array (float32 and float64 keep their dtype, integers become float64),
    a nested list or a number (float64). Without ``device``, host data goes to
    ``backend.default_device()`` and a GPU array stays on the GPU. On the CPU
    the Tensor shares a NumPy array it is given (``torch.from_numpy``
    semantics): an optimizer step then updates the caller's array too.
    """

    # _version: [count] of in-place updates of a leaf's data (optimizers, load_state_dict),
    # a list so that tensors sharing the array share it; backward refuses a graph built
    # before an update. None on non-leaves, which nothing updates in place.
    __slots__ = ("_data", "_requires_grad", "_grad", "_creator", "_version", "_hooks", "__weakref__")
    # Make `array + tensor` and `array @ tensor` defer to the Tensor's reflected operators.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, device: str | None = None) -> None:
        requires_grad = checks.flag("Tensor", "requires_grad", requires_grad)
        self._data = _as_float_array(data, device)
        self._requires_grad = bool(requires_grad)
        self._grad = None
        self._creator = None
        self._hooks = None
        # Tensors sharing one array share one version counter, so an in-place update
        # through either is seen by graphs that saved the other.
        shares = isinstance(data, Tensor) and data._data is self._data and data._version is not None
        self._version = data._version if shares else [0]

    # --- attributes -----------------------------------------------------
    # data and requires_grad are properties so that assignments are checked as the constructor
    # checks: `t.data = [1, 2]` or `t.requires_grad = 'no'` would otherwise be taken and fail far
    # away, or never. The engine reads the slots behind them directly, on its hot paths.
    @property
    def data(self) -> Any:
        """The values: a float32 or float64 numpy.ndarray or cupy.ndarray.

        Assigning replaces the array (no copy, no gradient tracking), as PyTorch's
        ``t.data = ...`` does; update in place with ``t.data[...] = values``.
        """
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        if not _is_array(value) or value.dtype.name not in _FLOAT_DTYPES:
            what = ("a Tensor (assign its array, other.data)" if isinstance(value, Tensor) else
                    f"an array of {value.dtype}" if _is_array(value) else f"a {type(value).__name__}")
            raise TypeError(f"Tensor.data: got {what}; expected a float32 or float64 NumPy or CuPy "
                            f"array, e.g. numpy.asarray(values, dtype=numpy.float32)")
        grad = self._grad
        if grad is not None and (grad.shape != value.shape or grad.dtype != value.dtype
                                 or backend.device_of(grad) != backend.device_of(value)):
            raise ValueError(f"Tensor.data: got an array of shape {value.shape} and dtype {value.dtype} "
                             f"on {backend.device_of(value)!r} for a tensor whose .grad has shape "
                             f"{grad.shape} and dtype {grad.dtype} on {backend.device_of(grad)!r}; an "
                             f"optimizer would apply the old gradient to the new array. Expected the "
                             f"same shape, dtype and device, or set t.grad = None first")
        self._data = value

    @property
    def requires_grad(self) -> bool:
        """Whether backward computes this tensor's gradient (always True for a non-leaf)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        value = checks.flag("Tensor.requires_grad", "requires_grad", value)
        if self._creator is not None and not value:
            raise RuntimeError(f"Tensor.requires_grad: this tensor was computed by "
                               f"{self._creator.name}, and only a leaf's flag can change; for a "
                               f"copy outside the graph write t.detach()")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place and return self, as PyTorch's ``requires_grad_``."""
        self.requires_grad = requires_grad
        return self

    @property
    def grad(self) -> Any:
        """The accumulated gradient: an array like ``data``, or None."""
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is not None:
            # A NumPy reduction gives a scalar, not a 0-d array: stored as it is, it could not be
            # updated in place (clip_grad_norm_ would refuse it), unlike CuPy's 0-d result.
            value = value._data if isinstance(value, Tensor) else _unscalar(value)
            if getattr(value, "shape", None) != self._data.shape or value.dtype != self._data.dtype:
                raise ValueError(
                    f"Tensor.grad: got {getattr(value, 'shape', type(value).__name__)} "
                    f"{getattr(value, 'dtype', '')}; expected an array of shape {self._data.shape} "
                    f"and dtype {self._data.dtype}, or None"
                )
            if backend.is_gpu_array(value) != backend.is_gpu_array(self._data):
                raise TypeError(f"Tensor.grad: got an array on {backend.device_of(value)!r}; "
                                f"expected one on {self.device!r}")
        self._grad = value

    @property
    def shape(self) -> tuple:
        return self._data.shape

    @property
    def dtype(self) -> Any:
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return self._data.ndim

    def size(self, dim: int | None = None) -> Any:
        """The shape (a tuple, as ``torch.Size`` is one), or the size of dimension ``dim``."""
        if dim is None:
            return self._data.shape
        from .ops.shape import dimension, in_range  # (ops build on this module)

        shape = self._data.shape
        return shape[in_range("Tensor.size", "dim", dimension("Tensor.size", "dim", dim), len(shape), shape)]

    def numel(self) -> int:
        """The number of elements."""
        return int(self._data.size)

    def dim(self) -> int:
        """The number of dimensions (``ndim``)."""
        return self._data.ndim

    @property
    def device(self) -> str:
        """``'cpu'`` or ``'gpu'``."""
        return backend.device_of(self._data)

    @property
    def is_leaf(self) -> bool:
        """True for tensors the user made (no recorded creator)."""
        return self._creator is None

    @property
    def grad_fn(self) -> Function | None:
        """The Function that made this tensor, or None for a leaf."""
        return self._creator

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Any:
        """The sub-tensors ``self[0]``, ``self[1]``, ... along the first axis (each a graph node)."""
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor; use float(t) or t.item() for its value")
        return (self[i] for i in range(len(self._data)))

    # Truth and equality keep no array meaning, on purpose. ``if t:`` on a float tensor is almost
    # always a slip for ``if t is not None:`` (a zero bias would silently count as absent), and
    # minigraph has no comparison ops, so ``t == 0`` cannot mean elementwise equality here.
    # Tensor == Tensor stays identity, which keeps tensors usable as dict keys and in lists.
    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of a Tensor (shape {self._data.shape}) is not defined; for "
            f"'is it set' write `t is not None`, for its value float(t) or t.item(), for the "
            f"elements t.numpy() (e.g. (t.numpy() > 0).all())"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Tensor) or other is None:  # None: so that `t in [None, t]` works
            return self is other
        raise TypeError(
            f"Tensor == {type(other).__name__}: minigraph has no elementwise comparisons "
            f"(== between two tensors means 'the same tensor'); compare values on the host, "
            f"e.g. t.numpy() == value or float(t) == value"
        )

    __hash__ = object.__hash__  # defining __eq__ would otherwise make Tensors unhashable

    # Augmented assignment. Without these methods Python runs `p -= v` as `p = p - v`: the name
    # is rebound to a new tensor. PyTorch updates p in place instead, and its hand-written step
    # `for p in params: p -= lr * p.grad` (under no_grad) would here move no parameter at all,
    # silently. So on a parameter (a leaf that requires grad) it is an error; on any other tensor
    # NotImplemented lets Python fall back to `p = p - v`, a new node, which is what
    # `total += loss` over batches needs and loses nothing (no array of a parameter changes).
    def _augmented(symbol: str) -> Callable[["Tensor", Any], Any]:
        def refuse_on_a_parameter(self: "Tensor", other: Any) -> Any:
            if self._creator is None and self.requires_grad:
                raise TypeError(
                    f"{symbol} on a parameter (a leaf Tensor of shape {self._data.shape} with "
                    f"requires_grad=True): minigraph has no in-place operators, and Python would "
                    f"rebind the name to a new tensor, leaving the parameter unchanged. Update its "
                    f"array instead, e.g. p.data -= lr * p.grad (or use minigraph.optim), or write "
                    f"p = p {symbol[:-1]} value for a new graph node"
                )
            return NotImplemented
        return refuse_on_a_parameter

    __iadd__ = _augmented("+=")
    __isub__ = _augmented("-=")
    __imul__ = _augmented("*=")
    __itruediv__ = _augmented("/=")
    __ipow__ = _augmented("**=")
    __imatmul__ = _augmented("@=")
    del _augmented

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        # Without it NumPy falls back on len() and indexing: numpy.asarray(t) was an object
        # array of 0-d Tensors, one getitem node per element, and on the GPU a silent way
        # around CuPy's refusal to convert implicitly.
        raise TypeError(
            f"numpy.asarray(Tensor of shape {self._data.shape}): a Tensor is not converted "
            f"implicitly; expected an explicit t.numpy() (a host copy of the values, on either "
            f"device) or float(t) for one element"
        )

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        # NumPy's functions would otherwise call methods of the same name with NumPy's
        # arguments (numpy.sum(t) failed inside t.sum on ``out=``) or convert element by element.
        import minigraph  # (the ops are built on this module: imported here, on the error path)

        name = {"concatenate": "cat"}.get(func.__name__, func.__name__)
        ours = (f"minigraph.{name}(...), which records the graph, or " if callable(getattr(minigraph, name, None))
                else "a minigraph op, which records the graph, or ")
        raise TypeError(f"{getattr(func, '__module__', 'numpy')}.{func.__name__}(Tensor ...): NumPy functions do "
                        f"not take Tensors; expected {ours}t.numpy() for a host copy of the values")

    def __repr__(self) -> str:
        grad = f", grad_fn={self._creator.name}" if self._creator is not None else (
            ", requires_grad=True" if self.requires_grad else "")
        return f"Tensor({self._data!r}, device={self.device!r}{grad})"

    # --- conversion ---------------------------------------------------
    def numpy(self) -> numpy.ndarray:
        """A host (NumPy) copy of the data."""
        if backend.is_gpu_array(self._data):
            return self._data.get()
        return self._data.copy()

    def item(self) -> float:
        """The value of a one-element tensor as a Python float (a host sync on the GPU)."""
        if self._data.size != 1:
            raise ValueError(f"Tensor.item: got shape {self._data.shape}; expected one element")
        return float(self._data.reshape(()))

    def __float__(self) -> float:
        """``float(t)``: the same as ``t.item()``."""
        if self._data.size != 1:
            raise TypeError(f"float(): got a Tensor of shape {self._data.shape}; expected one "
                            f"element (t.numpy() gives all of them)")
        return float(self._data.reshape(()))

    def __format__(self, spec: str) -> str:
        """``f"{loss:.4f}"``: a one-element tensor formats as its number, as in PyTorch."""
        if not spec:
            return str(self)
        if self._data.size != 1:
            raise TypeError(f"format(): got a Tensor of shape {self._data.shape} and the format "
                            f"{spec!r}; expected one element (format t.numpy() for all of them)")
        return format(float(self), spec)

    def detach(self) -> "Tensor":
        """A new leaf sharing ``data``, outside any graph."""
        out = Tensor.__new__(Tensor)
        out._data, out._requires_grad, out._grad, out._creator, out._hooks = self._data, False, None, None, None
        out._version = self._version if self._version is not None else [0]  # same array, same counter
        return out

    def to(self, target: Any = None, dtype: Any = None, *, device: str | None = None) -> "Tensor":
        """This tensor on another device and/or in another dtype; gradients flow back across.

        As PyTorch's: ``t.to("gpu")`` (a device: 'cpu', 'gpu', 'auto'), ``t.to(numpy.float64)``
        (a dtype: float32 or float64), ``t.to("gpu", numpy.float32)``, or by keyword. Returns
        the tensor itself when nothing changes.
        """
        device, dtype = device_and_dtype("Tensor.to", target, dtype, device)
        result = self
        if device is not None:
            if device != result.device:
                result = _to_device(result, device)
        return result if dtype is None else _cast(result, dtype)

    def cpu(self) -> "Tensor":
        """This tensor on the host (itself if it is there), differentiably: ``to("cpu")``."""
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        """This tensor on the GPU (itself if it is there), differentiably: ``to("gpu")``."""
        return self.to("gpu")

    def tolist(self) -> Any:
        """The values as (nested) Python floats, read to the host: a float for a 0-d tensor."""
        return backend.to_device(self._data, "cpu").tolist()

    def float(self) -> "Tensor":
        """This tensor in float32 (itself if it is float32 already), differentiably."""
        return _cast(self, numpy.float32)

    def double(self) -> "Tensor":
        """This tensor in float64 (itself if it is float64 already), differentiably."""
        return _cast(self, numpy.float64)

    # --- autograd -----------------------------------------------------
    def register_hook(self, hook: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``hook(grad)`` when backward computes this tensor's gradient; returns a remover.

        ``hook`` may return None or a replacement array (or Tensor) of the same
        shape, dtype and device, which then flows on (to the op that made this tensor, or into a
        leaf's ``.grad``). It may call ``engine.queue_callback`` to run code
        once the whole backward pass has finished.
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook: this tensor does not require grad, so backward "
                               "never computes its gradient")
        if self._creator is not None:
            owner = self._creator
            owner.hooks = hooks = owner.hooks or []
        else:
            self._hooks = hooks = self._hooks or []
        hooks.append(hook)
        return lambda: hooks.remove(hook) if hook in hooks else None

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into every leaf's ``.grad``.

        ``grad``: array or Tensor shaped like ``self`` (host data moves to this
        tensor's device); may be omitted only for a one-element tensor. With
        ``retain_graph=False`` the graph's saved arrays are freed, and a second
        backward through it raises RuntimeError.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad and has no grad_fn; "
                "create the leaves with requires_grad=True (and not under no_grad())"
            )
        xp = backend.get_array_module(self._data)
        if grad is None:
            if self._data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for one-element outputs; "
                    f"got shape {self._data.shape}. Pass grad=<array of shape {self._data.shape}>."
                )
            grad = xp.ones_like(self._data)
        else:
            if isinstance(grad, Tensor):
                grad = grad._data
            if backend.is_gpu_array(grad) and not backend.is_gpu_array(self._data):
                raise TypeError(f"backward: grad is on 'gpu' but the output is on {self.device!r}; "
                                f"expected the same device (grad.get() brings it to the host)")
            grad = xp.asarray(grad)  # host data goes to the output's device, as in any op
            if grad.shape != self._data.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}; expected the output's "
                                 f"shape {self._data.shape}")
            if grad.dtype != self._data.dtype:
                raise TypeError(f"backward: grad has dtype {grad.dtype}; expected the output's "
                                f"dtype {self._data.dtype}")
        run_backward(self, grad, checks.flag("backward", "retain_graph", retain_graph))


_to_device: Callable[[Tensor, str], Tensor] | None = None  # bound by minigraph.ops.device
_cast: Callable[[Tensor, Any], Tensor] | None = None  # bound by minigraph.ops.device


def as_tensor(op: str, name: str, value: Any, like: Tensor | None = None) -> Tensor:
    """Coerce an op's argument to a Tensor.

    Tensors pass through. A scalar, meaning a Python number, a NumPy scalar or a
    0-d array on the host or on ``like``'s device (CuPy's reductions return 0-d
    arrays, NumPy's return scalars), becomes a constant with ``like``'s dtype and
    device, as in PyTorch. Other host arrays become constants on ``like``'s device
    (on the default device without ``like``); GPU arrays stay where they are.
    Anything else is a TypeError naming ``op`` and the argument.
    """
    if isinstance(value, Tensor):
        return value
    if like is not None and _is_scalar(value) and not (backend.is_gpu_array(value) and like.device == "cpu"):
        xp = backend.get_array_module(like._data)
        return Tensor(xp.asarray(value, dtype=like._data.dtype), device=like.device)
    if isinstance(value, numpy.ndarray) or backend.is_gpu_array(value):
        device = like.device if like is not None and not backend.is_gpu_array(value) else None
        return Tensor(value, device=device)
    raise TypeError(f"{op}: {name} must be a Tensor or an array; got {type(value).__name__}")


def _is_scalar(value: Any) -> bool:
    """A real number that is not a bool: Python's, NumPy's, or a 0-d numeric array."""
    if isinstance(value, bool):
        return False
    if getattr(value, "ndim", None) == 0 and hasattr(value, "dtype"):
        return value.dtype.kind in "iuf"
    return isinstance(value, numbers.Real)


def as_tensors(op: str, names: Sequence[str], values: Sequence[Any]) -> list[Tensor]:
    """``as_tensor`` for each operand, with the first Tensor among them as ``like`` for the rest."""
    like = next((v for v in values if isinstance(v, Tensor)), None)
    return [as_tensor(op, name, value, like) for name, value in zip(names, values)]
