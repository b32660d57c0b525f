"""Reductions. ``axis`` is None (all dims), an int or a tuple of ints, all non-negative.

A reduction's backward must put the removed dims back (size 1) before broadcasting the gradient
over the input: ``_expand_back`` does that once for all of them.
"""
from __future__ import annotations

import math

from ..autograd import Function, rerun_forward


def _expand_back(xp, g, in_shape, axis, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input (re-insert reduced dims)."""
    if not keepdims and axis is not None:
        axes = (axis,) if isinstance(axis, int) else axis
        shape = list(g.shape)
        for a in sorted(axes):
            shape.insert(a, 1)
        g = xp.reshape(g, tuple(shape))
    return xp.broadcast_to(g, in_shape)


def _count(shape, axis) -> int:
    """How many elements a reduction over ``axis`` combines into each output."""
    if axis is None:
        return math.prod(shape)
    return math.prod(shape[a] for a in ((axis,) if isinstance(axis, int) else axis))


class Sum(Function):
    """z = Σ_axis a;  dz/da = 1 broadcast over the reduced dims."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.in_shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return ctx.xp.sum(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _expand_back(ctx.xp, g, ctx.in_shape, ctx.axis, ctx.keepdims)


class Mean(Function):
    """z = Σ_axis a / n;  dz/da = 1/n broadcast over the reduced dims."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.in_shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return ctx.xp.mean(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        return _expand_back(ctx.xp, g, ctx.in_shape, ctx.axis, ctx.keepdims) / _count(ctx.in_shape, ctx.axis)


class Var(Function):
    """z = Σ (a - mean)^2 / (n - correction);  dz/da = 2 (a - mean) / (n - correction)."""

    flops_per_element = 3  # subtract the mean, square, sum

    @staticmethod
    def forward(ctx, a, axis=None, correction=1, keepdims=False):
        xp = ctx.xp
        d = a - xp.mean(a, axis=axis, keepdims=True)
        denom = max(_count(a.shape, axis) - correction, 0)
        ctx.save_for_backward(d, a)  # a: for regraph
        ctx.in_shape, ctx.axis, ctx.keepdims, ctx.denom, ctx.correction = a.shape, axis, keepdims, denom, correction
        return xp.sum(d * d, axis=axis, keepdims=keepdims) / denom

    @staticmethod
    def regraph(ctx, saved, derived):
        """The centred input rebuilt by this forward, run on the input Tensor."""
        return rerun_forward(Var, ctx, saved[1], ctx.axis, keepdims=ctx.keepdims, correction=ctx.correction)

    @staticmethod
    def backward(ctx, g):
        d, _ = ctx.saved_tensors
        # Array division, not 2.0 / denom: with denom = 0 it gives nan as torch does, not an error.
        return _expand_back(ctx.xp, g, ctx.in_shape, ctx.axis, ctx.keepdims) * d * 2.0 / ctx.denom


class Amax(Function):
    """z = max_axis a;  the gradient is shared equally among the tied maxima (torch's amax rule)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        xp = ctx.xp
        z = xp.amax(a, axis=axis, keepdims=keepdims)
        mask = a == _expand_back(xp, z, a.shape, axis, keepdims)
        ctx.save_for_backward(mask)
        ctx.in_shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return z

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        (mask,) = ctx.saved_tensors
        # A count of ties is an integer array; cast it, or numpy's float32 / int64 gives float64.
        ties = xp.astype(xp.sum(mask, axis=ctx.axis, keepdims=True), xp.dtype_of(g))
        return _expand_back(xp, g, ctx.in_shape, ctx.axis, ctx.keepdims) * mask / ties
