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
    """o = p v,  p = softmax(q kᵀ s + m) over the keys, per batch and head (q, k, v [B, n, T, d];
    s the scale, m an additive float mask broadcasting to [B, n, T, T], or None).

    With g = dL/do:  dv = pᵀ g,  dp = g vᵀ,  dz = p ⊙ (dp - Σ_j dp_j p_j)  (softmax's vjp),
    dq = s dz k,  dk = s dzᵀ q. torch: ``_scaled_dot_product_flash_attention_for_cpu`` and its
    ``_backward`` compute exactly these, the mask included; numpy: ``jit._attention`` and
    ``jit._attention_backward`` (BLAS for the products, one compiled pass for the rows).
    """

    @classmethod
    def flops(cls, inputs, out) -> int:
        """q kᵀ and p v: 2 · 2·B·n·T·T'·d."""
        q, k = inputs[0], inputs[1]
        return 4 * math.prod(q.shape) * int(k.shape[-2])

    grads_costing_flops = 3  # dq, dk, dv: a matmul each, plus recomputing p (about one more)

    @staticmethod
    def forward(ctx, q, k, v, mask, scale):
        out, lse = ctx.xp.kernels.attention(q, k, v, mask, scale)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.scale = scale
        return out

    # create_graph: the mask is a constant and the log-sum-exp is unused by the formula below.
    regraph = staticmethod(keep_saved)

    @staticmethod
    def backward(ctx, g):
        q, k, v, mask, out, lse = ctx.saved_tensors
        xp, s = ctx.xp, ctx.scale
        kernel = xp.kernels.attention_backward
        if kernel is not None:
            dq, dk, dv = kernel(g, q, k, v, out, lse, mask, s)
            return dq, dk, dv, None, None
        # The docstring's formulas (create_graph runs them on Tensors, so they record), p recomputed.
        z = xp.matmul(q, k.mT) * s
        if mask is not None:
            z = z + mask
        p = xp.exp(z - xp.amax(z, axis=-1, keepdims=True))
        p = p / xp.sum(p, axis=-1, keepdims=True)
        dp = xp.matmul(g, v.mT)
        dz = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))
        return xp.matmul(dz, k) * s, xp.matmul(dz.mT, q) * s, xp.matmul(p.mT, g), None, None
