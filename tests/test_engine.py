"""The engine's contract: order, accumulation, graph release, memory, no_grad, dtypes."""

from __future__ import annotations

import dataclasses
import gc
import operator
import re
import weakref

import numpy as np
import pytest

import minigraph as mg


def leaf(on, array):
    return mg.Tensor(on(array), requires_grad=True)


def test_backward_through_a_20000_node_chain_needs_no_recursion(on):
    x = leaf(on, np.full((2, 2), 3.0))
    h = x
    for _ in range(20_000):
        h = mg.relu(h)
    h.backward(on(np.array([[1.0, 2.0], [3.0, 4.0]])))
    np.testing.assert_array_equal(mg.backend.to_device(x.grad, "cpu"), [[1.0, 2.0], [3.0, 4.0]])


def test_a_tensor_used_twice_receives_the_sum_of_its_gradients(on, rng):
    x = leaf(on, rng.normal(size=(3, 2)))
    w = leaf(on, rng.normal(size=(2, 2)))
    h = x @ w
    out = mg.mse_loss(h + h + mg.relu(h), mg.Tensor(on(np.zeros((3, 2)))), "sum")
    out.backward()
    hd = mg.backend.to_device(h.data, "cpu")
    slope = 2 + (hd > 0)  # d(2h + relu(h))/dh
    d_h = 2 * (hd * slope) * slope  # d/dh of Σ(2h + relu(h))²
    np.testing.assert_allclose(mg.backend.to_device(w.grad, "cpu"),
                               mg.backend.to_device(x.data, "cpu").T @ d_h)


def test_leaves_accumulate_across_backward_calls(on, rng):
    x = leaf(on, rng.normal(size=(4, 3)))
    target = mg.Tensor(on(rng.normal(size=(4, 3))))
    mg.mse_loss(x, target).backward()
    first = mg.backend.to_device(x.grad, "cpu").copy()
    mg.mse_loss(x, target).backward()
    np.testing.assert_allclose(mg.backend.to_device(x.grad, "cpu"), 2 * first)


def test_intermediate_gradients_are_not_kept(on, rng):
    x, w = leaf(on, rng.normal(size=(4, 3))), leaf(on, rng.normal(size=(3, 2)))
    hidden = x @ w
    mg.mse_loss(mg.relu(hidden), mg.Tensor(on(np.zeros((4, 2))))).backward()
    assert hidden.grad is None and not hidden.is_leaf
    assert x.grad is not None and w.grad is not None


def test_second_backward_without_retain_graph_raises(on, rng):
    x = leaf(on, rng.normal(size=(4, 3)))
    loss = mg.mse_loss(mg.relu(x), mg.Tensor(on(np.zeros((4, 3)))))
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_a_second_backward_that_accumulates(on, rng):
    x = leaf(on, rng.normal(size=(5, 2)))
    gamma, beta = leaf(on, np.ones(2)), leaf(on, np.zeros(2))
    loss = mg.mse_loss(mg.batch_norm(x, gamma, beta), mg.Tensor(on(rng.normal(size=(5, 2)))))
    loss.backward(retain_graph=True)
    first = mg.backend.to_device(x.grad, "cpu").copy()
    loss.backward()
    np.testing.assert_allclose(mg.backend.to_device(x.grad, "cpu"), 2 * first)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_backward_after_an_optimizer_step_on_a_used_leaf_raises(rng):
    """The saved weight was updated in place: the gradient would silently be wrong."""
    w = mg.Tensor(rng.normal(size=(3, 2)), requires_grad=True)
    loss = mg.mse_loss(mg.Tensor(rng.normal(size=(4, 3))) @ w, mg.Tensor(np.zeros((4, 2))))
    w.grad = np.ones((3, 2))
    mg.optim.SGD([w], lr=0.1).step()
    with pytest.raises(RuntimeError, match=r"leaf of shape \(3, 2\) that matmul used was modified in place"):
        loss.backward()


