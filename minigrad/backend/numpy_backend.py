"""The numpy backend: every array computation minigrad does goes through these flat functions.

Ops receive this module as ``ctx.xp``. Python operators (``+ - * / @``) work on raw arrays of every
backend, so ops use them directly; everything else (reductions, transcendental functions, creation,
indexing helpers) is one function here with the same name and signature in ``torch_backend``.
Axes are ``axis`` (numpy's word) here; the user-facing API speaks torch's ``dim``.
"""
from __future__ import annotations

import math

import numpy as np

from . import jit, parallel
from .kernels import Kernels

# Optional fast kernels (see kernels.py): numpy's is the thread pool that runs an op's own formula
# on blocks of its arrays, on every core, and, with numba installed, compiled one-pass loops for
# the fused ops (jit.py).
kernels = Kernels(blocks=parallel.blocks, **jit.kernels())


# ---- creation and conversion ------------------------------------------------------------------
def array(data, dtype=None, device=None):
    """A new array (always a copy, as torch.tensor makes one)."""
    return np.array(data, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    return x


def dtype_of(x) -> np.dtype:
    return x.dtype


def astype(x, dtype):
    return x.astype(dtype, copy=False)


def zeros(shape, dtype, device=None):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype, device=None):
    return np.ones(shape, dtype=dtype)


def full(shape, value, dtype, device=None):
    return np.full(shape, value, dtype=dtype)


def zeros_like(x):
    return np.zeros_like(x)


def arange(start, end=None, step=1, dtype=np.dtype("int64"), device=None):
    """torch.arange: [0, start) when ``end`` is None, else [start, end) by ``step``."""
    if end is None:
        start, end = 0, start
    return np.arange(start, end, step, dtype=dtype)


def eye(n, m, dtype, device=None):
    return np.eye(n, m, dtype=dtype)


def linspace(start, end, steps, dtype, device=None):
    return np.linspace(start, end, steps, dtype=dtype)


def copy(x):
    """A fresh, writable array (np.array: a 0-d numpy scalar becomes a 0-d array, as in-place ops need)."""
    return np.array(x)


def fill_(x, value):
    """x[...] = value in place; a fresh array when x cannot be written (a 0-d numpy scalar, a
    read-only broadcast view), since nothing can share such an array's memory anyway."""
    if isinstance(x, np.ndarray) and x.flags.writeable:
        x[...] = value
        return x
    return np.full(np.shape(x), value, dtype=x.dtype)


def _writable(x):
    return x if isinstance(x, np.ndarray) and x.flags.writeable else np.array(x)


def write_(dst, src):
    """dst[...] = src (cast to dst's dtype) in place; returns the array written, a fresh one when
    dst cannot be written (see ``fill_``)."""
    dst = _writable(dst)
    np.copyto(dst, src, casting="unsafe")
    return dst


def setitem_(x, key, value):
    """x[key] = value in place (a fresh array when x cannot be written); returns the array."""
    x = _writable(x)
    x[key] = value
    return x


def shares_memory(a, b) -> bool:
    """Whether two arrays may overlap in memory (a bounds check, not an exact test: a view op's
    result that does is a view, and gets its base's version counter)."""
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.may_share_memory(a, b)


# ---- elementwise -------------------------------------------------------------------------------
exp, log, sqrt, abs, tanh, sign, sin, cos = np.exp, np.log, np.sqrt, np.abs, np.tanh, np.sign, np.sin, np.cos
maximum, minimum, where, nonzero = np.maximum, np.minimum, np.where, np.nonzero


def clip(x, lo, hi):
    return np.clip(x, lo, hi)

try:  # float64 erf: scipy's vectorised C when present, else the standard library's, elementwise
    from scipy.special import erf as _erf64
except ImportError:  # pragma: no cover - exercised only without scipy
    _erf64 = np.vectorize(math.erf, otypes=[np.float64])

