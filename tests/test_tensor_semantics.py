"""Tensor semantics a PyTorch user relies on, each checked against torch on both backends (issue 12):
comparisons, truthiness, in-place ops and version counters, promotion, scalar-base powers, item
assignment, the ``.data`` contract, ``to()``, and a second backward through a graph that saved nothing.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import ELEMENTWISE, REDUCTION, assert_close, check_against_torch, randn

import minigrad as mg

DEVICES = ["cpu", "torch:cpu"]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def pair(values, device, dtype=None, requires_grad=False):
    """The same values as a minigrad tensor on ``device`` and a torch CPU tensor."""
    a = np.asarray(values, dtype=dtype)
    return (mg.tensor(a, device=device, requires_grad=requires_grad),
            torch.tensor(a, requires_grad=requires_grad))


def torch_dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


# ---- 1. comparisons --------------------------------------------------------------------------------
OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
       "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("other", ["tensor", "int", "float", "np.float64", "np.int64"])
def test_comparisons_are_elementwise_bool_tensors(device, op, other):
    m, t = pair([0.0, 1.0, 2.0, 0.1], device)
    o_m, o_t = {"tensor": pair([0.0, 5.0, 2.0, 0.1], device), "int": (1, 1), "float": (0.1, 0.1),
                "np.float64": (np.float64(0.1), np.float64(0.1)), "np.int64": (np.int64(2), np.int64(2))}[other]
    got, want = OPS[op](m, o_m), OPS[op](t, o_t)
    assert isinstance(got, mg.Tensor) and got.dtype == np.bool_ and not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_masked_fill_with_eq_mask_matches_torch(device):
    scores_m, scores_t = pair(randn(0, (2, 3, 3)), device, np.float32, requires_grad=True)
    mask_m, mask_t = pair(np.tril(np.ones((3, 3), dtype=np.int64)), device)
    out_m = scores_m.masked_fill(mask_m == 0, -1e9).softmax(-1)
    out_t = scores_t.masked_fill(mask_t == 0, -1e9).softmax(-1)
    assert_close(out_m, out_t, **ELEMENTWISE)
    out_m.pow(2).sum().backward()
    out_t.pow(2).sum().backward()
    assert_close(scores_m.grad, scores_t.grad, **ELEMENTWISE)
    assert ((mask_m != 1) == (mask_m == 0)).all().item()


def test_hash_stays_identity(device):
    a, b = mg.tensor([1.0], device=device), mg.tensor([1.0], device=device)
    d = {a: 1, b: 2}
    assert len(d) == 2 and d[a] == 1 and a in {a} and b not in {a}


# ---- 2. truthiness and Python conversions ----------------------------------------------------------
def test_truth_value_like_torch(device):
    assert bool(mg.tensor([0.0], device=device) > 1) is False
    assert bool(mg.tensor([-1.0, 3.0], device=device).sum() > 0) is True
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is ambiguous"):
        bool(mg.tensor([1.0, 2.0], device=device))
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(mg.tensor(1.0, device=device))
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(mg.tensor(1.0, device=device))


def test_float_int_index_abs_invert(device):
    t = mg.tensor([-2.5], device=device)
    assert float(t) == -2.5 and int(t) == int(torch.tensor([-2.5])) and abs(t).item() == 2.5
    assert [10, 20, 30][mg.tensor(2, device=device)] == 30
    with pytest.raises(TypeError, match="only integer tensors"):
        [1, 2][mg.tensor(1.0, device=device)]
    with pytest.raises(RuntimeError, match="only one element tensors"):
        float(mg.tensor([1.0, 2.0], device=device))
    np.testing.assert_array_equal((~mg.tensor([True, False], device=device)).numpy(), [False, True])
    np.testing.assert_array_equal((~mg.tensor([1, -2], device=device)).numpy(), (~torch.tensor([1, -2])).numpy())
    with pytest.raises(TypeError):
        ~mg.tensor([1.0], device=device)


# ---- 3. in-place ops, version counters -------------------------------------------------------------
def test_inplace_operators_update_the_same_storage(device):
    w = mg.tensor([1.0, 2.0, 3.0], device=device)
    view, alias, raw = w[1:], w.data, w._data
    ident = id(w)
    w += 1
    w -= mg.tensor([0.5, 0.5, 0.5], device=device)
    w *= 2
    w /= 4
    assert id(w) == ident and w._data is raw
    np.testing.assert_allclose(w.numpy(), [0.75, 1.25, 1.75])
    np.testing.assert_allclose(view.numpy(), [1.25, 1.75])  # a view sees the writes
    np.testing.assert_allclose(alias.numpy(), w.numpy())
    assert w._version == view._version == alias._version == 4


def test_manual_sgd_updates_parameters(device):
    w_m, w_t = pair(randn(1, (3,)), device, np.float32, requires_grad=True)
    x = randn(2, (4, 3)).astype(np.float32)
    for w, ns in ((w_m, mg), (w_t, torch)):
        for _ in range(3):
            loss = ((ns.tensor(x, device=w.device if ns is mg else "cpu") @ w) ** 2).mean()
            loss.backward()
            with ns.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
    assert_close(w_m, w_t, **REDUCTION)
    assert w_m.is_leaf and w_m.requires_grad and not w_m.grad.numpy().any()


def test_element_views_write_through(device):
    """t[i] is a view in torch, also of a 1-D tensor (numpy would hand back a scalar copy)."""
    w_m, w_t = pair([1.0, 2.0, 3.0], device, np.float32, requires_grad=True)
    for w, ns in ((w_m, mg), (w_t, torch)):
        first = w[0]
        with ns.no_grad():
            w[1].add_(5)
            w[2].zero_()
            w.mul_(2)
        assert first.item() == 2.0
    np.testing.assert_array_equal(w_m.numpy(), w_t.detach().numpy())


def test_inplace_on_leaf_requiring_grad_raises_torchs_error(device):
    w = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    for fn in (lambda: w.add_(1), lambda: w.mul_(2), lambda: w.zero_(), lambda: w.clamp_(0, 1)):
        with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
            fn()
    with pytest.raises(RuntimeError, match="a view of a leaf Variable"):
        w[0] = 3.0
    with mg.no_grad():
        w.add_(1)
        w[0] = 0.0
    np.testing.assert_array_equal(w.numpy(), [0.0, 3.0])


@pytest.mark.parametrize("case", ["exp-add_", "sigmoid-mul_", "mul-saved-input", "through-data", "through-view"])
def test_version_counter_error_instead_of_a_wrong_gradient(device, case):
    """torch raises 'modified by an inplace operation' in each case; so must we (never wrong numbers)."""
    def run(ns, dev):
        w = ns.tensor([1.0, 2.0], requires_grad=True, **({"device": dev} if ns is mg else {}))
        if case == "exp-add_":
            h = w.exp()
            h.add_(1)
            return h.sum()
        if case == "sigmoid-mul_":
            s = w.sigmoid()
            out = s * 2
            s.mul_(3)
            return out.sum()
        a = w * 1
        out = (a * w).sum()  # Mul saves a and w
        with ns.no_grad():
            if case == "mul-saved-input":
                a.add_(1)
            elif case == "through-data":
                w.data.mul_(2)
            else:
                a[0:1].add_(5)
        return out
    if case == "through-data":
        # torch's .data does not share the version counter, so torch silently uses the new values
        # here (its documented pitfall); minigrad's .data shares it and refuses, on purpose.
        run(torch, None).backward()
    else:
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            run(torch, None).backward()
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*is at version 1; expected version 0"):
        run(mg, device).backward()


def test_inplace_on_non_leaf_is_recorded_like_torch(device):
    def fn(ns, w, v):
        h = w * 2
        h.add_(v, alpha=0.5)
        h.mul_(w)
        h.div_(v + 3)
        h.sub_(1)
        h.clamp_(-2, 10)
        h[0] = v[1] * 3  # recorded item assignment
        h.masked_fill_(h > 5, 0.0)
        return h
    check_against_torch(fn, randn(3, (4,)), randn(4, (4,)), device=device)


def test_inplace_into_a_plain_buffer_joins_the_graph(device):
    def fn(ns, w):
        buf = ns.zeros(3, device=w.device) if ns is mg else torch.zeros(3)
        buf += w * w
        buf[1:] = w[:2] * 10
        return buf
    check_against_torch(fn, randn(5, (3,)), device=device)


def test_recorded_inplace_through_a_view_is_a_clear_error(device):
    w = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    h = w * 2
    with pytest.raises(RuntimeError, match="view of a tensor with history"):
        h[0:1].add_(1)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable"):
        w[0:1].add_(1)


def test_fill_copy_normal_uniform(device):
    t = mg.zeros(2, 3, device=device)
    t.fill_(2.5)
    np.testing.assert_array_equal(t.numpy(), np.full((2, 3), 2.5))
    t.copy_(mg.tensor([1.0, 2.0, 3.0]))  # broadcast, and from the other backend
    np.testing.assert_array_equal(t.numpy(), [[1, 2, 3], [1, 2, 3]])
    mg.manual_seed(0)
    t.normal_(3.0, 0.01)
    assert abs(t.mean().item() - 3.0) < 0.05 and t._version == 3
    t.uniform_(-1, 1)
    assert ((t >= -1) & (t < 1)).all().item()
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type Long"):
        mg.tensor([1, 2], device=device).add_(0.5)


def test_grad_data_zero_and_optimizer_style_updates(device):
    """torch code does p.grad.data.zero_(), p.data.add_(...), p.data -= ...: the same on both backends."""
    w = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    (w * w).sum().backward()
    assert isinstance(w.data, mg.Tensor) and not w.data.requires_grad and w.data._data is w._data
    w.data.add_(w.grad.data, alpha=-0.25)
    w.data -= 0.5 * w.grad.data
    w.grad.data.zero_()
    np.testing.assert_allclose(w.numpy(), [-0.5, -1.0])
    assert not w.grad.numpy().any()
    with pytest.raises(TypeError, match="needs a Tensor"):
        w.data = np.zeros(2)


def test_leaf_gradients_do_not_alias(device):
    """Add hands one gradient array to both inputs; zeroing one leaf's .grad must not touch the other."""
    a = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    b = mg.tensor([3.0, 4.0], device=device, requires_grad=True)
    (a + b).sum().backward()
    a.grad.zero_()
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


