"""Batch norm's forward values, running statistics and numerical stability."""

from __future__ import annotations

import numpy as np
import pytest

import minigraph as mg
from minigraph.backend import to_device


@pytest.fixture(autouse=True)
def every_test_on_both_paths(fused_path):
    """Every test here runs on the fused kernels and on the formula (see conftest.fused_path)."""


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


# --- the host's copy of the count: 1/n without reading the device on every step --------------
class CountReads:
    """Counts the reads of an int64 0-d array back to the host (the batch counter: on a GPU,
    each one is a wait for the device)."""

    def __init__(self, monkeypatch):
        self.reads, self.watching, to_device = 0, False, mg.backend.to_device

        def spy(array, device):
            if self.watching and device == "cpu" and getattr(array, "dtype", None) == np.int64 and array.ndim == 0:
                self.reads += 1
            return to_device(array, device)

        monkeypatch.setattr(mg.backend, "to_device", spy)


def cumulative(mean, count, x):
    """Our semantics by hand: the batch is counted first, then weighs 1/count."""
    count += 1
    return mean + (x.mean(0) - mean) / count, count


def test_the_count_stays_right_through_loads_assignments_moves_and_failures_reading_it_rarely(
        device, on, rng, monkeypatch):
    bn = mg.nn.BatchNorm1d(3, momentum=None, dtype=np.float64, device=device)
    spy = CountReads(monkeypatch)
    mean, count = np.zeros(3), 0

    def step(times=1):
        nonlocal mean, count
        for _ in range(times):
            x = rng.normal(size=(5, 3)) + rng.normal()
            spy.watching = True  # reads by the forward only (state_dict copies to the host)
            bn(mg.Tensor(on(x)))
            spy.watching = False
            mean, count = cumulative(mean, count, x)

    step(3)
    assert spy.reads == 0  # a new layer knows its count is 0
    state = bn.state_dict()
    state["num_batches_tracked"], state["running_mean"] = np.array(10), np.full(3, 0.5)
    bn.load_state_dict(state)
    mean, count = np.full(3, 0.5), 10
    step(3)
    assert spy.reads == 1  # once after the load, not on every step
    bn.num_batches_tracked = on(np.array(20))  # a new array: read again, once
    count = 20
    step(2)
    assert spy.reads == 2
    bn.momentum = 0.5  # a number needs no count: bumped on the device, not read
    bn.load_state_dict(bn.state_dict())
    for _ in range(2):
        x = rng.normal(size=(5, 3))
        spy.watching = True
        bn(mg.Tensor(on(x)))
        spy.watching = False
        mean, count = 0.5 * mean + 0.5 * x.mean(0), count + 1
    assert spy.reads == 2
    bn.momentum = None
    step()
    assert spy.reads == 3  # the count unknown since the load: read at the first 1/n
    with pytest.raises(ValueError, match="more than 1 value"):
        bn(mg.Tensor(on(rng.normal(size=(1, 3)))))
    count += 1  # PyTorch counts the forward before the op refuses the batch; so do we
    bn.to("cpu").to(device)  # on a GPU: new arrays, so one read more
    step(2)
    assert spy.reads == 3 + (device == "gpu")
    assert int(host(bn.num_batches_tracked)) == count
    np.testing.assert_allclose(host(bn.running_mean), mean, rtol=1e-12)
    bn.eval()
    bn(mg.Tensor(on(rng.normal(size=(4, 3)))))  # evaluation counts nothing
    assert int(host(bn.num_batches_tracked)) == count


