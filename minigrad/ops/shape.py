"""Ops that move values around without arithmetic: their backward moves the gradient back.

view/reshape, permute, expand, cat, indexing (read and write) and gather. squeeze, unsqueeze,
flatten, transpose, stack and split are built from these rather than being ops of their own.
"""
from __future__ import annotations

from ..autograd import Function


class Reshape(Function):
    """z = a viewed as ``shape``;  the gradient is g viewed as a's shape."""

    flops_per_element = 0  # it only moves or views data

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        return ctx.xp.reshape(a, shape)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.reshape(g, ctx.in_shape), None


class Permute(Function):
    """z = a with its dims reordered by ``dims``;  the gradient is g permuted by the inverse order."""

    flops_per_element = 0  # it only moves or views data

    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return ctx.xp.permute(a, dims)

    @staticmethod
    def backward(ctx, g):
        inverse = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inverse[d] = i
        return ctx.xp.permute(g, tuple(inverse)), None


class Expand(Function):
    """z = a broadcast to ``shape``;  the gradient sums over the copies (done by the engine)."""

    flops_per_element = 0  # it only moves or views data

    @staticmethod
    def forward(ctx, a, shape):
        return ctx.xp.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return g, None


class Cat(Function):
    """z = the inputs joined along ``axis``;  each input's gradient is its slice of g."""

    flops_per_element = 0  # it only moves or views data

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis, ctx.sizes = axis, [a.shape[axis] for a in arrays]
        return ctx.xp.concatenate(arrays, axis)

    @staticmethod
    def backward(ctx, g):
        grads, start = [], 0
        index = [slice(None)] * g.ndim
        for n in ctx.sizes:
            index[ctx.axis] = slice(start, start + n)
            grads.append(g[tuple(index)])
            start += n
        return tuple(grads)


def _has_array(key) -> bool:
    return any(hasattr(k, "shape") or isinstance(k, (list, tuple)) for k in key)


class Index(Function):
    """z = a[key] for basic slices and integer arrays;  the gradient scatters g back into zeros.

    With integer arrays an element can be picked twice (``a[[0, 0]]``): its gradient is then the sum
    of both, so the scatter must add (``index_add``), not assign.
    """

    flops_per_element = 0  # it only moves or views data

    @staticmethod
    def forward(ctx, a, key):
        ctx.shape, ctx.key = a.shape, key
        return ctx.xp.getitem(a, key)

    @staticmethod
    def backward(ctx, g):
        xp, key = ctx.xp, ctx.key
        out = xp.zeros(ctx.shape, xp.dtype_of(g), getattr(g, "device", None))
        if _has_array(key if isinstance(key, tuple) else (key,)):
            return xp.index_add(out, key, g), None
        out[key] = g  # basic slicing: each element is picked at most once
        return out, None


class IndexAdd(Function):
    """z = zeros(shape) with v added at ``key`` (repeats add up): Index's backward, as an op so that
    it can be differentiated again (under ``create_graph``);  dz/dv = g[key], Index's forward."""

    flops_per_element = 0  # it only moves data (and adds repeats)

    @staticmethod
    def forward(ctx, v, shape, key):
        xp = ctx.xp
        ctx.key = key
        return xp.index_add(xp.zeros(shape, xp.dtype_of(v), getattr(v, "device", None)), key, v)

    @staticmethod
    def backward(ctx, g):
        return ctx.xp.getitem(g, ctx.key), None, None


class IndexPut(Function):
    """z = a with z[key] = v (``t[key] = v`` recorded);  dz/da = g with zeros at key, dz/dv = g[key]
    (summed back to v's shape by the engine when v was broadcast)."""

    @staticmethod
    def forward(ctx, a, v, key):
        ctx.key = key
        return ctx.xp.setitem_(ctx.xp.copy(a), key, v)

    @staticmethod
    def backward(ctx, g):
        xp, key = ctx.xp, ctx.key
        need_a, need_v = ctx.needs_input_grad[:2]
        ga = xp.setitem_(xp.copy(g), key, 0) if need_a else None
        return ga, (xp.getitem(g, key) if need_v else None), None


class Scatter(Function):
    """z = a with src written at ``idx`` along ``axis`` (torch.scatter: z[i][idx[i][j]] = src[i][j] for
    axis 1);  dz/da = g with zeros where written, dz/dsrc = g gathered at idx. ``src`` may be a number."""

    flops_per_element = 0  # it only moves or views data

    @staticmethod
    def forward(ctx, a, src, idx, axis):
        ctx.save_for_backward(idx)
        ctx.axis = axis
        return ctx.xp.scatter(a, idx, src, axis)

    @staticmethod
    def backward(ctx, g):
        xp, (idx,) = ctx.xp, ctx.saved_tensors
        need_a, need_src = ctx.needs_input_grad[:2]
        ga = xp.scatter(g, idx, 0, ctx.axis) if need_a else None
        return ga, (xp.gather(g, idx, ctx.axis) if need_src else None), None, None


class Gather(Function):
    """z = a picked at ``idx`` along ``axis`` (take_along_axis);  the gradient is g put back there.

    Used by ``max(dim)``/``min(dim)``: one index per row, so there are no repeats to add up.
    """

    flops_per_element = 0  # it only moves or views data

    @staticmethod
    def forward(ctx, a, idx, axis):
        ctx.save_for_backward(idx)
        ctx.shape, ctx.axis = a.shape, axis
        return ctx.xp.take_along_axis(a, idx, ctx.axis)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return ctx.xp.put_along_axis(ctx.shape, idx, g, ctx.axis), None, None


class PutAlongAxis(Function):
    """z = zeros(shape) with v written at ``idx`` along ``axis``: Gather's backward, as an op so that
    it can be differentiated again;  dz/dv = g picked at idx (Gather's forward)."""

    flops_per_element = 0  # it only moves data

    @staticmethod
    def forward(ctx, v, shape, idx, axis):
        ctx.save_for_backward(idx)
        ctx.axis = axis
        return ctx.xp.put_along_axis(shape, idx, v, axis)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return ctx.xp.take_along_axis(g, idx, ctx.axis), None, None, None
