"""Batch norm's forward values, running statistics and numerical stability."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph.backend import to_device


@pytest.fixture(autouse=True)
def every_test_on_both_paths(batch_norm_path):
    """Every test here runs on the fused kernels and on the formula (see conftest.batch_norm_path)."""


def host(a):
    return to_device(a, "cpu")


@pytest.mark.parametrize("ddof", [0, 1])
def test_training_forward_normalises_each_column_by_its_batch_statistics(on, rng, ddof):
    x = rng.normal(size=(9, 4)) * [1.0, 5.0, 0.1, 2.0] + [0.0, -3.0, 7.0, 1.0]
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    out = mg.batch_norm(mg.Tensor(on(x)), mg.Tensor(on(gamma)), mg.Tensor(on(beta)), eps=1e-5, ddof=ddof)
    expected = (x - x.mean(0)) / np.sqrt(x.var(0, ddof=ddof) + 1e-5) * gamma + beta
    np.testing.assert_allclose(host(out.data), expected, rtol=1e-12, atol=1e-12)


def test_ddof_1_with_eps_0_reproduces_r_scale(on, rng):
    x = rng.normal(size=(10, 4))
    out = mg.batch_norm(mg.Tensor(on(x)), None, None, eps=0.0, ddof=1)
    r_scale = (x - x.mean(0)) / x.std(0, ddof=1)  # what R's scale() computes
    np.testing.assert_allclose(host(out.data), r_scale, rtol=1e-12)


def test_running_statistics_follow_the_pytorch_momentum_convention(on, rng):
    running_mean, running_var = on(np.full(3, 0.5)), on(np.full(3, 2.0))
    x = rng.normal(size=(6, 3)) * 3 + 1
    mg.batch_norm(mg.Tensor(on(x)), None, None, running_mean, running_var, momentum=0.2, ddof=0)
    np.testing.assert_allclose(host(running_mean), 0.8 * 0.5 + 0.2 * x.mean(0))
    np.testing.assert_allclose(host(running_var), 0.8 * 2.0 + 0.2 * x.var(0, ddof=1))  # unbiased


def test_running_statistics_update_under_no_grad_and_accept_tensors(on, rng):
    running_mean, running_var = mg.Tensor(on(np.zeros(2))), mg.Tensor(on(np.ones(2)))
    x = rng.normal(size=(4, 2))
    with mg.no_grad():
        mg.batch_norm(mg.Tensor(on(x)), None, None, running_mean, running_var)
    np.testing.assert_allclose(running_mean.numpy(), 0.1 * x.mean(0))


def test_eval_mode_uses_running_statistics_and_leaves_them_alone(on, rng):
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    running_mean, running_var = on(mean.copy()), on(var.copy())
    x, gamma, beta = rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=3)
    out = mg.batch_norm(mg.Tensor(on(x)), mg.Tensor(on(gamma)), mg.Tensor(on(beta)),
                        running_mean, running_var, training=False, eps=1e-3)
    np.testing.assert_allclose(host(out.data), (x - mean) / np.sqrt(var + 1e-3) * gamma + beta)
    np.testing.assert_array_equal(host(running_mean), mean)
    np.testing.assert_array_equal(host(running_var), var)


def test_variance_is_stable_for_a_large_mean_in_float32(on, rng):
    """E[x²] − E[x]² loses every digit here; the two-pass variance does not."""
    x = (100.0 + 0.01 * rng.normal(size=(512, 3))).astype(np.float32)
    out = host(mg.batch_norm(mg.Tensor(on(x)), None, None, eps=0.0).data)
    np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-2)
    naive_var = (x * x).mean(0) - x.mean(0) ** 2
    assert np.all(np.abs(naive_var / x.astype(np.float64).var(0) - 1) > 0.1)  # the trap is real


def test_gradient_of_sum_of_outputs_with_respect_to_x_is_zero(on, rng):
    """Why BN tests need random upstream gradients: a uniform one proves nothing."""
    x = mg.Tensor(on(rng.normal(size=(6, 3))), requires_grad=True)
    out = mg.batch_norm(x, mg.Tensor(on(rng.normal(size=3))), None)
    out.backward(on(np.ones((6, 3))))
    np.testing.assert_allclose(host(x.grad), 0.0, atol=1e-12)


def test_the_graph_does_not_keep_the_running_statistics_alive(rng):
    import weakref

    x = mg.Tensor(rng.normal(size=(4, 2)), requires_grad=True)
    for training in (True, False):
        running_mean, running_var = np.zeros(2), np.ones(2)
        watched = [weakref.ref(running_mean), weakref.ref(running_var)]
        out = mg.batch_norm(x, None, None, running_mean, running_var, training=training)
        del running_mean, running_var
        assert out.requires_grad and all(ref() is None for ref in watched)  # graph alive, stats gone


# --- BatchNorm1d's batch counter and momentum=None (the cumulative average) ------------------
def layer_run(device, batches, momentum, modes):
    """A float64 BatchNorm1d fed `batches`, each in the mode given ('train', 'eval', 'no_grad')."""
    bn = mg.nn.BatchNorm1d(batches[0].shape[1], momentum=momentum, dtype=np.float64, device=device)
    for x, mode in zip(batches, modes):
        bn.train(mode != "eval")
        if mode == "no_grad":
            with mg.no_grad():
                bn(mg.Tensor(x, device=device))
        else:
            bn(mg.Tensor(x, device=device))
    return bn


def test_momentum_none_keeps_the_cumulative_average_of_the_batch_statistics(device, rng):
    batches = [rng.normal(size=(n, 3)) * [1.0, 4.0, 0.5] + [2.0, -1.0, 0.0] for n in (5, 8, 3, 6)]
    modes = ["train", "eval", "no_grad", "train", "train"]  # the eval batch counts for nothing
    bn = layer_run(device, batches[:1] + batches[:1] + batches[1:], None, modes)
    counted = [batches[0], batches[1], batches[2], batches[3]]
    # By hand: the plain average over the counted batches of their means and unbiased variances.
    np.testing.assert_allclose(host(bn.running_mean), np.mean([b.mean(0) for b in counted], axis=0), rtol=1e-12)
    np.testing.assert_allclose(host(bn.running_var), np.mean([b.var(0, ddof=1) for b in counted], axis=0),
                               rtol=1e-12)
    assert int(host(bn.num_batches_tracked)) == 4 and bn.num_batches_tracked.dtype == np.int64
    assert "momentum=None" in repr(bn)


def test_the_counter_counts_training_forwards_whatever_the_momentum(device, rng):
    batches = [rng.normal(size=(4, 2)) for _ in range(5)]
    bn = layer_run(device, batches, 0.3, ["train", "eval", "no_grad", "eval", "train"])
    assert int(host(bn.num_batches_tracked)) == 3
    expected = np.zeros(2)
    for x in (batches[0], batches[2], batches[4]):
        expected = 0.7 * expected + 0.3 * x.mean(0)
    np.testing.assert_allclose(host(bn.running_mean), expected, rtol=1e-12)
    assert mg.nn.BatchNorm1d(2, track_running_stats=False).num_batches_tracked is None


def test_a_cumulative_average_resumed_from_a_checkpoint_equals_the_uninterrupted_run(device, rng, tmp_path):
    """The count is what makes 1/n right after a resume: a fresh layer would restart at n = 1."""
    batches = [rng.normal(size=(6, 3)) + k for k in range(4)]
    whole = layer_run(device, batches, None, ["train"] * 4)
    first = layer_run(device, batches[:2], None, ["train"] * 2)
    mg.nn.save(first, tmp_path / "bn.npz")
    resumed = mg.nn.BatchNorm1d(3, momentum=None, dtype=np.float64, device=device)
    resumed.load_state_dict(mg.nn.load(tmp_path / "bn.npz"))
    for x in batches[2:]:
        resumed(mg.Tensor(x, device=device))
    for key, expected in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], expected, err_msg=key)
    assert int(host(resumed.num_batches_tracked)) == 4


def test_momentum_none_is_refused_by_the_functional_op_and_bad_momenta_by_the_layer(rng):
    with pytest.raises(ValueError, match=r"batch_norm: got momentum=None; expected a finite number in \[0.0, 1.0\]"):
        mg.batch_norm(mg.Tensor(rng.normal(size=(4, 2))), None, None, np.zeros(2), np.ones(2), momentum=None)
    with pytest.raises(ValueError, match=r"BatchNorm1d: got momentum=1.5; expected a finite number in "
                                         r"\[0.0, 1.0\], e.g. momentum=0.1, or None for a cumulative average"):
        mg.nn.BatchNorm1d(2, momentum=1.5)


@pytest.mark.parametrize("momentum", [None, 0.1])
def test_running_statistics_and_counter_match_torch(rng, momentum):
    torch = pytest.importorskip("torch")
    batches = [rng.normal(size=(n, 3)) * 2 + 1 for n in (4, 7, 5)]
    ours = layer_run("cpu", batches, momentum, ["train", "eval", "train"])
    theirs = torch.nn.BatchNorm1d(3, momentum=momentum).double()
    for x, mode in zip(batches, ["train", "eval", "train"]):
        theirs.train(mode == "train")
        theirs(torch.from_numpy(x))
    for key, value in theirs.state_dict().items():
        if key in ("weight", "bias"):
            continue
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-12, err_msg=key)
