"""Fused neural-network ops: each one ``Function`` with a hand-derived backward.

Fused means one Function instead of a chain of primitive ops. That saves memory (fewer saved
intermediates) and time (fewer passes), and it is where numerical care lives: softmax subtracts the
row max before exponentiating. These work on raw backend arrays, like every op in ``minigrad.ops``;
the torch-named functions users call (``F.softmax``, ``F.layer_norm``, ...) are the thin wrappers
in ``minigrad.nn.functional``.
"""
from __future__ import annotations

import functools

from ..autograd import Function, rerun_forward
from .blocks import run_formula, run_kernel
from .matmul import matmul_flops


class Softmax(Function):
    """s = e^(x - max x) / Σ e^(x - max x) along ``axis`` (the max keeps exp from overflowing).

    Jacobian ds_i/dx_j = s_i (δ_ij - s_j), so the vector-Jacobian product is s ⊙ (g - Σ_j g_j s_j).
    numpy: these formulas, over blocks of rows on its thread pool (with numba, one compiled pass per
    row, ``backend/jit.py``); torch: its native ``_softmax``
    and ``_softmax_backward_data`` kernels, the same math in one pass each.
    """

    flops_per_element = 5  # max, subtract, exp, sum, scale

    @staticmethod
    def forward(ctx, x, axis):
        xp = ctx.xp
        ctx.axis = axis
        e = run_kernel(xp.kernels.softmax, x, axis)
        if e is NotImplemented:
            def formula(x):
                e = xp.exp_(x - xp.amax(x, axis=axis, keepdims=True))  # in place on the fresh difference
                e *= 1.0 / xp.sum(e, axis=axis, keepdims=True)  # one reciprocal per row, then multiplies
                return e
            e = run_formula(xp, formula, x, axis=axis - 1)  # rows split, never the reduced axis
        ctx.save_for_backward(e)
        return e

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        xp, axis = ctx.xp, ctx.axis
        gx = run_kernel(xp.kernels.softmax_backward, g, s, axis)
        if gx is not NotImplemented:
            return gx, None

        def formula(g, s):
            gs = g * s
            return gs - s * xp.sum(gs, axis=axis, keepdims=True)
        return run_formula(xp, formula, g, s, axis=axis - 1), None


class LogSoftmax(Function):
    """y = x - max x - log Σ e^(x - max x);  dy_i/dx_j = δ_ij - softmax_j, so vjp = g - e^y Σ g.

    numpy: these formulas, over blocks of rows on its thread pool; torch: its native
    ``_log_softmax`` and ``_log_softmax_backward_data`` kernels.
    """

    flops_per_element = 5  # max, subtract, exp, sum, subtract

    @staticmethod
    def forward(ctx, x, axis):
        xp = ctx.xp
        ctx.axis = axis
        k = xp.kernels.log_softmax
        if k is not None:
            y = k(x, axis)
        else:
            def formula(x):
                shifted = x - xp.amax(x, axis=axis, keepdims=True)
                return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
            y = run_formula(xp, formula, x, axis=axis - 1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        xp, axis = ctx.xp, ctx.axis
        k = xp.kernels.log_softmax_backward
        if k is not None:
            return k(g, y, axis), None
        return run_formula(xp, lambda g, y: g - xp.exp(y) * xp.sum(g, axis=axis, keepdims=True),
                           g, y, axis=axis - 1), None


class LayerNorm(Function):
    """y = x̂ w + b,  x̂ = (x - μ) / sqrt(σ² + eps), μ and σ² (biased) over the last ``n`` dims.

    With D normalised elements and ĝ = g w:
        dx = (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)) / sqrt(σ² + eps),   dw = Σ g x̂,   db = Σ g
    (the two mean terms are the gradient flowing through μ and σ²).
    numpy: these formulas, over blocks of rows on its thread pool (with numba, one compiled pass per
    row, ``backend/jit.py``, keeping torch's layout below); torch: its native
    ``native_layer_norm`` and ``native_layer_norm_backward`` kernels, which keep x, μ and
    1/sqrt(σ² + eps) for backward instead of x̂ (x̂ = (x - μ)/sqrt(σ² + eps) where a formula needs it).
    """

    flops_per_element = 8  # mean, centre, square, mean, rsqrt-scale, weight, bias (~8 with the sums)

    @staticmethod
    def forward(ctx, x, weight, bias, n, eps):
        xp = ctx.xp
        axes = tuple(range(x.ndim - n, x.ndim))
        ctx.axes, ctx.eps = axes, eps
        out = run_kernel(xp.kernels.layer_norm, x, weight, bias, n, eps)
        if out is not NotImplemented:  # a kernel keeps x, μ and rstd, as torch's native one (five saved)
            y, mean, rstd = out
            ctx.save_for_backward(x, rstd, weight, mean, bias)
            return y

        def formula(x):
            xc = x - xp.mean(x, axis=axes, keepdims=True)
            rstd = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=axes, keepdims=True) + eps)
            xhat = xc * rstd
            y = xhat * weight if weight is not None else xhat
            return (y + bias if bias is not None else y), xhat, rstd
        y, xhat, rstd = run_formula(xp, formula, x, axis=x.ndim - n - 1)  # rows split, never normalised dims
        # x too (torch's layer norm keeps its input as well): create_graph rebuilds x̂ and rstd from it.
        ctx.save_for_backward(xhat, rstd, weight, x)
        return y

    @staticmethod
    def regraph(ctx, saved, derived):
        """x̂ and rstd rebuilt by this forward's formula, run on the input Tensor (from either layout)."""
        x, weight = (saved[0], saved[2]) if len(saved) == 5 else (saved[3], saved[2])
        xhat, rstd, _, _ = rerun_forward(LayerNorm, ctx, x, None, None, len(ctx.axes), ctx.eps)
        return xhat, rstd, weight, x

    @staticmethod
    def backward(ctx, g):
        xp, axes = ctx.xp, ctx.axes
        saved = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if len(saved) == 5:  # the native forward's layout: x, rstd, w, μ, b
            x, rstd, weight, mean, bias = saved
            grads = run_kernel(xp.kernels.layer_norm_backward, g, x, mean, rstd, weight, bias, len(axes),
                               (need_x, need_w, need_b))
            if grads is not NotImplemented:
                return (*grads, None, None)
            xhat = (x - mean) * rstd
        else:
            xhat, rstd, weight, _ = saved
        gx = None
        if need_x:
            def formula(g, xhat, rstd):
                gh = g * weight if weight is not None else g
                return (gh - xp.mean(gh, axis=axes, keepdims=True)
                        - xhat * xp.mean(gh * xhat, axis=axes, keepdims=True)) * rstd
            gx = run_formula(xp, formula, g, xhat, rstd, axis=g.ndim - len(axes) - 1)
        lead = tuple(range(g.ndim - len(axes)))
        gw = xp.sum(g * xhat, axis=lead) if need_w else None
        gb = xp.sum(g, axis=lead) if need_b else None
        return gx, gw, gb, None, None