def test_backward_before_the_step_and_a_fresh_forward_after_it_both_work(rng):
    w = mg.Tensor(rng.normal(size=(3, 2)), requires_grad=True)
    x, target = mg.Tensor(rng.normal(size=(4, 3))), mg.Tensor(np.zeros((4, 2)))
    opt = mg.optim.SGD([w], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        mg.mse_loss(x @ w, target).backward()
        expected = 2 * x.data.T @ (x.data @ w.data) / (4 * 2)  # d mean((XW)²)/dW at this step's W
        np.testing.assert_allclose(w.grad, expected)
        opt.step()


def test_backward_frees_the_saved_arrays(rng):
    x = mg.Tensor(rng.normal(size=(6, 3)), requires_grad=True)
    out = mg.batch_norm(x, None, None)
    saved = weakref.ref(out.grad_fn.saved[0])  # the centred data
    out.backward(rng.normal(size=(6, 3)))
    gc.collect()
    assert saved() is None


def test_a_step_is_freed_by_reference_counting_alone(rng):
    """No reference cycles: dropping the loss frees the whole graph with the collector off."""
    w = mg.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    gc.collect()
    gc.disable()
    try:
        x = mg.Tensor(rng.normal(size=(8, 3)))
        hidden = mg.relu(mg.batch_norm(x @ w, None, None))
        loss = mg.mse_loss(hidden, mg.Tensor(np.zeros((8, 4))))
        watched = [weakref.ref(hidden), weakref.ref(loss), weakref.ref(hidden.grad_fn.saved[0])]
        del hidden, loss
        assert all(ref() is None for ref in watched)
    finally:
        gc.enable()


def test_a_dropped_intermediate_is_not_kept_alive_by_the_graph(rng):
    w = mg.Tensor(rng.normal(size=(3, 4)), requires_grad=True)
    hidden = mg.Tensor(rng.normal(size=(8, 3))) @ w
    watched = weakref.ref(hidden)
    loss = mg.mse_loss(hidden + 1.0, mg.Tensor(np.zeros((8, 4))))
    del hidden
    assert watched() is None  # the graph keeps only what ops saved
    loss.backward()
    assert w.grad.shape == (3, 4)


def test_no_grad_records_nothing_and_restores_itself(on, rng):
    x = leaf(on, rng.normal(size=(3, 3)))
    with mg.no_grad():
        y = mg.relu(x @ x)
        assert not mg.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert mg.is_grad_enabled()
    with pytest.raises(ZeroDivisionError):
        with mg.no_grad():
            1 / 0
    assert mg.is_grad_enabled()


def test_no_grad_works_as_a_decorator(rng):
    @mg.no_grad()
    def forward(t):
        return mg.relu(t)

    assert not forward(mg.Tensor(rng.normal(size=3), requires_grad=True)).requires_grad


def test_only_inputs_requiring_grad_record_a_graph(rng):
    out = mg.mse_loss(mg.Tensor(rng.normal(size=3)), mg.Tensor(rng.normal(size=3)))
    assert not out.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_through_values_and_gradients(on, rng, dtype):
    x = mg.Tensor(on(rng.normal(size=(6, 3)).astype(dtype)), requires_grad=True)
    w = mg.Tensor(on(rng.normal(size=(3, 2)).astype(dtype)), requires_grad=True)
    b = mg.Tensor(on(np.zeros(2, dtype=dtype)), requires_grad=True)
    running_mean, running_var = on(np.zeros(2, dtype=dtype)), on(np.ones(2, dtype=dtype))
    h = mg.relu(mg.batch_norm(x @ w + b, None, None, running_mean, running_var))
    loss = mg.mse_loss(h + 0.5, mg.Tensor(on(np.zeros((6, 2), dtype=dtype))))
    loss.backward()
    assert loss.dtype == dtype and h.dtype == dtype
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == dtype
    assert running_mean.dtype == running_var.dtype == dtype


def test_pass_through_gradients_are_not_shared_between_leaves(on, rng):
    a, b = leaf(on, rng.normal(size=(2, 2))), leaf(on, rng.normal(size=(2, 2)))
    upstream = on(np.ones((2, 2)))
    (a + b).backward(upstream)
    a.grad[0, 0] = 99.0
    assert float(b.grad[0, 0]) == 1.0 and float(upstream[0, 0]) == 1.0


def test_backward_of_a_leaf_accumulates_a_copy_of_the_given_grad(on):
    x = leaf(on, np.zeros(3))
    upstream = on(np.ones(3))
    x.backward(upstream)
    upstream[0] = 5.0
    assert float(x.grad[0]) == 1.0


def test_backward_accepts_a_tensor_grad(on, rng):
    x = leaf(on, rng.normal(size=(2, 2)))
    mg.relu(x).backward(mg.Tensor(on(np.ones((2, 2)))))
    np.testing.assert_array_equal(mg.backend.to_device(x.grad, "cpu"), x.numpy() > 0)


def test_grad_can_be_cleared_and_set(on):
    x = leaf(on, np.zeros(3))
    x.backward(on(np.ones(3)))
    x.grad = None
    assert x.grad is None
    x.grad = on(np.full(3, 2.0))
    np.testing.assert_array_equal(mg.backend.to_device(x.grad, "cpu"), [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        x.grad = on(np.zeros(4))


def test_tensor_construction_and_attributes():
    t = mg.Tensor([[1, 2], [3, 4]], device="cpu")
    assert t.dtype == np.float64 and t.shape == (2, 2) and t.device == "cpu" and t.ndim == 2
    assert mg.Tensor(np.arange(3)).dtype == np.float64
    assert mg.Tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    copy = t.numpy()
    copy[0, 0] = 100.0
    assert t.data[0, 0] == 1.0
    assert t.to("cpu") is t
    d = mg.Tensor(np.ones(2), requires_grad=True).detach()
    assert not d.requires_grad and d.grad_fn is None
    assert mg.mse_loss(mg.Tensor([1.0, 2.0]), mg.Tensor([1.0, 4.0])).item() == 2.0


def test_tensor_rejects_what_is_not_numbers():
    with pytest.raises(TypeError, match="Tensor"):
        mg.Tensor("abc")
    with pytest.raises(TypeError, match="complex"):
        mg.Tensor(np.ones(2, dtype=complex))


def test_operators_and_numbers_on_either_side(on, rng):
    x = leaf(on, rng.normal(size=(2, 3)))
    y = 1.0 + (x @ on(np.eye(3))) + 2
    np.testing.assert_allclose(y.numpy(), x.numpy() + 3.0)
    z = on(np.eye(2)) @ x
    np.testing.assert_allclose(z.numpy(), x.numpy())


# --- nothing the caller holds is ever written by backward ---------------------------------


class Identity(mg.Function):
    """y = x. It keeps what its backward was given, to check later that nobody wrote into it."""

    seen: list = []

    def forward(self, x):
        return x.copy()

    def backward(self, grad_output):
        Identity.seen.append((grad_output, grad_output.copy()))
        return (grad_output,)


class TransposeTwice(mg.Function):
    """y = x, with a backward that returns a view of its upstream gradient (grad_output.T.T)."""

    def forward(self, x):
        return x.copy()

    def backward(self, grad_output):
        return (grad_output.T.T,)


def test_gradients_a_function_was_given_are_never_overwritten_later():
    Identity.seen.clear()
    rng = np.random.default_rng(2)
    x, w1, w2 = (mg.Tensor(rng.normal(size=s), requires_grad=True) for s in ((8, 3), (3, 4), (4, 1)))
    wrap = lambda t: mg.apply(Identity(), t)
    h = wrap(mg.relu(wrap(mg.batch_norm(wrap(x @ w1), None, None))))
    mg.mse_loss(wrap(h @ w2), np.zeros((8, 1))).backward()
    assert len(Identity.seen) == 4
    for array, copy in Identity.seen:
        np.testing.assert_array_equal(array, copy)


def test_a_view_of_the_upstream_gradient_is_not_written_through():
    """A backward may return a view of grad_output; the leaf must get a copy, not the caller's memory."""
    x = mg.Tensor(np.zeros((2, 3)), requires_grad=True)
    upstream = np.ones((2, 3))
    mg.relu(mg.apply(TransposeTwice(), x) + 1.0).backward(upstream)
    x.grad *= 5
    np.testing.assert_array_equal(upstream, np.ones((2, 3)))


def test_a_gradient_a_verified_op_made_becomes_the_leafs_grad_without_a_copy():
    """The one copy the engine still avoids: an (N, p) array per leaf per backward."""
    import tracemalloc

    x = mg.Tensor(np.random.default_rng(0).normal(size=(1000, 1000)), requires_grad=True)
    y = mg.relu(x)
    upstream = np.ones((1000, 1000))
    tracemalloc.start()
    y.backward(upstream)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    megabytes = 8.0  # one float64 (1000, 1000) array
    assert peak < 1.5 * megabytes * 1e6  # dX and its boolean mask (1 MB); a copy would add 8 MB
    np.testing.assert_array_equal(x.grad, x.data > 0)


def test_leaf_grads_forward_values_and_the_callers_grad_are_left_alone():
    rng = np.random.default_rng(3)
    x = mg.Tensor(rng.normal(size=(6, 3)), requires_grad=True)
    y = mg.relu(x)
    z = mg.batch_norm(y, None, None)
    out = z @ mg.Tensor(rng.normal(size=(3, 2)))
    upstream = rng.normal(size=(6, 2))
    kept = upstream.copy(), y.data.copy(), z.data.copy()
    out.backward(upstream, retain_graph=True)
    first = x.grad.copy()
    out.backward(upstream)
    np.testing.assert_array_equal(upstream, kept[0])
    np.testing.assert_array_equal(y.data, kept[1])
    np.testing.assert_array_equal(z.data, kept[2])
    np.testing.assert_allclose(x.grad, 2 * first)


# --- what user-written Functions get wrong, caught at the boundary ----------------------------


class ReturnsBareArray(mg.Function):
    def forward(self, x):
        return 2 * x

    def backward(self, grad_output):
        return 2 * grad_output  # forgot the tuple


class ReturnsWrongShape(mg.Function):
    def forward(self, x):
        return 2 * x

    def backward(self, grad_output):
        return (grad_output.sum(axis=0),)


class ReturnsFloat64(mg.Function):
    def forward(self, x):
        return 2 * x

    def backward(self, grad_output):
        return (grad_output.astype(np.float64) * 2,)


class ForwardReturnsAFloat(mg.Function):
    def forward(self, x):
        return float(x.sum())

    def backward(self, grad_output):
        raise AssertionError("never reached")


class SameArrayToBoth(mg.Function):
    def forward(self, a, b):
        return a + b

    def backward(self, grad_output):
        grad = grad_output * 1.0
        return grad, grad


def test_a_backward_returning_no_tuple_or_a_wrong_shape_is_an_error():
    x = mg.Tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="ReturnsBareArray.backward returned a ndarray; expected a tuple of 1"):
        mg.apply(ReturnsBareArray(), x).backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match=r"returned shape \(2,\), dtype float64 on 'cpu' for input 0; "
                                           r"expected an array of the input's shape \(3, 2\)"):
        mg.apply(ReturnsWrongShape(), x).backward(np.ones((3, 2)))


def test_a_backward_changing_the_dtype_is_an_error_not_a_silent_float64_grad():
    x = mg.Tensor(np.ones((3, 2), dtype=np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"ReturnsFloat64.backward returned shape \(3, 2\), dtype float64 "
                                           r"on 'cpu' for input 0; expected .* dtype float32"):
        mg.apply(ReturnsFloat64(), x).backward(np.ones((3, 2), dtype=np.float32))
    assert x.grad is None


def test_a_users_subclass_of_a_verified_op_is_checked_like_any_custom_function():
    """Inheriting a proven backward is no proof: FromOutput's subclasses supply the derivative."""
    from minigraph.ops.elementwise import FromOutput

    class Softsign(FromOutput):
        def compute(self, xp, x):
            return x / (1 + abs(x))

        def derivative(self, y):
            return (1 - abs(y)).astype(np.float64) ** 2  # the slip: float64 in a float32 graph

    x = mg.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Softsign.backward returned shape \(3,\), dtype float64 "
                                           r"on 'cpu' for input 0; expected .* dtype float32"):
        mg.apply(Softsign(), x).sum().backward()
    assert x.grad is None


def test_apply_names_the_mistakes_of_custom_functions():
    with pytest.raises(TypeError, match=r"apply\(ReturnsBareArray\): input 0 is a ndarray; expected "
                                        r"Tensors. Wrap arrays first"):
        mg.apply(ReturnsBareArray(), np.ones(2))
    with pytest.raises(TypeError, match=r"ForwardReturnsAFloat.forward returned a float; expected an array"):
        mg.apply(ForwardReturnsAFloat(), mg.Tensor(np.ones(2)))
    # The class for an instance (torch spells it MyOp.apply(x)): it was taken for an instance
    # "applied already", named by a property object.
    with pytest.raises(TypeError, match=r"apply: got the class ReturnsBareArray; expected a Function "
                                        r"instance, one per call, e.g. apply\(ReturnsBareArray\(\), x\)"):
        mg.apply(ReturnsBareArray, mg.Tensor(np.ones(2)))
    with pytest.raises(TypeError, match=r"apply: got a function; expected a Function instance"):
        mg.apply(lambda a: a, mg.Tensor(np.ones(2)))


def test_applying_one_function_instance_twice_is_an_error():
    """Its node would be overwritten: one input would get no gradient and the other twice its own."""
    a, b = mg.Tensor(np.ones(2), requires_grad=True), mg.Tensor(np.ones(2), requires_grad=True)
    fn = TransposeTwice()
    mg.apply(fn, a)
    with pytest.raises(RuntimeError, match=r"apply: this TransposeTwice instance was applied already; .*"
                                           r"make a new one per call"):
        mg.apply(fn, b)


def test_one_array_returned_for_two_leaves_becomes_two_grads():
    a, b = mg.Tensor(np.ones(2), requires_grad=True), mg.Tensor(np.ones(2), requires_grad=True)
    mg.apply(SameArrayToBoth(), a, b).backward(np.ones(2))
    a.grad *= 0
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


def test_a_0d_leaf_reached_twice_keeps_an_array_gradient(on):
    """NumPy adds two 0-d arrays into a scalar; a learnable scalar's .grad must stay an array
    (in-place edits such as grad[...] = 0 need one), like its data."""
    x = leaf(on, np.array(1.5))
    (x * x).backward()
    (x * x).backward()  # and accumulated over two passes
    assert type(x.grad) is type(x.data) and x.grad.shape == ()
    np.testing.assert_allclose(float(x.grad), 2 * 2 * 1.5)
    x.grad[...] = 0.0


# --- hooks ------------------------------------------------------------------------------------
def test_a_hook_on_an_output_sees_and_may_replace_its_gradient(on, rng):
    x = leaf(on, rng.normal(size=(4, 3)))
    h = mg.relu(x)
    seen = []
    h.register_hook(lambda grad: seen.append(mg.backend.to_device(grad, "cpu").copy()))
    h.register_hook(lambda grad: grad * 3)  # hooks run in order; this one rescales
    mg.mse_loss(h, np.zeros((4, 3)), reduction="sum").backward()
    np.testing.assert_allclose(seen[0], 2 * h.numpy())
    np.testing.assert_allclose(mg.backend.to_device(x.grad, "cpu"), 3 * 2 * h.numpy() * (h.numpy() > 0))


def test_a_leaf_hook_and_a_queued_callback_run_in_order_after_the_gradients(on, rng):
    w = leaf(on, rng.normal(size=(3, 2)))
    events = []
    w.register_hook(lambda grad: events.append("leaf hook"))
    out = mg.Tensor(on(rng.normal(size=(5, 3)))) @ w
    out.register_hook(lambda grad: mg.engine.queue_callback(lambda: events.append(("done", w.grad is not None))))
    out.backward(on(np.ones((5, 2))))
    assert events == ["leaf hook", ("done", True)]
    with pytest.raises(RuntimeError, match="queue_callback: no backward pass is running"):
        mg.engine.queue_callback(lambda: None)


def test_a_callback_queued_by_several_hooks_runs_once_per_pass_and_a_failed_pass_runs_none(on, rng):
    class Counter:
        def __init__(self):
            self.calls = 0

        def count(self):
            self.calls += 1

    counter, other = Counter(), []
    w = leaf(on, rng.normal(size=(3, 2)))
    a, b = (mg.Tensor(on(rng.normal(size=(4, 3)))) @ w for _ in range(2))
    for out in (a, b):  # two outputs, each hook asking for the same bound method, and a lambda
        out.register_hook(lambda grad: mg.engine.queue_callback(counter.count))
        out.register_hook(lambda grad: mg.engine.queue_callback(lambda: other.append(1)))
    (a + b).sum().backward(retain_graph=True)
    assert counter.calls == 1 and other == [1, 1]  # distinct lambdas are distinct callbacks

    remove = w.register_hook(lambda grad: 1 / 0)  # the pass fails after the outputs' hooks ran
    with pytest.raises(ZeroDivisionError):
        (a + b).sum().backward(retain_graph=True)
    assert counter.calls == 1
    remove()
    (a + b).sum().backward()  # nothing of the failed pass lingers: queued afresh, run once
    assert counter.calls == 2


def test_queued_callbacks_are_one_only_when_they_are_one_object_or_one_bound_method(rng):
    """Dedupe by identity: a callable's == may compare by value (distinct dataclass
    instances) or return an array, neither of which makes two callbacks one."""
    @dataclasses.dataclass
    class Append:
        log: list

        def __call__(self):
            self.log.append("ran")

    class ArrayEquality:  # == gives an array, as a callable wrapping arrays may
        def __init__(self, log):
            self.log, self.values = log, np.arange(3.0)

        def __call__(self):
            self.log.append("ran")

        def __eq__(self, other):
            return self.values == getattr(other, "values", None)

        __hash__ = None

    first, second, third, fourth, stack = [], [], [], [], [1, 2, 3]
    callbacks = [Append(first), Append(second), ArrayEquality(third), ArrayEquality(fourth),
                 stack.pop, stack.pop]  # the last two: one built-in method of one list
    x = mg.Tensor(rng.normal(size=(3,)), requires_grad=True)
    out = x * 2.0
    out.register_hook(lambda grad: [mg.engine.queue_callback(cb) for cb in callbacks] and None)
    out.sum().backward()
    assert (first, second, third, fourth, stack) == (["ran"], ["ran"], ["ran"], ["ran"], [1, 2])


def test_a_leaf_hook_runs_once_on_the_total_of_every_path(on, rng):
    """x reaches the loss three times; the hook must see d/dx = 2x + w once, as in PyTorch,
    not each partial gradient (clipping each part would give another answer)."""
    x_host, w_host = rng.normal(size=(3, 4)) * 2, rng.normal(size=(3, 4))
    x = leaf(on, x_host)
    seen = []
    x.register_hook(lambda grad: seen.append(mg.backend.to_device(grad, "cpu").copy()))
    x.register_hook(lambda grad: grad.clip(-1.0, 1.0))
    ((x * x).sum() + (x * on(w_host)).sum()).backward()
    total = 2 * x_host + w_host
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], total, rtol=1e-12)
    np.testing.assert_allclose(mg.backend.to_device(x.grad, "cpu"), total.clip(-1.0, 1.0), rtol=1e-12)


