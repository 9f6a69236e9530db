"""Bad input gets a clear error naming the op, what it got and what it expected."""

from __future__ import annotations


import numpy as np
import pytest

import minigraph as mg

from conftest import on_standin


def t(*shape, dtype=np.float64, requires_grad=True):
    return mg.Tensor(np.ones(shape, dtype=dtype), requires_grad=requires_grad)


@pytest.mark.parametrize("a,b", [((3, 4), (5, 2)), ((3,), (3, 2)), ((2, 3, 4), (4, 2)), ((3, 4), (4,))])
def test_matmul_rejects_misaligned_or_non_2d_operands(a, b):
    with pytest.raises(ValueError, match=rf"^matmul: got shapes {a}\s*and {b}".replace("(", r"\(").replace(")", r"\)")):
        mg.matmul(t(*a), t(*b))


def test_linear_rejects_misaligned_weight_or_bias():
    with pytest.raises(ValueError, match=r"linear: got shapes \(3, 4\) and \(5, 2\)"):
        mg.linear(t(3, 4), t(5, 2), t(2))
    with pytest.raises(ValueError, match=r"linear: bias has shape \(3,\); expected \(2,\)"):
        mg.linear(t(3, 4), t(4, 2), t(3))


def test_add_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"add: cannot broadcast shapes \(3, 4\) and \(3,\)"):
        t(3, 4) + t(3)


@pytest.mark.parametrize("which", ["gamma", "beta"])
def test_batch_norm_rejects_a_wrongly_shaped_gamma_or_beta(which):
    args = {"gamma": t(4), "beta": t(4)}
    args[which] = t(3)
    with pytest.raises(ValueError, match=rf"batch_norm: {which} has shape \(3,\); expected \(4,\)"):
        mg.batch_norm(t(5, 4), args["gamma"], args["beta"])


def test_batch_norm_rejects_a_batch_of_one_when_training():
    with pytest.raises(ValueError, match=r"expected more than 1 value per feature when training, "
                                         r"got input of shape \(1, 4\)"):
        mg.batch_norm(t(1, 4), t(4), t(4))


def test_batch_norm_accepts_a_batch_of_one_in_eval_mode():
    out = mg.batch_norm(t(1, 4), t(4), t(4), np.zeros(4), np.ones(4), training=False)
    assert out.shape == (1, 4)


def test_batch_norm_rejects_non_2d_input_and_bad_settings():
    with pytest.raises(ValueError, match=r"batch_norm: x has shape \(5,\)"):
        mg.batch_norm(t(5), t(5), t(5))
    with pytest.raises(ValueError, match="ddof=3"):
        mg.batch_norm(t(3, 2), t(2), t(2), ddof=3)
    with pytest.raises(ValueError, match="momentum"):
        mg.batch_norm(t(3, 2), t(2), t(2), momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        mg.batch_norm(t(3, 2), t(2), t(2), eps=-1.0)
    with pytest.raises(ValueError, match="eps=nan; expected a finite number"):
        mg.batch_norm(t(3, 2), t(2), t(2), eps=float("nan"))


def test_numpy_scalars_are_accepted_as_numbers():
    out = mg.batch_norm(t(3, 2), t(2), t(2), momentum=np.float32(0.2), eps=np.float64(1e-3),
                        ddof=np.int64(1))
    assert out.shape == (3, 2)
    assert (t(2, dtype=np.float32) + np.float32(1.5)).numpy().tolist() == [2.5, 2.5]
    with pytest.raises(ValueError, match="ddof=True"):
        mg.batch_norm(t(3, 2), t(2), t(2), ddof=True)


def test_batch_norm_eval_needs_running_statistics():
    with pytest.raises(ValueError, match="running_mean and running_var"):
        mg.batch_norm(t(3, 2), t(2), t(2), training=False)


def test_batch_norm_rejects_running_statistics_of_the_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match=r"running_mean .*shape \(3,\).*expected .*shape \(2,\)"):
        mg.batch_norm(t(3, 2), t(2), t(2), running_mean=np.zeros(3))
    with pytest.raises(ValueError, match=r"running_var .*float32.*expected .*float64"):
        mg.batch_norm(t(3, 2), t(2), t(2), running_var=np.ones(2, dtype=np.float32))


def test_mse_loss_does_not_broadcast_a_column_against_a_vector():
    with pytest.raises(ValueError, match=r"mse_loss: pred has shape \(4, 1\) but target has shape \(4,\)"):
        mg.mse_loss(t(4, 1), t(4))


def test_mse_loss_rejects_an_unknown_reduction():
    with pytest.raises(ValueError, match="reduction='avg'"):
        mg.mse_loss(t(2), t(2), reduction="avg")


