"""The engine itself: graph reuse and accumulation, deep graphs, grad modes, memory release,
retain_graph, error messages, devices, and numpy-vs-torch backend agreement."""
import gc
import weakref

import numpy as np
import pytest
import torch

import minigrad as mg
from conftest import ELEMENTWISE, REDUCTION, assert_close, randn, to_torch

F = mg.nn.functional


def _leaf(array, device, dtype=np.float32):
    return mg.tensor(np.asarray(array, dtype=dtype), requires_grad=True, device=device)


# ---- reuse and accumulation ----------------------------------------------------------------------
def test_reused_node_and_accumulation_across_backward_calls(device):
    """y = x·x + x uses x three times; a second backward (graph retained) adds to .grad."""
    x_np = randn(0, (4,)).astype(np.float32)
    x, tx = _leaf(x_np, device), to_torch(x_np, requires_grad=True)
    y, ty = (x * x + x).sum(), (tx * tx + tx).sum()
    y.backward(retain_graph=True)
    ty.backward(retain_graph=True)
    assert_close(x.grad, tx.grad, **ELEMENTWISE)
    y.backward()
    ty.backward()
    assert_close(x.grad, tx.grad, **ELEMENTWISE)
    assert_close(x.grad, 2 * (2 * x_np + 1), **ELEMENTWISE)


def test_diamond_graph_sums_both_paths(device):
    """a feeds b and c, both feed d: a's gradient is the sum over the two paths."""
    x_np = randn(1, (3,)).astype(np.float32)
    x, tx = _leaf(x_np, device), to_torch(x_np, requires_grad=True)
    for ns, t in ((mg, x), (torch, tx)):
        a = t.exp()
        b, c = a * 2, a.tanh()
        (b * c + a).sum().backward()
    assert_close(x.grad, tx.grad, **ELEMENTWISE)


def test_non_scalar_backward_with_explicit_gradient(device):
    x_np, g = randn(0, (2, 3)).astype(np.float32), randn(1, (2, 3)).astype(np.float32)
    x, tx = _leaf(x_np, device), to_torch(x_np, requires_grad=True)
    (x * 3).sigmoid().backward(mg.tensor(g, device=device))
    (tx * 3).sigmoid().backward(torch.tensor(g))
    assert_close(x.grad, tx.grad, **ELEMENTWISE)


def test_deep_chain_does_not_recurse(device):
    """10,000 ops in a chain: topological sort and backward are iterative (no RecursionError)."""
    x = _leaf([1.0], device, np.float64)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 10_000], rtol=1e-9)
    del y
    gc.collect()  # tearing down the freed chain must not recurse either


def test_zeroing_a_gradient(device):
    """x + y hands one upstream array to both leaves and sum()'s backward is a read-only
    broadcast view: x.grad.zero_() must still work and leave y.grad alone, as in torch."""
    x, y = _leaf([1.0, 2.0], device), _leaf([3.0, 4.0], device)
    (x + y).sum().backward()
    x.grad.zero_()
    np.testing.assert_array_equal(y.grad.numpy(), [1.0, 1.0])
    s = _leaf(2.0, device)  # a 0-d leaf: numpy hands back scalars
    (s * s).backward()
    s.grad.zero_()
    assert s.grad.item() == 0.0


def test_gradients_keep_the_leaf_dtype(device):
    for dtype in (np.float32, np.float64):
        x = _leaf(randn(0, (3, 4)), device, dtype)
        y = (x.amax(1).sum() + x.max() + x.var(0).sum() + F.softmax(x, -1)[0, 0]
             + F.cross_entropy(x, mg.tensor([0, 1, 3], device=device)) + x.mean())
        assert y.dtype == dtype
        y.backward()
        assert x.grad.dtype == dtype


# ---- grad modes ----------------------------------------------------------------------------------
def test_no_grad_records_nothing_and_enable_grad_restores(device):
    x = _leaf([1.0, 2.0], device)
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2 + 1
        with mg.enable_grad():
            z = x * 3
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad and z.grad_fn is not None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_as_decorator_and_restored_after_an_exception():
    @mg.no_grad()
    def f(t):
        return t * 2

    assert not f(_leaf([1.0], "cpu")).requires_grad
    with pytest.raises(ValueError):
        with mg.no_grad():
            raise ValueError
    assert mg.is_grad_enabled()


def test_detach_cuts_the_graph(device):
    x = _leaf([1.0, 2.0], device)
    y = (x * x).detach()
    assert not y.requires_grad
    (x * y).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 4.0])  # y counted as a constant


