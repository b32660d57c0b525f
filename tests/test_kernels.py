"""torch's native kernels compute what the ops' own formulas say.

On the torch backend the fused ops call torch's kernels (``torch_backend.kernels``); with that
namespace emptied, the same ops run their own formulas on the same torch tensors. In float64 the
two must agree to 1e-12, forward and every gradient, also when the forward ran on a kernel and the
backward on the formula (what a backward recorded as a graph of Tensor ops does). The formulas
themselves are checked against torch autograd and finite differences by the op tests.
"""
from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad.backend import kernels as kernels_mod
from minigrad.backend import torch_backend
from minigrad.nn import functional as F

DEV = "torch:cpu"
NATIVE = torch_backend.kernels
FORMULA = kernels_mod.Kernels()  # every kernel None: the ops' formulas run

CASES = {
    "gelu": (lambda x: F.gelu(x), [(3, 5, 7)]),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [(3, 5, 7)]),
    "softmax_last": (lambda x: F.softmax(x, -1), [(2, 3, 4, 6)]),
    "softmax_middle": (lambda x: F.softmax(x, 1), [(2, 5, 4)]),
    "log_softmax_last": (lambda x: F.log_softmax(x, -1), [(6, 9)]),
    "log_softmax_first": (lambda x: F.log_softmax(x, 0), [(6, 9)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (8,), w, b, 1e-5), [(3, 4, 8), (8,), (8,)]),
    "layer_norm_2d": (lambda x, w, b: F.layer_norm(x, (4, 8), w, b, 1e-5), [(3, 4, 8), (4, 8), (4, 8)]),
    "layer_norm_plain": (lambda x: F.layer_norm(x, (8,), None, None, 1e-5), [(5, 8)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [(2, 3, 5), (4, 5), (4,)]),
    "linear_no_bias": (lambda x, w: F.linear(x, w), [(7, 5), (4, 5)]),
    "embedding": (lambda w: F.embedding(np.array([[1, 3, 1], [0, 3, 3]]), w), [(5, 4)]),
    "embedding_padding": (lambda w: F.embedding(np.array([[1, 3, 1], [0, 3, 4]]), w, padding_idx=3),
                          [(5, 4)]),
}


def _run(fn, shapes, forward_kernels, backward_kernels, monkeypatch, frozen=()):
    """fn's output and the gradients of Σ out·G, with the given kernels in each direction."""
    rng = np.random.default_rng(0)
    leaves = [mg.tensor(rng.standard_normal(s) * 2, dtype="float64", device=DEV,
                        requires_grad=i not in frozen) for i, s in enumerate(shapes)]
    monkeypatch.setattr(torch_backend, "kernels", forward_kernels)
    out = fn(*leaves)
    assert not out._data.requires_grad and out._data.grad_fn is None  # torch recorded no graph
    seed = mg.tensor(np.random.default_rng(1).standard_normal(out.shape), dtype="float64", device=DEV)
    monkeypatch.setattr(torch_backend, "kernels", backward_kernels)
    out.backward(seed)
    return [out.numpy()] + [t.grad.numpy() if t.grad is not None else None for t in leaves]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backward", ["native", "formula"])
def test_native_kernels_equal_the_formulas(case, backward, monkeypatch):
    fn, shapes = CASES[case]
    want = _run(fn, shapes, FORMULA, FORMULA, monkeypatch)
    got = _run(fn, shapes, NATIVE, NATIVE if backward == "native" else FORMULA, monkeypatch)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=f"{case}: output {i}")


@pytest.mark.parametrize("frozen", [(0,), (1, 2), (0, 2)])
def test_layer_norm_kernel_computes_only_the_needed_gradients(frozen, monkeypatch):
    fn, shapes = CASES["layer_norm"]
    want = _run(fn, shapes, FORMULA, FORMULA, monkeypatch, frozen)
    got = _run(fn, shapes, NATIVE, NATIVE, monkeypatch, frozen)
    for i, (g, w) in enumerate(zip(got, want)):
        assert (g is None) == (w is None) == (i - 1 in frozen), i
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_the_ops_use_the_native_kernels(monkeypatch):
    """Each kernel named in the contract is called by its op on the torch backend."""
    called = set()
    spied = kernels_mod.Kernels(**{
        name: (lambda name, k: lambda *a, **kw: called.add(name) or k(*a, **kw))(name, k)
        for name, k in vars(NATIVE).items()})
    for fn, shapes in CASES.values():
        _run(fn, shapes, spied, spied, monkeypatch)
    assert called == set(vars(NATIVE))


def test_embedding_out_of_range_on_torch_is_torchs_error():
    with pytest.raises(IndexError, match="index out of range"):
        F.embedding(mg.tensor([0, 5], device=DEV), mg.zeros(5, 2, device=DEV))
