"""Gradients of random float64 graphs against PyTorch autograd (skipped without torch)."""

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
