"""nn behaves as torch's (issue 12): losses and their options, loss modules, gradient clipping,
Module and container API, the functions tutorials call (optimizers: test_optim_semantics.py). Every oracle is torch,
run in the test on the same numbers (float64, so values agree to rounding), or float64 finite
differences; each case runs on both backends (numpy ``cpu`` and ``torch:cpu``)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import minigrad as mg
from minigrad import nn
from minigrad.nn import functional as F

BACKENDS = ["cpu", "torch:cpu"]
TIGHT = dict(rtol=1e-10, atol=1e-12)  # float64 on both sides: only summation order differs


def _pair(array, device, requires_grad=True):
    return (mg.tensor(array, requires_grad=requires_grad, device=device),
            torch.tensor(array, requires_grad=requires_grad))


def _close(ours, theirs, **tol):
    ours = ours.numpy() if isinstance(ours, mg.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    np.testing.assert_allclose(ours, theirs, **(tol or TIGHT))


RNG = np.random.default_rng(12)
LOGITS = RNG.standard_normal((6, 5))
TARGETS = np.array([0, 4, -100, 2, 2, 1])
CLASS_W = RNG.random(5) + 0.5


# ---- cross-entropy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_every_target_ignored_gives_torch_nan_loss_and_zero_gradient(device, reduction):
    z, zt = _pair(LOGITS, device)
    ignored = np.full(6, -100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's 0/0 warning for the NaN mean
        loss = F.cross_entropy(z, mg.tensor(ignored, device=device), reduction=reduction)
    want = torch.nn.functional.cross_entropy(zt, torch.tensor(ignored), reduction=reduction)
    loss.sum().backward()
    want.sum().backward()
    _close(loss, want)  # NaN for mean (0/0), 0 for sum and none, as torch: equal_nan by default
    assert np.all(z.grad.numpy() == 0) and np.all(zt.grad.numpy() == 0)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_options_match_torch(device, reduction, smoothing, weighted):
    """Partial ignore_index, every reduction, label smoothing and class weights, loss and gradient."""
    z, zt = _pair(LOGITS, device)
    w = mg.tensor(CLASS_W, device=device) if weighted else None
    wt = torch.tensor(CLASS_W) if weighted else None
    loss = F.cross_entropy(z, mg.tensor(TARGETS, device=device), w, reduction=reduction,
                           label_smoothing=smoothing)
    want = torch.nn.functional.cross_entropy(zt, torch.tensor(TARGETS), wt, reduction=reduction,
                                             label_smoothing=smoothing)
    seed = np.arange(1.0, 7.0) if reduction == "none" else 1.0  # a non-uniform upstream gradient
    loss.backward(mg.tensor(seed, device=device, dtype=mg.float64))
    want.backward(torch.tensor(seed, dtype=torch.float64))
    _close(loss, want)
    _close(z.grad, zt.grad)


@pytest.mark.parametrize("device", BACKENDS)
def test_cross_entropy_label_smoothing_passes_float64_gradcheck(device):
    z = mg.tensor(LOGITS, requires_grad=True, device=device)
    t, w = mg.tensor(TARGETS, device=device), mg.tensor(CLASS_W, device=device)
    assert mg.gradcheck(lambda z: F.cross_entropy(z, t, w, label_smoothing=0.3), [z])
    assert mg.gradcheck(lambda z: F.cross_entropy(z, t, label_smoothing=0.1, reduction="sum"), [z])


def test_cross_entropy_rejects_bad_arguments():
    z = mg.tensor(LOGITS)
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(z, mg.tensor(TARGETS), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"weight must have shape \(5,\)"):
        F.cross_entropy(z, mg.tensor(TARGETS), mg.ones(4))
    with pytest.raises(IndexError, match="target 7 is out of bounds"):
        F.cross_entropy(z, mg.tensor([0, 1, 7, 1, 1, 1]))
    with pytest.raises(TypeError, match="integer class ids"):
        F.cross_entropy(z, mg.tensor(TARGETS.astype(np.float32)))


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_torch(device, reduction, weighted):
    logp = np.log(np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True))
    x, xt = _pair(logp, device)
    w = mg.tensor(CLASS_W, device=device) if weighted else None
    wt = torch.tensor(CLASS_W) if weighted else None
    loss = F.nll_loss(x, mg.tensor(TARGETS, device=device), w, reduction=reduction)
    want = torch.nn.functional.nll_loss(xt, torch.tensor(TARGETS), wt, reduction=reduction)
    loss.sum().backward()
    want.sum().backward()
    _close(loss, want)
    _close(x.grad, xt.grad)


# ---- loss modules with torch's constructor arguments ------------------------------------------------
Y01 = (RNG.random((6, 5)) > 0.5).astype(np.float64)
PROBS = 1 / (1 + np.exp(-LOGITS))
LOSS_CASES = [  # (name, constructor kwargs as arrays, input, target)
    ("CrossEntropyLoss", {}, LOGITS, TARGETS),
    ("CrossEntropyLoss", {"weight": CLASS_W, "ignore_index": 2, "label_smoothing": 0.2,
                          "reduction": "sum"}, LOGITS, np.abs(TARGETS) % 5),
    ("NLLLoss", {"weight": CLASS_W, "ignore_index": -100}, LOGITS, TARGETS),
    ("BCEWithLogitsLoss", {}, LOGITS, Y01),
    ("BCEWithLogitsLoss", {"pos_weight": CLASS_W, "reduction": "none"}, LOGITS, Y01),
    ("BCEWithLogitsLoss", {"weight": CLASS_W, "pos_weight": CLASS_W * 2}, LOGITS, Y01),
    ("BCELoss", {"weight": CLASS_W}, PROBS, Y01),
    ("MSELoss", {"reduction": "sum"}, LOGITS, PROBS),
    ("L1Loss", {}, LOGITS, PROBS),
]


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("name,kwargs,x,y", LOSS_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(LOSS_CASES)])
def test_loss_modules_match_torch(device, name, kwargs, x, y):
    ours_kw = {k: mg.tensor(v, device=device) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    theirs_kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    ours, theirs = getattr(nn, name)(**ours_kw), getattr(torch.nn, name)(**theirs_kw)
    a, at = _pair(x, device)
    loss, want = ours(a, mg.tensor(y, device=device)), theirs(at, torch.tensor(y))
    loss.sum().backward()
    want.sum().backward()
    _close(loss, want)
    _close(a.grad, at.grad)
    # Class weights are buffers, as torch's: saved in the state dict under the same names.
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_bce_with_logits_pos_weight_passes_float64_gradcheck():
    z = mg.tensor(LOGITS, requires_grad=True)
    y, pw = mg.tensor(Y01), mg.tensor(CLASS_W)
    assert mg.gradcheck(lambda z: F.binary_cross_entropy_with_logits(z, y, pos_weight=pw), [z])


# ---- gradient clipping -----------------------------------------------------------------------------
GRADS = [RNG.standard_normal((3, 4)) * 3, RNG.standard_normal(5)]


def _with_grads(device):
    ours, theirs = [], []
    for g in GRADS:
        p, pt = _pair(np.zeros_like(g), device)
        p.grad, pt.grad = mg.tensor(g, device=device), torch.tensor(g)
        ours.append(p)
        theirs.append(pt)
    return ours, theirs


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_returns_the_total_norm_tensor_and_clips_as_torch(device, norm_type, max_norm):
    ours, theirs = _with_grads(device)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, mg.Tensor) and total.shape == () and total.dtype == mg.float64
    _close(total, want)
    for p, pt in zip(ours, theirs):
        _close(p.grad, pt.grad)


@pytest.mark.parametrize("device", BACKENDS)
def test_clip_grad_norm_error_if_nonfinite_and_clip_grad_value(device):
    ours, theirs = _with_grads(device)
    ours[0].grad._data[0, 0] = np.inf
    theirs[0].grad[0, 0] = np.inf
    with pytest.raises(RuntimeError) as theirs_err:
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as ours_err:
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    assert str(ours_err.value) == str(theirs_err.value)
    ours, theirs = _with_grads(device)
    nn.utils.clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, pt in zip(ours, theirs):
        _close(p.grad, pt.grad)


# ---- Module and containers -------------------------------------------------------------------------
def _build(ns):
    """The same small model in either namespace (torch.nn or minigrad.nn)."""
    model = ns.Sequential(ns.Linear(4, 8), ns.ReLU(), ns.Dropout(0.1), ns.LayerNorm(8))
    model.heads = ns.ModuleDict({"cls": ns.Linear(8, 3), "reg": ns.Sequential(ns.Linear(8, 1), ns.Sigmoid())})
    model.blocks = ns.ModuleList([ns.Embedding(10, 8), ns.Identity(), ns.GELU(), ns.Tanh()])
    model.blocks.append(ns.Softmax(dim=-1))
    return model


def test_module_tree_names_and_state_dict_keys_match_torch():
    ours, theirs = _build(nn), _build(torch.nn)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [type(m).__name__ for m in ours.children()] == [type(m).__name__ for m in theirs.children()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(list(ours.parameters())) == len(list(theirs.parameters()))
    assert [n for n, _ in ours.heads.named_children()] == ["cls", "reg"] and "cls" in ours.heads
    assert isinstance(ours[1:], nn.Sequential) and len(ours[1:]) == len(theirs[1:]) == 5
    assert ours.get_submodule("heads.reg.0") is ours.heads["reg"][0]


def test_load_state_dict_non_strict_reports_torchs_missing_and_unexpected_keys():
    ours, theirs = _build(nn), _build(torch.nn)
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    sd.pop("0.bias")
    sd["extra.weight"] = np.zeros(3, np.float32)
    got = ours.load_state_dict(sd, strict=False)
    want = theirs.load_state_dict({k: torch.tensor(v) for k, v in sd.items()}, strict=False)
    assert (got.missing_keys, got.unexpected_keys) == (want.missing_keys, want.unexpected_keys)
    np.testing.assert_array_equal(ours.heads["cls"].weight.numpy(), theirs.heads["cls"].weight.detach().numpy())


@pytest.mark.parametrize("device", BACKENDS)
def test_module_modes_dtypes_and_helpers_return_what_torch_returns(device):
    model = _build(nn).to(device)
    assert model.train() is model and model.eval() is model and not model.heads["cls"].training
    assert model.double() is model
    assert {p.dtype for p in model.parameters()} == {mg.float64}
    assert model.to(mg.float32) is model and {p.dtype for p in model.parameters()} == {mg.float32}
    assert model.to(dtype=mg.float64).float() is model and model[0].weight.dtype == mg.float32
    assert model[0].weight.device == device  # a dtype change keeps the device
    half, half_t = _build(nn).half(), _build(torch.nn).half()
    assert [str(p.dtype) for p in half.parameters()] == [str(p.dtype).removeprefix("torch.")
                                                         for p in half_t.parameters()]
    with pytest.raises(TypeError, match="floating point"):
        model.to(mg.int64)
    seen, seen_torch = [], []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    _build(torch.nn).apply(lambda m: seen_torch.append(type(m).__name__))
    assert seen == seen_torch  # children before their parent, in torch's order
    assert model.requires_grad_(False) is model and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_for_module_and_optimizer(device, set_to_none):
    model = nn.Linear(3, 2).to(device)
    opt = mg.optim.SGD(model.parameters(), lr=0.1)
    for zero in (model.zero_grad, opt.zero_grad):
        model(mg.ones(4, 3, device=device)).sum().backward()
        zero(set_to_none=set_to_none)
        for p in model.parameters():
            assert (p.grad is None) if set_to_none else not p.grad.numpy().any()
    model(mg.ones(4, 3, device=device)).sum().backward()
    opt.zero_grad()  # torch's default: set_to_none=True
    assert all(p.grad is None for p in model.parameters())


# ---- what the tutorials call besides (nanoGPT, makemore, the Annotated Transformer) ----------------
SDPA_CASES = [dict(is_causal=True), dict(scale=0.3), dict(attn_mask=RNG.random((5, 5)) > 0.3),
              dict(attn_mask=RNG.standard_normal((5, 5)))]


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("kwargs", SDPA_CASES, ids=["causal", "scale", "bool_mask", "float_mask"])
def test_scaled_dot_product_attention_matches_torch(device, kwargs):
    arrays = [RNG.standard_normal((2, 3, 5, 4)) for _ in range(3)]
    ours_kw = {k: mg.tensor(v, device=device) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    theirs_kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    ours = [mg.tensor(a, requires_grad=True, device=device) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = F.scaled_dot_product_attention(*ours, **ours_kw)
    want = torch.nn.functional.scaled_dot_product_attention(*theirs, **theirs_kw)
    out.sum().backward()
    want.sum().backward()
    _close(out, want)
    for a, at in zip(ours, theirs):
        _close(a.grad, at.grad)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1, 3, 2), (1, 1, 64, 16)], ids=["composed", "fusable"])
@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_scaled_dot_product_attention_refuses_a_bad_dropout_p(device, shape, p):
    """As torch does (a RuntimeError there), whichever form would run: the larger shape is one
    numpy's fused kernel takes, and a fused op never reaches dropout()'s own check (a regression:
    -0.1 was accepted there)."""
    q = mg.tensor(RNG.standard_normal(shape), device=device)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\], got"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=p)


@pytest.mark.parametrize("device", BACKENDS)
def test_one_hot_matches_torch(device):
    ids = np.array([[0, 3], [2, 1]])
    _close(F.one_hot(mg.tensor(ids, device=device)), torch.nn.functional.one_hot(torch.tensor(ids)))
    _close(F.one_hot(mg.tensor(ids, device=device), 6), torch.nn.functional.one_hot(torch.tensor(ids), 6))


@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_"])
def test_initialisers_have_torchs_spread(name):
    """Same shape, same formula: the sample standard deviations agree to sampling noise (~1% at
    this size) and uniform draws stay inside torch's largest draw's bound."""
    ours, theirs = getattr(nn.init, name)(mg.zeros(256, 384)), getattr(torch.nn.init, name)(torch.zeros(256, 384))
    assert ours.numpy().std() == pytest.approx(theirs.numpy().std(), rel=0.03)
    if "uniform" in name:
        assert np.abs(ours.numpy()).max() <= np.abs(theirs.numpy()).max() * 1.001


@pytest.mark.parametrize("device", BACKENDS)
def test_init_and_load_state_dict_write_in_place_as_torch(device):
    """``p.data`` shares p's storage, so an initialiser or a loaded checkpoint must show through it
    (torch writes in place under no_grad); a rebinding would leave the view on the old values."""
    for ns, dev in ((nn, device), (torch.nn, "cpu")):
        lin = ns.Linear(2, 3).to(dev)
        view = lin.weight.data
        ns.init.constant_(lin.weight, 0.5)
        assert (view.numpy() == 0.5).all()
        lin.load_state_dict({"weight": np.full((3, 2), 2.0, np.float32) if ns is nn else torch.full((3, 2), 2.0),
                             "bias": np.zeros(3, np.float32) if ns is nn else torch.zeros(3)})
        assert (view.numpy() == 2.0).all() and lin.weight.requires_grad


@pytest.mark.parametrize("device", BACKENDS)
def test_layers_take_torchs_device_and_dtype_keywords(device):
    for layer in (nn.Linear(3, 2, device=device, dtype=mg.float64), nn.Embedding(5, 2, device=device, dtype=mg.float64),
                  nn.LayerNorm(4, device=device, dtype=mg.float64)):
        assert {(p.device, p.dtype) for p in layer.parameters()} == {(device, mg.float64)}


def test_forward_hooks_as_torch():
    """register_forward_hook: hook(module, args, output) after forward, a non-None return replaces
    the output, the handle removes it (also as a context manager); the same calls on torch agree."""
    results = {}
    for lib in (mg, torch):
        lin = lib.nn.Linear(3, 2)
        seen = []
        h1 = lin.register_forward_hook(lambda m, args, out: seen.append((m is lin, len(args), tuple(out.shape))))
        h2 = lin.register_forward_hook(lambda m, args, out: out * 0 + 7)
        x = lib.ones(4, 3)
        first = lin(x)
        h2.remove()
        second = lin(x)
        with lin.register_forward_hook(lambda m, args, out: out * 0 - 1):
            third = lin(x)
        h1.remove()
        lin(x)
        results[lib.__name__] = (seen, float(first.sum()), float((second == lin(x)).all()), float(third.sum()))
    assert results["minigrad"] == results["torch"], results
    assert results["minigrad"][0] == [(True, 1, (4, 2))] * 3 and results["minigrad"][1] == 56.0