# ---- memory and retain_graph ---------------------------------------------------------------------
def test_saved_arrays_are_freed_after_backward(device):
    """A large intermediate held only by the graph must die once backward has used it, even
    while we keep the output of the op that saved it (as one keeps logits after a step)."""
    x = _leaf(np.ones((256, 256)), device)
    h = x.exp()
    ref = weakref.ref(h._data)
    square = h * h  # Mul saves h's array for its backward
    loss = square.sum()
    del h
    gc.collect()
    assert ref() is not None  # still needed: the graph keeps it for backward
    loss.backward()
    gc.collect()
    assert ref() is None, "backward left a reference to a saved intermediate (graph leak)"
    assert square.grad_fn.saved == () and square.grad_fn.parents == ()


def test_unsaved_intermediates_are_freed_before_backward(device):
    """The graph links nodes, not output tensors: an intermediate that no backward needs (here
    h, since d(2h)/dh is a constant and d(h + 1)/dh too) dies as soon as the user drops it."""
    x = _leaf(np.ones((256, 256)), device)
    h = x * 2.0
    ref = weakref.ref(h._data)
    y = (h + 1.0).sum()
    del h
    gc.collect()
    assert ref() is None, "the graph kept an activation that no backward reads"
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0)


def test_second_backward_needs_retain_graph(device):
    x = _leaf([1.0, 2.0], device)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()
    z = (x.exp() * x).sum()
    x.grad = None
    z.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    z.backward()  # allowed: the first call kept the graph
    np.testing.assert_allclose(x.grad.numpy(), 2 * first, rtol=1e-6)


# ---- errors --------------------------------------------------------------------------------------
def test_backward_on_non_scalar_needs_a_gradient():
    y = _leaf(np.ones((2, 3)), "cpu") * 2
    with pytest.raises(RuntimeError, match=r"scalar output.*shape \(2, 3\)"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3,\), expected \(2, 3\)"):
        y.backward(mg.ones(3))


def test_only_float_tensors_require_grad():
    with pytest.raises(RuntimeError, match="only float tensors.*int64"):
        mg.tensor([1, 2], requires_grad=True)


@pytest.mark.parametrize("op", [
    lambda a, b: a + b,
    lambda a, b: a @ b,
    lambda a, b: mg.cat([a, b]),
    lambda a, b: mg.where(a > 0, a, b),
    lambda a, b: F.linear(a, b),
])
def test_mixing_devices_names_both(op):
    a = mg.tensor(np.ones((2, 2), np.float32))
    b = mg.tensor(np.ones((2, 2), np.float32), device="torch:cpu")
    with pytest.raises(RuntimeError, match="'cpu'.*'torch:cpu'"):
        op(a, b)


def test_embedding_with_ids_on_another_device_names_both():
    with pytest.raises(RuntimeError, match="'cpu'.*'torch:cpu'"):
        F.embedding(mg.tensor([0, 1]), mg.zeros(3, 2, device="torch:cpu"))


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mg.zeros(2, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        mg.zeros(2, device="cuda")


# ---- moving between devices and backends ---------------------------------------------------------
def test_to_device_and_dtype_are_differentiable():
    """x.to('torch:cpu') and x.double() are ops: the gradient comes back in x's device/dtype."""
    x = _leaf([1.0, -2.0, 3.0], "cpu")
    y = x.to("torch:cpu")
    assert y.device == "torch:cpu" and isinstance(y._data, torch.Tensor)
    ((y * y).sum() + x.double().sum().to("torch:cpu")).backward()
    assert x.grad.device == "cpu" and x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1.0, -2.0, 3.0]) + 1)


def _composite(x, w, b, ids, target):
    """A little transformer-ish graph touching most op families."""
    h = F.embedding(ids, w)                                        # [4, 6]
    h = F.layer_norm(h + x[:4], 6, b, b * 0.5)
    h = F.gelu(h @ w.T[:, :5]) + h[:, :5].relu() * 0.1             # [4, 5]
    h = F.dropout(h, 0.0) + mg.stack([h.sum(0), h.amax(0)], 0).mean(0)
    att = F.softmax(h @ h.T / 3.0, -1).masked_fill(ids.unsqueeze(0).eq(0), 0.0)
    logits = (att @ h).tanh() * 2 + x[:4, :5].sigmoid()
    return F.cross_entropy(logits, target) + F.mse_loss(h.var(1), x[4, :4].exp())


def test_numpy_and_torch_backends_agree():
    """The same float32 graph on 'cpu' (numpy) and 'torch:cpu': values and every gradient agree
    within float32 reduction tolerance (they differ only in rounding order)."""
    arrays = [randn(0, (5, 6)), randn(1, (7, 6)), randn(2, (6,))]
    ids, target = np.array([1, 0, 6, 1]), np.array([2, -100, 4, 0])
    results = {}
    for device in ("cpu", "torch:cpu"):
        leaves = [_leaf(a, device) for a in arrays]
        loss = _composite(*leaves, mg.tensor(ids, device=device), mg.tensor(target, device=device))
        loss.backward()
        results[device] = [loss] + [t.grad for t in leaves]
    for a, b in zip(results["cpu"], results["torch:cpu"]):
        assert_close(a, b, **REDUCTION)