def test_reset_running_stats_restarts_the_cumulative_average(device, on, rng):
    bn = mg.nn.BatchNorm1d(2, momentum=None, dtype=np.float64, device=device)
    for _ in range(3):
        bn(mg.Tensor(on(rng.normal(size=(4, 2)) + 5)))
    bn.reset_running_stats()
    assert int(host(bn.num_batches_tracked)) == 0
    np.testing.assert_array_equal(host(bn.running_var), 1.0)
    batches = [rng.normal(size=(n, 2)) for n in (4, 6)]
    for x in batches:
        bn(mg.Tensor(on(x)))
    np.testing.assert_allclose(host(bn.running_mean), np.mean([x.mean(0) for x in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(host(bn.running_var), np.mean([x.var(0, ddof=1) for x in batches], axis=0),
                               rtol=1e-12)
    mg.nn.BatchNorm1d(2, track_running_stats=False).reset_running_stats()  # nothing to reset


def test_copies_and_a_conversion_to_sync_batch_norm_carry_the_count_on(device, on, rng):
    import copy
    import pickle

    batches = [rng.normal(size=(5, 2)) + k for k in range(4)]
    whole = layer_run(device, batches, None, ["train"] * 4)
    for carry_on in (copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m)),
                     mg.nn.SyncBatchNorm.convert_sync_batchnorm):
        half = layer_run(device, batches[:2], None, ["train"] * 2)
        other = carry_on(half)
        for x in batches[2:]:
            other(mg.Tensor(on(x)))
        for key, expected in whole.state_dict().items():
            np.testing.assert_allclose(other.state_dict()[key], expected, rtol=1e-12, err_msg=key)
        if other.running_mean is not half.running_mean:  # a copy: the original did not move on
            assert int(host(half.num_batches_tracked)) == 2


def test_cumulative_average_reset_failure_and_checkpoints_match_torch(rng):
    torch = pytest.importorskip("torch")
    ours = mg.nn.BatchNorm1d(3, momentum=None, dtype=np.float64, device="cpu")
    theirs = torch.nn.BatchNorm1d(3, momentum=None).double()

    def both(do_ours, do_theirs):
        do_ours(ours)
        do_theirs(theirs)
        for key, value in theirs.state_dict().items():
            if key not in ("weight", "bias"):
                np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-12, err_msg=key)

    def feed(x):
        return (lambda m: m(mg.Tensor(x))), (lambda m: m(torch.from_numpy(x)))

    for _ in range(3):
        both(*feed(rng.normal(size=(4, 3)) * 2 + 1))
    one_row = rng.normal(size=(1, 3))
    for module, call in zip((ours, theirs), feed(one_row)):
        with pytest.raises(ValueError):
            call(module)
    both(*feed(rng.normal(size=(5, 3))))  # the failed forward was counted by both
    both(lambda m: m.reset_running_stats(), lambda m: m.reset_running_stats())
    both(*feed(rng.normal(size=(6, 3)) - 2))
    # A converted PyTorch state dict, counter included, loads as it is; training goes on alike.
    source = torch.nn.BatchNorm1d(3, momentum=None).double()
    for _ in range(4):
        source(torch.randn(5, 3, dtype=torch.float64))
    state = {k: v.numpy() for k, v in source.state_dict().items()}
    both(lambda m: m.load_state_dict(state), lambda m: m.load_state_dict(source.state_dict()))
    both(*feed(rng.normal(size=(4, 3))))
    # An old checkpoint, without the counter, loads strictly in both and leaves the count alone.
    old = {k: v for k, v in state.items() if k != "num_batches_tracked"}
    both(lambda m: m.load_state_dict(old),
         lambda m: m.load_state_dict({k: torch.from_numpy(v) for k, v in old.items()}))
    assert int(ours.num_batches_tracked) == 5
    both(*feed(rng.normal(size=(4, 3))))


# --- Sequences: x of shape (N, C, L), one mean and variance per channel over N·L values ------
def per_channel(x, ddof):
    """Mean and variance of each channel of x: (N, C, L), over the samples and positions."""
    return x.mean(axis=(0, 2)), x.var(axis=(0, 2), ddof=ddof)