def test_backward_of_a_non_scalar_needs_a_grad():
    with pytest.raises(RuntimeError, match=r"got shape \(3, 2\)"):
        mg.relu(t(3, 2)).backward()


def test_backward_rejects_a_grad_of_the_wrong_shape_or_dtype():
    out = mg.relu(t(3, 2))
    with pytest.raises(ValueError, match=r"grad has shape \(2, 3\); expected .*\(3, 2\)"):
        out.backward(np.ones((2, 3)))
    with pytest.raises(TypeError, match="float32"):
        out.backward(np.ones((3, 2), dtype=np.float32))


def test_mixed_dtypes_raise_instead_of_promoting():
    with pytest.raises(TypeError, match=r"matmul: operands have different dtypes \(float32, float64\)"):
        mg.matmul(t(2, 2, dtype=np.float32), t(2, 2))
    with pytest.raises(TypeError, match="batch_norm"):
        mg.batch_norm(t(3, 2, dtype=np.float32), t(2), t(2))


def test_requires_grad_must_be_a_bool():
    for flag in ("no", 1, None):
        with pytest.raises(TypeError, match=f"Tensor: got requires_grad={flag!r}; expected True or False"):
            mg.Tensor(np.ones(2), requires_grad=flag)
    assert mg.Tensor(np.ones(2), requires_grad=np.bool_(True)).requires_grad is True


def test_assigning_requires_grad_is_checked_as_the_constructor_checks():
    leaf = t(2)
    for flag in ("no", 0, None):
        with pytest.raises(TypeError, match=f"Tensor.requires_grad: got requires_grad={flag!r}; "
                                            f"expected True or False"):
            leaf.requires_grad = flag
        with pytest.raises(TypeError, match="expected True or False"):
            leaf.requires_grad_(flag)
        assert leaf.requires_grad is True
    assert leaf.requires_grad_(False) is leaf and leaf.requires_grad is False
    leaf.requires_grad = np.bool_(True)
    assert leaf.requires_grad is True


def test_a_computed_tensor_cannot_leave_its_graph_by_flag():
    # As PyTorch: clearing the flag on a non-leaf would cut the graph silently; detach() says so.
    leaf = t(2)
    y = leaf * 2.0
    with pytest.raises(RuntimeError, match=r"Tensor.requires_grad: this tensor was computed by mul.*"
                                           r"t.detach\(\)"):
        y.requires_grad = False
    y.requires_grad = True  # already so: allowed, as in PyTorch
    y.sum().backward()
    np.testing.assert_array_equal(leaf.grad, [2.0, 2.0])


def test_freezing_a_leaf_by_flag_keeps_backward_off_it():
    frozen, trained = t(2), t(2)
    frozen.requires_grad = False
    (frozen * trained).sum().backward()
    assert frozen.grad is None
    np.testing.assert_array_equal(trained.grad, frozen.numpy())


def test_assigning_data_takes_a_float_array_and_nothing_else(device):
    x = mg.Tensor(np.zeros(3))
    bad = [([1.0, 2.0], "a list"), (np.arange(3), "an array of int64"), (mg.Tensor(np.ones(3)),
           r"a Tensor \(assign its array, other.data\)"), (None, "a NoneType")]
    for value, what in bad:
        with pytest.raises(TypeError, match=f"Tensor.data: got {what}; expected a float32 or float64"):
            x.data = value
    replacement = mg.backend.to_device(np.arange(4, dtype=np.float32), device)
    x.data = replacement  # any shape, dtype or device, as PyTorch's t.data = ...
    assert x.data is replacement and x.shape == (4,) and x.dtype == np.float32 and x.device == device


def test_assigning_data_keeps_it_consistent_with_grad():
    p = t(3)
    (p * p).sum().backward()
    old = p.data
    for shape, dtype in [((4,), np.float64), ((3,), np.float32)]:
        with pytest.raises(ValueError, match=rf"Tensor.data: got an array of shape \({shape[0]},\) "
                                             rf"and dtype {np.dtype(dtype)} on .cpu. for a tensor whose .grad"):
            p.data = np.zeros(shape, dtype=dtype)
        assert p.data is old
    p.data = np.full(3, 5.0)  # same shape and dtype as .grad: fine
    p.grad = None
    p.data = np.zeros(4)
    assert p.shape == (4,)


def test_assigning_data_on_another_device_than_grad_is_refused(gpu):
    p = t(3)
    (p * p).sum().backward()
    old = p.data
    with pytest.raises(ValueError, match=r"Tensor.data: got an array of shape \(3,\) and dtype float64 on "
                                         r"'gpu' for a tensor whose .grad has shape \(3,\) and dtype "
                                         r"float64 on 'cpu'"):
        p.data = mg.backend.to_device(old, gpu)
    assert p.data is old
    layer = mg.nn.Linear(3, 2, dtype=np.float64)
    layer(mg.Tensor(np.ones((4, 3)))).sum().backward()
    layer.to(gpu)  # moves data and grad together
    assert layer.weight.device == gpu and mg.backend.device_of(layer.weight.grad) == gpu


