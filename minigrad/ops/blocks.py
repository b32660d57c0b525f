"""``run_formula``: run an op's own formula, on the backend's thread pool when it has one;
``run_kernel``: a backend's kernel for it, when there is one that takes the call.

An op's formula is a function of raw arrays (written inside the op's method, so it stays where its
docstring and the course's blanks are). On numpy ``xp.kernels.blocks`` (a persistent thread pool;
numpy releases the GIL) runs it on blocks of the arrays, cut along their dims 0..``axis``, each
block into its part of one preallocated output; on torch, or a backend without a pool, the formula
runs once on the whole arrays.
"""
from __future__ import annotations


def run_formula(xp, fn, *arrays, axis: int):
    """fn(*arrays), blocked over dims 0..``axis`` of ``arrays`` on numpy's pool.

    ``axis`` must stay before every dim the formula reduces over: ``ndim - 1`` for an elementwise
    formula, ``ndim - 2`` for a softmax over the last dim. Out of [0, ndim) (a reduction over dim 0,
    a 0-d array) there is nothing to split: one call.
    """
    blocks = xp.kernels.blocks
    if blocks is None or not 0 <= axis < getattr(arrays[0], "ndim", 0):
        return fn(*arrays)
    return blocks(fn, *arrays, axis=axis)


def run_kernel(kernel, *args):
    """kernel(*args), or NotImplemented when the backend has no such kernel (``kernel`` is None) or
    the kernel declines these arguments: the op runs its formula then."""
    return NotImplemented if kernel is None else kernel(*args)