def test_a_hook_may_return_a_tensor_and_a_non_array_is_a_clear_error(on, rng):
    """backward(grad) and .grad = accept Tensors, so hooks do too (they crashed on .base/.copy)."""
    x_host = rng.normal(size=(3, 2))
    x = leaf(on, x_host)
    h = mg.tanh(x)
    h.register_hook(lambda grad: mg.Tensor(grad * 2))
    x.register_hook(lambda grad: mg.Tensor(grad * 3))
    h.sum().backward()
    np.testing.assert_allclose(mg.backend.to_device(x.grad, "cpu"), 6 * (1 - np.tanh(x_host) ** 2), rtol=1e-12)
    x.register_hook(lambda grad: grad.tolist())
    with pytest.raises(RuntimeError, match=r"a hook on a leaf of shape \(3, 2\) returned a list; expected"):
        mg.tanh(x).sum().backward()


def test_a_hook_returning_a_wrong_shape_is_an_error(rng):
    x = mg.Tensor(rng.normal(size=(2, 2)), requires_grad=True)
    y = mg.relu(x)
    y.register_hook(lambda grad: grad[0])
    with pytest.raises(RuntimeError, match=r"a hook on the output of relu returned \(2,\)"):
        y.backward(np.ones((2, 2)))


def test_a_detached_alias_shares_the_version_counter(rng):
    w = mg.Tensor(rng.normal(size=(3, 2)), requires_grad=True)
    v = mg.Tensor(rng.normal(size=(2, 1)), requires_grad=True)
    y = w.detach() @ v  # the graph saved w's array through the alias
    w.grad = np.ones((3, 2))
    mg.optim.SGD([w], lr=1.0).step()
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward(np.ones((3, 1)))


