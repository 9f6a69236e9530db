"""Gradients against PyTorch autograd, op by op and as random float64 graphs (skipped without torch)."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph.backend import to_device

torch = pytest.importorskip("torch")
F = torch.nn.functional


def random_graph(seed: int, on):
    """A random stack of (matmul + bias, batch norm, relu) layers ending in MSE, in both libraries."""
    rng = np.random.default_rng(seed)
    n, width = int(rng.integers(2, 9)), int(rng.integers(1, 6))
    arrays = {"x": rng.normal(size=(n, width)) * rng.uniform(0.5, 3) + rng.normal()}
    plan = []
    for layer in range(int(rng.integers(1, 4))):
        out_width = int(rng.integers(1, 6))
        arrays[f"w{layer}"] = rng.normal(size=(width, out_width))
        arrays[f"b{layer}"] = rng.normal(size=out_width)
        arrays[f"g{layer}"] = rng.uniform(0.5, 2, size=out_width)
        arrays[f"s{layer}"] = rng.normal(size=out_width)
        plan.append((layer, bool(rng.integers(2)), bool(rng.integers(2))))  # (layer, eval BN?, relu?)
        width = out_width
    arrays["target"] = rng.normal(size=(n, width))
    stats = {f"rm{k}": rng.normal(size=arrays[f"g{k}"].shape) for k, _, _ in plan}
    stats.update({f"rv{k}": rng.uniform(0.5, 2, size=arrays[f"g{k}"].shape) for k, _, _ in plan})

    def forward(lib, t, running):
        h = t["x"]
        for k, eval_mode, use_relu in plan:
            h = (h @ t[f"w{k}"]) + t[f"b{k}"]
            if lib == "mg":
                h = mg.batch_norm(h, t[f"g{k}"], t[f"s{k}"], running[f"rm{k}"], running[f"rv{k}"],
                                  training=not eval_mode)
            else:
                h = F.batch_norm(h, running[f"rm{k}"], running[f"rv{k}"], t[f"g{k}"], t[f"s{k}"],
                                 training=not eval_mode)
            if use_relu:
                h = mg.relu(h) if lib == "mg" else torch.relu(h)
        return mg.mse_loss(h, t["target"]) if lib == "mg" else F.mse_loss(h, t["target"])

    ours = {k: mg.Tensor(on(v), requires_grad=k != "target") for k, v in arrays.items()}
    theirs = {k: torch.tensor(v, requires_grad=k != "target") for k, v in arrays.items()}
    our_stats = {k: on(v.copy()) for k, v in stats.items()}
    their_stats = {k: torch.tensor(v) for k, v in stats.items()}
    return forward("mg", ours, our_stats), forward("torch", theirs, their_stats), ours, theirs, \
        our_stats, their_stats


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_match_torch_autograd(on, seed):
    loss, torch_loss, ours, theirs, our_stats, their_stats = random_graph(seed, on)
    loss.backward()
    torch_loss.backward()
    np.testing.assert_allclose(loss.item(), torch_loss.item(), rtol=1e-12)
    for name, tensor in ours.items():
        if tensor.requires_grad:
            np.testing.assert_allclose(to_device(tensor.grad, "cpu"), theirs[name].grad.numpy(),
                                       rtol=1e-9, atol=1e-12, err_msg=name)
    for name, stat in our_stats.items():
        np.testing.assert_allclose(to_device(stat, "cpu"), their_stats[name].numpy(), rtol=1e-12)


# --- the algebra, op by op --------------------------------------------------------------------
# name: (minigraph function, torch function, input shapes, domain of the inputs). Both get the
# same float64 inputs and the same random upstream gradient.
IDX = np.array([2, 0, 2, 2, 1])
MASK = np.array([True, False, True, False])
LABELS = np.array([1, 0, 3, 3, 2])
ALGEBRA = {
    "sub": (lambda a, b: a - b, lambda a, b: a - b, [(3, 4), (4,)], "any"),
    "rsub": (lambda a: 1.5 - a, lambda a: 1.5 - a, [(3, 4)], "any"),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [(3, 1), (1, 4)], "any"),
    "rmul": (lambda a: 2 * a, lambda a: 2 * a, [(3, 4)], "any"),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [(2, 3, 4), (3, 1)], "positive"),
    "rdiv": (lambda a: 3 / a, lambda a: 3 / a, [(3, 4)], "positive"),
    "neg": (lambda a: -a, lambda a: -a, [(3, 4)], "any"),
    "pow 3": (lambda a: a ** 3, lambda a: a ** 3, [(3, 4)], "any"),
    "pow 0.5": (lambda a: a ** 0.5, lambda a: a ** 0.5, [(3, 4)], "positive"),
    "pow -1.5": (lambda a: a ** -1.5, lambda a: a ** -1.5, [(3, 4)], "positive"),
    "pow 0": (lambda a: a ** 0, lambda a: a ** 0, [(3, 4)], "any"),
    "rpow": (lambda a: 2 ** a, lambda a: 2 ** a, [(3, 4)], "any"),
    "exp": (mg.exp, torch.exp, [(3, 4)], "any"),
    "log": (mg.log, torch.log, [(3, 4)], "positive"),
    "tanh": (mg.tanh, torch.tanh, [(3, 4)], "any"),
    "sigmoid": (mg.sigmoid, torch.sigmoid, [(3, 4)], "any"),
    "sum": (lambda a: a.sum(), lambda a: a.sum(), [(3, 4)], "any"),
    "sum axes keepdims": (lambda a: a.sum(axis=(0, 2), keepdims=True),
                          lambda a: a.sum(dim=(0, 2), keepdim=True), [(2, 3, 4)], "any"),
    "mean": (lambda a: a.mean(), lambda a: a.mean(), [(3, 4)], "any"),
    "mean axis -1": (lambda a: a.mean(axis=-1), lambda a: a.mean(dim=-1), [(2, 3, 4)], "any"),
    "T": (lambda a: a.T, lambda a: a.T, [(3, 4)], "any"),
    "transpose": (lambda a: a.transpose(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)], "any"),
    "reshape": (lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), [(2, 3, 4)], "any"),
    "row": (lambda a: a[1], lambda a: a[1], [(3, 4)], "any"),
    "slice": (lambda a: a[1:3], lambda a: a[1:3], [(4, 3)], "any"),
    "column": (lambda a: a[:, 2], lambda a: a[:, 2], [(3, 4)], "any"),
    "rows with repeats": (lambda a: a[IDX], lambda a: a[torch.tensor(IDX)], [(3, 4)], "any"),
    "mask": (lambda a: a[MASK], lambda a: a[torch.tensor(MASK)], [(4, 3)], "any"),
    "cross_entropy mean": (lambda z: mg.cross_entropy(z, LABELS),
                           lambda z: F.cross_entropy(z, torch.tensor(LABELS)), [(5, 4)], "any"),
    "cross_entropy sum": (lambda z: mg.cross_entropy(z, LABELS, "sum"),
                          lambda z: F.cross_entropy(z, torch.tensor(LABELS), reduction="sum"), [(5, 4)], "any"),
    "cross_entropy none": (lambda z: mg.cross_entropy(z, LABELS, "none"),
                           lambda z: F.cross_entropy(z, torch.tensor(LABELS), reduction="none"),
                           [(5, 4)], "any"),
}


@pytest.mark.parametrize("name", list(ALGEBRA))
def test_each_algebra_op_matches_torch_autograd(on, name):
    ours_fn, theirs_fn, shapes, domain = ALGEBRA[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    arrays = [rng.uniform(0.3, 3.0, size=s) if domain == "positive" else rng.normal(size=s) * 2
              for s in shapes]
    ours = [mg.Tensor(on(a), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, torch_out = ours_fn(*ours), theirs_fn(*theirs)
    assert out.shape == tuple(torch_out.shape)
    np.testing.assert_allclose(out.numpy(), torch_out.detach().numpy(), rtol=1e-13, atol=1e-15)
    upstream = rng.normal(size=out.shape)
    out.backward(on(upstream))
    torch_out.backward(torch.tensor(upstream))
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(to_device(mine.grad, "cpu"), reference.grad.numpy(), rtol=1e-12,
                                   atol=1e-14)


def random_algebra_graph(seed: int, on):
    """A random classifier written in the algebra, in both libraries: rows picked by index inside
    the graph, hidden layers with random activations, an L2 penalty, a cross-entropy loss."""
    rng = np.random.default_rng(100 + seed)
    n, width, classes = int(rng.integers(3, 9)), int(rng.integers(1, 5)), int(rng.integers(2, 5))
    rows = rng.integers(0, n, size=int(rng.integers(2, 2 * n)))
    labels = rng.integers(0, classes, size=len(rows))
    arrays = {"x": rng.normal(size=(n, width)) * 2}
    plan = []
    for layer in range(int(rng.integers(1, 3))):
        out_width = int(rng.integers(1, 5))
        arrays[f"w{layer}"] = rng.normal(size=(width, out_width))
        arrays[f"b{layer}"] = rng.normal(size=out_width)
        plan.append((layer, ["relu", "tanh", "sigmoid", "exp"][int(rng.integers(4))]))
        width = out_width
    arrays["head"] = rng.normal(size=(width, classes))
    penalty, reduction = float(rng.uniform(0.01, 0.5)), ["mean", "sum"][int(rng.integers(2))]

    def forward(lib, t):
        h = t["x"][rows if lib == "mg" else torch.tensor(rows)]
        for k, activation in plan:
            h = (h @ t[f"w{k}"] - t[f"b{k}"]) / 2
            h = getattr(mg if lib == "mg" else torch, activation)(h)
        logits = h @ t["head"]
        l2 = sum(((t[f"w{k}"] ** 2).sum() for k, _ in plan), (t["head"] ** 2).mean())
        if lib == "mg":
            return mg.cross_entropy(logits, labels, reduction) + penalty * l2
        return F.cross_entropy(logits, torch.tensor(labels), reduction=reduction) + penalty * l2

    ours = {k: mg.Tensor(on(v), requires_grad=True) for k, v in arrays.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    return forward("mg", ours), forward("torch", theirs), ours, theirs


@pytest.mark.parametrize("seed", range(8))
def test_random_algebra_graphs_match_torch_autograd(on, seed):
    loss, torch_loss, ours, theirs = random_algebra_graph(seed, on)
    loss.backward()
    torch_loss.backward()
    np.testing.assert_allclose(loss.item(), torch_loss.item(), rtol=1e-12)
    for name, tensor in ours.items():
        np.testing.assert_allclose(to_device(tensor.grad, "cpu"), theirs[name].grad.numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=name)


def test_relu_gradient_at_nan_zero_and_negative_zero_matches_torch(on):
    x = np.array([np.nan, 0.0, -0.0, -2.0, 3.0, np.inf, -np.inf])
    upstream = np.arange(1.0, 8.0)
    ours = mg.Tensor(on(x), requires_grad=True)
    mg.relu(ours).backward(on(upstream))
    theirs = torch.tensor(x, requires_grad=True)
    torch.relu(theirs).backward(torch.tensor(upstream))
    np.testing.assert_array_equal(mg.backend.to_device(ours.grad, "cpu"), theirs.grad.numpy())
