"""Gradients of gradients: ``create_graph``, ``mg.autograd.grad`` and ``mg.gradgradcheck``.

Oracles, both computed here: float64 central differences of the gradient (``mg.gradgradcheck``,
itself shown to catch a wrong second derivative in test_gradcheck.py), and torch's double backward
(``torch.autograd.functional.hvp``, ``torch.autograd.grad``) on the same float64 values.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
import minigrad.nn.functional as F
from conftest import randn

BACKENDS = ["cpu", "torch:cpu"]
FEW = settings(max_examples=3, deadline=None, derandomize=True)
DIMS = st.tuples(st.integers(1, 3), st.integers(1, 3))


def _pos(seed, shape):
    return np.abs(randn(seed, shape)) + 0.5


def _prob(seed, shape):
    return 0.1 + 0.8 * np.random.default_rng(seed).random(shape)


class _Const(np.ndarray):
    """A float array the test passes as a constant (a loss's target), not as a checked input."""


def _target_probs(seed, shape):
    return _prob(seed, shape).view(_Const)


def _targets(n, c, seed, ignore=True):
    t = np.random.default_rng(seed).integers(0, c, n)
    if ignore and n > 1:
        t[0] = -100
    return t


def _dropout(x):
    mg.manual_seed(0)  # the same mask at every call of the function being checked
    return F.dropout(x, 0.3)


# name -> (fn(*tensors), arrays(n, m)): float64 arrays are the inputs checked, int/bool constants.
# Values stay away from kinks, poles and ties, where a finite difference straddles a jump.
OPS = {
    "add_broadcast": (lambda a, b: a + b, lambda n, m: [randn(0, (n, m)), randn(1, (m,))]),
    "sub": (lambda a, b: a - b * 2.0, lambda n, m: [randn(0, (n, m)), randn(1, (n, m))]),
    "mul": (lambda a, b: a * b * a, lambda n, m: [randn(0, (n, m)), randn(1, (1, m))]),
    "div": (lambda a, b: a / b, lambda n, m: [randn(0, (n, m)), randn(1, (n, m), lo=0.5)]),
    "rdiv_neg": (lambda a: -(1.0 / a), lambda n, m: [randn(0, (n, m), lo=0.5)]),
    "pow": (lambda a: a ** 3 + a ** 0.5 + a ** 0, lambda n, m: [_pos(0, (n, m))]),
    "scalar_pow": (lambda a: 2.0 ** a, lambda n, m: [randn(0, (n, m))]),
    "exp_log": (lambda a: a.exp() + a.log(), lambda n, m: [_pos(0, (n, m))]),
    "sin_cos": (lambda a: a.sin() * a.cos(), lambda n, m: [randn(0, (n, m))]),
    "sqrt": (lambda a: a.sqrt(), lambda n, m: [_pos(0, (n, m))]),
    "abs_relu": (lambda a: a.abs() * a + a.relu() ** 2, lambda n, m: [randn(0, (n, m), lo=0.1)]),
    "tanh_sigmoid": (lambda a: a.tanh() + a.sigmoid(), lambda n, m: [randn(0, (n, m))]),
    "erf": (lambda a: a.erf(), lambda n, m: [randn(0, (n, m))]),
    "gelu": (lambda a: F.gelu(a), lambda n, m: [randn(0, (n, m))]),
    "gelu_tanh": (lambda a: F.gelu(a, approximate="tanh"), lambda n, m: [randn(0, (n, m))]),
    "clamp": (lambda a: a.clamp(-0.5, 0.5) * a, lambda n, m: [randn(0, (n, m))]),
    "maximum_minimum": (lambda a, b: a.maximum(b) * a.minimum(b) ** 2,
                        lambda n, m: [randn(0, (n, m)), randn(1, (n, m))]),
    "where_mask": (lambda a, b, c: mg.where(c, a * a, b * a).masked_fill(~c, 0.5) + a,
                   lambda n, m: [randn(0, (n, m)), randn(1, (n, m)), randn(2, (n, m)) > 0]),
    "sum_mean": (lambda a: a.sum(1) * a.mean(0, keepdim=True).sum() + a.sum() ** 2, lambda n, m: [randn(0, (n, m))]),
    "var_std": (lambda a: a.var(1) + a.std() ** 3, lambda n, m: [randn(0, (n, m + 1))]),
    "amax_max_min": (lambda a: (a.amax(1) ** 2).sum() + a.max(0).values ** 3 + a.min() * a.sum(),
                     lambda n, m: [randn(0, (n, m))]),
    "topk": (lambda a: a.topk(1, dim=1).values ** 2, lambda n, m: [randn(0, (n, m))]),
    "norm": (lambda a: a.norm() + a.norm(dim=1) ** 2, lambda n, m: [randn(0, (n, m), lo=0.1)]),
    "reshape_permute": (lambda a: (a.reshape(-1, 1) * a.flatten()).permute(1, 0).T.unsqueeze(0) ** 2,
                        lambda n, m: [randn(0, (n, m))]),
    "expand_squeeze": (lambda a: a[:, :1].expand(-1, 3).squeeze() ** 2 * a.sum(), lambda n, m: [randn(0, (n, m))]),
    "cat_stack_split": (lambda a, b: (mg.cat([a * b, b], 0).split(1, 1)[0] ** 2).sum() + mg.stack([a, a * a]).sum(0),
                        lambda n, m: [randn(0, (n, m)), randn(1, (n, m))]),
    "index_basic": (lambda a: a[1:, ::2] ** 2 * a[0, 0], lambda n, m: [randn(0, (n + 1, m))]),
    "index_repeats": (lambda a: a[[0, 0, -1]] ** 3, lambda n, m: [randn(0, (n, m))]),
    "index_mask": (lambda a, mask: a[mask] ** 2,
                   lambda n, m: [randn(0, (n, m)), np.arange(n * m).reshape(n, m) % 2 == 0]),
    "scatter": (lambda a, b, idx: a.scatter(1, idx, b * b) * a,
                lambda n, m: [randn(0, (n, m + 1)), randn(1, (n, 1)), np.arange(n)[:, None] % (m + 1)]),
    "setitem": (lambda a, b: _setitem(a, b), lambda n, m: [randn(0, (n, m)), randn(1, (m,))]),
    "tril_triu": (lambda a: a.tril() ** 2 + a.triu(1) * a, lambda n, m: [randn(0, (n, m))]),
    "softmax": (lambda a: F.softmax(a, 1) * a, lambda n, m: [randn(0, (n, m))]),
    "log_softmax": (lambda a: F.log_softmax(a, 0) ** 2, lambda n, m: [randn(0, (n, m))]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b) ** 2,
                   lambda n, m: [randn(0, (n, m + 1)), randn(1, (m + 1,)), randn(2, (m + 1,))]),
    "dropout": (_dropout, lambda n, m: [randn(0, (n, m))]),
    "embedding": (lambda w, ids: F.embedding(ids, w) ** 2 + F.embedding(ids, w * w, padding_idx=1),
                  lambda n, m: [randn(0, (4, m)), np.array([[1, 3], [1, 0]])]),
    "linear": (lambda x, w, b: F.linear(x, w, b) ** 2,
               lambda n, m: [randn(0, (2, n, m)), randn(1, (2, m)), randn(2, (2,))]),
    "matmul_2d": (lambda a, b: (a @ b) ** 2, lambda n, m: [randn(0, (n, m)), randn(1, (m, 2))]),
    "matmul_1d": (lambda a, b, v: (v @ a) * (a @ b) + (v @ v) * (b @ v[:b.shape[0]]).sum(),
                  lambda n, m: [randn(0, (n, n)), randn(1, (n,)), randn(2, (n,))]),
    "matmul_batched": (lambda a, b: (a @ b) ** 2, lambda n, m: [randn(0, (2, n, m)), randn(1, (m, 2))]),
    "bce": (lambda p, y: F.binary_cross_entropy(p, y), lambda n, m: [_prob(0, (n, m)), _target_probs(1, (n, m))]),
    "bce_with_logits": (lambda z, y: F.binary_cross_entropy_with_logits(  # weights: constants of the loss
                            z, y, weight=z.new_tensor(_pos(5, z.shape[1])),
                            pos_weight=z.new_tensor(_pos(6, z.shape[1])))
                        + F.binary_cross_entropy_with_logits(z, y, reduction="sum"),
                        lambda n, m: [randn(0, (n, m)), _target_probs(1, (n, m))]),
    "cross_entropy": (lambda z, t: F.cross_entropy(z, t) + F.cross_entropy(z, t, reduction="sum", label_smoothing=0.1),
                      lambda n, m: [randn(0, (n + 1, m + 1)), _targets(n + 1, m + 1, 3)]),
    "nll": (lambda z, t: F.nll_loss(F.log_softmax(z, 1), t, reduction="none"),
            lambda n, m: [randn(0, (n + 1, m + 1)), _targets(n + 1, m + 1, 3)]),
    "mse_l1": (lambda a, b: F.mse_loss(a, b) + F.l1_loss(a * a, b),
               lambda n, m: [randn(0, (n, m)), randn(1, (n, m), lo=3)]),
    "clone_to": (lambda a: a.clone() * a.to("torch:cpu").to(a.device).double(), lambda n, m: [randn(0, (n, m))]),
}


