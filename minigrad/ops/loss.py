"""Fused loss ops, each one ``Function`` with a hand-derived backward; the torch-named wrappers
(``F.cross_entropy``, ...) that check their arguments are in ``minigrad.nn.functional``.

The binary cross-entropy pair is the heart of the source article's §4.2 derivation:
    on probabilities  L = -[y log ŷ + (1 - y) log(1 - ŷ)],  dL/dŷ = (ŷ - y) / (ŷ (1 - ŷ))
    on logits z (ŷ = σ(z)):  the σ'(z) = ŷ(1 - ŷ) of the chain rule cancels that denominator,
                             dL/dz = σ(z) - y
The first blows up when ŷ saturates at 0 or 1 in float; the second never does.
"""
from __future__ import annotations

from ..autograd import Function


def _reduce(xp, loss, reduction):
    if reduction == "mean":
        return xp.mean(loss)
    return xp.sum(loss) if reduction == "sum" else loss


def _reduce_grad(g, shape, reduction):
    """The gradient of the reduction itself: 1/N for mean, 1 for sum, g as is for none."""
    if reduction == "none":
        return g
    n = 1
    for d in shape:
        n *= d
    return g / n if reduction == "mean" else g


class BinaryCrossEntropy(Function):
    """L = -w [y log ŷ + (1 - y) log(1 - ŷ)], each log clamped at -100 as torch does.

    dL/dŷ = w (ŷ - y) / max(ŷ (1 - ŷ), 1e-12)   (torch's guard against 0/0).
    """

    flops_per_element = 6  # two logs, two products, a sum, a reduction

    @staticmethod
    def forward(ctx, p, y, w, reduction):
        xp = ctx.xp
        loss = -(y * xp.maximum(xp.log(p), -100.0) + (1 - y) * xp.maximum(xp.log(1 - p), -100.0))
        if w is not None:
            loss = loss * w
        ctx.save_for_backward(p, y, w)
        ctx.reduction = reduction
        return _reduce(xp, loss, reduction)

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        p, y, w = ctx.saved_tensors
        gp = _reduce_grad(g, p.shape, ctx.reduction) * (p - y) / xp.maximum(p * (1 - p), 1e-12)
        return (gp * w if w is not None else gp), None, None, None


class BCEWithLogits(Function):
    """L = w [max(z, 0) - z y + log(1 + e^(-|z|))]  (= BCE of σ(z), never overflowing).

    dL/dz = w (σ(z) - y).
    """

    flops_per_element = 6  # max, product, |z|, exp, log1p, reduction

    @staticmethod
    def forward(ctx, z, y, w, reduction):
        xp = ctx.xp
        loss = xp.maximum(z, 0) - z * y + xp.log(1 + xp.exp(-xp.abs(z)))
        if w is not None:
            loss = loss * w
        ctx.save_for_backward(z, y, w)
        ctx.reduction = reduction
        return _reduce(xp, loss, reduction)

    @staticmethod
    def backward(ctx, g):
        z, y, w = ctx.saved_tensors
        gz = _reduce_grad(g, z.shape, ctx.reduction) * (ctx.xp.sigmoid(z) - y)
        return (gz * w if w is not None else gz), None, None, None


class CrossEntropy(Function):
    """L_n = -log softmax(z_n)[t_n] for logits z [N, C] and class ids t [N].

    dL_n/dz_n = softmax(z_n) - onehot(t_n). Rows whose target is ``ignore_index`` add nothing and
    are not counted in the mean, as in torch.
    """

    flops_per_element = 5  # as log_softmax, then a pick and a reduction

    @staticmethod
    def forward(ctx, z, t, ignore_index, reduction):
        xp = ctx.xp
        shifted = z - xp.amax(z, axis=1, keepdims=True)
        logp = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        valid = t != ignore_index
        safe_t = xp.where(valid, t, 0)
        picked = xp.take_along_axis(logp, safe_t[:, None], 1)[:, 0]
        loss = -picked * valid
        ctx.save_for_backward(logp, safe_t, valid)
        ctx.reduction = reduction
        # The count in z's dtype: numpy would promote float32 / an int64 scalar to float64.
        ctx.count = xp.astype(xp.sum(valid), xp.dtype_of(z))
        if reduction == "mean":
            return xp.sum(loss) / ctx.count
        return xp.sum(loss) if reduction == "sum" else loss

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        logp, t, valid = ctx.saved_tensors
        grad = xp.exp(logp)
        grad[xp.arange(t.shape[0], device=getattr(grad, "device", None)), t] -= 1
        grad *= valid[:, None]
        if ctx.reduction == "mean":
            g = g / ctx.count
        elif ctx.reduction == "none":
            g = g[:, None]
        return grad * g, None, None, None
