"""Functions that make tensors, and the few ops that take several tensors (cat, stack, where)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .backend import resolve
from .ops import elementwise as E
from .ops import shape as S
from .random import default_generator
from .tensor import Tensor, _norm_dim

float32, float64, int64, bool_ = (np.dtype(n) for n in ("float32", "float64", "int64", "bool"))


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (list, number, numpy array or Tensor)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _shape(shape) -> tuple:
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _filled(make, shape, dtype, device, requires_grad) -> Tensor:
    xp, dev = resolve(device)
    t = Tensor._make(make(xp, shape, np.dtype(dtype or float32), dev), xp, dev)
    return t.requires_grad_(requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, dt, d: xp.zeros(s, dt, d), _shape(shape), dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, dt, d: xp.ones(s, dt, d), _shape(shape), dtype, device, requires_grad)


def full(shape, value: float, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, dt, d: xp.full(s, value, dt, d), tuple(shape), dtype, device,
                   requires_grad)


def zeros_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return zeros(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, requires_grad: bool = False) -> Tensor:
    return ones(t.shape, dtype=t.dtype, device=t.device, requires_grad=requires_grad)


def arange(n: int, dtype=None, device=None) -> Tensor:
    xp, dev = resolve(device)
    return Tensor._make(xp.arange(n, np.dtype(dtype or int64), dev), xp, dev)


def randn(*shape, dtype=None, device=None, generator=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the device's seeded generator (see ``manual_seed``)."""
    gen = generator or default_generator(device or "cpu")
    return _filled(lambda xp, s, dt, d: xp.randn(gen, s, dt), _shape(shape), dtype, device,
                   requires_grad)


def rand(*shape, dtype=None, device=None, generator=None, requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples from the device's seeded generator."""
    gen = generator or default_generator(device or "cpu")
    return _filled(lambda xp, s, dt, d: xp.rand(gen, s, dt), _shape(shape), dtype, device,
                   requires_grad)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return S.Cat.apply(*tensors, axis=_norm_dim(dim, tensors[0].ndim))


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    d = dim if dim >= 0 else dim + tensors[0].ndim + 1
    return cat([t.unsqueeze(d) for t in tensors], d)


def where(condition: Tensor, input, other) -> Tensor:
    """``input`` where ``condition`` holds, else ``other``; the gradient goes to the chosen side."""
    cond = condition._data if isinstance(condition, Tensor) else condition
    return E.Where.apply(input, other, cond)
