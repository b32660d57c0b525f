"""Moving a tensor to another device or dtype, as an op so that gradients flow back through it."""
from __future__ import annotations

from ..autograd import Context, Function, is_grad_enabled, run_node


class ToCopy(Function):
    """z = a on another backend/device/dtype;  the gradient is g moved back to a's place and dtype.

    Its output lives on a different backend than its input, which ``Function.apply`` cannot know,
    so ``apply`` builds the node itself and hands it to ``autograd.run_node`` (profiled, wired and
    version-tracked like every other op).
    """

    flops_per_element = 0  # it only moves data

    @classmethod
    def apply(cls, a, xp, device, dtype=None):
        record = a.requires_grad and is_grad_enabled()
        ctx = Context(cls, a._xp, a.device, (record,))
        return run_node(ctx, (a,), (a._data,), {"dst_xp": xp, "dst_device": device, "dtype": dtype},
                        record, xp, device)

    @staticmethod
    def forward(ctx, a, dst_xp, dst_device, dtype):
        src_xp = ctx.xp
        ctx.src_dtype, ctx.dst_xp = src_xp.dtype_of(a), dst_xp
        data = a if dst_xp is src_xp else src_xp.to_numpy(a)
        return dst_xp.array(data, dtype=dtype or ctx.src_dtype, device=dst_device)

    @staticmethod
    def backward(ctx, g):
        src_xp, dst_xp = ctx.xp, ctx.dst_xp
        return src_xp.array(g if dst_xp is src_xp else dst_xp.to_numpy(g), dtype=ctx.src_dtype,
                            device=ctx.device)