@pytest.mark.parametrize("ddof", [0, 1])
def test_a_batch_of_sequences_is_normalised_per_channel_over_samples_and_positions(on, rng, ddof):
    x = rng.normal(size=(4, 3, 5)) * np.array([1.0, 5.0, 0.1])[:, None] + np.array([0.0, -3.0, 7.0])[:, None]
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    running_mean, running_var = on(np.full(3, 0.5)), on(np.full(3, 2.0))
    out = mg.batch_norm(mg.Tensor(on(x)), mg.Tensor(on(gamma)), mg.Tensor(on(beta)), running_mean,
                        running_var, momentum=0.2, ddof=ddof)
    mean, var = per_channel(x, ddof)
    expected = (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) * gamma[:, None] + beta[:, None]
    assert out.shape == x.shape
    np.testing.assert_allclose(host(out.data), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(running_mean), 0.8 * 0.5 + 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(host(running_var), 0.8 * 2.0 + 0.2 * per_channel(x, 1)[1], rtol=1e-12)  # N·L − 1

    frozen_mean, frozen_var = host(running_mean).copy(), host(running_var).copy()
    out = mg.batch_norm(mg.Tensor(on(x)), mg.Tensor(on(gamma)), None, running_mean, running_var, training=False)
    expected = (x - frozen_mean[:, None]) / np.sqrt(frozen_var[:, None] + 1e-5) * gamma[:, None]
    np.testing.assert_allclose(host(out.data), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(host(running_mean), frozen_mean)
    functional = mg.nn.functional.batch_norm(mg.Tensor(on(x)), running_mean, running_var, mg.Tensor(on(gamma)))
    np.testing.assert_allclose(host(functional.data), expected, rtol=1e-12, atol=1e-12)  # evaluates by default


def test_batch_norm1d_takes_sequences_and_refuses_other_ranks_naming_what_it_takes(device, rng):
    bn = mg.nn.BatchNorm1d(2, momentum=None, dtype=np.float64)
    batches = [rng.normal(size=(3, 2, 4)) + k for k in range(3)]
    for x in batches:
        assert bn(mg.Tensor(x)).shape == (3, 2, 4)
    np.testing.assert_allclose(host(bn.running_mean), np.mean([per_channel(x, 1)[0] for x in batches], axis=0),
                               rtol=1e-12)
    np.testing.assert_allclose(host(bn.running_var), np.mean([per_channel(x, 1)[1] for x in batches], axis=0),
                               rtol=1e-12)
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per feature when training, "
                                         r"got input of shape \(1, 2, 1\)"):
        bn(mg.Tensor(np.ones((1, 2, 1))))
    # One sample of several positions is enough values per channel, as in PyTorch.
    assert bn(mg.Tensor(rng.normal(size=(1, 2, 3)))).shape == (1, 2, 3)
    for shape in [(2,), (2, 2, 2, 2)]:
        with pytest.raises(ValueError, match=r"batch_norm: x has shape .*; expected a 2-D \(N, p\) batch or a "
                                             r"3-D \(N, p, L\) batch of sequences"):
            bn(mg.Tensor(np.ones(shape)))
    with pytest.raises(ValueError, match=r"batch_norm: gamma has shape \(2,\); expected \(3,\) for input of "
                                         r"shape \(4, 3, 5\)"):
        bn(mg.Tensor(np.ones((4, 3, 5))))


@pytest.mark.parametrize("momentum", [None, 0.1])
def test_sequences_through_the_layer_match_torch(rng, momentum):
    torch = pytest.importorskip("torch")
    ours = mg.nn.BatchNorm1d(3, momentum=momentum, dtype=np.float64)
    theirs = torch.nn.BatchNorm1d(3, momentum=momentum).double()
    for mode, x in [("train", rng.normal(size=(4, 3, 6)) * 2 + 1), ("train", rng.normal(size=(2, 3, 3))),
                    ("eval", rng.normal(size=(5, 3, 2)))]:
        getattr(ours, mode)(), getattr(theirs, mode)()
        grad = rng.normal(size=x.shape)
        mine, their_x = mg.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, their_y = ours(mine), theirs(their_x)
        (y * mg.Tensor(grad)).sum().backward()
        (their_y * torch.from_numpy(grad)).sum().backward()
        np.testing.assert_allclose(y.numpy(), their_y.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mine.grad, their_x.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
        ours.zero_grad(), theirs.zero_grad()
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-12, err_msg=key)