def _setitem(a, b):
    out = a * 1.0
    out[0] = b * b
    return out * a


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("name", sorted(OPS))
@FEW
@given(dims=DIMS)
def test_every_op_passes_gradgradcheck(name, device, dims):
    fn, make = OPS[name]
    arrays = make(*dims)
    inputs = [mg.tensor(np.asarray(a), requires_grad=a.dtype == np.float64 and not isinstance(a, _Const),
                        device=device) for a in arrays]
    assert mg.gradgradcheck(fn, inputs)


# ---- Hessian-vector products against torch ----------------------------------------------------
def _mlp_loss(ns, x, w1, b1, w2, ln_w, t):
    """Linear -> exact GELU -> LayerNorm -> Linear -> cross-entropy with an ignored row."""
    fn = ns.nn.functional
    h = fn.layer_norm(fn.gelu(fn.linear(x, w1, b1)), (w1.shape[0],), ln_w, None)
    return fn.cross_entropy(h @ w2, t, ignore_index=-100)


def _attention_loss(ns, q, k, mask):
    scores = (q @ k.transpose(-2, -1)).masked_fill(mask, -1e9)
    return (scores.softmax(-1) @ k).tanh().pow(2).mean()


def _bce_loss(ns, z, w, y):
    fn = ns.nn.functional
    return fn.binary_cross_entropy_with_logits(fn.gelu(z @ w, approximate="tanh"), y)


