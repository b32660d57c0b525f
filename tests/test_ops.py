"""Elementwise ops and reductions: finite differences (float64) and torch parity (float32).

Each op is one lambda ``fn(ns, *tensors)`` run on minigrad and on torch (see conftest). Inputs are
moved off the points where an op is not differentiable (|x| >= 0.1 for abs/relu, x > 0 for log,
sqrt and fractional powers, denominators away from 0), since there finite differences and the
one-sided derivative torch picks need not agree.
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigrad as mg
from conftest import (HYPOTHESIS, REDUCTION, assert_close, broadcast_pairs,
                      check_against_torch, gradcheck_op, randn, seeds, shapes)

# name -> (fn, input domain): "real" any value, "pos" x >= 0.1, "nonzero" |x| >= 0.1.
UNARY = {
    "neg": (lambda ns, x: -x, "real"),
    "exp": (lambda ns, x: x.exp(), "real"),
    "log": (lambda ns, x: x.log(), "pos"),
    "sqrt": (lambda ns, x: x.sqrt(), "pos"),
    "abs": (lambda ns, x: x.abs(), "nonzero"),
    "tanh": (lambda ns, x: x.tanh(), "real"),
    "sigmoid": (lambda ns, x: x.sigmoid(), "real"),
    "relu": (lambda ns, x: x.relu(), "nonzero"),
    "erf": (lambda ns, x: x.erf(), "real"),
    "gelu": (lambda ns, x: ns.nn.functional.gelu(x), "real"),
    "gelu_tanh": (lambda ns, x: ns.nn.functional.gelu(x, approximate="tanh"), "real"),
    "pow_2": (lambda ns, x: x ** 2, "real"),
    "pow_3": (lambda ns, x: x ** 3, "real"),
    "pow_half": (lambda ns, x: x ** 0.5, "pos"),
    "pow_neg": (lambda ns, x: x ** -1.5, "pos"),
    "rpow": (lambda ns, x: 2.0 ** x, "real"),
}

BINARY = {
    "add": lambda ns, a, b: a + b,
    "sub": lambda ns, a, b: a - b,
    "mul": lambda ns, a, b: a * b,
    "div": lambda ns, a, b: a / b,
}

# Python numbers on either side of an operator (the radd/rsub/rmul/rtruediv paths).
SCALAR = {
    "add_scalar": lambda ns, x: x + 1.5,
    "radd_scalar": lambda ns, x: 1.5 + x,
    "sub_scalar": lambda ns, x: x - 2.0,
    "rsub_scalar": lambda ns, x: 2.0 - x,
    "mul_scalar": lambda ns, x: x * -3.0,
    "rmul_scalar": lambda ns, x: 0.5 * x,
    "div_scalar": lambda ns, x: x / 4.0,
    "rdiv_scalar": lambda ns, x: 3.0 / x,
}


def _domain(x: np.ndarray, domain: str) -> np.ndarray:
    if domain == "pos":
        return np.abs(x) + 0.1
    if domain == "nonzero":
        return np.where(x >= 0, x + 0.1, x - 0.1)
    return x


# ---- elementwise ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradcheck(name, device):
    fn, domain = UNARY[name]
    gradcheck_op(fn, _domain(randn(0, (2, 3)), domain), device=device)


@pytest.mark.parametrize("name", sorted(UNARY))
@HYPOTHESIS
@given(shape=shapes(), seed=seeds, transpose=st.booleans())
def test_unary_matches_torch(name, device, shape, seed, transpose):
    fn, domain = UNARY[name]
    check_against_torch(fn, _domain(randn(seed, shape), domain), device=device, transpose=transpose)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_gradcheck_with_broadcasting(name, device):
    a, b = randn(0, (2, 1, 3)), randn(1, (4, 1), lo=0.5)  # b is the denominator for div
    gradcheck_op(BINARY[name], a, b, device=device)


@pytest.mark.parametrize("name", sorted(BINARY))
@HYPOTHESIS
@given(pair=broadcast_pairs(), seed=seeds, transpose=st.booleans())
def test_binary_matches_torch(name, device, pair, seed, transpose):
    a, b = randn(seed, pair[0]), randn(seed + 1, pair[1], lo=0.5)
    # Gradients of a broadcast input are sums over the broadcast dims: reduction tolerance.
    check_against_torch(BINARY[name], a, b, device=device, transpose=transpose,
                        grad_tol=REDUCTION)


@pytest.mark.parametrize("name", sorted(SCALAR))
def test_scalar_operand(name, device):
    x = randn(0, (3, 2), lo=0.5)
    gradcheck_op(SCALAR[name], x, device=device)
    check_against_torch(SCALAR[name], x, device=device)


def test_same_tensor_on_both_sides(device):
    """x * x and x / x: one leaf feeding both inputs gets both gradients."""
    x = randn(0, (4,), lo=0.5)
    check_against_torch(lambda ns, t: t * t + t / t - t, x, device=device)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturating_activations_stable_for_huge_inputs(name, device):
    """sigmoid(±1000) must not overflow exp: finite values, and torch's (zero) gradients."""
    x = np.array([-1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0])
    (out,) = check_against_torch(UNARY[name][0], x, device=device)
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_tails(approximate, device):
    """Far tails: gelu(x) -> 0 for x << 0 and -> x for x >> 0, gradients -> 0 and 1."""
    x = np.array([-12.0, -6.0, -3.0, 3.0, 6.0, 12.0])
    check_against_torch(lambda ns, t: ns.nn.functional.gelu(t, approximate=approximate), x,
                        device=device)


