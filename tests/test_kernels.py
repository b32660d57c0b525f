"""Each backend's kernels compute what the ops' own formulas say.

On the torch backend the fused ops call torch's kernels (``torch_backend.kernels``); on numpy, with
numba installed, the compiled loops of ``minigrad/backend/jit.py``. With a backend's kernels removed
(numpy keeps its thread pool), the same ops run their own formulas on the same arrays. In float64
the two must agree to 1e-12, forward and every gradient, also when the forward ran on a kernel and
the backward on the formula (what a backward recorded as a graph of Tensor ops does). The formulas
themselves are checked against torch autograd and finite differences by the op tests.
"""
from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad.backend import jit, numpy_backend, parallel, torch_backend
from minigrad.backend import kernels as kernels_mod
from minigrad.nn import functional as F

DEV = "torch:cpu"
NATIVE = torch_backend.kernels
FORMULA = kernels_mod.Kernels()  # every kernel None: the ops' formulas run
# (backend module, device, its kernels, the same backend with only its formulas)
BACKENDS = {
    "torch": (torch_backend, DEV, NATIVE, FORMULA),
    "numpy-jit": (numpy_backend, "cpu", numpy_backend.kernels, kernels_mod.Kernels(blocks=parallel.blocks)),
}

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
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [(2, 3, 5, 4)] * 3),
    "attention_masked": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=_mask(q.device), scale=0.3),
                         [(2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 4)]),
    # Enough (batch, head) pairs that numpy's kernel cuts them into blocks (each block must get its
    # own rows of the per-row log-sum-exp: a regression).
    "attention_blocks": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=_mask(q.device, 16, 12)),
                         [(16, 4, 12, 8)] * 3),
    # Attention dropout: numpy's fused op draws the mask as F.dropout does (torch's kernel has none).
    "attention_dropout": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=_mask(q.device, 16, 12),
                                                                         dropout_p=0.25), [(16, 4, 12, 8)] * 3),
}
KERNEL_OF = {"gelu_tanh": "gelu", "softmax_last": "softmax", "softmax_middle": "softmax",
             "log_softmax_last": "log_softmax", "log_softmax_first": "log_softmax", "layer_norm_2d": "layer_norm",
             "layer_norm_plain": "layer_norm", "linear_no_bias": "linear", "embedding_padding": "embedding",
             "attention_masked": "attention", "attention_blocks": "attention", "attention_dropout": "attention"}


def _backend(name: str, monkeypatch):
    if name == "numpy-jit":
        if not jit.available():
            pytest.skip("numba is not installed: the numpy backend has no compiled kernels")
        monkeypatch.setattr(jit, "MIN_ELEMENTS", 0)  # these small cases would otherwise run the formulas
    return BACKENDS[name]


def _mask(device=DEV, batch=2, keys=6):
    """mini_bert's additive padding mask, [B, 1, 1, T]: the second sequence's last 2 keys are padding."""
    m = np.zeros((batch, 1, 1, keys))
    m[1, ..., 4:] = np.finfo(np.float64).min
    return mg.tensor(m, device=device)


def _run(fn, shapes, forward_kernels, backward_kernels, monkeypatch, frozen=(), backend="torch"):
    """fn's output and the gradients of Σ out·G, with the given kernels in each direction."""
    module, device = BACKENDS[backend][:2]
    mg.manual_seed(0)  # the same dropout mask in every run
    rng = np.random.default_rng(0)
    leaves = [mg.tensor(rng.standard_normal(s) * 2, dtype="float64", device=device,
                        requires_grad=i not in frozen) for i, s in enumerate(shapes)]
    monkeypatch.setattr(module, "kernels", forward_kernels)
    out = fn(*leaves)
    if backend == "torch":
        assert not out._data.requires_grad and out._data.grad_fn is None  # torch recorded no graph
    seed = mg.tensor(np.random.default_rng(1).standard_normal(out.shape), dtype="float64", device=device)
    monkeypatch.setattr(module, "kernels", backward_kernels)
    out.backward(seed)
    return [out.numpy()] + [t.grad.numpy() if t.grad is not None else None for t in leaves]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("backward", ["native", "formula"])