# ---- 4. scalar-base power ------------------------------------------------------------------------------
@pytest.mark.parametrize("base", [0.0, -2.0, 2.0, 0.5, 10])
def test_scalar_base_power_values_and_gradients(device, base):
    x_m, x_t = pair([0.0, 2.0, 3.0, -1.0, 0.5], device, np.float32, requires_grad=True)
    z_m, z_t = base ** x_m, base ** x_t
    assert z_m.dtype == np.float32
    np.testing.assert_allclose(z_m.numpy(), z_t.detach().numpy(), rtol=1e-6)
    z_m.sum().backward()
    z_t.sum().backward()
    np.testing.assert_allclose(x_m.grad.numpy(), x_t.grad.numpy(), rtol=1e-6)


def test_power_with_zero_exponent_has_zero_gradient(device):
    x_m, x_t = pair([0.0, 2.0], device, np.float32, requires_grad=True)
    (x_m ** 0).sum().backward()
    (x_t ** 0).sum().backward()
    np.testing.assert_array_equal(x_m.grad.numpy(), x_t.grad.numpy())


# ---- 5. type promotion ---------------------------------------------------------------------------------
TENSOR_DTYPES = ["bool", "int64", "float32", "float64"]
SCALARS = {"py-bool": True, "py-int": 2, "py-float": 0.5, "np.int64": np.int64(3), "np.float64": np.float64(0.25),
           "np.float32": np.float32(1.5)}
