"""Fused loss ops, each one ``Function`` with a hand-derived backward; the torch-named wrappers
(``F.cross_entropy``, ...) that check their arguments are in ``minigrad.nn.functional``.

The binary cross-entropy pair is the heart of the source article's §4.2 derivation:
    on probabilities  L = -[y log ŷ + (1 - y) log(1 - ŷ)],  dL/dŷ = (ŷ - y) / (ŷ (1 - ŷ))
    on logits z (ŷ = σ(z)):  the σ'(z) = ŷ(1 - ŷ) of the chain rule cancels that denominator,
                             dL/dz = σ(z) - y
The first blows up when ŷ saturates at 0 or 1 in float; the second never does.
"""
from __future__ import annotations

from ..autograd import Function, keep_saved, rerun_forward
from .nn import LogSoftmax


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


def _nonzero(xp, total_w):
    """The mean's divisor for backward, 1 where it is 0: every row was ignored, so the gradient is
    all zeros and stays so (torch's zero gradient), not 0 * inf. Chosen on the device, without
    reading the value back to the host (which would wait for a GPU)."""
    return xp.where(total_w != 0, total_w, 1.0)


class BinaryCrossEntropy(Function):
    """L = -w [y log ŷ + (1 - y) log(1 - ŷ)], each log clamped at -100 as torch does.

    dL/dŷ = w (ŷ - y) / max(ŷ (1 - ŷ), 1e-12)   (torch's guard against 0/0).
    """

    flops_per_element = 6  # two logs, two products, a sum, a reduction
    regraph = staticmethod(keep_saved)  # its saved floats besides the input are targets/weights

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

    With torch's ``pos_weight`` p (the positive term's weight, L = -w [p y log σ(z) + (1 - y) log(1 - σ(z))]):
    with l = 1 + (p - 1) y,  L = w [(1 - y) z + l softplus(-z)]  and  dL/dz = w [(1 - y) - l σ(-z)].
    """

    flops_per_element = 6  # max, product, |z|, exp, log1p, reduction
    regraph = staticmethod(keep_saved)  # its saved floats besides the input are targets/weights

    @staticmethod
    def forward(ctx, z, y, w, reduction, pos_weight=None):
        xp = ctx.xp
        log1p_exp = xp.log(1 + xp.exp(-xp.abs(z)))
        if pos_weight is None:
            loss = xp.maximum(z, 0) - z * y + log1p_exp
        else:  # torch's formula, softplus(-z) = log(1 + e^-|z|) + max(-z, 0)
            loss = (1 - y) * z + (1 + (pos_weight - 1) * y) * (log1p_exp + xp.maximum(-z, 0))
        if w is not None:
            loss = loss * w
        ctx.save_for_backward(z, y, w, pos_weight)
        ctx.reduction = reduction
        return _reduce(xp, loss, reduction)

    @staticmethod
    def backward(ctx, g):
        z, y, w, pos_weight = ctx.saved_tensors
        sig = ctx.xp.sigmoid(z)
        if pos_weight is None:
            dz = sig - y
        else:
            dz = (1 - y) - (1 + (pos_weight - 1) * y) * (1 - sig)
        gz = _reduce_grad(g, z.shape, ctx.reduction) * dz
        return (gz * w if w is not None else gz), None, None, None


class NLL(Function):
    """Negative log-likelihood of log-probabilities p [N, C] at class ids t [N], weights w:
    L_n = -w_{t_n} p_{n,t_n};  dL_n/dp_n = -w_{t_n} onehot(t_n). ``ignore_index`` rows add nothing
    and ``mean`` divides by Σ w_{t_n} over the rest, as torch's nll_loss."""

    flops_per_element = 0  # a pick and a sum: nothing per element of p
    regraph = staticmethod(keep_saved)  # its saved floats besides the input are targets/weights

    @staticmethod
    def forward(ctx, logp, t, ignore_index, reduction, weight=None):
        xp = ctx.xp
        valid = t != ignore_index
        safe_t = xp.where(valid, t, 0)
        row_w = xp.astype(valid, xp.dtype_of(logp)) if weight is None else weight[safe_t] * valid
        loss = -xp.gather(logp, safe_t[:, None], 1)[:, 0] * row_w
        ctx.save_for_backward(safe_t, row_w)
        ctx.reduction, ctx.shape, ctx.total_w = reduction, logp.shape, xp.sum(row_w)
        if reduction == "mean":
            return xp.sum(loss) / ctx.total_w
        return xp.sum(loss) if reduction == "sum" else loss

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        t, row_w = ctx.saved_tensors
        grad = xp.zeros(ctx.shape, xp.dtype_of(row_w), getattr(row_w, "device", None))
        grad[xp.arange(t.shape[0], device=getattr(grad, "device", None)), t] = -row_w
        if ctx.reduction == "mean":
            g = g / _nonzero(ctx.xp, ctx.total_w)
        elif ctx.reduction == "none":
            g = g[:, None]
        return grad * g, None, None, None