def _dropout_formula(scale, x, keep):
    """x m s, with m the keep mask and s = 1/(1 - p): the forward, and with g for x the backward."""
    y = x * keep
    y *= scale
    return y


class Dropout(Function):
    """y = x m / (1 - p), m ~ Bernoulli(1 - p);  dy/dx = m / (1 - p) (inverted dropout: eval needs
    no rescaling). Both directions are ``_dropout_formula``, over blocks on numpy's thread pool; on
    torch too (its native dropout would draw m from torch's global generator, not the one given)."""

    @staticmethod
    def forward(ctx, x, p, generator):
        xp = ctx.xp
        keep = xp.rand(generator, x.shape, xp.dtype_of(x)) >= p  # bool: 1 byte an element to save
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return run_formula(xp, functools.partial(_dropout_formula, ctx.scale), x, keep, axis=x.ndim - 1)

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved_tensors
        return run_formula(ctx.xp, functools.partial(_dropout_formula, ctx.scale), g, keep,
                           axis=g.ndim - 1), None, None


class Embedding(Function):
    """y = W[ids];  dW = Σ over positions of g scattered to rows by id (repeated ids add up).

    The ``padding_idx`` row gets no gradient, as in torch: padding stays a fixed vector. torch: its
    native ``embedding`` and ``embedding_dense_backward`` kernels."""

    flops_per_element = 0  # a gather: it only moves data

    @staticmethod
    def forward(ctx, weight, ids, padding_idx=None):
        ctx.save_for_backward(ids)
        ctx.num, ctx.padding_idx = weight.shape[0], padding_idx
        k = ctx.xp.kernels.embedding
        return k(weight, ids) if k is not None else weight[ids]

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved_tensors
        k = ctx.xp.kernels.embedding_backward
        if k is not None:
            return k(g, ids, ctx.num, ctx.padding_idx), None, None
        gw = ctx.xp.embedding_backward(g, ids, ctx.num)
        if ctx.padding_idx is not None:
            gw[ctx.padding_idx] = 0
        return gw, None, None


class Linear(Function):
    """y = x Wᵀ + b with W of shape [out, in], as torch.nn.Linear.

    dx = g W,  dW = gᵀ x,  db = Σ g over leading dims. All leading dims are folded into one 2-D
    matmul: one large GEMM runs ~3x faster in numpy than a batch of small ones. torch: the forward
    is one ``addmm`` (the bias added inside the GEMM).
    """

    flops = staticmethod(matmul_flops)  # the bias add is negligible next to the GEMM
    grads_costing_flops = 2  # dx and dW are matmuls; the bias gradient is a cheap sum

    @staticmethod
    def forward(ctx, x, weight, bias):
        xp = ctx.xp
        need_x, need_w = ctx.needs_input_grad[:2]
        # dx needs W and dW needs x: a frozen weight (LoRA, inference) keeps no activation alive.
        ctx.save_for_backward(x if need_w else None, weight if need_x else None)
        ctx.x_shape = x.shape
        k = xp.kernels.linear
        if k is not None:
            return k(x, weight, bias)
        y = xp.reshape(x, (-1, x.shape[-1])) @ weight.mT
        if bias is not None:
            y += bias
        return xp.reshape(y, x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g2 = xp.reshape(g, (-1, g.shape[-1]))
        gx = xp.reshape(g2 @ weight, ctx.x_shape) if need_x else None
        gw = g2.mT @ xp.reshape(x, (-1, x.shape[-1])) if need_w else None
        gb = xp.sum(g2, axis=0) if need_b else None
        return gx, gw, gb
