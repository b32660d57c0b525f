"""The numba loops behind jit.py (imported only on first use: importing numba costs ~0.3 s).

Each loop is serial and releases the GIL; jit.py runs it on blocks over the thread pool. ``cdf``,
``pdf`` and ``exp`` are typed per dtype: float32 computes in float32 (the numpy backend's rational
erf, a vectorisable exp), float64 with libm's ``erf`` and ``exp``. A row's sum accumulates in
float64. fastmath lets LLVM vectorise and reassociate sums, but keeps NaN and inf semantics.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from .numpy_backend import _ERF_ONE, _ERF_P, _ERF_Q

# error_model="numpy": x / 0 is inf or NaN as in numpy (Python's ZeroDivisionError check would also
# stop LLVM from vectorising every loop that divides).
jit = numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"nsz", "arcp", "contract", "reassoc"})
f32 = np.float32

# exp for float32, vectorisable (libm's expf is a call LLVM cannot vectorise): e^x = 2^k e^r with
# k = round(x log2 e), r = x - k ln 2 (ln 2 split in two so k ln 2 is exact), e^r by its degree-6
# Taylor-like minimax polynomial on |r| <= ln2/2, 2^k built in the exponent bits. Max relative
# error 3e-7 on normal results (tests/test_jit.py), like numpy's own SIMD exp; subnormal results
# (x < -87.3) keep their few digits.
_LOG2E, _LN2_HI, _LN2_LO = f32(1.4426950408889634), f32(0.693359375), f32(-2.12194440e-4)
_EXP_LO, _EXP_HI = f32(-104.0), f32(88.72283)  # e^x rounds to 0 below, overflows above
_EXP_C = (f32(1.9875691500e-4), f32(1.3981999507e-3), f32(8.3334519073e-3), f32(4.1665795894e-2),
          f32(1.6666665459e-1), f32(5.0000001201e-1))
_SQRT_HALF32, _INV_SQRT_2PI32 = f32(math.sqrt(0.5)), f32(1.0 / math.sqrt(2.0 * math.pi))
_P_HI, _Q_HI = len(_ERF_P) - 1, len(_ERF_Q) - 1


def exp(x):  # typed below
    raise NotImplementedError


def cdf(x):  # Φ(x) = (1 + erf(x/√2)) / 2
    raise NotImplementedError


def pdf(x):  # φ(x) = e^(-x²/2) / √(2π)
    raise NotImplementedError


@overload(exp)
def _exp(x):
    if x == numba.types.float32:
        def impl(x):
            v = min(max(x, _EXP_LO), _EXP_HI)
            k = np.floor(v * _LOG2E + f32(0.5))  # np.floor stays a float (math.floor: an int, not vectorised)
            r = v - k * _LN2_HI - k * _LN2_LO
            p = _EXP_C[0]
            for c in _EXP_C[1:]:
                p = p * r + c
            p = p * r * r + r + f32(1.0)
            # 2^k as two normal powers 2^k1 2^k2 (k down to -150 reaches the subnormals).
            k1 = np.floor(k * f32(0.5))
            y = p * _pow2(k1) * _pow2(k - k1)
            # Selects, not branches, so the loop still vectorises; NaN stays NaN (x != x).
            y = f32(0.0) if x < _EXP_LO else y
            y = f32(np.inf) if x > _EXP_HI else y
            return x if x != x else y
        return impl
    return lambda x: math.exp(x)


@numba.njit(inline="always")
def _pow2(k):
    """2^k for an integral float32 k in [-126, 127]: the exponent bits, built directly."""
    return np.int32((np.int32(k) + np.int32(127)) << np.int32(23)).view(np.float32)


@overload(cdf)
def _cdf(x):
    if x == numba.types.float32:
        def impl(x):  # the numpy backend's float32 erf: x·P(x²)/Q(x²) on [-4, 4], ±1 from ±3.9192
            s = min(max(x * _SQRT_HALF32, f32(-4.0)), f32(4.0))
            u = s * s
            num, den = _ERF_P[_P_HI], _ERF_Q[_Q_HI]
            for j in range(_P_HI - 1, -1, -1):
                num = num * u + _ERF_P[j]
            for j in range(_Q_HI - 1, -1, -1):
                den = den * u + _ERF_Q[j]
            e = min(max(s * num / den, f32(-1.0)), f32(1.0))
            e = f32(1.0) if s >= _ERF_ONE else e
            e = f32(-1.0) if s <= -_ERF_ONE else e
            return f32(0.5) + f32(0.5) * e
        return impl
    return lambda x: 0.5 * (1.0 + math.erf(x * math.sqrt(0.5)))


@overload(pdf)
def _pdf(x):
    if x == numba.types.float32:
        return lambda x: exp(f32(-0.5) * x * x) * _INV_SQRT_2PI32
    return lambda x: math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@jit
def gelu(x, out):
    """out = x Φ(x); x, out 1-D."""
    for i in range(x.size):
        out[i] = x[i] * cdf(x[i])


@jit
def gelu_backward(g, x, out):
    """out = g (Φ(x) + x φ(x))."""
    for i in range(x.size):
        out[i] = g[i] * (cdf(x[i]) + x[i] * pdf(x[i]))


@jit
def gelu_tanh(x, out):
    """out = x/2 (1 + tanh u),  u = √(2/π) (x + 0.044715 x³)."""
    for i in range(x.size):
        a = x[i]
        out[i] = 0.5 * a * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a * a * a)))


@jit
def gelu_tanh_backward(g, x, out):
    """out = g ((1 + tanh u)/2 + x/2 (1 - tanh² u) √(2/π) (1 + 3·0.044715 x²))."""
    for i in range(x.size):
        a = x[i]
        t = math.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a * a * a))
        du = math.sqrt(2.0 / math.pi) * (1.0 + 3.0 * 0.044715 * a * a)
        out[i] = g[i] * (0.5 * (1.0 + t) + 0.5 * a * (1.0 - t * t) * du)


@jit
def softmax(x, out):
    """Each row of out = e^(x - max x) / Σ e^(x - max x); x, out 2-D [rows, n]."""
    for r in range(x.shape[0]):
        m = x[r, 0]
        for c in range(1, x.shape[1]):
            m = max(m, x[r, c])
        total = 0.0
        for c in range(x.shape[1]):
            e = exp(x[r, c] - m)
            out[r, c] = e
            total += e
        inv = 1.0 / total
        for c in range(x.shape[1]):
            out[r, c] *= inv


@jit
def softmax_backward(g, s, out):
    """Each row of out = s ⊙ (g - Σ g s)."""
    for r in range(s.shape[0]):
        dot = 0.0
        for c in range(s.shape[1]):
            dot += g[r, c] * s[r, c]
        for c in range(s.shape[1]):
            out[r, c] = s[r, c] * (g[r, c] - dot)


@jit
def layer_norm(x, w, b, eps, out, mean, rstd):
    """Per row: μ, rstd = 1/sqrt(σ² + eps) (σ² biased, two passes), out = (x - μ) rstd w + b;
    mean and rstd are [rows, 1]."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        total = 0.0
        for c in range(n):
            total += x[r, c]
        mu = total / n
        sq = 0.0
        for c in range(n):
            d = x[r, c] - mu
            sq += d * d
        rs = 1.0 / math.sqrt(sq / n + eps)
        mean[r, 0], rstd[r, 0] = mu, rs
        for c in range(n):
            out[r, c] = (x[r, c] - mu) * rs * w[c] + b[c]