HVP_CASES = {
    "mlp": (_mlp_loss, lambda: [randn(0, (4, 3)), randn(1, (5, 3)), randn(2, (5,)), randn(3, (5, 3)),
                                randn(4, (5,)), np.array([0, 2, -100, 1])]),
    "attention": (_attention_loss, lambda: [randn(0, (2, 3, 4)), randn(1, (2, 3, 4)),
                                            np.triu(np.ones((3, 3), bool), 1)]),
    "bce": (_bce_loss, lambda: [randn(0, (4, 3)), randn(1, (3, 2)), ((randn(2, (4, 2)) > 0) * 1.0).view(_Const)]),
}


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("case", sorted(HVP_CASES))
def test_hvp_equals_torch(case, device):
    """H v by double backward, for all float inputs at once, equals torch.autograd.functional.hvp."""
    fn, make = HVP_CASES[case]
    arrays = make()
    floats = [i for i, a in enumerate(arrays) if a.dtype == np.float64 and not isinstance(a, _Const)]
    vs = [randn(10 + i, arrays[i].shape) for i in floats]

    def th_f(*xs):
        full = [torch.tensor(np.asarray(a)) for a in arrays]
        for i, x in zip(floats, xs):
            full[i] = x
        return fn(torch, *full)

    _, th_hv = torch.autograd.functional.hvp(th_f, tuple(torch.tensor(arrays[i]) for i in floats),
                                             tuple(torch.tensor(v) for v in vs))
    ins = [mg.tensor(np.asarray(a), requires_grad=i in floats, device=device) for i, a in enumerate(arrays)]
    leaves = [ins[i] for i in floats]
    grads = mg.autograd.grad(fn(mg, *ins), leaves, create_graph=True)
    gv = sum((g * mg.tensor(v, device=device)).sum() for g, v in zip(grads, vs))
    hv = mg.autograd.grad(gv, leaves)
    for ours, theirs in zip(hv, th_hv):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)


