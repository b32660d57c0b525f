"""Fused scaled dot-product attention: one ``Function`` for softmax(q kᵀ s + m) v, on a backend kernel.

The composed form (a matmul, a scale, the mask's add, ``Softmax``, a matmul: ``F.scaled_dot_product_
attention`` without this op, and mini_bert's attention) stores the [B, n, T, T] probabilities for
backward. torch's flash-attention kernel does not: its forward keeps one log-sum-exp per query row
and its backward recomputes the probabilities block by block, in cache. numpy's kernel (with numba,
``backend/jit.py``) does the same a few heads at a time. This op exists only where a backend has
such a kernel (``kernels.attention``); everywhere else the composed form is used. Its
backward's formula (below the kernel call) runs only for ``create_graph``, recorded on Tensors.
"""
from __future__ import annotations

import math

from ..autograd import Function, keep_saved


class ScaledDotProductAttention(Function):
    """o = p̃ v,  p = softmax(q kᵀ s + m) over the keys, per batch and head (q, k, v [B, n, T, d];
    s the scale, m an additive float mask broadcasting to [B, n, T, T], or None), p̃ = p ⊙ r / (1 - P)
    with attention dropout at rate P (r ~ Bernoulli(1 - P), drawn as ``Dropout`` draws it, so the
    same generator gives the composed form's mask), else p̃ = p.

    With g = dL/do:  dv = p̃ᵀ g,  dp = (g vᵀ) ⊙ r / (1 - P),  dz = p ⊙ (dp - Σ_j dp_j p_j)  (softmax's
    vjp),  dq = s dz k,  dk = s dzᵀ q. torch: ``_scaled_dot_product_flash_attention_for_cpu`` and its
    ``_backward`` compute exactly these without dropout (with it, torch's kernel would draw r
    from its own generator, so on torch the composed form runs); numpy: ``jit._attention`` and
    ``jit._attention_backward`` (BLAS for the products, one compiled pass for the rows).
    """

    @classmethod
    def flops(cls, inputs, out) -> int:
        """q kᵀ and p v: 2 · 2·B·n·T·T'·d."""
        q, k = inputs[0], inputs[1]
        return 4 * math.prod(q.shape) * int(k.shape[-2])

    grads_costing_flops = 3  # dq, dk, dv: a matmul each, plus recomputing p (about one more)

    @staticmethod
    def forward(ctx, q, k, v, mask, scale, dropout_p=0.0, generator=None):
        xp = ctx.xp
        keep = None
        if dropout_p > 0:  # bool: 1 byte a weight to save, where the composed form keeps p and p̃
            keep = xp.rand(generator, q.shape[:-1] + k.shape[-2:-1], xp.dtype_of(q)) >= dropout_p
        ctx.scale, ctx.keep_scale = scale, 1.0 / (1.0 - dropout_p)
        out, lse = xp.kernels.attention(q, k, v, mask, scale, keep, ctx.keep_scale)
        ctx.save_for_backward(q, k, v, mask, out, lse, keep)
        return out

    # create_graph: the mask and the dropout mask are constants, the log-sum-exp is unused below.
    regraph = staticmethod(keep_saved)

    @staticmethod
    def backward(ctx, g):
        q, k, v, mask, out, lse, keep = ctx.saved_tensors
        xp, s, c = ctx.xp, ctx.scale, ctx.keep_scale
        kernel = xp.kernels.attention_backward
        if kernel is not None:
            dq, dk, dv = kernel(g, q, k, v, out, lse, mask, s, keep, c)
            return dq, dk, dv, None, None, None, None
        # The docstring's formulas (create_graph runs them on Tensors, so they record), p recomputed.
        z = xp.matmul(q, k.mT) * s
        if mask is not None:
            z = z + mask
        p = xp.exp(z - xp.amax(z, axis=-1, keepdims=True))
        p = p / xp.sum(p, axis=-1, keepdims=True)
        dp = xp.matmul(g, v.mT)
        if keep is not None:
            p_kept, dp = p * keep * c, dp * keep * c
        else:
            p_kept = p
        dz = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))
        return xp.matmul(dz, k) * s, xp.matmul(dz.mT, q) * s, xp.matmul(p_kept.mT, g), None, None, None, None