BINARY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
          "r-": lambda a, b: b - a, "r/": lambda a, b: b / a}


@pytest.mark.parametrize("dtype, scalar, op", itertools.product(TENSOR_DTYPES, SCALARS, BINARY))
def test_promotion_with_scalars_follows_torch(device, dtype, scalar, op):
    values = [True, False, True] if dtype == "bool" else [1, 2, 3]
    m, t = pair(values, device, dtype)
    try:
        want = BINARY[op](t, SCALARS[scalar])
    except RuntimeError:  # torch refuses (bool - bool): so do we, in some form
        with pytest.raises(Exception):
            BINARY[op](m, SCALARS[scalar])
        return
    got = BINARY[op](m, SCALARS[scalar])
    assert str(got.dtype) == torch_dtype_name(want), f"{dtype} {op} {scalar}"
    np.testing.assert_allclose(got.numpy().astype(np.float64), want.numpy().astype(np.float64), rtol=1e-6)


@pytest.mark.parametrize("da, db", itertools.product(TENSOR_DTYPES, TENSOR_DTYPES))
@pytest.mark.parametrize("zero_dim", [False, True])
def test_promotion_between_tensors_follows_torch(device, da, db, zero_dim):
    a_m, a_t = pair([1, 0, 1], device, da)
    b_m, b_t = pair(1 if zero_dim else [1, 1, 0], device, db)
    for op in ("+", "*", "/"):
        try:
            want = BINARY[op](a_t, b_t)
        except RuntimeError:
            continue
        got = BINARY[op](a_m, b_m)
        assert str(got.dtype) == torch_dtype_name(want), f"{da} {op} {db} (0-d: {zero_dim})"