def test_native_kernels_equal_the_formulas(case, backward, backend, monkeypatch):
    fn, shapes = CASES[case]
    _, _, native, formula = _backend(backend, monkeypatch)
    if getattr(native, KERNEL_OF.get(case, case)) is None:
        pytest.skip(f"{backend} has no {KERNEL_OF.get(case, case)} kernel")
    want = _run(fn, shapes, formula, formula, monkeypatch, backend=backend)
    got = _run(fn, shapes, native, native if backward == "native" else formula, monkeypatch, backend=backend)
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=f"{case}: output {i}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("frozen", [(0,), (1, 2), (0, 2)])
def test_layer_norm_kernel_computes_only_the_needed_gradients(frozen, backend, monkeypatch):
    fn, shapes = CASES["layer_norm"]
    _, _, native, formula = _backend(backend, monkeypatch)
    want = _run(fn, shapes, formula, formula, monkeypatch, frozen, backend)
    got = _run(fn, shapes, native, native, monkeypatch, frozen, backend)
    for i, (g, w) in enumerate(zip(got, want)):
        assert (g is None) == (w is None) == (i - 1 in frozen), i
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_ops_use_the_native_kernels(backend, monkeypatch):
    """Each kernel a backend provides is called by its op (numpy's pool, ``blocks``, is what its
    formulas run on, not a kernel an op asks for by name)."""
    _, _, native, _ = _backend(backend, monkeypatch)
    called = set()
    spied = kernels_mod.Kernels(**{
        name: (lambda name, k: lambda *a, **kw: called.add(name) or k(*a, **kw))(name, k)
        for name, k in vars(native).items()})
    for fn, shapes in CASES.values():
        _run(fn, shapes, spied, spied, monkeypatch, backend=backend)
    assert called - {"blocks"} == set(vars(native)) - {"blocks"}


def test_embedding_out_of_range_on_torch_is_torchs_error():
    with pytest.raises(IndexError, match="index out of range"):
        F.embedding(mg.tensor([0, 5], device=DEV), mg.zeros(5, 2, device=DEV))


def test_bert_without_attention_weights_equals_with_them():
    """mini_bert's attention on the fused kernel (weights not asked for) = the composed one."""
    from mini_bert.config import BertConfig
    from mini_bert.model import BertModel

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    mg.manual_seed(0)
    model = BertModel(config).to(DEV).double().eval()
    ids = np.random.default_rng(0).integers(1, 40, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    runs = []
    for weights in (True, False):
        model.zero_grad()
        out = model(ids, attention_mask=mask, output_attentions=weights)
        assert (out.attentions is None) != weights
        (out.last_hidden_state * out.last_hidden_state).sum().backward()
        runs.append([out.last_hidden_state.numpy()] + [p.grad.numpy() for p in model.parameters()
                                                       if p.grad is not None])  # (not the pooler's)
    assert len(runs[0]) == len(runs[1]) > 20
    for i, (a, b) in enumerate(zip(*runs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"array {i}")


def test_fused_attention_differentiates_twice_through_its_formula():
    """create_graph runs the fused op's backward formula on Tensors (the kernel cannot record): its
    first derivatives equal the kernel's, and its second pass gradgradcheck in float64."""
    rng = np.random.default_rng(0)
    q, k, v = (mg.tensor(rng.standard_normal((2, 2, 5, 4)), device=DEV, requires_grad=True) for _ in range(3))
    keep = np.ones((2, 1, 1, 5))
    keep[1, ..., 3:] = 0
    mask = mg.tensor((1 - keep) * np.finfo(np.float64).min, device=DEV)

    def attention(q, k, v):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert out.grad_fn.name() == "ScaledDotProductAttentionBackward"  # the fused op, not composed
        return out

    g = mg.tensor(rng.standard_normal((2, 2, 5, 4)), device=DEV)
    by_kernel = mg.autograd.grad(attention(q, k, v), (q, k, v), g)
    by_formula = mg.autograd.grad(attention(q, k, v), (q, k, v), g, create_graph=True)
    for a, b in zip(by_kernel, by_formula):
        assert b.grad_fn is not None
        np.testing.assert_allclose(b.detach().numpy(), a.numpy(), rtol=1e-12, atol=1e-13)
    assert mg.gradgradcheck(attention, (q, k, v))