def test_pow_rejects_tensor_exponent():
    with pytest.raises(TypeError, match="constant"):
        mg.tensor([1.0]) ** mg.tensor([2.0])


# ---- reductions ----------------------------------------------------------------------------------
REDUCTIONS = {
    "sum": lambda ns, x, dim, keepdim: x.sum(dim=dim, keepdim=keepdim),
    "mean": lambda ns, x, dim, keepdim: x.mean(dim=dim, keepdim=keepdim),
    "var": lambda ns, x, dim, keepdim: x.var(dim=dim, keepdim=keepdim),
    "var_biased": lambda ns, x, dim, keepdim: x.var(dim=dim, keepdim=keepdim, correction=0),
    "var_correction2": lambda ns, x, dim, keepdim: x.var(dim=dim, keepdim=keepdim, correction=2),
    "amax": lambda ns, x, dim, keepdim: x.amax(dim=dim, keepdim=keepdim),
}
CORRECTION = {"var": 1, "var_biased": 0, "var_correction2": 2}
# (dim, keepdim) cases: none, int, negative int, tuple (with a negative entry).
DIMS = [(None, False), (0, False), (-1, True), ((0, -1), False), ((0, 2), True), (1, True)]


@pytest.mark.parametrize("dim,keepdim", DIMS)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_gradcheck(name, dim, keepdim, device):
    if name == "amax" and dim is None and keepdim:
        pytest.skip("covered by other dims")
    x = randn(0, (3, 4, 5))  # distinct values: amax has a single winner per row
    gradcheck_op(lambda ns, t: REDUCTIONS[name](ns, t, dim, keepdim), x, device=device)


@st.composite
def shape_and_dim(draw):
    """A shape and a torch-style dim for it: None, an int, or a tuple, each possibly negative."""
    shape = draw(shapes(min_dims=1, max_dims=4))
    n = len(shape)
    axes = st.integers(-n, n - 1)
    dim = draw(st.one_of(st.none(), axes,
                         st.lists(axes, min_size=1, max_size=n,
                                  unique_by=lambda d: d % n).map(tuple)))
    return shape, dim


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@HYPOTHESIS
@given(case=shape_and_dim(), keepdim=st.booleans(), seed=seeds, transpose=st.booleans())
def test_reduction_matches_torch(name, device, case, keepdim, seed, transpose):
    (shape, dim), fn = case, REDUCTIONS[name]
    if name in CORRECTION:  # n - correction <= 0 makes var 0/0 = nan in both: not the point here
        reduced = (dim,) if isinstance(dim, int) else range(len(shape)) if dim is None else dim
        assume(np.prod([shape[d] for d in reduced]) > CORRECTION[name])
    check_against_torch(lambda ns, t: fn(ns, t, dim, keepdim), randn(seed, shape), device=device,
                        tol=REDUCTION, transpose=transpose)