class CrossEntropy(Function):
    """Cross-entropy of logits z [N, C] against class ids t [N], with torch's class ``weight`` w,
    ``label_smoothing`` ε and ``ignore_index``. With p = log softmax(z):

        L_n = (1 - ε) w_{t_n} (-p_{n,t_n}) + (ε / C) Σ_c w_c (-p_{n,c})     (w = 1 without weights)
        dL_n/dz_n = ((1 - ε) w_{t_n} + (ε / C) Σ_c w_c) softmax(z_n) - (1 - ε) w_{t_n} onehot(t_n) - (ε / C) w

    (without ε or w: softmax(z_n) - onehot(t_n)). Rows whose target is ``ignore_index`` add nothing;
    ``mean`` divides by Σ w_{t_n} over the other rows (their count without weights), as torch does.
    When every row is ignored that is 0/0: the loss is NaN and the gradient zero, as in torch.
    """

    flops_per_element = 5  # as log_softmax, then a pick and a reduction

    @staticmethod
    def forward(ctx, z, t, ignore_index, reduction, weight=None, label_smoothing=0.0):
        xp = ctx.xp
        shifted = z - xp.amax(z, axis=1, keepdims=True)
        logp = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        valid = t != ignore_index
        safe_t = xp.where(valid, t, 0)
        dtype = xp.dtype_of(z)
        # Each row's weight w_{t_n}, zero where ignored (cast: numpy would make float32 * bool float64).
        row_w = xp.astype(valid, dtype) if weight is None else weight[safe_t] * valid
        picked = xp.gather(logp, safe_t[:, None], 1)[:, 0]
        loss = -(1.0 - label_smoothing) * picked * row_w
        if label_smoothing:
            spread = xp.sum(logp if weight is None else logp * weight, axis=1)
            loss = loss - (label_smoothing / z.shape[1]) * spread * xp.astype(valid, dtype)
        ctx.save_for_backward(logp, safe_t, valid, row_w, weight, z)  # z: for regraph
        ctx.reduction, ctx.smoothing = reduction, label_smoothing
        ctx.total_w = xp.sum(row_w)  # the mean's divisor, in z's dtype
        if reduction == "mean":
            return xp.sum(loss) / ctx.total_w  # every row ignored: 0/0 = NaN, torch's loss
        return xp.sum(loss) if reduction == "sum" else loss

    @staticmethod
    def regraph(ctx, saved, derived):
        """log p is rebuilt from z by LogSoftmax's forward (the same formula as above), run on the
        Tensor; the row weights (from targets and class weights) are constants."""
        (logp,) = rerun_forward(LogSoftmax, ctx, saved[-1], 1)
        return (logp, *saved[1:])

    @staticmethod
    def backward(ctx, g):
        xp, eps = ctx.xp, ctx.smoothing
        logp, t, valid, row_w, weight, _ = ctx.saved_tensors
        n, c = logp.shape
        coef = (1.0 - eps) * row_w  # the one-hot part's weight, per row
        # softmax(z) scaled out of place: under create_graph exp's output is saved by its node, and
        # an in-place change would invalidate it (the later in-place updates act on fresh arrays).
        if eps:
            in_row = xp.astype(valid, xp.dtype_of(logp))[:, None]
            w_sum = c if weight is None else xp.sum(weight)
            grad = xp.exp(logp) * (coef[:, None] + (eps / c) * w_sum * in_row)
            grad -= (eps / c) * (in_row if weight is None else in_row * weight)
        else:
            grad = xp.exp(logp) * coef[:, None]
        grad[xp.arange(n, device=getattr(grad, "device", None)), t] -= coef
        if ctx.reduction == "mean":
            g = g / _nonzero(ctx.xp, ctx.total_w)
        elif ctx.reduction == "none":
            g = g[:, None]
        return grad * g, None, None, None
