"""Matrix product: ``a @ b`` with torch's 1-D and batch-broadcast rules (one Function, ``MatMul``)."""
from __future__ import annotations

import math

from ..autograd import Function


def matmul_flops(inputs, out) -> int:
    """2·M·N·K (a multiply and an add per term; batch dims multiply M·N), as torch's flop counter:
    K is the contracted dim, the last of the first operand (a in a @ b, x in x Wᵀ)."""
    return 2 * math.prod(out.shape) * int(inputs[0].shape[-1])


def _mm(xp, a, b):
    """a @ b, folding a's leading dims into one 2-D GEMM when b is a plain matrix (numpy would
    otherwise run one small GEMM per leading index, ~3x slower)."""
    if a.ndim > 2 and b.ndim == 2:
        return xp.reshape(xp.reshape(a, (-1, a.shape[-1])) @ b, a.shape[:-1] + (b.shape[-1],))
    return xp.matmul(a, b)


class MatMul(Function):
    """z = a @ b with torch's 1-D rules and broadcast batch dims.

    dz/da = g @ bᵀ,  dz/db = aᵀ @ g; a 1-D operand is treated as a row (a) or a column (b), and the
    batch dims broadcasting added are summed away by the engine's unbroadcast.
    """

    flops = staticmethod(matmul_flops)
    grads_costing_flops = 2  # dA = G Bᵀ and dB = Aᵀ G: each a matmul of the forward's size

    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad
        # da needs b and db needs a; the shapes are kept for the 1-D rules.
        ctx.save_for_backward(a if need_b else None, b if need_a else None)
        ctx.ndims = (a.ndim, b.ndim)
        return _mm(ctx.xp, a, b)

    @staticmethod
    def backward(ctx, g):
        xp, (a, b), (a_nd, b_nd) = ctx.xp, ctx.saved_tensors, ctx.ndims
        need_a, need_b = ctx.needs_input_grad
        if a_nd == 1 and b_nd == 1:
            return (g * b if need_a else None), (g * a if need_b else None)
        if a_nd == 1:  # a row vector: [K] -> [1, K]
            g = g[..., None, :]
        if b_nd == 1:  # a column vector: [K] -> [K, 1]
            g = g[..., None]
        ga = gb = None
        if need_a:
            b2 = b[:, None] if b_nd == 1 else b
            ga = _mm(xp, g, b2.mT)
            if a_nd == 1:
                ga = ga[..., 0, :]
        if need_b:
            a2 = a[None, :] if a_nd == 1 else a
            if b_nd <= 2 and a2.ndim > 2:
                # A shared weight: fold the batch dims into one matmul, not a batch of them.
                gb = xp.reshape(a2, (-1, a2.shape[-1])).mT @ xp.reshape(g, (-1, g.shape[-1]))
            else:
                gb = _mm(xp, a2.mT, g)
            if b_nd == 1:
                gb = gb[..., 0]
        return ga, gb