def test_one_no_grad_instance_can_be_nested_in_itself():
    quiet = mg.no_grad()
    with quiet:
        with quiet:
            pass
        assert not mg.is_grad_enabled()
    assert mg.is_grad_enabled()


def test_no_grad_in_one_thread_does_not_switch_recording_off_in_another():
    """Grad mode is per thread, as in PyTorch: an evaluation thread must not break a training one."""
    import threading

    stop = threading.Event()
    quiet = mg.no_grad()  # one instance shared by both threads, the hardest case

    def evaluate() -> None:
        while not stop.is_set():
            with quiet:
                assert not mg.is_grad_enabled()

    failures = []
    w = mg.Tensor(np.ones((3, 2)), requires_grad=True)
    evaluator = threading.Thread(target=evaluate)
    evaluator.start()
    try:
        for _ in range(300):
            w.grad = None
            loss = mg.mse_loss(mg.Tensor(np.ones((4, 3))) @ w, np.zeros((4, 2)))
            if not loss.requires_grad:
                failures.append("no graph")
                continue
            loss.backward()
            if w.grad is None:
                failures.append("no grad")
    finally:
        stop.set()
        evaluator.join()
    assert failures == []
    assert mg.is_grad_enabled()


def test_interleaved_no_grad_blocks_of_two_threads_leave_each_thread_as_it_was():
    import threading

    quiet = mg.no_grad()
    entered, release = threading.Barrier(2), threading.Barrier(2)
    states = {}

    def worker(name: str) -> None:
        with quiet:
            entered.wait()  # both are inside at once
            states[name, "inside"] = mg.is_grad_enabled()
            release.wait()
        states[name, "after"] = mg.is_grad_enabled()

    threads = [threading.Thread(target=worker, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert states == {("a", "inside"): False, ("b", "inside"): False, ("a", "after"): True,
                      ("b", "after"): True}
    assert mg.is_grad_enabled()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself warns
def test_array_subclasses_are_refused_or_made_plain():
    """A mask would be silently dropped by some ops and kept by others; np.matrix changes what * means."""
    with pytest.raises(TypeError, match="Tensor: got a masked array"):
        mg.Tensor(np.ma.masked_array([1.0, 2.0], mask=[0, 1]))
    with pytest.raises(TypeError, match="Tensor: got a masked array"):
        mg.mse_loss(mg.Tensor([1.0, 2.0]), np.ma.masked_array([1.0, 2.0], mask=[0, 1]))
    m = mg.Tensor(np.matrix([[1.0, 2.0], [3.0, 4.0]]))
    assert type(m.data) is np.ndarray
    with pytest.raises(TypeError, match=r"float16 .* compute in float32"):
        mg.Tensor(np.ones(2, dtype=np.float16))


def test_numpy_scalars_keep_their_dtype_and_none_is_not_a_number():
    assert mg.Tensor(np.float32(1.5)).dtype == np.float32
    with pytest.raises(TypeError, match="Tensor: cannot make a float array from NoneType"):
        mg.Tensor(None)
    with pytest.raises(TypeError, match="object"):
        mg.Tensor([1.0, None])


class ReturnsHostGradient(mg.Function):
    """A custom op whose backward forgets to stay on the device."""

    def forward(self, x):
        return x * 2

    def backward(self, grad_output):
        return (mg.backend.to_device(grad_output * 2, "cpu"),)


def test_a_custom_backward_leaving_the_device_is_named_even_for_an_intermediate_input(gpu):
    x = mg.Tensor(np.ones((2, 2)), requires_grad=True, device=gpu)
    hidden = mg.relu(x)  # an intermediate: its gradient goes on to relu's backward, not to a leaf
    out = mg.apply(ReturnsHostGradient(), hidden)
    with pytest.raises(RuntimeError, match=r"ReturnsHostGradient.backward returned shape \(2, 2\), dtype "
                                           r"float64 on 'cpu' for input 0; .* on 'gpu'"):
        out.backward(np.ones((2, 2)))


def test_tensors_compare_by_identity_with_tensors_and_none_and_refuse_values():
    t, u = mg.Tensor(np.zeros(2)), mg.Tensor(np.zeros(2))
    assert t == t and not (t == u) and t != u and {t: 1}[t] == 1
    assert t in [None, u, t] and not (t == None)  # noqa: E711 (the point of the test)
    with pytest.raises(TypeError, match="no elementwise comparisons"):
        t == 0


def test_numpy_conversion_of_a_tensor_is_refused_instead_of_an_object_array_of_tensors(device):
    t = mg.Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    for convert in (np.asarray, np.array, lambda v: np.asarray([v, v])):
        with pytest.raises(TypeError, match=r"numpy.asarray\(Tensor of shape \(3, 2\)\): .* t.numpy\(\)"):
            convert(t)
    np.testing.assert_array_equal(t.numpy(), np.arange(6.0).reshape(3, 2))  # the explicit way
    assert (np.ones(2) + mg.Tensor(np.ones(2))).device == device  # NumPy operands still defer to Tensor


def test_numpy_functions_refuse_tensors_naming_minigraphs_op(device):
    """numpy.sum(t) called t.sum with NumPy's ``out=`` and failed inside it; numpy.concatenate
    and friends would have converted element by element. Each names the way that works."""
    t = mg.Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    for call, ours in [(lambda: np.sum(t), "minigraph.sum"), (lambda: np.mean(t, axis=0), "minigraph.mean"),
                       (lambda: np.concatenate([t, t]), "minigraph.cat"),
                       (lambda: np.linalg.norm(t), "a minigraph op")]:
        with pytest.raises(TypeError, match=r"numpy(\.linalg)?\.\w+\(Tensor \.\.\.\): NumPy functions do not take "
                                            rf"Tensors; expected {ours}.*, or t.numpy\(\)"):
            call()
    assert float(mg.sum(t)) == 15.0 and np.sum(t.numpy()) == 15.0  # the two ways that work


def test_an_augmented_assignment_to_a_parameter_raises_instead_of_leaving_it_unchanged(rng):
    # PyTorch's hand-written SGD step, `with no_grad(): p -= lr * p.grad`, updates p in place.
    # Without in-place operators Python runs `p = p - lr * p.grad`: the loop variable is rebound
    # and the parameters never move, so training silently does nothing.
    w, b = (mg.Tensor(rng.normal(size=shape), requires_grad=True) for shape in [(3, 2), (2,)])
    x = mg.Tensor(rng.normal(size=(4, 3)))
    (x @ w + b).sum().backward()
    before = [w.numpy(), b.numpy()]
    updates = {"-=": operator.isub, "+=": operator.iadd, "*=": operator.imul,
               "/=": operator.itruediv, "**=": operator.ipow, "@=": operator.imatmul}
    for symbol, update in updates.items():
        for p in (w, b):
            operand = 2.0 if symbol == "**=" else p.grad
            with pytest.raises(TypeError, match=rf"{re.escape(symbol)} on a parameter .* "
                                                 rf"p.data -= lr \* p.grad"):
                with mg.no_grad():
                    update(p, operand)
            with pytest.raises(TypeError, match=re.escape(symbol)):  # in grad mode too, as PyTorch
                update(p, operand)
    for p, old in zip((w, b), before):
        np.testing.assert_array_equal(p.numpy(), old)
    # Elsewhere `h += v` keeps meaning `h = h + v`, a new node, as graphs summing losses rely on.
    h = x @ w
    first = h
    h += 1.0
    assert h is not first and h.grad_fn.name == "add"
    np.testing.assert_array_equal(h.numpy(), first.numpy() + 1.0)
    total = 0.0
    for _ in range(2):
        total += (x @ w).sum()
    total.backward()
    np.testing.assert_allclose(w.grad, 3 * np.tile(x.numpy().sum(axis=0)[:, None], (1, 2)))
    constant = mg.Tensor(np.ones(2))
    constant -= 1.0  # data, not a parameter: rebinding loses nothing
    np.testing.assert_array_equal(constant.numpy(), np.zeros(2))


def test_enable_grad_records_inside_no_grad_and_set_grad_enabled_switches(rng):
    x = mg.Tensor(rng.normal(size=3), requires_grad=True)
    with mg.no_grad():
        assert (x * 2).requires_grad is False
        with mg.enable_grad():
            y = x * 2
        assert (x * 2).requires_grad is False  # leaving enable_grad restores no_grad
    assert y.requires_grad and y.grad_fn is not None
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))

    @mg.enable_grad()
    def doubled(t):
        return t * 2

    with mg.no_grad():
        assert doubled(x).requires_grad

    with mg.set_grad_enabled(False):  # as a context: the previous mode comes back
        assert not mg.is_grad_enabled() and (x * 2).requires_grad is False
    assert mg.is_grad_enabled()
    mg.set_grad_enabled(False)  # as a call: it holds until switched back
    try:
        assert not mg.is_grad_enabled() and (x * 2).requires_grad is False
    finally:
        mg.set_grad_enabled(True)
    assert (x * 2).requires_grad
    with pytest.raises(TypeError, match=r"set_grad_enabled: got mode='yes'; expected True or False"):
        mg.set_grad_enabled("yes")
    assert mg.is_grad_enabled()


