"""minigraph.viz.to_dot: every op and leaf once, labelled, as DOT text; deep graphs too."""

from __future__ import annotations

import re

import numpy as np
import pytest

import minigraph as mg
from minigraph import nn
from minigraph.viz import to_dot

NODE = re.compile(r'^  (n\d+) \[label="((?:[^"\\]|\\.)*)", [^\]]*\];$')
EDGE = re.compile(r"^  (n\d+) -> (n\d+);$")


def parse(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Nodes {id: label} and edges [(from, to)], asserting that every line is well formed."""
    lines = dot.strip().split("\n")
    assert lines[0] == "digraph minigraph {" and lines[-1] == "}"
    assert dot.count("{") == dot.count("}") == 1
    nodes, edges = {}, []
    for line in lines[2:-1]:
        if match := NODE.match(line):
            assert match[1] not in nodes, f"node {match[1]} declared twice"
            nodes[match[1]] = match[2]
        elif match := EDGE.match(line):
            edges.append((match[1], match[2]))
        else:
            raise AssertionError(f"not a node or an edge: {line!r}")
    for a, b in edges:
        assert a in nodes and b in nodes, f"edge {a} -> {b} names an undeclared node"
    return nodes, edges


def test_a_small_network_graph_names_every_op_and_leaf(on, rng):
    x = mg.Tensor(on(rng.normal(size=(8, 4))))
    w1 = mg.Tensor(on(rng.normal(size=(4, 3))), requires_grad=True)
    b1 = mg.Tensor(on(np.zeros(3)), requires_grad=True)
    gamma = mg.Tensor(on(np.ones(3)), requires_grad=True)
    beta = mg.Tensor(on(np.zeros(3)), requires_grad=True)
    w2 = mg.Tensor(on(rng.normal(size=(3, 1))), requires_grad=True)
    loss = mg.mse_loss(mg.relu(mg.batch_norm(x @ w1 + b1, gamma, beta)) @ w2,
                       mg.Tensor(on(np.zeros((8, 1)))))
    names = {"W1": w1, "b1": b1, "gamma": gamma, "beta": beta, "W2": w2}
    nodes, edges = parse(to_dot(loss, params=names))
    labels = sorted(nodes.values())
    assert labels == sorted([
        "mse_loss\\n()", "matmul\\n(8, 1)", "relu\\n(8, 3)", "batch_norm\\n(8, 3)", "add\\n(8, 3)",
        "matmul\\n(8, 3)", "W1\\n(4, 3)", "b1\\n(3,)", "gamma\\n(3,)", "beta\\n(3,)", "W2\\n(3, 1)",
    ])
    by_label = {label: node for node, label in nodes.items()}
    # Data flows input -> op; x and the target need no gradient, so they are absent.
    assert (by_label["W1\\n(4, 3)"], by_label["matmul\\n(8, 3)"]) in edges
    assert (by_label["add\\n(8, 3)"], by_label["batch_norm\\n(8, 3)"]) in edges
    assert (by_label["matmul\\n(8, 1)"], by_label["mse_loss\\n()"]) in edges
    assert len(edges) == 10  # one per recorded input
    # loss.backward() leaves the structure drawable
    loss.backward()
    assert parse(to_dot(loss))[0].keys() == nodes.keys()


def test_model_parameter_names_label_the_leaves(rng):
    model = nn.Sequential(nn.Linear(4, 3, rng=0, dtype=np.float64, device="cpu"),
                          nn.BatchNorm1d(3, dtype=np.float64, device="cpu"), nn.ReLU(),
                          nn.Linear(3, 1, rng=0, dtype=np.float64, device="cpu"))
    loss = nn.MSELoss()(model(mg.Tensor(rng.normal(size=(5, 4)))), mg.Tensor(np.zeros((5, 1))))
    nodes, _ = parse(to_dot(loss, params=dict(model.named_parameters())))
    leaf_labels = {label.split("\\n")[0] for label in nodes.values()}
    assert {name for name, _ in model.named_parameters()} <= leaf_labels


def test_shared_nodes_appear_once_with_one_edge_per_use(rng):
    w = mg.Tensor(rng.normal(size=(2, 2)), requires_grad=True)
    h = mg.Tensor(rng.normal(size=(3, 2))) @ w
    out = (mg.relu(h) + h) @ w  # h's matmul feeds relu and add; w feeds both matmuls
    nodes, edges = parse(to_dot(out))
    assert sorted(nodes.values()) == sorted(["matmul\\n(3, 2)", "add\\n(3, 2)", "relu\\n(3, 2)",
                                             "matmul\\n(3, 2)", "(2, 2)"])
    root, inner = (n for n, label in nodes.items() if label.startswith("matmul"))
    leaf = next(n for n, label in nodes.items() if label == "(2, 2)")
    assert sum(a == inner for a, _ in edges) == 2
    assert sorted(b for a, b in edges if a == leaf) == sorted([root, inner])


def test_a_leaf_alone_is_a_one_node_graph():
    nodes, edges = parse(to_dot(mg.Tensor(np.ones((2, 3)), requires_grad=True)))
    assert list(nodes.values()) == ["(2, 3)"] and edges == []


def test_labels_are_escaped():
    w = mg.Tensor(np.ones(2), requires_grad=True)
    dot = to_dot(w + 1.0, params={'say "hi" \\ there': w})
    nodes, _ = parse(dot)
    assert 'say \\"hi\\" \\\\ there\\n(2,)' in nodes.values()


def test_a_20000_node_chain_needs_no_recursion():
    x = mg.Tensor(np.ones((2, 2)), requires_grad=True)
    h = x
    for _ in range(20_000):
        h = mg.relu(h)
    nodes, edges = parse(to_dot(h))
    assert sum(label == "relu\\n(2, 2)" for label in nodes.values()) == 20_000
    assert len(nodes) == 20_001 and len(edges) == 20_000


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match=r"to_dot: got ndarray; expected a Tensor"):
        to_dot(np.ones(2))
    w = mg.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match=r"to_dot: params\['w'\] is a ndarray; expected a Tensor"):
        to_dot(w + w, params={"w": np.ones(2)})