# float32 erf as x·P(x²)/Q(x²) on [-4, 4], clipped to [-1, 1] and exactly ±1 from |x| = 3.9192 on,
# where the float64 erf rounds to ±1 in float32 (the fit alone gives 1 - 6e-8 there and overshoots
# to 1 + 2e-7 near 4, so Φ(-40) came out 3e-8, not 0). The coefficients are
# our own weighted least-squares fit to erf(x)/x; evaluated in float32 the result is within 7 ulp
# (4e-7 absolute) of float64 erf, which tests/test_backend_erf.py checks. numpy's own SIMD
# multiply/add run this 6x faster than scipy's scalar erf, and 3x more when done in cache-sized
# blocks (below), which is what keeps BERT's exact GELU as fast as torch's.
_ERF_P = np.array([1.12837917e+00, 1.85280008e-01, 5.43540105e-02, 3.85647916e-03,
                   3.80859225e-04, 4.71511614e-06, -1.33602699e-08], dtype=np.float32)
_ERF_Q = np.array([1.00000000e+00, 4.97533530e-01, 1.14014023e-01, 1.54798462e-02,
                   1.31069163e-03, 6.34035470e-05], dtype=np.float32)
_ERF_ONE = np.float32(3.9192)
_SQRT_HALF = math.sqrt(0.5)
_BLOCK = 1 << 16  # elements per block: a few float32 temporaries of this size stay in L2 cache


def _erf32_block(x, out, scale, cdf, times_x=False):
    """out = erf(scale·x), or the normal CDF (1 + erf(scale·x))/2 when ``cdf`` (times x when
    ``times_x``: GELU's x·Φ(x)), on one block."""
    xc = np.clip(x * np.float32(scale), -4.0, 4.0)
    u = xc * xc
    p = np.full_like(u, _ERF_P[-1])
    for c in _ERF_P[-2::-1]:  # Horner's rule, in place
        p *= u
        p += c
    q = np.full_like(u, _ERF_Q[-1])
    for c in _ERF_Q[-2::-1]:
        q *= u
        q += c
    p *= xc
    np.divide(p, q, out=out)
    np.clip(out, -1.0, 1.0, out=out)
    np.copyto(out, np.sign(xc), where=np.abs(xc) >= _ERF_ONE)
    if cdf:
        out *= 0.5
        out += 0.5
    if times_x:
        with np.errstate(invalid="ignore"):  # -inf · 0 is NaN, as torch's gelu(-inf), without a warning
            out *= x


def _blocked_erf32(x, scale: float, cdf: bool, times_x: bool = False):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(0, flat.size, _BLOCK):
        _erf32_block(flat[i:i + _BLOCK], out[i:i + _BLOCK], scale, cdf, times_x)
    return out.reshape(x.shape)


def erf(x):
    x = np.asarray(x)
    if x.dtype != np.float32:
        return _erf64(x).astype(x.dtype, copy=False)
    return _blocked_erf32(x, 1.0, False)