@pytest.mark.parametrize("a, b", [("int64", 0.5), ("float32", 0), ("int64", "float64"), ("float32", "float64"),
                                  ("bool", 1), ("float32", np.float64(2.0))])
def test_where_promotes_like_torch(device, a, b):
    cond_m, cond_t = pair([True, False, True], device)
    x_m, x_t = pair([1, 0, 2], device, a)
    y_m, y_t = pair([3, 4, 5], device, b) if isinstance(b, str) else (b, b)
    got, want = mg.where(cond_m, x_m, y_m), torch.where(cond_t, x_t, y_t)
    assert str(got.dtype) == torch_dtype_name(want)
    np.testing.assert_allclose(got.numpy().astype(float), want.numpy().astype(float))


@pytest.mark.parametrize("dtype, value", [("int64", 0.5), ("int64", -7), ("float32", -1e9), ("float64", 2),
                                          ("bool", True)])
def test_masked_fill_keeps_the_dtype(device, dtype, value):
    m, t = pair([1, 0, 2], device, dtype)
    got, want = m.masked_fill(m == 0, value), t.masked_fill(t == 0, value)
    assert str(got.dtype) == torch_dtype_name(want)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_int_inputs_to_float_functions_give_float32(device):
    a = mg.arange(4, device=device)
    for fn in ("exp", "log", "sqrt", "tanh", "sigmoid", "sin", "cos"):
        assert getattr(a, fn)().dtype == np.float32
    assert (mg.arange(5, device=device) / 5).dtype == np.float32
    assert (mg.tensor([1, 2], device=device) ** 0.5).dtype == np.float32


# ---- 6. second backward ----------------------------------------------------------------------------
def test_second_backward_through_nodes_that_saved_nothing(device):
    w = mg.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (w + 1) * 3.0 - 2  # Mul by a Python number keeps no array
    y.sum().backward()
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [6.0, 6.0])
    z = (w * w).sum()
    z.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        z.backward()


# ---- 7. to() ------------------------------------------------------------------------------------------
def test_to_forms(device):
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    assert t.to(mg.float64).dtype == np.float64 and t.to(mg.float64).device == "cpu"
    u = t.to(device, mg.float64)
    assert (u.device, u.dtype) == (device, np.float64)
    other = mg.tensor([1], device=device)
    v = t.to(other)
    assert (v.device, v.dtype) == (device, np.int64)
    assert t.to(dtype=mg.float32) is t and t.to("cpu") is t
    (u * u).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [2.0, 4.0])
    assert t.grad.dtype == np.float32


