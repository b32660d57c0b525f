"""Moving a tensor to another device or dtype, as an op so that gradients flow back through it."""
from __future__ import annotations

from ..autograd import Context, Function, is_grad_enabled


class ToCopy(Function):
    """z = a on another device/dtype;  the gradient is g moved back to a's device and dtype.

    Unlike other ops its output lives on a different backend, so ``apply`` is written out here.
    """

    @classmethod
    def apply(cls, a, xp, device, dtype=None):
        from ..tensor import Tensor

        record = a.requires_grad and is_grad_enabled()
        ctx = Context(cls, a._xp, a.device, (record,))
        ctx.src, ctx.dst_xp = (a._xp, a.device, a.dtype), xp
        data = a._data if xp is a._xp else a._xp.to_numpy(a._data)
        out = xp.array(data, dtype=dtype or a.dtype, device=device)
        if record:
            ctx.parents, ctx.shapes = (a if a.grad_fn is None else a.grad_fn,), (a._data.shape,)
            return Tensor._make(out, xp, device, grad_fn=ctx)
        return Tensor._make(out, xp, device)

    @staticmethod
    def backward(ctx, g):
        (src_xp, device, dtype), dst_xp = ctx.src, ctx.dst_xp
        return src_xp.array(g if dst_xp is src_xp else dst_xp.to_numpy(g), dtype=dtype, device=device)
