"""Graphviz DOT text of the graph behind a tensor, for looking at what backward will walk.

minigraph does not need Graphviz: ``to_dot`` returns text. Render it with the
``dot`` program (``dot -Tsvg graph.dot -o graph.svg``) or any DOT viewer.
"""

from __future__ import annotations

from collections.abc import Mapping

from .engine import Function, Tensor

__all__ = ["to_dot"]

_LEAF_STYLE = 'shape=box, style=filled, fillcolor="lightblue"'
_OP_STYLE = 'shape=ellipse'
_ROOT_STYLE = 'shape=ellipse, style=filled, fillcolor="darkolivegreen1"'


def _quote(text: str) -> str:
    """A DOT string literal; newlines become DOT's centred line breaks."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ("," if len(shape) == 1 else "") + ")"


def to_dot(tensor: Tensor, params: Mapping[str, Tensor] | None = None) -> str:
    """DOT text of every node that ``tensor.backward()`` would reach.

    Op nodes (ellipses) show the op's name and output shape; the op that made
    ``tensor`` is highlighted. Leaves that receive ``.grad`` (boxes) show
    their shape, and their name when ``params`` maps one to them, e.g.
    ``to_dot(loss, params=dict(model.named_parameters()))``. Arrows point
    the way data flows (input -> op). Inputs that need no gradient (data,
    targets) are not recorded by the engine, so they do not appear.

    Each node is drawn once however many ops consume it, and the walk is
    iterative, so graphs of any depth work.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dot: got {type(tensor).__name__}; expected a Tensor, e.g. a loss")
    names = {}
    for name, param in (params or {}).items():
        if not isinstance(param, Tensor):
            raise TypeError(f"to_dot: params[{name!r}] is a {type(param).__name__}; expected a "
                            f"Tensor, e.g. params=dict(model.named_parameters())")
        names.setdefault(id(param), name)

    lines = ["digraph minigraph {", '  node [fontname="Helvetica", fontsize=10];']
    node_ids: dict[int, str] = {}  # id(Function or leaf Tensor) -> DOT node name

    def node(obj: Function | Tensor, is_root: bool = False) -> tuple[str, bool]:
        """The DOT name of ``obj`` and whether it was new (declaring it if so)."""
        key = id(obj)
        if key in node_ids:
            return node_ids[key], False
        dot_id = f"n{len(node_ids)}"
        node_ids[key] = dot_id
        if isinstance(obj, Tensor):
            label = _shape(obj.shape)
            if key in names:
                label = f"{names[key]}\n{label}"
            style = _LEAF_STYLE
        else:
            label = f"{obj.name}\n{_shape(obj.out_shape)}"
            style = _ROOT_STYLE if is_root else _OP_STYLE
        lines.append(f"  {dot_id} [label={_quote(label)}, {style}];")
        return dot_id, True

    root = tensor.grad_fn
    if root is None:
        node(tensor)  # a lone leaf (or a constant): a one-node graph
    else:
        node(root, is_root=True)
        stack = [root]
        while stack:
            fn = stack.pop()
            consumer = node_ids[id(fn)]
            for edge in fn.edges:
                if edge is None:  # an input that needed no gradient
                    continue
                producer, is_new = node(edge)
                lines.append(f"  {producer} -> {consumer};")
                if is_new and not isinstance(edge, Tensor):
                    stack.append(edge)
    lines.append("}")
    return "\n".join(lines) + "\n"
