"""``Kernels``: the namespace of optional fast kernels each backend module exposes as ``kernels``.

An op asks its backend for a kernel by name (``k = xp.kernels.gelu``) and, when it is not None,
lets the kernel compute what its own formula says; otherwise the formula in the op runs. A name a
backend does not provide reads as None, so an op never has to know which backend has what: torch
provides its native kernels (``gelu``, ``softmax_backward``, ...), numpy a thread pool (``blocks``)
that runs an op's own formula over blocks of its arrays, and, with numba, compiled loops (``jit.py``).
A kernel may decline a call by returning ``NotImplemented`` (numpy's compiled loops do for arrays
too small to pay for loading numba); ``ops.blocks.run_kernel`` turns both cases into "use the formula".
"""
from __future__ import annotations

import types


class Kernels(types.SimpleNamespace):
    """A SimpleNamespace whose missing attributes are None instead of an AttributeError."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # keep copy/pickle's probes for dunders working as usual
            raise AttributeError(name)
        return None