# ---- API semantics, against torch ------------------------------------------------------------
def _pair(values, device="cpu"):
    return (mg.tensor(values, dtype=mg.float64, requires_grad=True, device=device),
            torch.tensor(values, dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("device", BACKENDS)
def test_create_graph_grad_is_a_graph_and_accumulates_out_of_place(device):
    x, xt = _pair([0.5, -1.0, 2.0], device)
    for ns, t in ((mg, x), (torch, xt)):
        (t ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad and x.grad.grad_fn is not None and xt.grad.requires_grad
    first = x.grad
    (x ** 3).sum().backward(create_graph=True)
    (xt ** 3).sum().backward(create_graph=True)
    assert x.grad is not first  # out of place: the first .grad's graph stays valid
    np.testing.assert_allclose(first.numpy(), 3 * np.array([0.5, -1.0, 2.0]) ** 2)
    x.grad.sum().backward()  # d/dx Σ 2·3x² = 12x, the second derivative through .grad
    xt.grad.sum().backward()
    np.testing.assert_allclose(x.grad.detach().numpy() - first.detach().numpy() * 2,
                               xt.grad.detach().numpy() - 2 * 3 * xt.detach().numpy() ** 2, rtol=1e-12)


def test_create_graph_records_even_under_no_grad():
    """torch turns grad mode on for a create_graph backward, sums of gradient paths included."""
    x, xt = _pair([0.5, 1.0, 2.0])
    y, yt = (x.tanh() * x).sum(), (xt.tanh() * xt).sum()
    with mg.no_grad():
        (g,) = mg.autograd.grad(y, x, create_graph=True)
    with torch.no_grad():
        (gt,) = torch.autograd.grad(yt, xt, create_graph=True)
    assert g.requires_grad and gt.requires_grad
    np.testing.assert_allclose(mg.autograd.grad(g.sum(), x)[0].numpy(), torch.autograd.grad(gt.sum(), xt)[0].numpy())


def test_grad_of_a_constant_gradient_does_not_require_grad():
    x, xt = _pair([1.0, 2.0])
    (x * 2).sum().backward(create_graph=True)
    (xt * 2).sum().backward(create_graph=True)
    assert x.grad.requires_grad == xt.grad.requires_grad is False


def test_autograd_grad_returns_a_tuple_and_touches_no_grad():
    x, xt = _pair([0.5, -1.0])
    y, yt = _pair([2.0, 3.0])
    got = mg.autograd.grad([(x * y).sum(), (x ** 2).sum()], [x, y])
    want = torch.autograd.grad([(xt * yt).sum(), (xt ** 2).sum()], [xt, yt])
    assert isinstance(got, tuple) and len(got) == 2
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy())
    assert x.grad is None and y.grad is None and not got[0].requires_grad


def test_grad_outputs_and_non_leaf_inputs():
    x, xt = _pair([[0.5, -1.0], [2.0, 1.5]])
    v = np.array([[1.0, -2.0], [0.5, 3.0]])
    h, ht = x.tanh(), xt.tanh()
    (gh, gx) = mg.autograd.grad(h * h, [h, x], grad_outputs=mg.tensor(v))
    (ght, gxt) = torch.autograd.grad(ht * ht, [ht, xt], grad_outputs=torch.tensor(v))
    np.testing.assert_allclose(gh.numpy(), ght.numpy())
    np.testing.assert_allclose(gx.numpy(), gxt.numpy())


def test_errors_are_torchs():
    x, _ = _pair([1.0, 2.0])
    y, _ = _pair([3.0])
    with pytest.raises(RuntimeError, match="index 1 appears to not have been used in the graph. Set allow_unused=True"):
        mg.autograd.grad((x * 2).sum(), [x, y])
    assert mg.autograd.grad((x * 2).sum(), [x, y], allow_unused=True)[1] is None
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        mg.autograd.grad(x * 2, [x])
    with pytest.raises(RuntimeError, match="Mismatch in shape: grad_output\\[0\\]"):
        mg.autograd.grad(x * 2, [x], grad_outputs=[mg.ones(3, dtype=mg.float64)])
    with pytest.raises(RuntimeError, match="got 2 tensors and 1 gradients"):
        mg.autograd.grad([x.sum(), x.sum()], [x], grad_outputs=[None])
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad"):
        mg.autograd.grad(mg.ones(1).sum(), [x])
    with pytest.raises(RuntimeError, match="One of the differentiated Tensors does not require grad"):
        mg.autograd.grad((x * 2).sum(), [mg.ones(2)])
    with pytest.raises(RuntimeError, match="cannot be empty"):
        x.sum().backward(inputs=[])


def test_retain_graph_defaults_to_create_graph():
    x, _ = _pair([0.5, 2.0])
    loss = (x.exp() * x).sum()
    mg.autograd.grad(loss, x, create_graph=True)
    mg.autograd.grad(loss, x)  # kept by create_graph=True
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        mg.autograd.grad(loss, x)


def test_backward_inputs_accumulates_only_there():
    x, xt = _pair([0.5, 2.0])
    y, yt = _pair([1.5, -1.0])
    (x * y).sum().backward(inputs=[x])
    (xt * yt).sum().backward(inputs=[xt])
    assert y.grad is None and yt.grad is None
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())


def test_an_op_without_a_second_derivative_refuses_create_graph():
    """Never a silently wrong second derivative: an op whose backward calls a backend function the
    graph namespace lacks, or that saves an intermediate without ``regraph``, raises."""
    x, _ = _pair([[0.5, 2.0], [1.0, 3.0]])

    class NoRecordedVersion(mg.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return ctx.xp.topk_indices(g, 1, 0, True) * 0 + g * 2

    with pytest.raises(RuntimeError, match="xp.topk_indices.*cannot be differentiated twice"):
        mg.autograd.grad(NoRecordedVersion.apply(x).sum(), x, create_graph=True)

    class SavesIntermediate(mg.Function):
        @staticmethod
        def forward(ctx, a):
            e = ctx.xp.exp(a)
            ctx.save_for_backward(e)
            return e + a

        @staticmethod
        def backward(ctx, g):
            (e,) = ctx.saved_tensors
            return g * (e + 1)

    with pytest.raises(RuntimeError, match="SavesIntermediateBackward: create_graph=True.*regraph"):
        mg.autograd.grad(SavesIntermediate.apply(x).sum(), x, create_graph=True)
    mg.autograd.grad(SavesIntermediate.apply(x).sum(), x)  # first order is fine


def test_a_backward_calling_numpy_directly_refuses_create_graph():
    """A user's Function whose backward bypasses ctx.xp would lose the second derivative through
    its saved input: under create_graph that is an error, at first order it works."""
    class NumpyExp(mg.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return np.exp(a)

        @staticmethod
        def backward(ctx, g):
            (a,) = ctx.saved_tensors
            return g * np.exp(a)

    x, _ = _pair([0.5, 2.0])
    mg.autograd.grad(NumpyExp.apply(x).sum(), x)
    with pytest.raises(RuntimeError, match="numpy array.*ctx.xp"):
        mg.autograd.grad(NumpyExp.apply(x).sum(), x, create_graph=True)


def test_kernels_fall_through_on_the_graph_namespace():
    from minigrad.graph_backward import graph_namespace

    ns = graph_namespace(mg.tensor([1.0])._xp, "cpu")
    assert ns.kernels.gelu_backward is None and ns.kernels.anything_else is None
