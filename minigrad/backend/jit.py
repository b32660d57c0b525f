"""Compiled loops for the numpy backend's fused ops, when numba is installed (the ``fast`` extra).

A numpy formula makes one pass over memory per operation: exact GELU's rational erf is ~30 passes,
softmax 5, LayerNorm's backward ~10. Each loop here computes the same math as its op's docstring in
one pass, element by element, with the values in registers. Measured on the 2-core development
machine in CPU time on one thread, [4096, 1536] float32: GELU's forward 25 ms as the numpy formula,
3.3 ms here; softmax over [49152, 128]: 28 ms, 11 ms here, 6.9 ms for torch's own kernel.

Rules that keep them the formulas' twins:
  * the same arithmetic: float32 GELU uses the numpy backend's own rational erf (its coefficients,
    its clamps); float64 uses libm's erf, as scipy does for the formula;
  * sums over a row (softmax, LayerNorm) accumulate in float64, so rounding does not grow with the
    row length; fastmath lets LLVM vectorise but keeps NaN and inf semantics (no ``nnan``/``ninf``);
  * every loop is serial and releases the GIL (``nogil``); the numpy backend's thread pool
    (``parallel.blocks``) runs them on blocks of rows, so ``mg.set_num_threads`` governs them too.

Without numba, or with ``MINIGRAD_JIT=0`` in the environment, ``kernels()`` is empty and every op
runs its numpy formula: the readable reference. tests/test_kernels.py checks each kernel against it
in float64, tests/test_jit.py against torch in float32.
Compilation happens on first use and is cached on disk (numba's ``cache=True``).
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os

import numpy as np

from . import parallel

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Below this many elements a kernel declines (returns NotImplemented) and the op's numpy formula
# runs: a small array gains microseconds, and a program that only ever makes small ones (a lesson's
# toy graph) never pays numba's ~0.5 s import and cache load.
MIN_ELEMENTS = parallel.MIN_PARALLEL_ELEMENTS


def available() -> bool:
    """numba is importable and not switched off by MINIGRAD_JIT=0."""
    return os.environ.get("MINIGRAD_JIT", "1") != "0" and importlib.util.find_spec("numba") is not None


def _large_only(kernel):
    """``kernel``, declining (NotImplemented) when its first array has under MIN_ELEMENTS elements
    (every other array it takes is as large)."""
    @functools.wraps(kernel)
    def run(first, *rest):
        return NotImplemented if first.size < MIN_ELEMENTS else kernel(first, *rest)
    return run


def _loops():
    from . import _jit_loops  # compiles (or loads from numba's cache) on first call of each loop
    return _jit_loops


def _float(*arrays):
    """C-contiguous float32/float64 versions (copies only where needed), and the dtype to cast the
    result back to (float16 and bfloat16 are computed in float32, as torch's CPU kernels do)."""
    dtype = arrays[0].dtype
    work = dtype if dtype in _FLOATS else np.dtype(np.float32)
    return [np.asarray(a, dtype=work, order="C") for a in arrays], dtype  # (ascontiguousarray makes 0-d 1-d)


def _elementwise(loop, *arrays):
    """loop(*flat blocks, flat out block) on the pool; the result has arrays[0]'s shape and dtype."""
    work, dtype = _float(*arrays)
    out = np.empty_like(work[0])
    parallel.blocks(lambda *blk: loop(*(b.reshape(-1) for b in blk)), *work, out, axis=out.ndim - 1)
    return out.astype(dtype, copy=False)


@_large_only
def _gelu(x, approximate):
    loops = _loops()
    return _elementwise(loops.gelu_tanh if approximate == "tanh" else loops.gelu, x)


@_large_only
def _gelu_backward(g, x, approximate):
    loops = _loops()
    return _elementwise(loops.gelu_tanh_backward if approximate == "tanh" else loops.gelu_backward, g, x)


def _rows(loop, dim: int, *arrays):
    """loop(*2-D row blocks, out block) with ``dim`` moved last and the other dims folded into rows."""
    work, dtype = _float(*(np.moveaxis(a, dim, -1) for a in arrays))
    out = np.empty_like(work[0])
    n = out.shape[-1]
    if out.size:
        parallel.blocks(loop, *(a.reshape(-1, n) for a in (*work, out)), axis=0)
    return np.moveaxis(out.astype(dtype, copy=False), -1, dim)


@_large_only
def _softmax(x, dim):
    return _rows(_loops().softmax, dim, x)


@_large_only
def _softmax_backward(g, y, dim):
    return _rows(_loops().softmax_backward, dim, g, y)


def _affine(p, d: int, dtype, fill: float):
    """LayerNorm's weight or bias as a flat array (ones or zeros when the layer has none)."""
    return np.full(d, fill, dtype) if p is None else np.ascontiguousarray(p.reshape(-1), dtype=dtype)


@_large_only
def _layer_norm(x, w, b, n, eps):
    """(y, mean, rstd) over the last ``n`` dims; mean and rstd keep x's rank (torch's layout)."""
    loops, d = _loops(), math.prod(x.shape[x.ndim - n:])
    (x2,), dtype = _float(x.reshape(-1, d))
    w2, b2 = _affine(w, d, x2.dtype, 1.0), _affine(b, d, x2.dtype, 0.0)
    y, mean, rstd = np.empty_like(x2), np.empty((len(x2), 1), x2.dtype), np.empty((len(x2), 1), x2.dtype)
    parallel.blocks(lambda x, y, m, r: loops.layer_norm(x, w2, b2, eps, y, m, r), x2, y, mean, rstd, axis=0)
    stat = x.shape[:x.ndim - n] + (1,) * n
    return y.reshape(x.shape).astype(dtype, copy=False), mean.reshape(stat), rstd.reshape(stat)


@_large_only
def _layer_norm_backward(g, x, mean, rstd, w, b, n, mask):
    """(dx, dw, db), each None where ``mask`` says that gradient is not needed."""
    loops, d = _loops(), math.prod(x.shape[x.ndim - n:])
    (g2, x2, m2, r2), dtype = _float(g.reshape(-1, d), x.reshape(-1, d), mean.reshape(-1, 1), rstd.reshape(-1, 1))
    dx = dw = db = None
    if mask[0]:
        w2, out = _affine(w, d, x2.dtype, 1.0), np.empty_like(x2)
        parallel.blocks(lambda g, x, m, r, o: loops.layer_norm_backward(g, x, m, r, w2, o),
                        g2, x2, m2, r2, out, axis=0)
        dx = out.reshape(x.shape).astype(dtype, copy=False)
    if (mask[1] and w is not None) or (mask[2] and b is not None):
        acc_w, acc_b = np.zeros(d), np.zeros(d)
        loops.layer_norm_param_grads(g2, x2, m2, r2, acc_w, acc_b)
        shape = x.shape[x.ndim - n:]
        dw = acc_w.astype(dtype).reshape(shape) if mask[1] and w is not None else None
        db = acc_b.astype(dtype).reshape(shape) if mask[2] and b is not None else None
    return dx, dw, db


# Heads per block: a block's [h, T, S] scores (64 KB a head at T = S = 128 in float32) stay in L2.
_HEADS_PER_BLOCK = 8


def _heads(fn, *arrays):
    """fn(*blocks) over blocks of (batch, head) pairs of [B, n, ...] arrays, on the pool, with BLAS on
    one thread per worker (numpy's matmul calls BLAS once per head: a BLAS waking its own threads for
    a 128x128 product would cost more than the product). A mask of size 1 in B or n is broadcast."""
    with parallel.single_threaded_blas():
        parallel.blocks(fn, *arrays, axis=1, block_elements=_HEADS_PER_BLOCK * math.prod(arrays[0].shape[2:]))


def _mask4(mask, shape, dtype):
    """The additive mask as a [B or 1, n or 1, T or 1, S] array (zeros [1, 1, 1, S] for none)."""
    if mask is None:
        return np.zeros((1, 1, 1, shape[-1]), dtype)
    m = np.asarray(mask, dtype=dtype)
    m = m.reshape((1,) * (4 - m.ndim) + m.shape)
    return np.ascontiguousarray(np.broadcast_to(m, m.shape[:3] + (shape[-1],)))


def _dropped(p, keep, c):
    """p ⊙ r c (r the dropout's keep mask, c = 1/(1 - P)), or p itself without dropout."""
    if keep is None:
        return p
    kept = p * keep
    kept *= c
    return kept


def _attention(q, k, v, mask, scale, keep=None, keep_scale=1.0):
    """(p̃ v with p = softmax(q kᵀ s + m), p̃ = p ⊙ keep · keep_scale, and the log-sum-exp of each
    score row), a few heads at a time: q kᵀ and p̃ v on BLAS, the row pass between them compiled,
    the scores of a block kept in cache."""
    loops = _loops()
    (q, k, v), dtype = _float(q, k, v)
    m = _mask4(mask, k.shape[:-1], q.dtype)
    out = np.empty(q.shape[:-1] + v.shape[-1:], q.dtype)
    lse = np.empty(q.shape[:-1] + (1,), q.dtype)  # 4-D, so that the pool cuts it like q
    s, c = q.dtype.type(scale), q.dtype.type(keep_scale)

    def block(q, k, v, m, out, lse, keep):
        p = np.empty(q.shape[:-1] + k.shape[-2:-1], q.dtype)
        loops.attention_probs(q @ k.swapaxes(-1, -2), m, s, p, lse)
        np.matmul(_dropped(p, keep, c), v, out=out)
    _heads(block, q, k, v, m, out, lse, keep)
    return out.astype(dtype, copy=False), lse[..., 0]


def _attention_backward(g, q, k, v, out, lse, mask, scale, keep=None, keep_scale=1.0):
    """(dq, dk, dv) of ``_attention``: p = e^(q kᵀ s + m - lse) rebuilt, dv = p̃ᵀ g,
    dz = s p ⊙ (dp - Σ dp ⊙ p) with dp = (g vᵀ) ⊙ keep · keep_scale, dq = dz k, dk = dzᵀ q."""
    loops = _loops()
    (g, q, k, v), dtype = _float(g, q, k, v)
    m = _mask4(mask, k.shape[:-1], q.dtype)
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    s, c = q.dtype.type(scale), q.dtype.type(keep_scale)

    def block(g, q, k, v, lse, m, dq, dk, dv, keep):
        p, dz = np.empty((2,) + q.shape[:-1] + k.shape[-2:-1], q.dtype)
        loops.attention_probs_again(q @ k.swapaxes(-1, -2), m, s, lse, p)
        np.matmul(_dropped(p, keep, c).swapaxes(-1, -2), g, out=dv)
        loops.attention_score_grad(p, _dropped(g @ v.swapaxes(-1, -2), keep, c), s, dz)
        np.matmul(dz, k, out=dq)
        np.matmul(dz.swapaxes(-1, -2), q, out=dk)
    _heads(block, g, q, k, v, np.asarray(lse, q.dtype)[..., None], m, dq, dk, dv, keep)
    return dq.astype(dtype, copy=False), dk.astype(dtype, copy=False), dv.astype(dtype, copy=False)


def kernels() -> dict:
    """The numpy backend's compiled kernels by name ({} without numba, or with MINIGRAD_JIT=0)."""
    if not available():
        return {}
    return dict(gelu=_gelu, gelu_backward=_gelu_backward, softmax=_softmax, softmax_backward=_softmax_backward,
                layer_norm=_layer_norm, layer_norm_backward=_layer_norm_backward,
                attention=_attention, attention_backward=_attention_backward,
                # (q.size · T: about the size of the scores)
                attention_on=lambda q, dropout: q.ndim == 4 and q.size * q.shape[-2] >= MIN_ELEMENTS)