def test_var_unbiased_flag_matches_torch(device):
    x = randn(0, (4, 5))
    for unbiased in (True, False):
        check_against_torch(lambda ns, t: t.var(1, unbiased, True), x, device=device,
                            tol=REDUCTION)


def test_max_without_dim_shares_gradient_among_ties(device):
    """torch's max() (no dim) splits the gradient evenly among tied maxima; so do we."""
    x = np.array([[1.0, 3.0, 3.0], [3.0, 0.0, -1.0]])
    check_against_torch(lambda ns, t: t.max(), x, device=device)
    check_against_torch(lambda ns, t: t.amax(dim=1), x, device=device)


def test_max_with_dim_values_indices_and_gradient(device):
    """max(dim) returns (values, indices); the gradient goes only to the returned index."""
    x = randn(0, (3, 4, 5))
    for dim, keepdim in [(0, False), (-1, True), (1, False)]:
        values, indices = check_against_torch(lambda ns, t: t.max(dim=dim, keepdim=keepdim), x,
                                              device=device)
        assert indices.dtype == np.int64
    values, indices = mg.tensor(x, device=device).max(1)
    assert values.shape == indices.shape == (3, 5)


def test_max_with_dim_ties_pick_one_index(device):
    """With ties torch's CPU kernel returns the first index; the whole gradient goes there."""
    x = np.array([[2.0, 5.0, 5.0], [1.0, 1.0, 0.0]])
    check_against_torch(lambda ns, t: t.max(dim=1), x, device=device)


@HYPOTHESIS
@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, transpose=st.booleans())
def test_max_with_dim_matches_torch(device, shape, seed, transpose):
    dim = seed % len(shape) - len(shape)  # some negative dim
    check_against_torch(lambda ns, t: t.max(dim=dim), randn(seed, shape), device=device,
                        transpose=transpose)


def test_reduction_bad_dim_is_a_clear_error():
    with pytest.raises(IndexError, match="dim 3 is out of range"):
        mg.tensor(np.zeros((2, 3))).sum(3)


def test_reduction_keeps_dtype_float64(device):
    x = mg.tensor(randn(0, (3, 4)), requires_grad=True, device=device)
    for out in (x.sum(0), x.mean(), x.var(1), x.amax(), x.max(1).values):
        assert out.dtype == np.float64
        out.sum().backward()
        assert x.grad.dtype == np.float64
        x.grad = None


def test_long_sum_matches_torch(device):
    """A 100k-element mean: float32 accumulation order differs between backends, so the bound is
    the float32 rounding of a long sum (~sqrt(n)·ulp relative for pairwise summation)."""
    x = randn(0, (100_000,)) + 1.0
    (out,) = check_against_torch(lambda ns, t: t.mean(), x, device=device, tol=REDUCTION)
    assert_close(out, x.mean(), **REDUCTION)


@pytest.mark.filterwarnings("ignore:var\\(\\). degrees of freedom")  # torch warns; expected
def test_var_with_too_few_elements_is_nan_like_torch(device):
    """n - correction = 0: torch returns nan (0/0) with nan gradients rather than raising."""
    with np.errstate(invalid="ignore", divide="ignore"):
        (out,) = check_against_torch(lambda ns, t: t.var(1), randn(0, (2, 1)), device=device)
    assert np.isnan(out.numpy()).all()