def normal_cdf(x):
    """Φ(x) = (1 + erf(x/√2)) / 2, the standard normal CDF (GELU's gate), in one blocked pass."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        return (0.5 * (1.0 + _erf64(x * _SQRT_HALF))).astype(x.dtype, copy=False)
    return _blocked_erf32(x, _SQRT_HALF, True)


def x_normal_cdf(x):
    """x·Φ(x) (exact GELU's forward), the multiply done inside the same cache-sized blocks."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        return x * normal_cdf(x)
    return _blocked_erf32(x, _SQRT_HALF, True, times_x=True)


def exp_(x):
    """e^x written into x itself: for fresh temporaries the engine owns (saves an allocation)."""
    return np.exp(x, out=x)


def sigmoid(x):
    # Stable for large |x|: exp is only ever taken of a non-positive number.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


# ---- reductions --------------------------------------------------------------------------------
def sum(x, axis=None, keepdims=False):
    return np.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return np.mean(x, axis=axis, keepdims=keepdims)


def amax(x, axis=None, keepdims=False):
    return np.max(x, axis=axis, keepdims=keepdims)


def argmax(x, axis, keepdims=False):
    return np.argmax(x, axis=axis, keepdims=keepdims)


def argmin(x, axis, keepdims=False):
    return np.argmin(x, axis=axis, keepdims=keepdims)


def reduce_all(x, axis=None, keepdims=False):
    return np.all(x, axis=axis, keepdims=keepdims)


def reduce_any(x, axis=None, keepdims=False):
    return np.any(x, axis=axis, keepdims=keepdims)


def topk_indices(x, k, axis, largest):
    """Indices of the k largest (or smallest) entries along ``axis``, in order (a stable sort, so
    ties keep their first-come order)."""
    order = np.argsort(-x if largest else x, axis=axis, kind="stable")
    return np.take(order, np.arange(k), axis=axis)


def tri(n, m, k, device=None):
    """The bool [n, m] mask of j <= i + k (np.tri)."""
    return np.tri(n, m, k, dtype=bool)


# ---- shape -------------------------------------------------------------------------------------
def reshape(x, shape):
    return np.reshape(x, shape)


def permute(x, axes):
    return np.transpose(x, axes)


def broadcast_to(x, shape):
    return np.broadcast_to(x, shape)


def concatenate(xs, axis):
    return np.concatenate(xs, axis=axis)


def matmul(a, b):
    # A stack of matrices that is not C-contiguous (a transposed view, e.g. attention heads)
    # makes numpy skip BLAS and loop in C: ~8x slower than copying it first.
    if a.ndim > 2:
        a = np.ascontiguousarray(a)
    if b.ndim > 2:
        b = np.ascontiguousarray(b)
    if a.ndim > 2:  # a stack of products: over the thread pool, one BLAS thread each
        return parallel.matmul_stack(a, b)
    return np.matmul(a, b)


# ---- indexing ----------------------------------------------------------------------------------
def getitem(x, key):
    """x[key]; where numpy would return a scalar copy (integers picking one element) this returns a
    0-d *view*, as torch does, so that ``t[0].zero_()`` writes into t."""
    out = x[key]
    if isinstance(out, np.ndarray):
        return out
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        return np.asarray(out)
    return x[key + (Ellipsis,)]


def take_along_axis(x, idx, axis):
    return np.take_along_axis(x, idx, axis=axis)


def index_add(target, index, values):
    """target[index] += values, summing repeated indices (np.add.at is unbuffered scatter-add)."""
    np.add.at(target, index, values)
    return target


def embedding_backward(grad, ids, num_embeddings):
    """Sum the rows of ``grad`` into a [num_embeddings, dim] table by id, repeats included.

    A bincount per column would be slow; sorting the ids once and reducing contiguous runs with
    np.add.reduceat does one pass over the gradient.
    """
    dim = grad.shape[-1]
    ids = ids.reshape(-1)
    grad = grad.reshape(-1, dim)
    out = np.zeros((num_embeddings, dim), dtype=grad.dtype)
    if ids.size == 0:
        return out
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    out[sorted_ids[starts]] = np.add.reduceat(grad[order], starts, axis=0)
    return out


# ---- randomness --------------------------------------------------------------------------------
def generator(seed, device=None):
    return np.random.default_rng(seed)


def rand(gen, shape, dtype):
    return gen.random(shape, dtype=dtype)


def randn(gen, shape, dtype):
    return gen.standard_normal(shape, dtype=dtype)


def randint(gen, low, high, shape):
    return gen.integers(low, high, shape, dtype=np.int64)


def generator_state(gen):
    return gen.bit_generator.state


def set_generator_state(gen, state):
    gen.bit_generator.state = state


def _along(idx, axis):
    """The index tuple of torch's scatter/gather: position p of ``idx`` addresses
    x[p_0, ..., idx[p], ..., p_n] (idx may be smaller than x in every dim)."""
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    return tuple(grid)


def scatter(x, idx, src, axis):
    """A copy of x with src written at idx along axis (torch.scatter); src is cut to idx's shape."""
    out = np.array(x)
    if isinstance(src, np.ndarray):
        src = src[tuple(slice(0, n) for n in idx.shape)]
    out[_along(idx, axis)] = src
    return out


def gather(x, idx, axis):
    """x picked at idx along axis (torch.gather; idx may be smaller than x in the other dims)."""
    return x[_along(idx, axis)]


def put_along_axis(shape, idx, values, axis):
    """A zero array of ``shape`` with ``values`` written at ``idx`` along ``axis`` (no repeats)."""
    out = np.zeros(shape, dtype=values.dtype)
    np.put_along_axis(out, idx, values, axis=axis)
    return out


# ---- timing ------------------------------------------------------------------------------------
def synchronize(device=None) -> None:
    """Wait until queued work on ``device`` has finished: numpy computes eagerly, so nothing to do."""
