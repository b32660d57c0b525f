"""nn.functional: softmax, log_softmax, layer_norm, dropout, embedding, linear.

Oracles: float64 finite differences and torch.nn.functional in float32 (losses: test_losses.py).
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


# ---- softmax and log_softmax ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_gradcheck(name, dim, device):
    gradcheck_op(lambda ns, x: getattr(ns.nn.functional, name)(x, dim=dim), randn(0, (2, 3, 4)),
                 device=device)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@HYPOTHESIS
@given(shape=shapes(min_dims=1, max_dims=3, max_side=5), seed=seeds, data=st.data())
def test_softmax_matches_torch(name, device, shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    # Softmax's backward sums over the row: reduction tolerance.
    check_against_torch(lambda ns, x: getattr(x, name)(dim), 3 * randn(seed, shape),
                        device=device, tol=REDUCTION, transpose=data.draw(st.booleans()))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_is_stable_for_huge_logits(name, device):
    """Subtracting the row max keeps exp from overflowing at 1000, and a finfo.min mask (an
    attention padding position) gets probability exactly 0 without producing nan."""
    big = float(np.finfo(np.float32).min)
    x = np.array([[1000.0, 999.0, -1000.0], [0.0, big, 1.0], [-1e4, -1e4, -1e4]])
    (out,) = check_against_torch(lambda ns, t: getattr(ns.nn.functional, name)(t, dim=-1), x,
                                 device=device, tol=REDUCTION)
    assert np.isfinite(out.numpy()).all()


# ---- layer_norm ----------------------------------------------------------------------------------
LAYER_NORM_CASES = [  # (input shape, normalized_shape, affine, eps)
    ((3, 5), 5, True, 1e-5),
    ((2, 3, 4), (4,), True, 1e-12),   # BERT's eps
    ((2, 3, 4), (3, 4), True, 1e-5),  # normalise over two dims
    ((2, 3, 4), 4, False, 1e-5),
    ((4, 6), 6, True, 0.5),           # a large eps visibly changes the result: it must be used
    ((5,), 5, True, 1e-5),            # a single vector (no leading dims)
]


def _layer_norm(normalized_shape, eps):
    def fn(ns, x, *wb):
        # torch's functional form wants a tuple; ours also takes a bare int, as the module does.
        shape = (normalized_shape,) if ns is torch and isinstance(normalized_shape, int) else \
            normalized_shape
        return ns.nn.functional.layer_norm(x, shape, *wb, eps=eps)
    return fn


@pytest.mark.parametrize("shape,normalized_shape,affine,eps", LAYER_NORM_CASES)
def test_layer_norm_gradcheck(shape, normalized_shape, affine, eps, device):
    ns_shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    params = [randn(1, ns_shape), randn(2, ns_shape)] if affine else []
    gradcheck_op(_layer_norm(normalized_shape, eps), randn(0, shape), *params, device=device)


@pytest.mark.parametrize("shape,normalized_shape,affine,eps", LAYER_NORM_CASES)
@pytest.mark.parametrize("transpose", [False, True])
def test_layer_norm_matches_torch(shape, normalized_shape, affine, eps, transpose, device):
    ns_shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    params = [randn(1, ns_shape), randn(2, ns_shape)] if affine else []
    check_against_torch(_layer_norm(normalized_shape, eps), 2 * randn(0, shape) + 1, *params,
                        device=device, tol=REDUCTION, transpose=transpose)


def test_layer_norm_module_matches_torch(device):
    ln = mg.nn.LayerNorm(6, eps=1e-12, device=device)
    ref = torch.nn.LayerNorm(6, eps=1e-12)
    x = randn(0, (2, 3, 6)).astype(np.float32)
    assert_close(ln(mg.tensor(x, device=device)), ref(torch.tensor(x)), **REDUCTION)
    assert mg.nn.LayerNorm(4, elementwise_affine=False).weight is None


def test_layer_norm_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"normalized_shape \(5,\).*\(2, 4\)"):
        F.layer_norm(mg.tensor(np.zeros((2, 4))), 5)


# ---- dropout -------------------------------------------------------------------------------------
def test_dropout_inverted_scaling_and_gradient(device):
    """Kept elements are scaled by 1/(1-p) and dropped ones are 0; the gradient is the same
    mask·1/(1-p); the kept fraction is 1-p within 5 standard deviations."""
    p, n = 0.3, 20_000
    x = mg.tensor(randn(0, (n,)) + 5.0, requires_grad=True, device=device)  # no zeros in x
    y = F.dropout(x, p)
    kept = y.numpy() != 0
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y.numpy()[kept], x.numpy()[kept] / (1 - p), rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / (1 - p), rtol=1e-6)


def test_dropout_is_reproducible_with_a_seed(device):
    x = mg.ones(1000, device=device)
    mg.manual_seed(123)
    a = F.dropout(x, 0.5).numpy()
    b = F.dropout(x, 0.5).numpy()
    mg.manual_seed(123)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), a)
    assert not np.array_equal(a, b)  # the generator advances between calls
    state = mg.get_rng_state()
    c = F.dropout(x, 0.5).numpy()
    mg.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), c)


def test_dropout_explicit_generator(device):
    xp, dev = mg.backend.resolve(device)
    x = mg.ones(500, device=device)
    a = F.dropout(x, 0.4, generator=xp.generator(7, dev)).numpy()
    np.testing.assert_array_equal(F.dropout(x, 0.4, generator=xp.generator(7, dev)).numpy(), a)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_deterministic_cases_match_torch(p, device):
    """Eval mode is the identity for any p; p=0 is the identity and p=1 zeros everything
    (value and gradient) in training too."""
    x = randn(0, (3, 4))
    check_against_torch(lambda ns, t: ns.nn.functional.dropout(t, p, training=False), x,
                        device=device)
    if p != 0.5:
        check_against_torch(lambda ns, t: ns.nn.functional.dropout(t, p, training=True), x,
                            device=device)


def test_dropout_module_train_and_eval(device):
    drop = mg.nn.Dropout(0.5)
    x = mg.ones(200, device=device)
    assert (drop(x).numpy() == 0).any()
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


def test_dropout_rejects_bad_p():
    with pytest.raises(ValueError, match="1.5"):
        F.dropout(mg.ones(3), 1.5)


# ---- embedding -----------------------------------------------------------------------------------
EMBEDDING_IDS = [np.array([1, 3, 1, 1, 0]), np.array([[2, 2], [0, 4], [2, 2]])]


@pytest.mark.parametrize("ids", EMBEDDING_IDS)
def test_embedding_gradcheck(ids, device):
    gradcheck_op(lambda ns, w, i: ns.nn.functional.embedding(i, w), randn(0, (5, 3)), ids,
                 device=device)


@pytest.mark.parametrize("ids", EMBEDDING_IDS)
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_matches_torch(ids, padding_idx, device):
    """Repeated ids add up in the weight gradient; the padding row gets none."""
    check_against_torch(lambda ns, w, i: ns.nn.functional.embedding(i, w, padding_idx=padding_idx),
                        randn(0, (5, 3)), ids, device=device)


@HYPOTHESIS
@given(ids=st.lists(st.integers(0, 3), min_size=1, max_size=12), seed=seeds)
def test_embedding_repeated_ids_match_torch(device, ids, seed):
    check_against_torch(lambda ns, w, i: ns.nn.functional.embedding(i, w), randn(seed, (4, 2)),
                        np.array(ids), device=device)


def test_embedding_module_padding_row_is_zero_and_fixed(device):
    emb = mg.nn.Embedding(6, 3, padding_idx=0, device=device)
    assert not emb.weight.numpy()[0].any()
    emb(mg.tensor([[0, 1, 0]], device=device)).sum().backward()
    assert not emb.weight.grad.numpy()[0].any() and emb.weight.grad.numpy()[1].all()


def test_embedding_out_of_range_id_is_a_clear_error():
    with pytest.raises(IndexError, match="id 7 is out of range for a table of 5 rows"):
        F.embedding(mg.tensor([0, 7]), mg.zeros(5, 2))


# ---- linear --------------------------------------------------------------------------------------
LINEAR_CASES = [((4, 3), True), ((4, 3), False), ((2, 5, 3), True), ((2, 5, 3), False)]


@pytest.mark.parametrize("x_shape,bias", LINEAR_CASES)
def test_linear_gradcheck(x_shape, bias, device):
    params = [randn(1, (2, 3))] + ([randn(2, (2,))] if bias else [])
    gradcheck_op(lambda ns, x, *wb: ns.nn.functional.linear(x, *wb), randn(0, x_shape), *params,
                 device=device)


@pytest.mark.parametrize("x_shape,bias", LINEAR_CASES)
@pytest.mark.parametrize("transpose", [False, True])
def test_linear_matches_torch(x_shape, bias, transpose, device):
    params = [randn(1, (2, 3))] + ([randn(2, (2,))] if bias else [])
    # The weight gradient sums over every leading position: reduction tolerance.
    check_against_torch(lambda ns, x, *wb: ns.nn.functional.linear(x, *wb), randn(0, x_shape),
                        *params, device=device, tol=REDUCTION, transpose=transpose)


def test_linear_module_matches_torch(device):
    """Same weights in both: the module adds nothing but the parameters and torch's init bounds."""
    mg.manual_seed(0)
    lin = mg.nn.Linear(8, 3, device=device)
    bound = 1 / np.sqrt(8)  # torch's kaiming_uniform(a=√5) and bias bounds are both 1/sqrt(fan_in)
    assert np.abs(lin.weight.numpy()).max() <= bound and np.abs(lin.bias.numpy()).max() <= bound
    ref = torch.nn.Linear(8, 3)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(lin.weight.numpy()))
        ref.bias.copy_(torch.tensor(lin.bias.numpy()))
    x = randn(0, (2, 4, 8)).astype(np.float32)
    assert_close(lin(mg.tensor(x, device=device)), ref(torch.tensor(x)), **REDUCTION)
