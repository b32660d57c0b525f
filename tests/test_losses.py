"""Losses: binary_cross_entropy (+ with logits), cross_entropy, mse_loss, every reduction.

Oracles: float64 finite differences and torch.nn.functional in float32, including the saturated
edge cases where the naive formulas overflow or divide by zero.
"""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minigrad as mg
from conftest import (HYPOTHESIS, REDUCTION, assert_close, check_against_torch, gradcheck_op,
                      randn, seeds, shapes)

F = mg.nn.functional
REDUCTIONS = ["mean", "sum", "none"]


def _probabilities(seed, shape):
    return 1 / (1 + np.exp(-randn(seed, shape)))  # strictly inside (0, 1)


def _targets(seed, shape, soft=False):
    rng = np.random.default_rng(seed + 1)
    return rng.random(shape) if soft else (rng.random(shape) > 0.5).astype(np.float64)


# ---- binary cross-entropy on probabilities -------------------------------------------------------
def _bce(reduction, target, weight=None):
    def fn(ns, p):
        w = None if weight is None else _as(ns, weight, p)
        return ns.nn.functional.binary_cross_entropy(p, _as(ns, target, p), weight=w,
                                                     reduction=reduction)
    return fn


def _as(ns, array, like):
    """A constant of ``like``'s dtype and device. Targets and weights are data, not leaves, so
    the loss closures below build them rather than passing them to check_against_torch."""
    if ns is torch:
        return torch.tensor(array, dtype=like.dtype)
    return mg.tensor(array, dtype=like.dtype, device=like.device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_bce_gradcheck(reduction, soft, device):
    p, y = _probabilities(0, (3, 4)), _targets(0, (3, 4), soft)
    gradcheck_op(_bce(reduction, y), p, device=device)
    gradcheck_op(_bce(reduction, y, weight=np.abs(randn(2, (4,)))), p, device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@HYPOTHESIS
@given(shape=shapes(min_dims=1), seed=seeds, soft=st.booleans())
def test_bce_matches_torch(reduction, device, shape, seed, soft):
    check_against_torch(_bce(reduction, _targets(seed, shape, soft)), _probabilities(seed, shape),
                        device=device, tol=REDUCTION)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_at_saturated_probabilities_matches_torch(reduction, device):
    """p = 0 or 1 exactly: each log is clamped at -100, and the gradient's p(1-p) denominator at
    1e-12, as torch does. Matching targets give loss 0 and gradient 0; wrong ones give 100 and
    ±1e12 (torch's values; computed by torch here, not copied)."""
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    with np.errstate(divide="ignore"):  # numpy warns on log(0) before the clamp
        (loss,) = check_against_torch(_bce(reduction, y), p, device=device, tol=REDUCTION)
    assert np.isfinite(loss.numpy()).all()


# ---- binary cross-entropy on logits --------------------------------------------------------------
def _bce_logits(reduction, target, weight=None):
    def fn(ns, z):
        w = None if weight is None else _as(ns, weight, z)
        return ns.nn.functional.binary_cross_entropy_with_logits(
            z, _as(ns, target, z), weight=w, reduction=reduction)
    return fn


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_gradcheck(reduction, device):
    z, y = 3 * randn(0, (3, 4)), _targets(0, (3, 4), soft=True)
    gradcheck_op(_bce_logits(reduction, y), z, device=device)
    gradcheck_op(_bce_logits(reduction, y, weight=np.abs(randn(2, (3, 1)))), z, device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@HYPOTHESIS
@given(shape=shapes(min_dims=1), seed=seeds, soft=st.booleans(),
       scale=st.sampled_from([1, 10, 100]))
def test_bce_with_logits_matches_torch(reduction, device, shape, seed, soft, scale):
    check_against_torch(_bce_logits(reduction, _targets(seed, shape, soft)),
                        scale * randn(seed, shape), device=device, tol=REDUCTION)


def test_bce_with_logits_huge_logits_stay_finite(device):
    """|z| up to 1e4: the loss is finite (no exp overflow) and dL/dz = σ(z) - y exactly, the
    §4.2 result, with σ computed by torch in float64 as the oracle."""
    z = np.array([-1e4, -1e3, -50.0, 0.0, 50.0, 1e3, 1e4, 1e4, -1e4])
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    (loss,) = check_against_torch(_bce_logits("none", y), z, device=device, tol=REDUCTION)
    assert np.isfinite(loss.numpy()).all()
    zt = mg.tensor(z, requires_grad=True, device=device)
    F.binary_cross_entropy_with_logits(zt, mg.tensor(y, device=device), reduction="sum").backward()
    expected = torch.sigmoid(torch.tensor(z)) - torch.tensor(y)
    assert_close(zt.grad, expected, rtol=1e-6, atol=1e-7)  # float32 σ against float64 σ


# ---- cross-entropy -------------------------------------------------------------------------------
def _ce(reduction, target, **kwargs):
    def fn(ns, z):
        t = torch.tensor(target) if ns is torch else mg.tensor(target, device=z.device)
        return ns.nn.functional.cross_entropy(z, t, reduction=reduction, **kwargs)
    return fn


TARGETS = np.array([2, 0, -100, 3, 3, -100])  # -100: torch's default ignore_index


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck(reduction, device):
    gradcheck_op(_ce(reduction, TARGETS), randn(0, (6, 4)), device=device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_ignore_index_matches_torch(reduction, device):
    """Ignored rows add nothing, get zero gradient, and do not count in the mean."""
    (loss,) = check_against_torch(_ce(reduction, TARGETS), 2 * randn(0, (6, 4)), device=device,
                                  tol=REDUCTION)
    if reduction == "none":
        assert (loss.numpy()[TARGETS == -100] == 0).all()


def test_cross_entropy_custom_ignore_index_matches_torch(device):
    check_against_torch(_ce("mean", np.array([1, 0, 1, 2]), ignore_index=1), randn(0, (4, 3)),
                        device=device, tol=REDUCTION)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@HYPOTHESIS
@given(n=st.integers(1, 6), c=st.integers(1, 5), seed=seeds, transpose=st.booleans())
def test_cross_entropy_matches_torch(reduction, device, n, c, seed, transpose):
    rng = np.random.default_rng(seed)
    target = np.where(rng.random(n) < 0.2, -100, rng.integers(0, c, n))
    target[0] = rng.integers(0, c)  # at least one counted row, or the mean is 0/0
    check_against_torch(_ce(reduction, target), 5 * randn(seed, (n, c)), device=device,
                        tol=REDUCTION, transpose=transpose)


def test_cross_entropy_huge_logits_are_stable(device):
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [500.0, 501.0, 499.0]])
    (loss,) = check_against_torch(_ce("none", np.array([1, 0, 1])), z, device=device,
                                  tol=REDUCTION)
    assert np.isfinite(loss.numpy()).all()


def test_cross_entropy_bad_shapes_are_a_clear_error():
    with pytest.raises(ValueError, match=r"\[N, C\].*\(2, 3, 4\)"):
        F.cross_entropy(mg.zeros(2, 3, 4), mg.tensor([0, 1]))


# ---- mse -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_gradcheck_and_matches_torch(reduction, device):
    x, y = randn(0, (3, 4)), randn(1, (3, 4))
    # Both are inputs here: the gradient with respect to the target is checked too.
    fn = lambda ns, a, b: ns.nn.functional.mse_loss(a, b, reduction=reduction)  # noqa: E731
    gradcheck_op(fn, x, y, device=device)
    check_against_torch(fn, x, y, device=device, tol=REDUCTION)


# ---- argument checking ---------------------------------------------------------------------------
@pytest.mark.parametrize("loss", [F.binary_cross_entropy, F.binary_cross_entropy_with_logits,
                                  F.mse_loss])
def test_losses_check_reduction_and_shapes(loss):
    p = mg.tensor(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss(p, p, reduction="avg")
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3,\)"):
        loss(p, mg.tensor(np.full(3, 0.5)))