@jit
def layer_norm_backward(g, x, mean, rstd, w, out):
    """Per row, with ĝ = g w and x̂ = (x - μ) rstd: out = (ĝ - mean ĝ - x̂ mean(ĝ x̂)) rstd."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        mu, rs = np.float64(mean[r, 0]), np.float64(rstd[r, 0])  # x - μ in float64: no cancellation
        s1 = 0.0
        s2 = 0.0
        for c in range(n):
            gh = g[r, c] * w[c]
            s1 += gh
            s2 += gh * (x[r, c] - mu) * rs
        s1 /= n
        s2 /= n
        for c in range(n):
            out[r, c] = (g[r, c] * w[c] - s1 - (x[r, c] - mu) * rs * s2) * rs


@jit
def layer_norm_param_grads(g, x, mean, rstd, dw, db):
    """dw = Σ_rows g x̂, db = Σ_rows g, accumulated into float64 dw, db [n]."""
    for r in range(x.shape[0]):
        mu, rs = np.float64(mean[r, 0]), np.float64(rstd[r, 0])
        for c in range(x.shape[1]):
            dw[c] += g[r, c] * (x[r, c] - mu) * rs
            db[c] += g[r, c]


# ---- attention: the scores' row pass between jit.py's GEMMs, over a block of (batch, head) pairs --
# z, p, dp, dz are [B, n, T, S]; lse [B, n, T, 1]; the additive mask m [B or 1, n or 1, T or 1, S].
# Each loop writes a separate output: written in place, LLVM could not rule out aliasing and kept
# these loops scalar (4-5x slower). ``scale`` has the arrays' dtype, so float32 stays float32.
@numba.njit(inline="always")
def _mask_row(m, b, h, r):
    """Row r of the mask for (batch b, head h), its size-1 dims broadcast."""
    return m[b if m.shape[0] > 1 else 0, h if m.shape[1] > 1 else 0, r if m.shape[2] > 1 else 0]


@jit
def attention_probs(z, m, scale, p, lse):
    """p = softmax(z s + m) over each row, and lse = its log-sum-exp (max + log Σ e^(z s + m - max))."""
    for b in range(z.shape[0]):
        for h in range(z.shape[1]):
            for r in range(z.shape[2]):
                zr, pr, mr = z[b, h, r], p[b, h, r], _mask_row(m, b, h, r)
                top = zr[0] * scale + mr[0]
                for c in range(zr.size):
                    pr[c] = zr[c] * scale + mr[c]
                    top = max(top, pr[c])
                total = 0.0
                for c in range(zr.size):
                    e = exp(pr[c] - top)
                    pr[c] = e
                    total += e
                inv = 1.0 / total
                for c in range(zr.size):
                    pr[c] *= inv
                lse[b, h, r, 0] = top + math.log(total)


@jit
def attention_probs_again(z, m, scale, lse, p):
    """p = e^(z s + m - lse): the forward's probabilities, rebuilt from its log-sum-exp."""
    for b in range(z.shape[0]):
        for h in range(z.shape[1]):
            for r in range(z.shape[2]):
                zr, pr, mr, top = z[b, h, r], p[b, h, r], _mask_row(m, b, h, r), lse[b, h, r, 0]
                for c in range(zr.size):
                    pr[c] = exp(zr[c] * scale + mr[c] - top)


@jit
def attention_score_grad(p, dp, scale, dz):
    """dz = s p ⊙ (dp - Σ_c dp p): softmax's vector-Jacobian product, times the scale s."""
    for b in range(p.shape[0]):
        for h in range(p.shape[1]):
            for r in range(p.shape[2]):
                pr, dpr, dzr = p[b, h, r], dp[b, h, r], dz[b, h, r]
                dot = 0.0
                for c in range(pr.size):
                    dot += dpr[c] * pr[c]
                for c in range(pr.size):
                    dzr[c] = scale * pr[c] * (dpr[c] - dot)


@jit
def exp_loop(x, out):
    """out = e^x with the float32 ``exp`` above (for its accuracy test)."""
    for i in range(x.size):
        out[i] = exp(x[i])
