"""Layers that own their parameters, PyTorch-style: ``Module``, ``Linear``, ``BatchNorm1d``, ...

A ``Module`` finds its parameters the way ``torch.nn.Module`` does: assigning an
attribute registers it. An ``nn.Parameter`` (frozen or not), or any leaf ``Tensor`` with
``requires_grad=True``, becomes a parameter, a ``Module`` becomes a child, and ``register_buffer(name, array)``
adds a buffer (state that is saved but not trained, such as batch norm's
running statistics). Buffers are raw NumPy/CuPy arrays, so ops can update them
in place.

Saving and loading follows ``torch.save`` / ``torch.load``, with ``.npz`` files
of host NumPy arrays, written atomically (``minigraph/checkpoint.py``)::

    nn.save(model.state_dict(), "model.npz")
    model.load_state_dict(nn.load("model.npz"))

One difference from PyTorch, by design: ``Linear.weight`` is (in_features,
out_features), so the forward pass is ``x @ W + b`` as written in matrix
algebra. PyTorch stores the transpose.
"""

from __future__ import annotations

import math
import numbers
import operator
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Callable, NamedTuple

import numpy

from . import backend, checks
from . import nn_functional as functional
from . import nn_init as init
from . import nn_utils as utils
from .checkpoint import host_copy, load, save
from .engine import Tensor, as_tensor, device_and_dtype
from .ops.batch_norm import batch_norm
from .ops.bce_loss import binary_cross_entropy_with_logits
from .ops.cross_entropy import cross_entropy, nll_loss
from .ops.dropout import dropout
from .ops.layer_norm import layer_norm, normalized_shape_of
from .ops.linear import linear
from .ops.mse_loss import mse_loss
from .ops.elementwise import sigmoid, tanh
from .ops.relu import elu, leaky_relu, relu, silu, softplus
from .ops.robust_loss import huber_loss, l1_loss, smooth_l1_loss
from .ops.softmax import log_softmax, softmax
from .ops.shape import dimension, flatten
from .ops.mse_loss import REDUCTIONS

__all__ = [
    "BCEWithLogitsLoss", "BatchNorm1d", "CrossEntropyLoss", "Dropout", "Flatten", "HuberLoss", "Identity", "L1Loss",
    "Linear", "MSELoss", "Module", "ModuleList", "Parameter", "ReLU", "Sequential", "Sigmoid", "SmoothL1Loss",
    "SyncBatchNorm", "Tanh", "functional", "init", "load", "save", "utils",
]

# nn is one file, not a package, so `import minigraph.nn.utils` would find no submodule; the
# entry in sys.modules is where the import system looks first (os.path is os's precedent).
sys.modules[f"{__name__}.utils"] = utils
sys.modules[f"{__name__}.functional"] = functional
sys.modules[f"{__name__}.init"] = init


def _is_array(value: Any) -> bool:
    return isinstance(value, numpy.ndarray) or backend.is_gpu_array(value)


def _weight_array(owner: str, name: str, weight: Any) -> Any:
    """A loss layer's ``weight`` as the array its buffer keeps: a Tensor's data, an array as it
    is, a list or number as float64 (the loss casts it to its input's dtype); None stays None."""
    if isinstance(weight, Tensor):
        return weight.data
    if weight is None or _is_array(weight):
        return weight
    try:
        return numpy.asarray(weight, dtype=numpy.float64)
    except (TypeError, ValueError):  # NumPy's message names neither the layer nor the argument
        raise TypeError(f"{owner}: got {name}={weight!r}; expected an array, a Tensor or a list of "
                        f"numbers") from None


class Parameter(Tensor):
    """A Tensor that a Module registers as a parameter when assigned as its attribute, as
    ``torch.nn.Parameter``: ``self.w = nn.Parameter(data)``.

    ``data``: a Tensor (its array is shared, not copied, as in PyTorch) or a float32/float64
    NumPy/CuPy array or other data ``Tensor`` takes, placed by the same device rule (``device``
    as in ``Tensor``; a Tensor stays on its device). ``requires_grad`` defaults to True; a
    Parameter made with ``requires_grad=False`` is still a parameter of its module (listed by
    ``parameters()``, saved by ``state_dict``, moved by ``to``), only frozen. Layers make
    their weights Parameters, so ``isinstance(p, nn.Parameter)`` holds for them.
    """

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, *, device: str | None = None) -> None:
        if data is None:
            raise TypeError("Parameter: got data=None; expected a Tensor or an array, e.g. "
                            "nn.Parameter(numpy.zeros(3, dtype=numpy.float32))")
        super().__init__(data, requires_grad=requires_grad, device=device)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as in PyTorch."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _check_path(where: str, target: Any) -> None:
    """A TypeError naming ``where`` unless ``target`` is a string (a dotted path)."""
    if not isinstance(target, str):
        raise TypeError(f"{where}: got target={target!r} ({type(target).__name__}); expected a dotted path "
                        f"string, e.g. '0.weight'")


