"""Fused scaled dot-product attention: one ``Function`` for softmax(q kᵀ s + m) v, on torch's kernel.

The composed form (a matmul, a scale, the mask's add, ``Softmax``, a matmul: ``F.scaled_dot_product_
attention`` without this op, and mini_bert's attention) stores the [B, n, T, T] probabilities for
backward. torch's flash-attention kernel does not: its forward keeps one log-sum-exp per query row
and its backward recomputes the probabilities block by block, in cache. This op exists only where a
backend has that kernel (``kernels.attention``); everywhere else the composed form is the formula.
"""
from __future__ import annotations

import math

from ..autograd import Function


class ScaledDotProductAttention(Function):
    """o = p v,  p = softmax(q kᵀ s + m) over the keys, per batch and head (q, k, v [B, n, T, d];
    s the scale, m an additive float mask broadcasting to [B, n, T, T], or None).

    With g = dL/do:  dv = pᵀ g,  dp = g vᵀ,  dz = p ⊙ (dp - Σ_j dp_j p_j)  (softmax's vjp),
    dq = s dz k,  dk = s dzᵀ q. torch: ``_scaled_dot_product_flash_attention_for_cpu`` and its
    ``_backward`` compute exactly these, the mask included; no other backend has this op.
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

    @staticmethod
    def backward(ctx, g):
        q, k, v, mask, out, lse = ctx.saved_tensors
        kernel = ctx.xp.kernels.attention_backward
        if kernel is None:
            raise RuntimeError("ScaledDotProductAttention: this backward runs on torch's fused kernel only; "
                               "for a differentiable backward (create_graph) use the composed attention")
        dq, dk, dv = kernel(g, q, k, v, out, lse, mask, ctx.scale)
        return dq, dk, dv, None, None