def test_set_grad_enabled_as_a_decorator_sets_the_mode_for_the_calls_only(rng):
    x = mg.Tensor(rng.normal(size=3), requires_grad=True)

    @mg.set_grad_enabled(False)
    def frozen(t):
        return t * 2, mg.is_grad_enabled()

    assert mg.is_grad_enabled()  # decorating switched nothing for the code around it
    y, inside = frozen(x)
    assert inside is False and y.requires_grad is False
    assert mg.is_grad_enabled() and (x * 2).requires_grad

    @mg.set_grad_enabled(True)
    def recorded(t):
        return t * 2

    with mg.no_grad():
        z = recorded(x)
        assert not mg.is_grad_enabled()
    z.sum().backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))


def test_no_grad_and_enable_grad_decorate_without_parentheses_too(rng):
    x = mg.Tensor(rng.normal(size=3), requires_grad=True)

    @mg.no_grad
    def quiet(t):
        return t * 2

    @mg.enable_grad
    def recorded(t):
        return t * 2

    assert quiet(x).requires_grad is False and mg.is_grad_enabled()
    with mg.no_grad():
        assert recorded(x).requires_grad is True
    assert quiet.__name__ == "quiet"
    with pytest.raises(TypeError, match=r"no_grad: got 3; expected no argument, or a function"):
        mg.no_grad(3)