class RemovableHandle:
    """What registering a hook returns: ``remove()`` takes the hook off (twice is harmless)."""

    _next_id = 0

    def __init__(self, hooks: dict, hook: Callable[..., Any]) -> None:
        RemovableHandle._next_id += 1
        self.id = RemovableHandle._next_id
        self._hooks = hooks
        hooks[self.id] = hook

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class Module:
    """Base class of layers and networks.

    Subclasses call ``super().__init__()`` first, assign their parameters,
    buffers and sub-modules as attributes, and implement ``forward``; calling the
    module calls ``forward``. Names are dotted paths, e.g. ``layers.0.weight``.
    """

    training: bool
    # Buffers an older checkpoint may lack: load_state_dict keeps the module's own value for
    # them instead of calling the key missing (BatchNorm1d's num_batches_tracked, added later).
    _optional_buffers: tuple[str, ...] = ()

    def __init__(self) -> None:
        # Plain object.__setattr__: our own __setattr__ needs these dicts to exist.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})

    # --- registration: each value lives in __dict__ (fast reads); the registries remember its
    # --- kind and the order --------------------------------------------------------------
    def _registries(self, name: str) -> tuple[dict, dict, dict]:
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() ran; call super().__init__() "
                f"at the top of {type(self).__name__}.__init__"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        parameters, buffers, modules = self._registries(name)
        if name in buffers:  # stays a buffer: ops update it in place, state_dict saves it
            if value is not None and not _is_array(value):
                raise TypeError(f"{type(self).__name__}.{name} is a buffer; got {_describe(value)}, "
                                f"expected a NumPy/CuPy array (or None)")
            buffers[name] = value
        elif isinstance(value, Parameter) or (isinstance(value, Tensor) and value.requires_grad and value.is_leaf):
            modules.pop(name, None)
            parameters[name] = value
        elif name in parameters and value is not None:
            # A detached or computed tensor here would silently drop out of training and checkpoints.
            raise TypeError(f"{type(self).__name__}.{name} is a parameter; got {_describe(value)}, "
                            f"expected an nn.Parameter or a leaf Tensor with requires_grad=True (or "
                            f"None to remove it). To put a frozen one here, assign "
                            f"nn.Parameter(data, requires_grad=False)")
        else:
            parameters.pop(name, None)
            if isinstance(value, Module):
                modules[name] = value  # a replaced child keeps its place: Sequential's order
            else:
                modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        # Without this, `del m.weight` would leave a parameter that optimizers and state_dict still see.
        for registry in self._registries(name):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Any) -> None:
        """Add a buffer: an array saved in ``state_dict`` and moved by ``to``, but not trained.

        ``array``: a NumPy or CuPy array, or None (declared but absent; skipped
        by ``state_dict``). Later assignments to ``self.<name>`` replace it.
        """
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"register_buffer: got name {name!r}; expected a non-empty string "
                             f"without dots")
        buffers = self._registries(name)[1]
        if name not in buffers and hasattr(self, name):
            raise KeyError(f"register_buffer: {type(self).__name__} already has an attribute "
                           f"{name!r}; choose another name")
        if array is not None and not _is_array(array):
            raise TypeError(f"register_buffer({name!r}): got {_describe(array)}; expected a "
                            f"NumPy/CuPy array or None")
        buffers[name] = array
        object.__setattr__(self, name, array)

    # --- walking the tree: one walker; everything else reads the modules it yields ----------
    def named_modules(self) -> Iterator[tuple[str, "Module"]]:
        """(dotted name, module) for this module ('') and every descendant, each once, pre-order."""
        seen: set[int] = set()
        stack = [("", self)]
        while stack:
            prefix, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield prefix, module
            stack.extend(reversed([(f"{prefix}.{name}" if prefix else name, child)
                                   for name, child in module._modules.items()]))

    def modules(self) -> Iterator["Module"]:
        """This module and every descendant, each once."""
        return (module for _, module in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """(name, module) for each direct sub-module, in registration order, each once."""
        seen: set[int] = set()
        for name, child in list(self._modules.items()):
            if id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator["Module"]:
        """Each direct sub-module, in registration order, each once."""
        return (child for _, child in self.named_children())

    def apply(self, fn: Callable[["Module"], Any]) -> "Module":
        """Call ``fn(module)`` on every sub-module, then on this one (PyTorch's order: children
        first, so ``fn`` sees a parent after all it holds); returns self. For custom initialisation,
        e.g. ``model.apply(init)`` with ``init`` writing ``m.weight.data[...]`` for each Linear."""
        if not callable(fn):
            raise TypeError(f"{type(self).__name__}.apply: got {_describe(fn)}; expected a function "
                            f"of one module, e.g. model.apply(lambda m: print(type(m).__name__))")
        done: set[int] = set()

        def visit(module: "Module") -> None:
            done.add(id(module))
            for child in module.children():
                if id(child) not in done:  # a module held twice is visited once
                    visit(child)
            fn(module)

        visit(self)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Set ``requires_grad`` of every parameter (``False`` freezes them all); returns self.

        Frozen parameters stay parameters: ``state_dict`` saves them and optimizers skip them."""
        flag = checks.flag(f"{type(self).__name__}.requires_grad_", "requires_grad", requires_grad)
        for parameter in self.parameters():
            parameter.requires_grad = flag
        return self

    def _named(self, kind: str) -> Iterator[tuple[str, Any]]:
        """(dotted name, member) of each module's ``kind`` registry, own members before children's."""
        seen: set[int] = set()
        for prefix, module in self.named_modules():
            for name, member in module.__dict__[kind].items():
                if member is not None and id(member) not in seen:
                    seen.add(id(member))
                    yield (f"{prefix}.{name}" if prefix else name), member

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, parameter) for every parameter, each once even if shared, in registration order."""
        return self._named("_parameters")

    def parameters(self) -> Iterator[Tensor]:
        """Every parameter, each once, in registration order; pass it to an optimizer."""
        return (parameter for _, parameter in self._named("_parameters"))

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        """(dotted name, array) for every buffer that is not None, each once."""
        return self._named("_buffers")

    def buffers(self) -> Iterator[Any]:
        """Every buffer array that is not None, each once."""
        return (buffer for _, buffer in self._named("_buffers"))

    # --- modes and devices ----------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set training mode (``mode=False``: evaluation) here and in every sub-module; returns self."""
        # As PyTorch: train("eval") or train("False") would otherwise mean training.
        if not isinstance(mode, (bool, numpy.bool_)):
            raise ValueError(f"{type(self).__name__}.train: got mode={mode!r}; expected True or "
                             f"False (module.eval() is train(False))")
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Evaluation mode (batch norm uses its running statistics); same as ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient: ``.grad`` to None (PyTorch's default), or with
        ``set_to_none=False`` each existing ``.grad`` array zeroed in place."""
        utils._clear_grads(self.parameters(), checks.flag(f"{type(self).__name__}.zero_grad", "set_to_none",
                                                          set_to_none))

    def to(self, target: Any = None, dtype: Any = None, *, device: str | None = None) -> "Module":
        """Move parameters, their gradients and buffers to a device ('cpu', 'gpu', 'auto') and/or
        convert the floating ones to a dtype (float32, float64), in place, as PyTorch's:
        ``to("gpu")``, ``to(numpy.float64)``, ``to("gpu", numpy.float32)`` or by keyword.

        The parameter Tensors stay the same objects, so references to them stay valid; build
        optimizers after moving, since their state lives where, and in the dtype, the parameters
        were when it was created. Integer buffers (BatchNorm1d's count) keep their dtype. Returns self.
        """
        owner = f"{type(self).__name__}.to"
        device, dtype = device_and_dtype(owner, target, dtype, device)
        dtype = None if dtype is None else _resolve_float_dtype(owner, dtype)

        def moved(array: Any) -> Any:
            if dtype is not None and array.dtype.kind == "f":
                array = array.astype(dtype, copy=False)
            return array if device is None else backend.to_device(array, device)

        for parameter in self.parameters():
            grad, parameter.grad = parameter.grad, None  # data and grad move together, never apart
            parameter.data = moved(parameter.data)
            if grad is not None:
                parameter.grad = moved(grad)
        for module in self.modules():
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    setattr(module, name, moved(buffer))
        return self

    def float(self) -> "Module":
        """Floating parameters and buffers to float32, in place (``to(numpy.float32)``)."""
        return self.to(dtype=numpy.float32)

    def double(self) -> "Module":
        """Floating parameters and buffers to float64, in place (``to(numpy.float64)``)."""
        return self.to(dtype=numpy.float64)

    def cpu(self) -> "Module":
        """Everything to the host, in place (``to("cpu")``)."""
        return self.to("cpu")

    def cuda(self, device: Any = None) -> "Module":
        """Everything to the GPU, in place (``to("gpu")``); minigraph uses one GPU, so ``device``
        may only be None or 0."""
        if device not in (None, 0):
            raise ValueError(f"{type(self).__name__}.cuda: got device={device!r}; expected None or 0 "
                             f"(minigraph uses the current GPU)")
        return self.to("gpu")

    # --- registration by name, and lookup by dotted path ------------------------------------
    def add_module(self, name: str, module: "Module | None") -> None:
        """Register ``module`` as the child ``name`` (as ``self.<name> = module``)."""
        self._check_name("add_module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): got {_describe(module)}; expected an nn.Module or None")
        setattr(self, name, module)

    register_module = add_module

    def register_parameter(self, name: str, param: "Parameter | None") -> None:
        """Register ``param`` (an ``nn.Parameter``) as ``name`` (as ``self.<name> = param``)."""
        self._check_name("register_parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): got {_describe(param)}; expected an nn.Parameter "
                            f"or None, e.g. nn.Parameter(numpy.zeros(3))")
        setattr(self, name, param)

    def _check_name(self, where: str, name: Any) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{where}: got name {name!r}; expected a non-empty string without dots")
        if name not in self.__dict__ and hasattr(type(self), name):
            raise KeyError(f"{where}: {type(self).__name__} already has an attribute {name!r}; "
                           f"choose another name")

    def get_submodule(self, target: str) -> "Module":
        """The module at the dotted path ``target`` ("" is self), e.g. ``"layers.0"``."""
        _check_path("get_submodule", target)
        module = self
        for depth, name in enumerate(target.split(".") if target else []):
            child = module._modules.get(name)
            if child is None:
                where = ".".join(target.split(".")[:depth]) or "the module itself"
                raise AttributeError(f"get_submodule({target!r}): {where} ({type(module).__name__}) has no "
                                     f"submodule {name!r}; it has {list(module._modules)}")
            module = child
        return module

    def get_parameter(self, target: str) -> Tensor:
        """The parameter at the dotted path ``target``, e.g. ``"layers.0.weight"``."""
        return self._member("get_parameter", "_parameters", target)

    def get_buffer(self, target: str) -> Any:
        """The buffer at the dotted path ``target``, e.g. ``"1.running_mean"``."""
        return self._member("get_buffer", "_buffers", target)

    def _member(self, where: str, kind: str, target: str) -> Any:
        _check_path(where, target)
        path, _, name = target.rpartition(".")
        module = self.get_submodule(path)
        if module.__dict__[kind].get(name) is None:
            raise AttributeError(f"{where}({target!r}): {type(module).__name__} has no {kind[1:-1]} {name!r}; "
                                 f"it has {[k for k, v in module.__dict__[kind].items() if v is not None]}")
        return module.__dict__[kind][name]

    # --- state ----------------------------------------------------------
    def _state_arrays(self) -> dict[str, Any]:
        """Name -> live array of every parameter and buffer: each module's parameters, then its
        buffers, then its children's, as in PyTorch."""
        state: dict[str, Any] = {}
        for prefix, module in self.named_modules():
            for name, member in [*module._parameters.items(), *module._buffers.items()]:
                if member is not None:
                    state[f"{prefix}.{name}" if prefix else name] = \
                        member.data if isinstance(member, Tensor) else member
        return state

    def state_dict(self) -> dict[str, numpy.ndarray]:
        """Name -> host NumPy copy of every parameter and buffer (running statistics included).

        The copies share no memory with the model, so later training does not
        change them. Write it to disk with ``nn.save``.
        """
        return {key: host_copy(array) for key, array in self._state_arrays().items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` into this module's parameters and buffers, in place.

        Values may be NumPy or CuPy arrays or Tensors; each is copied into the
        existing array, keeping the module's device and dtype. A checkpoint written before
        BatchNorm1d counted its batches has no ``num_batches_tracked``: it loads even with
        ``strict``, and the count is left as it is (0 in a new layer), as PyTorch does for
        its older checkpoints. With ``strict``
        (the default) missing or unexpected keys are a ValueError, and so is a
        shape mismatch, always. Nothing is copied unless every check passes.
        Returns ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: got {_describe(state_dict)}; expected a mapping of "
                            f"names to arrays, e.g. nn.load('model.npz')")
        targets = self._state_arrays()
        optional = {f"{prefix}.{name}" if prefix else name
                    for prefix, module in self.named_modules() for name in module._optional_buffers}
        missing = [key for key in targets if key not in state_dict and key not in optional]
        unexpected = [key for key in state_dict if key not in targets]
        if any(type(v).__module__.startswith("torch") for v in state_dict.values()):
            raise TypeError(f"load_state_dict: this looks like a PyTorch state dict (it holds torch "
                            f"tensors). {_TORCH_LAYOUT}")
        if strict and (missing or unexpected):
            raise ValueError(
                f"load_state_dict for {type(self).__name__}: missing keys {missing}, unexpected "
                f"keys {unexpected}; expected exactly the keys of state_dict(). Pass strict=False "
                f"to load the keys that match"
            )
        sources = {}
        for key, target in targets.items():
            if key in state_dict:
                sources[key] = _loadable(key, state_dict[key], target)
                # Checked with the values, before anything is copied: a read-only array failing
                # midway would leave the model half loaded, and a zero-stride view (a broadcast
                # buffer) takes the copy on CuPy, keeping one element of it for every position.
                if not backend.can_update_in_place(target):
                    raise ValueError(f"load_state_dict: the model's {key!r} is read-only or a "
                                     f"broadcast view, so it cannot be loaded in place; nothing "
                                     f"was loaded. Give the module writable arrays first: a parameter "
                                     f"Tensor(array.copy(), requires_grad=True), a buffer array.copy()")
        for key, value in sources.items():
            # In place, so optimizers and graphs holding these arrays see the new values.
            targets[key][...] = value
        for param in self.parameters():
            param._version[0] += 1  # graphs built before the load can no longer backward
        for module in self.modules():
            module._state_overwritten()
        return IncompatibleKeys(missing, unexpected)

    def _state_overwritten(self) -> None:
        """Called on every module after its arrays were written in place from outside (by
        ``load_state_dict``, or by DDP's broadcast); a layer that keeps a host copy of a buffer
        (BatchNorm1d's count) forgets it here."""

    # --- calling and printing --------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define "
                                  f"forward(self, ...) in the subclass")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pre, post = self.__dict__.get("_forward_pre_hooks"), self.__dict__.get("_forward_hooks")
        if not pre and not post:
            return self.forward(*args, **kwargs)
        for hook in list(pre.values()) if pre else ():  # a copy: a hook may remove itself
            changed = hook(self, args)
            if changed is not None:
                args = changed if isinstance(changed, tuple) else (changed,)
        output = self.forward(*args, **kwargs)
        for hook in list(post.values()) if post else ():
            changed = hook(self, args, output)
            if changed is not None:
                output = changed
        return output

    def register_forward_pre_hook(self, hook: Callable[["Module", tuple], Any]) -> "RemovableHandle":
        """Call ``hook(module, args)`` before each ``forward``; a return value other than None
        replaces the positional arguments (a tuple, or one value). Returns a handle whose
        ``remove()`` takes the hook off."""
        return self._add_hook("register_forward_pre_hook", "_forward_pre_hooks", hook)

    def register_forward_hook(self, hook: Callable[["Module", tuple, Any], Any]) -> "RemovableHandle":
        """Call ``hook(module, args, output)`` after each ``forward``; a return value other than
        None replaces the output. Returns a handle whose ``remove()`` takes the hook off."""
        return self._add_hook("register_forward_hook", "_forward_hooks", hook)

    def _add_hook(self, where: str, kind: str, hook: Any) -> "RemovableHandle":
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}.{where}: got {_describe(hook)}; expected a function")
        hooks = self.__dict__.get(kind)
        if hooks is None:  # created on first use: a module without hooks pays one dict lookup per call
            hooks = {}
            object.__setattr__(self, kind, hooks)
        return RemovableHandle(hooks, hook)

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr``; layers override it."""
        return ""

    def __repr__(self) -> str:
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}(\n  {extra}" if extra else f"{type(self).__name__}("
        return head + "\n" + "\n".join(lines) + "\n)"


_TORCH_LAYOUT = ("minigraph's Linear.weight is (in_features, out_features), the transpose of "
                 "PyTorch's (out, in), so a PyTorch weight would load transposed, and silently so "
                 "when it is square. Convert first: {k: (v.T if k.endswith('weight') and v.ndim == 2 "
                 "else v).numpy() for k, v in torch_state.items()}, which loads as it is (BatchNorm1d's "
                 "running statistics, weight, bias and num_batches_tracked need no change).")


def _loadable(key: str, value: Any, target: Any) -> Any:
    """``value`` checked and converted to ``target``'s device and dtype (a copy when it must move)."""
    value = value.data if isinstance(value, Tensor) else value
    if not _is_array(value):
        # Without a dtype first: asarray(None, dtype=float32) is nan and asarray("2.5", ...) is
        # 2.5, so a None or a string would load silently into a one-element parameter.
        try:
            converted = numpy.asarray(value)
        except (TypeError, ValueError):
            converted = None
        if converted is None or converted.dtype.kind not in "biuf":
            raise TypeError(f"load_state_dict: {key!r} is {_describe(value)}; expected an "
                            f"array of shape {target.shape}") from None
        value = converted
    if value.shape != target.shape:
        hint = (f" It is the transpose: {_TORCH_LAYOUT}" if value.ndim == 2 and value.shape == target.shape[::-1]
                else " (was the model built with the same sizes?)")
        raise ValueError(f"load_state_dict: {key!r} has shape {value.shape} in the state dict but "
                         f"{target.shape} in the model; expected identical shapes.{hint}")
    if value.dtype.kind not in "biuf":
        raise TypeError(f"load_state_dict: {key!r} has dtype {value.dtype}; expected real "
                        f"numbers (it becomes {target.dtype})")
    # Converted now, so that a bad value fails before anything is overwritten.
    return backend.to_device(value, backend.device_of(target)).astype(target.dtype, copy=False)


def _describe(value: Any) -> str:
    """'a Tensor of shape (3, 4)', 'an ndarray of shape (3,)', 'a list', for error messages."""
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    shape = getattr(value, "shape", None)
    return f"{article} {kind} of shape {tuple(shape)}" if shape is not None else f"{article} {kind}"


def _resolve_float_dtype(layer: str, dtype: Any) -> numpy.dtype:
    try:
        resolved = numpy.dtype(dtype)
    except TypeError:
        resolved = None
    # float16 and longdouble are float dtypes too, but no Tensor holds them.
    if resolved is None or resolved.name not in ("float32", "float64"):
        raise TypeError(f"{layer}: got dtype={dtype!r}; expected a float dtype, numpy.float32 or "
                        f"numpy.float64")
    return resolved


class Linear(Module):
    """Affine map ``y = x @ weight + bias``. x: (N, in_features) -> y: (N, out_features).

    ``weight``: (in_features, out_features), the transpose of PyTorch's layout, so
    that the formula reads as matrix algebra. ``bias``: (out_features,), or None
    with ``bias=False``.

    Initialisation (He/Kaiming, suited to ReLU nets): weight ~ Normal(0, 2/in_features),
    bias = 0. Pass ``rng`` (a ``numpy.random.Generator`` or an int seed) for
    reproducible weights; without it they come from NumPy's default generator of
    minigraph, which ``minigraph.manual_seed`` seeds (fresh entropy otherwise). ``dtype`` defaults to
    float32 as in PyTorch; ``device`` to ``backend.default_device()``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = numpy.float32,
        device: str | None = None,
        rng: numpy.random.Generator | int | None = None,
    ) -> None:
        super().__init__()
        self.in_features = checks.integer("Linear", "in_features", in_features, low=1)
        self.out_features = checks.integer("Linear", "out_features", out_features, low=1)
        dtype = _resolve_float_dtype("Linear", dtype)
        device = backend.default_device() if device is None else backend.check_device(device)
        try:
            generator = backend.default_generator(numpy) if rng is None else numpy.random.default_rng(rng)
        except (TypeError, ValueError):  # NumPy's message names neither the layer nor the argument
            raise TypeError(f"Linear: got rng={rng!r}; expected None, a non-negative int seed or a "
                            f"numpy.random.Generator") from None
        # Drawn in float64 on the host, so a seed gives the same weights on every device and dtype.
        weight = generator.normal(0.0, math.sqrt(2.0 / self.in_features),
                                  size=(self.in_features, self.out_features))
        self.weight = Parameter(weight.astype(dtype), device=device)
        if checks.flag("Linear", "bias", bias):  # bias="False" must not make a bias
            zeros = numpy.zeros(self.out_features, dtype=dtype)
            self.bias = Parameter(zeros, device=device)
        else:
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, in_features) -> (N, out_features)."""
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class BatchNorm1d(Module):
    """Batch normalization of x: (N, num_features), one mean and variance per column; or of a
    batch of sequences x: (N, num_features, L), one mean and variance per channel over N·L values.

    Training mode normalises with the batch's statistics and updates the
    buffers ``running_mean`` (zeros) and ``running_var`` (ones) in place:
    ``running = (1 − momentum)·running + momentum·batch``, the batch variance
    unbiased (PyTorch's convention). The buffer ``num_batches_tracked`` (an int64 0-d
    array) counts those updates; with ``momentum=None`` the running statistics are the
    cumulative average of every batch's, momentum being 1/num_batches_tracked.
    ``reset_running_stats()`` starts them, and the count, afresh. The layer keeps the count on the
    host as well, so that 1/n costs no GPU wait: it reads the buffer only after the buffer was
    replaced (``to``, assignment) or written by ``load_state_dict`` (or DDP's first broadcast).
    Write the count only in those ways, not in place (``bn.num_batches_tracked[...] = 0`` goes
    unseen by the host's count). Evaluation mode (``eval()``) normalises with the running
    statistics and leaves them and the count alone. ``ddof`` changes only the
    variance used to normalise in training (``ddof=1`` with ``eps=0`` is R's
    ``scale()``). ``weight`` (gamma, ones) and ``bias`` (beta, zeros) are
    parameters unless ``affine=False``. With ``track_running_stats=False`` there
    are no buffers and both modes use batch statistics.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        ddof: int = 0,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = numpy.float32,
        device: str | None = None,
    ) -> None:
        super().__init__()
        layer = type(self).__name__
        self.num_features = checks.integer(layer, "num_features", num_features, low=1)
        self.eps = checks.real(layer, "eps", eps, low=0.0)
        self.momentum = None if momentum is None else checks.real(
            layer, "momentum", momentum, low=0.0, high=1.0, example="momentum=0.1, or None for a cumulative average")
        self.ddof = checks.integer(layer, "ddof", ddof, low=0)
        self.affine = checks.flag(layer, "affine", affine)
        self.track_running_stats = checks.flag(layer, "track_running_stats", track_running_stats)
        dtype = _resolve_float_dtype(layer, dtype)
        device = backend.default_device() if device is None else backend.check_device(device)

        def filled(value: float) -> Any:
            return backend.to_device(numpy.full(self.num_features, value, dtype=dtype), device)

        if self.affine:
            self.weight = Parameter(filled(1.0), device=device)
            self.bias = Parameter(filled(0.0), device=device)
        else:
            self.weight = None
            self.bias = None
        self.register_buffer("running_mean", filled(0.0) if self.track_running_stats else None)
        self.register_buffer("running_var", filled(1.0) if self.track_running_stats else None)
        count = backend.to_device(numpy.zeros((), dtype=numpy.int64), device) if self.track_running_stats else None
        self.register_buffer("num_batches_tracked", count)
        # [the buffer array it counts, its value]: the host's copy of the count, trusted only while
        # the buffer is still that array. One list, updated in place: a layer converted to
        # SyncBatchNorm shares it with the buffer, and copy/pickle keep the two together.
        self._host_count: list[Any] = [count, 0]

    _optional_buffers = ("num_batches_tracked",)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, num_features) or (N, num_features, L) -> same shape. Training needs N·L >= 2."""
        use_batch_statistics = self.training or self.running_mean is None
        return batch_norm(
            x, self.weight, self.bias, self.running_mean, self.running_var,
            training=use_batch_statistics, momentum=self._batch_weight(), eps=self.eps, ddof=self.ddof,
        )

    def _batch_weight(self) -> float:
        """The weight of this batch in the running statistics (the op's ``momentum``); in
        training mode with running statistics, it first counts the batch, as PyTorch does."""
        count = self.num_batches_tracked
        if not self.training or count is None:
            return 0.0 if self.momentum is None else self.momentum  # the running statistics stay
        count += 1  # in place, on the buffer's device: no wait for a GPU
        known = self._host_count
        if known[0] is count:
            known[1] += 1
        elif self.momentum is None:  # replaced or loaded since last counted: read it, once
            known[:] = [count, int(backend.to_device(count, "cpu"))]
        # else: not needed for a number; read at the first momentum=None forward, if any
        return self.momentum if self.momentum is not None else 1.0 / known[1]

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1 and ``num_batches_tracked`` 0, in place (as
        PyTorch's): with ``momentum=None`` the cumulative average starts again at the next batch."""
        if self.num_batches_tracked is not None:
            self.running_mean[...] = 0.0
            self.running_var[...] = 1.0
            self.num_batches_tracked[...] = 0
            self._host_count[:] = [self.num_batches_tracked, 0]

    def _state_overwritten(self) -> None:
        self._host_count[0] = None  # the count may have changed under us: read it when next needed

    def extra_repr(self) -> str:
        ddof = f", ddof={self.ddof}" if self.ddof else ""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}{ddof}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class LayerNorm(Module):
    """Layer normalization of each sample over its last dims, as ``torch.nn.LayerNorm``:
    x: (*, *normalized_shape) -> same shape, each position of the leading dims normalised over
    the ``normalized_shape`` values behind it, by their mean and biased variance (eps inside
    the square root). The same in training and evaluation: there are no running statistics.

    ``normalized_shape``: an int (the last dim) or a tuple of the last dims' sizes. ``weight``
    (ones) and ``bias`` (zeros), of shape normalized_shape, are parameters unless
    ``elementwise_affine=False`` (then both are None); ``bias=False`` leaves out the bias alone.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: Any = numpy.float32,
        device: str | None = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape_of("LayerNorm", normalized_shape)
        self.eps = checks.real("LayerNorm", "eps", eps, low=0.0)
        self.elementwise_affine = checks.flag("LayerNorm", "elementwise_affine", elementwise_affine)
        with_bias = checks.flag("LayerNorm", "bias", bias)  # bias="False" must not make a bias
        dtype = _resolve_float_dtype("LayerNorm", dtype)
        device = backend.default_device() if device is None else backend.check_device(device)

        def filled(value: float) -> Parameter:
            return Parameter(backend.to_device(numpy.full(self.normalized_shape, value, dtype=dtype), device),
                             device=device)

        self.weight = filled(1.0) if self.elementwise_affine else None
        self.bias = filled(0.0) if self.elementwise_affine and with_bias else None

    def forward(self, x: Tensor) -> Tensor:
        """x: (*, *normalized_shape) -> same shape."""
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


# The training forward of SyncBatchNorm across the processes of a data-parallel job. Set by
# minigraph.distributed.init() when the job has more than one process; nn itself never imports
# MPI, so until then (and in any single process) SyncBatchNorm is exactly BatchNorm1d.
synchronized_batch_norm: Callable[..., Tensor] | None = None


class SyncBatchNorm(BatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the whole batch, over every process.

    Same arguments, behaviour, parameters, buffers and ``state_dict`` keys as ``BatchNorm1d``, so
    a checkpoint moves between the two. In a data-parallel job (``minigraph.distributed.init()``
    with several processes), training mode normalises with the mean and variance of the rows of
    all processes together, and every process updates its running statistics with the same
    global mean and unbiased global variance. x: (N_rank, num_features), any N_rank >= 0 per
    process; the whole batch needs more than one row. Evaluation mode never communicates: each
    process normalises its own rows with the running statistics (without them, with its own
    rows' statistics, as PyTorch does). Until ``init()``, or in a job of one process, this is
    ``BatchNorm1d``. The math is ``minigraph.distributed.sync_batch_norm``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """x: (N_rank, num_features) or (N_rank, num_features, L) -> same shape."""
        if self.training and synchronized_batch_norm is not None:
            return synchronized_batch_norm(x, self.weight, self.bias, self.running_mean,
                                           self.running_var, momentum=self._batch_weight(),
                                           eps=self.eps, ddof=self.ddof)
        return super().forward(x)

    @classmethod
    def convert_sync_batchnorm(cls, module: Module) -> Module:
        """``module`` with every ``BatchNorm1d`` in it replaced by a ``SyncBatchNorm`` that holds
        the same parameter Tensors and buffers (so optimizers built already keep working).

        Returns the converted module: ``module`` itself, changed in place, unless ``module`` is
        a BatchNorm1d, whose replacement is returned.
        """
        replacements: dict[int, Module] = {}  # a layer used twice is replaced by one layer

        def converted(layer: Module) -> Module:
            if type(layer) is not BatchNorm1d:
                return layer
            if id(layer) not in replacements:
                sync = cls.__new__(cls)
                registries = {key: dict(vars(layer)[key]) for key in ("_parameters", "_buffers", "_modules")}
                vars(sync).update({**vars(layer), **registries})
                replacements[id(layer)] = sync
            return replacements[id(layer)]

        for parent in list(module.modules()):
            for name, child in list(parent._modules.items()):
                replacement = converted(child)
                if replacement is not child:
                    setattr(parent, name, replacement)
        return converted(module)


class ReLU(Module):
    """Elementwise max(x, 0). x: any shape -> same shape."""

    def forward(self, x: Tensor) -> Tensor:
        return relu(x)


class LeakyReLU(Module):
    """x where x > 0, ``negative_slope``·x elsewhere. x: any shape -> same shape."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = checks.real("LeakyReLU", "negative_slope", negative_slope)
        functional._not_in_place("LeakyReLU", inplace)

    def forward(self, x: Tensor) -> Tensor:
        return leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    """x where x > 0, ``alpha``·(eˣ − 1) elsewhere. x: any shape -> same shape."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = checks.real("ELU", "alpha", alpha)
        functional._not_in_place("ELU", inplace)

    def forward(self, x: Tensor) -> Tensor:
        return elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softplus(Module):
    """log(1 + e^(βx)) / β, linear where βx > ``threshold``. x: any shape -> same shape."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = checks.real("Softplus", "beta", beta, low=0.0, low_open=True)
        self.threshold = checks.real("Softplus", "threshold", threshold, infinite=True)

    def forward(self, x: Tensor) -> Tensor:
        return softplus(x, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class SiLU(Module):
    """x·σ(x) (swish). x: any shape -> same shape."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        functional._not_in_place("SiLU", inplace)

    def forward(self, x: Tensor) -> Tensor:
        return silu(x)


class Softmax(Module):
    """Softmax along ``dim``: x: any shape -> same shape, each slice along dim summing to 1.
    For a classifier's loss use ``CrossEntropyLoss`` on the scores instead (one fused node)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim  # checked against each input's dimensions; None is refused there

    def forward(self, x: Tensor) -> Tensor:
        return softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log(softmax(x)) along ``dim``, computed stably. x: any shape -> same shape."""

    def forward(self, x: Tensor) -> Tensor:
        return log_softmax(x, self.dim)


class Tanh(Module):
    """Elementwise tanh(x). x: any shape -> same shape."""

    def forward(self, x: Tensor) -> Tensor:
        return tanh(x)


class Sigmoid(Module):
    """Elementwise 1 / (1 + exp(−x)). x: any shape -> same shape."""

    def forward(self, x: Tensor) -> Tensor:
        return sigmoid(x)


class Identity(Module):
    """Returns its input unchanged; its arguments are ignored, as in PyTorch (a placeholder
    where a layer is switched off, e.g. ``nn.BatchNorm1d(p) if use_bn else nn.Identity()``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x


class Flatten(Module):
    """Merge the dimensions ``start_dim`` to ``end_dim`` (inclusive; negative counts from the
    end) into one, as ``torch.nn.Flatten``. x: (N, d1, d2, ...) -> (N, d1·d2·...) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = dimension("Flatten", "start_dim", start_dim)
        self.end_dim = dimension("Flatten", "end_dim", end_dim)

    def forward(self, x: Tensor) -> Tensor:
        return flatten(x, self.start_dim, self.end_dim, owner="Flatten")

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class _Loss(Module):
    """A loss layer: the functional loss with the ``reduction`` checked once, at construction."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: got reduction={reduction!r}; expected one "
                             f"of {REDUCTIONS}")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """Mean squared error between pred and target of identical shapes.

    ``reduction``: "mean" (over all elements), "sum" or "none" (elementwise).
    ``loss_fn(pred, target)``: pred, target: (N, ...) -> a scalar, or pred's shape for "none".
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return mse_loss(pred, target, self.reduction)


class _ClassLoss(_Loss):
    """A loss over class labels: ``weight`` (C,) class weights kept as a buffer (saved by
    ``state_dict``, moved by ``to``), as PyTorch's, and ``ignore_index``."""

    def __init__(self, reduction: str = "mean", *, weight: Any = None, ignore_index: int = -100) -> None:
        super().__init__(reduction)
        owner = type(self).__name__
        self.ignore_index = checks.integer(owner, "ignore_index", ignore_index, low=-(2 ** 63))
        weight = _weight_array(owner, "weight", weight)
        if weight is not None and (weight.ndim != 1 or weight.dtype.kind not in "iuf"):
            raise ValueError(f"{owner}: got weight of shape {weight.shape} and dtype {weight.dtype}; expected "
                             f"one real weight per class, shape (C,)")
        self.register_buffer("weight", weight)

    def extra_repr(self) -> str:
        shown = [super().extra_repr()] if super().extra_repr() else []
        return ", ".join(shown + ([f"ignore_index={self.ignore_index}"] if self.ignore_index != -100 else []))


class CrossEntropyLoss(_ClassLoss):
    """Softmax cross-entropy of class scores against integer labels or class probabilities
    (``minigraph.cross_entropy``).

    ``reduction``: "mean" (over the rows), "sum" or "none" (one loss per row).
    ``loss_fn(logits, labels)``: logits (N, C), labels (N,) integers in [0, C) or equal to
    ``ignore_index`` (a NumPy or CuPy array, not a Tensor), or class probabilities of the
    logits' shape and dtype (an array, or a Tensor that may require grad; "mean" then divides
    by N, and ``ignore_index`` must be negative) -> a scalar, or (N,) for "none".
    ``weight``: (C,) class weights, kept as a buffer (saved by ``state_dict``, moved by ``to``),
    as PyTorch's; ``label_smoothing`` ε in [0, 1]. See ``minigraph.cross_entropy``.
    """

    def __init__(self, reduction: str = "mean", *, weight: Any = None, ignore_index: int = -100,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction, weight=weight, ignore_index=ignore_index)
        self.label_smoothing = checks.real(type(self).__name__, "label_smoothing", label_smoothing, low=0.0,
                                           high=1.0)

    def forward(self, logits: Tensor, labels: Any) -> Tensor:
        return cross_entropy(logits, labels, self.reduction, weight=self.weight, ignore_index=self.ignore_index,
                             label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        shown = [super().extra_repr()] if super().extra_repr() else []
        return ", ".join(shown + ([f"label_smoothing={self.label_smoothing}"] if self.label_smoothing else []))


class NLLLoss(_ClassLoss):
    """Negative log-likelihood of integer labels under log-probabilities (``minigraph.nll_loss``),
    e.g. after ``nn.LogSoftmax(dim=1)``: ``loss_fn(log_probs, labels)``, log_probs (N, C), labels
    (N,) integers in [0, C) or ``ignore_index`` -> a scalar ("mean": weighted, "sum"), or (N,)
    ("none"). ``weight``: (C,) class weights, kept as a buffer."""

    def forward(self, log_probs: Tensor, labels: Any) -> Tensor:
        return nll_loss(log_probs, labels, self.reduction, weight=self.weight, ignore_index=self.ignore_index)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid and binary cross-entropy in one stable node (``minigraph.binary_cross_entropy_with_logits``).

    ``loss_fn(input, target)``: logits and targets in [0, 1] of one shape (N, ...) and dtype ->
    a scalar ("mean" over all elements, "sum") or input's shape ("none"). ``weight`` (each
    element's) and ``pos_weight`` (the positive class's, e.g. (C,) for (N, C) logits): arrays,
    lists or Tensors that broadcast to the input's shape, kept as buffers (saved by
    ``state_dict``, moved by ``to``), as PyTorch's; None: all 1.
    """

    def __init__(self, weight: Any = None, *, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", _weight_array(type(self).__name__, "weight", weight))
        self.register_buffer("pos_weight", _weight_array(type(self).__name__, "pos_weight", pos_weight))

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002 (torch's name)
        return binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)


class L1Loss(_Loss):
    """Mean absolute error (``minigraph.l1_loss``): ``loss_fn(input, target)``, both (N, ...) of
    one shape -> a scalar ("mean" over all elements, "sum") or input's shape ("none")."""

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002 (torch's name)
        return l1_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    """Smooth L1 (``minigraph.smooth_l1_loss``): quadratic d²/(2·beta) for |d| < ``beta``, then
    |d| − beta/2; beta = 0 is L1. ``loss_fn(input, target)`` as ``L1Loss``."""

    def __init__(self, reduction: str = "mean", *, beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = checks.real(type(self).__name__, "beta", beta, low=0.0, example="beta=1.0")

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002 (torch's name)
        return smooth_l1_loss(input, target, self.reduction, self.beta)

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [super().extra_repr(), f"beta={self.beta}" if self.beta != 1.0 else ""]))


class HuberLoss(_Loss):
    """Huber loss (``minigraph.huber_loss``): d²/2 for |d| < ``delta``, then delta·(|d| − delta/2),
    i.e. delta times ``SmoothL1Loss(beta=delta)``; delta > 0. ``loss_fn(input, target)`` as ``L1Loss``."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = checks.real(type(self).__name__, "delta", delta, low=0.0, low_open=True, example="delta=1.0")

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002 (torch's name)
        return huber_loss(input, target, self.reduction, self.delta)

    def extra_repr(self) -> str:
        return ", ".join(filter(None, [super().extra_repr(), f"delta={self.delta}" if self.delta != 1.0 else ""]))


class Dropout(Module):
    """Inverted dropout while training: each element is zeroed with probability ``p`` and the
    others scaled by 1/(1 − p); the identity in eval mode. x: any shape -> same shape.

    ``rng``: an int seed, a ``numpy.random.Generator`` / ``cupy.random.Generator``, or None
    (the device's default generator, shared by all such layers, which ``minigraph.manual_seed``
    seeds). With a seed the layer makes one generator per device on first use,
    ``xp.random.default_rng(rng)``, so masks are drawn on the tensor's device and one seed
    repeats the same masks on that device (CuPy's generator draws other numbers than NumPy's,
    so the CPU and the GPU differ). A generator object serves its own device only.
    """

    def __init__(self, p: float = 0.5, rng: Any = None) -> None:
        super().__init__()
        self.p = checks.real("Dropout", "p", p, low=0.0, high=1.0, example="0.5")
        if rng is not None and not isinstance(rng, numbers.Integral):
            backend.device_of_generator(rng, "Dropout", "rng")  # a TypeError now if it is no generator
        elif rng is not None:
            rng = checks.integer("Dropout", "rng", rng)
        self.rng = rng
        self._generators: dict[str, Any] = {}

    def generator(self, x: Tensor) -> Any:
        """The generator this layer draws ``x``'s mask from."""
        if self.rng is not None and not isinstance(self.rng, int):
            return self.rng
        xp = backend.get_array_module(x.data)
        if self.rng is None:
            return backend.default_generator(xp)
        if xp.__name__ not in self._generators:
            self._generators[xp.__name__] = xp.random.default_rng(self.rng)
        return self._generators[xp.__name__]

    def forward(self, x: Tensor) -> Tensor:
        x = as_tensor("Dropout", "x", x)
        if not self.training or self.p == 0:
            return x  # nothing drawn, as in PyTorch
        return dropout(x, self.p, True, self.generator(x))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _ModuleSequence(Module):
    """Modules held in order as children named "0", "1", ...: what ``Sequential`` and
    ``ModuleList`` share. Registering each as an attribute (``setattr``) makes it a child like
    any other, so ``parameters()``, ``state_dict()`` ("0.weight"), ``to()`` and ``train()``
    see it.
    """

    def _checked(self, where: str, modules: Any, item: str = "item") -> list[Module]:
        """``modules`` (an iterable) as a list, every item a Module, or a TypeError naming ``where``
        and the bad ``item`` by its position."""
        try:
            iterator = iter(modules)
        except TypeError:
            raise TypeError(f"{where}: got {_describe(modules)}; expected an iterable of Modules, "
                            f"e.g. [nn.Linear(4, 3), nn.ReLU()]") from None
        # Read outside the try: a TypeError raised while a generator makes the modules (a layer
        # built with a missing argument) is the user's error, not "not an iterable".
        modules = list(iterator)
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                what = f"got {_describe(module)}" if item == "module" else f"{item} {index} is {_describe(module)}"
                raise TypeError(f"{where}: {what}; expected a Module such as nn.Linear(4, 3) or nn.ReLU()")
        return modules

    def _number(self, modules: list[Module]) -> None:
        """Make ``modules`` the children "0", "1", ..., in order (a name that exists keeps its place)."""
        for index, module in enumerate(modules):
            setattr(self, str(index), module)

    def append(self, module: Module) -> "_ModuleSequence":
        """Add ``module`` at the end; returns self."""
        (module,) = self._checked(f"{type(self).__name__}.append", [module], "module")
        setattr(self, str(len(self)), module)  # the next number: appending stays O(1)
        return self

    def extend(self, modules: Any) -> "_ModuleSequence":
        """Add each module of the iterable ``modules`` at the end, in order; returns self.
        Nothing is added unless every item is a Module."""
        self._number([*self, *self._checked(f"{type(self).__name__}.extend", modules)])
        return self

    def insert(self, index: int, module: Module) -> None:
        """Put ``module`` before position ``index``, as ``list.insert`` (negative counts from the end)."""
        where = f"{type(self).__name__}.insert"
        (module,) = self._checked(where, [module], "module")
        modules = list(self)
        try:
            modules.insert(operator.index(index), module)
        except TypeError:
            raise TypeError(f"{where}: got index {index!r}; expected an integer") from None
        self._number(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def _of(self, modules: list[Module]) -> "_ModuleSequence":
        raise NotImplementedError

    def _position(self, index: Any, slices: bool = True) -> int | slice:
        """``index`` as a position in [0, len) or a slice, or the IndexError/TypeError a list gives,
        naming the container."""
        if slices and isinstance(index, slice):
            return index
        try:
            position = operator.index(index)
        except TypeError:
            expected = "an integer or a slice" if slices else "an integer"
            raise TypeError(f"{type(self).__name__}: got index {index!r}; expected {expected}") from None
        if not -len(self) <= position < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} is out of range for "
                             f"{len(self)} modules")
        return position % len(self)

    def _renumber(self, modules: list[Module]) -> None:
        """Make ``modules`` the children "0", "1", ..., dropping the old numbering (after a removal)."""
        for name in list(self._modules):
            delattr(self, name)
        self._number(modules)

    def __getitem__(self, index: int | slice) -> Any:
        position = self._position(index)
        modules = list(self._modules.values())
        return self._of(modules[position]) if isinstance(position, slice) else modules[position]

    def __setitem__(self, index: int, module: Module) -> None:
        """Replace the module at ``index`` (negative counts from the end), as on a list."""
        # The index first: seq[1:3] = [a, b] is refused for its slice, not for the list it assigns.
        position = self._position(index, slices=False)
        (module,) = self._checked(f"{type(self).__name__}.__setitem__", [module], "module")
        setattr(self, str(position), module)

    def __delitem__(self, index: int | slice) -> None:
        """Remove the module(s) at ``index`` (an integer or a slice); the rest are renumbered from
        "0", as in PyTorch, so names (and state_dict keys) stay "0", "1", ... in order."""
        modules = list(self._modules.values())
        del modules[self._position(index)]
        self._renumber(modules)

    def pop(self, index: int | slice = -1) -> Any:
        """Remove and return the module at ``index`` (the last by default), renumbering the rest."""
        taken = self[index]
        del self[index]
        return taken

    def _others(self, where: str, other: Any) -> list[Module]:
        """The modules of ``other`` for ``+`` and ``+=``: any iterable of Modules (Sequential
        narrows it to a Sequential, as PyTorch does)."""
        return self._checked(where, other)

    def __add__(self, other: Any) -> "_ModuleSequence":
        """A new container of this one's modules then ``other``'s (the same module objects)."""
        return self._of([*self, *self._others(f"{type(self).__name__} + ...", other)])

    def __iadd__(self, other: Any) -> "_ModuleSequence":
        """Append ``other``'s modules in place; returns self."""
        return self.extend(self._others(f"{type(self).__name__} += ...", other))


class Sequential(_ModuleSequence):
    """Modules applied in order: ``Sequential(m0, m1, ...)(x) == m1(m0(x))``.

    The children are named "0", "1", ..., so parameter names read ``0.weight``.
    Indexable (``seq[0]``, ``seq[-1]``; a slice gives a new Sequential of the same
    module objects, renumbered), ``len()``, iterable, and grows with ``append``,
    ``extend`` and ``insert``, as ``ModuleList`` does. ``seq[i] = layer`` replaces one,
    ``del seq[i]`` (or a slice) and ``pop(i)`` remove and renumber, and ``+``/``+=`` join
    another Sequential, as in PyTorch.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        self._number(self._checked("Sequential", modules, "argument"))

    def _of(self, modules: list[Module]) -> "Sequential":
        return Sequential(*modules)

    def _others(self, where: str, other: Any) -> list[Module]:
        if not isinstance(other, Sequential):
            raise TypeError(f"{where}: got {_describe(other)}; expected a Sequential (PyTorch's "
                            f"Sequential adds only Sequentials); for a list, use extend()")
        return list(other)

    def forward(self, x: Any) -> Any:
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(_ModuleSequence):
    """A list of modules, registered as children, as ``torch.nn.ModuleList``.

    ``ModuleList([m0, m1, ...])`` (any iterable of Modules, or nothing) holds them as children
    named "0", "1", ..., so the parent's ``parameters()``, ``state_dict()`` (keys such as
    ``layers.0.weight``), ``to()`` and ``train()``/``eval()`` reach them, which a plain Python
    list of layers would hide. ``append``, ``extend``, ``insert``, ``len()``, iteration,
    indexing, ``layers[i] = layer``, ``del layers[i]`` (or a slice), ``pop(i)``, ``+`` and ``+=``
    (any iterable of Modules) as on a list; removals renumber the rest from "0", and a slice
    is a new ModuleList of the same module objects, renumbered.
    It has no ``forward``: the parent's forward calls the layers, e.g. ``for layer in
    self.layers: x = layer(x)``.
    """

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        if modules is not None:
            self._number(self._checked("ModuleList", modules))

    def _of(self, modules: list[Module]) -> "ModuleList":
        return ModuleList(modules)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "ModuleList has no forward(): it only holds modules, so it cannot be called. Call "
            "its modules from the parent's forward, e.g. for layer in self.layers: x = layer(x), "
            "or use nn.Sequential to apply them in order")