# ---- 8. methods against torch ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, fn", {
    "max-min": lambda ns, x, y: (x.max(), x.min(), x.max(1).values, x.min(dim=0)[0], x.max(y), x.min(y)),
    "std-var": lambda ns, x, y: (x.std(), x.std(1, keepdim=True), x.var(0, unbiased=False)),
    "clamp-norm": lambda ns, x, y: (x.clamp(min=-0.5), x.clamp(-0.2, 0.3), x.norm(), x.norm(dim=1)),
    "pow-sin-cos": lambda ns, x, y: (x.pow(2), x.sin(), x.cos(), ns.maximum(x, y)),
    "tril-triu-topk": lambda ns, x, y: (x.tril(), x.triu(1), x.topk(2, dim=1).values),
    "clone-type_as": lambda ns, x, y: (x.clone() * 2, x.type_as(y), x.contiguous().view(-1)),
}.items())
def test_methods_match_torch(device, name, fn):
    x, y = randn(7, (3, 4)), randn(8, (3, 4))
    y[0, 0] = x[0, 0]  # a tie: max/min(other) split the gradient in half, as torch
    check_against_torch(fn, x, y, device=device, tol=REDUCTION)


def test_scatter_matches_torch(device):
    def fn(ns, a, s):
        idx = [[2, 0], [1, 1], [0, 2]]
        index = ns.tensor(idx, device=a.device) if ns is mg else torch.tensor(idx)
        return a.scatter(1, index, s), a.scatter(0, index[:2], 0.5)
    check_against_torch(fn, randn(10, (3, 3)), randn(11, (3, 2)), device=device)


def test_top_level_functions_match_torch(device):
    def fn(ns, x):
        return (ns.matmul(x, x.T), ns.softmax(x, dim=-1), ns.log_softmax(x, 1), ns.exp(x), ns.tanh(x),
                ns.sigmoid(x), ns.sum(x, 1), ns.mean(x), ns.abs(x), ns.clamp(x, -0.1, 0.1),
                ns.where(x > 0, x, ns.zeros_like(x)), ns.max(x, 1)[0])
    check_against_torch(fn, randn(9, (3, 4)), device=device, tol=REDUCTION)


def test_creation_functions_match_torch(device):
    like = mg.tensor([[1.0, 2.0]], device=device, dtype=mg.float64)
    for got, want in [(mg.zeros_like(like), torch.zeros(1, 2, dtype=torch.float64)),
                      (mg.full_like(like, 3), torch.full((1, 2), 3.0, dtype=torch.float64)),
                      (mg.eye(3, 2, device=device), torch.eye(3, 2)),
                      (mg.linspace(0, 1, 5, device=device), torch.linspace(0, 1, 5)),
                      (mg.arange(1, 8, 3, device=device), torch.arange(1, 8, 3)),
                      (mg.arange(0.0, 1.0, 0.25, device=device), torch.arange(0.0, 1.0, 0.25)),
                      (mg.empty(2, 3, device=device), torch.zeros(2, 3)),
                      (mg.where(mg.tensor([[0, 1], [1, 1]], device=device) > 0)[1], torch.tensor([1, 0, 1]))]:
        assert str(got.dtype) == torch_dtype_name(want) and got.shape == tuple(want.shape)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    assert got.device == device


def test_from_numpy_shares_memory():
    a = np.zeros(3, dtype=np.float32)
    t = mg.from_numpy(a)
    a[1] = 5
    assert t.numpy()[1] == 5 and mg.is_tensor(t) and not mg.is_tensor(a)


def test_no_grad_bare_decorator_and_set_grad_enabled():
    @mg.no_grad
    def f(x):
        return x * 2

    x = mg.tensor([1.0], requires_grad=True)
    assert not f(x).requires_grad and mg.is_grad_enabled()
    with mg.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert mg.is_grad_enabled()