@pytest.mark.parametrize("call,owner,name", [
    (lambda flag: mg.batch_norm(t(4, 2), t(2), t(2), np.zeros(2), np.ones(2), training=flag),
     "batch_norm", "training"),
    (lambda flag: mg.dropout(t(4, 2), 0.5, training=flag), "dropout", "training"),
    (lambda flag: mg.nn.BatchNorm1d(2, affine=flag), "BatchNorm1d", "affine"),
    (lambda flag: mg.nn.BatchNorm1d(2, track_running_stats=flag), "BatchNorm1d", "track_running_stats"),
])
def test_flags_of_ops_and_layers_take_booleans_only(call, owner, name):
    # A truthy string must not pick a mode: training="False" would train and move the statistics.
    for flag in ("False", 0, None):
        with pytest.raises(TypeError, match=f"{owner}: got {name}={flag!r}; expected True or False"):
            call(flag)
    call(np.bool_(False))


def test_operands_of_unsupported_types_are_named():
    with pytest.raises(TypeError, match="relu: x must be a Tensor or an array; got str"):
        mg.relu("x")
    with pytest.raises(TypeError, match="matmul: b must be a Tensor"):
        mg.matmul(t(2, 2), [[1.0, 0.0], [0.0, 1.0]])


def test_tensors_on_different_devices_in_one_op_raise_a_clear_type_error(gpu):
    cpu = mg.Tensor(np.ones((2, 2)), device="cpu")
    on_gpu = mg.Tensor(np.ones((2, 2)), device=gpu)
    assert on_gpu.device == "gpu" and cpu.device == "cpu"
    with pytest.raises(TypeError, match=r"add: operands are on different devices \('cpu', 'gpu'\).*\.to\("):
        cpu + on_gpu
    with pytest.raises(TypeError, match="matmul: operands are on different devices"):
        on_gpu @ cpu


def test_numeric_arguments_may_be_0d_arrays_from_a_reduction_on_either_device(on, rng):
    """CuPy reductions return 0-d device arrays; eps=x.var() must work on the GPU as on the CPU."""
    data = on(rng.normal(size=(6, 3)))
    x = mg.Tensor(data)
    eps = data.var() * 1e-3
    expected = mg.batch_norm(x, None, None, eps=float(eps))
    got = mg.batch_norm(x, None, None, eps=eps, momentum=data.max() * 0, ddof=on(np.array(1)) * 0)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
    with pytest.raises(ValueError, match=r"batch_norm: got eps=array\(\[0.1, 0.2\]\); expected a finite "
                                         r"number in \[0.0, inf\)"):
        mg.batch_norm(x, None, None, eps=on(np.array([0.1, 0.2])))
    with pytest.raises(ValueError, match=r"batch_norm: got ddof=array\(1.\); expected an integer"):
        mg.batch_norm(x, None, None, ddof=on(np.array(1.0)))


def test_a_read_only_running_statistic_fails_before_either_is_updated(on, rng):
    xp = mg.backend.get_array_module(on(np.zeros(1)))
    running_mean = on(np.zeros(3))
    running_var = xp.broadcast_to(on(np.ones(1)), (3,))  # read-only on NumPy, zero strides on CuPy
    with pytest.raises(ValueError, match="batch_norm: running_var is read-only or a broadcast view"):
        mg.batch_norm(mg.Tensor(on(rng.normal(size=(4, 3)))), None, None, running_mean, running_var)
    assert not running_mean.any()  # untouched: checked before anything was written
    eval_mode = mg.batch_norm(mg.Tensor(on(rng.normal(size=(4, 3)))), None, None, running_mean,
                              running_var, training=False)  # eval mode only reads them
    assert eval_mode.shape == (4, 3)


def test_float32_mse_over_many_elements_is_accurate(on, device):
    """A float32 dot accumulates its error with n; the blocked sum stays near float32's own precision."""
    if on_standin(device):
        pytest.skip("rounding is not modelled: the CuPy stand-in sums with NumPy's dot, not cuBLAS's")
    rng = np.random.default_rng(5)
    pred = (rng.normal(size=(5_000_000,)) + 0.5).astype(np.float32)
    exact = np.mean((pred.astype(np.float64)) ** 2)
    loss = mg.mse_loss(mg.Tensor(on(pred)), mg.Tensor(on(np.zeros_like(pred))))
    assert loss.dtype == np.float32
    assert abs(loss.item() - exact) / exact < 1e-6
