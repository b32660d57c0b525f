"""matmul, shape ops (reshape/view, transpose, permute, expand, squeeze, unsqueeze, cat, stack,
split), indexing, where and masked_fill: finite differences (float64) and torch parity (float32)."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigrad as mg
from conftest import (HYPOTHESIS, REDUCTION, broadcast_pairs, check_against_torch, gradcheck_op,
                      randn, seeds, shapes)

# ---- matmul --------------------------------------------------------------------------------------
MATMUL_SHAPES = [
    ((3,), (3,)),                # dot product -> scalar
    ((3,), (3, 4)),              # vector @ matrix
    ((2, 3), (3,)),              # matrix @ vector
    ((2, 3), (3, 4)),
    ((2, 1, 3, 4), (5, 4, 2)),   # batch dims broadcast: (2, 1) with (5,)
    ((4,), (2, 4, 3)),           # 1-D against a batch
    ((2, 3, 4), (4,)),
    ((6, 2, 3), (3, 4)),         # a shared weight against a batch
    ((3, 4), (2, 4, 5)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_gradcheck(sa, sb, device):
    gradcheck_op(lambda ns, a, b: a @ b, randn(0, sa), randn(1, sb), device=device)


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_matches_torch(sa, sb, device):
    check_against_torch(lambda ns, a, b: a @ b, randn(0, sa), randn(1, sb), device=device,
                        tol=REDUCTION)


@HYPOTHESIS
@given(batch=broadcast_pairs(max_dims=2), mkn=st.tuples(*[st.integers(1, 4)] * 3), seed=seeds,
       transpose=st.booleans())
def test_batched_matmul_matches_torch(device, batch, mkn, seed, transpose):
    m, k, n = mkn
    a, b = randn(seed, batch[0] + (m, k)), randn(seed + 1, batch[1] + (k, n))
    check_against_torch(lambda ns, x, y: x @ y, a, b, device=device, tol=REDUCTION,
                        transpose=transpose)


# ---- shape ops -----------------------------------------------------------------------------------
SHAPE_OPS = {
    "reshape": lambda ns, x: x.reshape(4, -1),
    "reshape_tuple": lambda ns, x: x.reshape((2, 2, 6)),
    "view": lambda ns, x: x.view(2, 3, 2, -1),  # splits one dim: a view even when transposed
    "flatten": lambda ns, x: x.flatten(1),
    "transpose": lambda ns, x: x.transpose(0, -1),
    "permute": lambda ns, x: x.permute(2, 0, 1),
    "permute_negative": lambda ns, x: x.permute(-1, -3, -2),
    "mT": lambda ns, x: x.mT,
    "expand": lambda ns, x: x[:, :1].expand(2, 2, 3, 4),
    "expand_minus_one": lambda ns, x: x[:, :1].expand(-1, 5, -1),
    "squeeze_dim": lambda ns, x: x[:, :1].squeeze(1),
    "squeeze_negative": lambda ns, x: x[..., :1].squeeze(-1),
    "squeeze_all": lambda ns, x: x[:1, :, :1].squeeze(),
    "squeeze_not_one": lambda ns, x: x.squeeze(0),
    "unsqueeze": lambda ns, x: x.unsqueeze(1),
    "unsqueeze_negative": lambda ns, x: x.unsqueeze(-1),
    "split_int": lambda ns, x: x.split(2, dim=2),
    "split_sizes": lambda ns, x: x.split([1, 2], dim=-2),
    "cat": lambda ns, x: ns.cat([x, 2 * x, x[:1]], dim=0),
    "cat_negative": lambda ns, x: ns.cat([x[..., :1], x], dim=-1),
    "stack": lambda ns, x: ns.stack([x, -x], dim=1),
    "stack_negative": lambda ns, x: ns.stack([x, x * x, x], dim=-1),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_op_gradcheck(name, device):
    gradcheck_op(SHAPE_OPS[name], randn(0, (2, 3, 4)), device=device)


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
@pytest.mark.parametrize("transpose", [False, True])
def test_shape_op_matches_torch(name, transpose, device):
    check_against_torch(SHAPE_OPS[name], randn(0, (2, 3, 4)), device=device, transpose=transpose)


@HYPOTHESIS
@given(shape=shapes(min_dims=1, max_dims=4), seed=seeds, data=st.data())
def test_permute_and_reshape_match_torch(device, shape, seed, data):
    perm = data.draw(st.permutations(range(len(shape))))
    check_against_torch(lambda ns, x: x.permute(*perm).reshape(-1), randn(seed, shape),
                        device=device, transpose=data.draw(st.booleans()))


@HYPOTHESIS
@given(shape=shapes(min_dims=1, max_dims=3), seed=seeds, data=st.data())
def test_expand_matches_torch(device, shape, seed, data):
    """Expand every size-1 dim (and add a leading one): the gradient sums over the copies."""
    target = data.draw(st.tuples(*[st.integers(1, 3) if n == 1 else st.just(n) for n in shape]))
    check_against_torch(lambda ns, x: x.expand(2, *target), randn(seed, shape), device=device)


@HYPOTHESIS
@given(shape=shapes(min_dims=1, max_dims=3), sizes=st.lists(st.integers(1, 3), min_size=1,
                                                            max_size=3), seed=seeds, data=st.data())
def test_cat_and_split_match_torch(device, shape, sizes, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    parts = [randn(seed + i, shape[:dim % len(shape)] + (n,) + shape[dim % len(shape) + 1:])
             for i, n in enumerate(sizes)]
    check_against_torch(lambda ns, *ts: ns.cat(list(ts), dim=dim).split(sizes[::-1], dim=dim),
                        *parts, device=device)


def test_split_bad_sizes_is_a_clear_error():
    with pytest.raises(ValueError, match="do not add up"):
        mg.tensor(np.zeros((4, 2))).split([1, 2])


# ---- indexing ------------------------------------------------------------------------------------
INDEXING = {
    "int": lambda ns, x: x[1],
    "negative_int": lambda ns, x: x[-1, 2],
    "slice": lambda ns, x: x[1:, ::2],
    "ellipsis": lambda ns, x: x[..., 1],
    "newaxis": lambda ns, x: x[None, 0, 1:3],
    "array_repeats": lambda ns, x: x[[0, 0, 2, 0]],
    "two_arrays_repeats": lambda ns, x: x[[0, 0, 1, 0], [1, 1, 3, 1]],
    "array_and_slice": lambda ns, x: x[[2, 2], 1:],
    "tensor_index": lambda ns, x: x[ns.tensor([[1, 1], [0, 1]])],
    "tensor_index_dim1": lambda ns, x: x[:, ns.tensor([3, 0, 3])],
}


@pytest.mark.parametrize("name", sorted(INDEXING))
def test_indexing_gradcheck(name, device):
    gradcheck_op(INDEXING[name], randn(0, (3, 4)), device=device)


@pytest.mark.parametrize("name", sorted(INDEXING))
def test_indexing_matches_torch(name, device):
    """Repeated indices must add up in the backward (scatter-add), not overwrite."""
    check_against_torch(INDEXING[name], randn(0, (3, 4)), device=device)


@HYPOTHESIS
@given(n=st.integers(1, 5), idx=st.lists(st.integers(0, 4), min_size=1, max_size=8), seed=seeds)
def test_repeated_integer_index_matches_torch(device, n, idx, seed):
    idx = [i % n for i in idx]
    check_against_torch(lambda ns, x: x[idx] * x[idx[::-1]], randn(seed, (n, 2)), device=device)


# ---- where and masked_fill -----------------------------------------------------------------------
def _broadcasts(*shapes_) -> bool:
    try:
        np.broadcast_shapes(*shapes_)
        return True
    except ValueError:
        return False


def test_where_gradcheck(device):
    cond = randn(2, (3, 1)) > 0
    gradcheck_op(lambda ns, c, a, b: ns.where(c, a, b), cond, randn(0, (1, 4)), randn(1, (3, 4)),
                 device=device)


@HYPOTHESIS
@given(pair=broadcast_pairs(), cond_shape=shapes(max_dims=2), seed=seeds)
def test_where_matches_torch(device, pair, cond_shape, seed):
    cond = np.random.default_rng(seed).random(cond_shape) > 0.5
    a, b = randn(seed, pair[0]), randn(seed + 1, pair[1])
    assume(_broadcasts(cond.shape, a.shape, b.shape))
    check_against_torch(lambda ns, c, x, y: ns.where(c, x, y), cond, a, b, device=device,
                        grad_tol=REDUCTION)


def test_where_with_a_scalar_side(device):
    cond, x = np.array([True, False, True]), randn(0, (2, 3))
    check_against_torch(lambda ns, c, t: ns.where(c, t, 0.5), cond, x, device=device)
    check_against_torch(lambda ns, c, t: ns.where(c, -1.0, t), cond, x, device=device)


@HYPOTHESIS
@given(shape=shapes(min_dims=1), seed=seeds, data=st.data())
def test_masked_fill_matches_torch(device, shape, seed, data):
    """A broadcast mask (like an attention mask [B, 1, 1, T]); filled positions get no gradient."""
    keep = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    lead = data.draw(st.integers(0, len(shape)))  # leading dims the mask may leave out
    mask_shape = tuple(n if k else 1 for n, k in zip(shape, keep))[lead:]
    mask = np.random.default_rng(seed).random(mask_shape) > 0.5
    value = float(np.finfo(np.float32).min)  # the attention-mask fill
    (out,) = check_against_torch(lambda ns, x, m: x.masked_fill(m, value), randn(seed, shape),
                                 mask, device=device, transpose=data.draw(st.booleans()))
    assert out.shape == shape


def test_comparisons_are_outside_the_graph(device):
    x = mg.tensor(randn(0, (3,)), requires_grad=True, device=device)
    for mask in (x > 0, x <= 0.5, x.eq(x), x.ne(0.0)):
        assert mask.dtype == np.bool_ and not mask.requires_grad
