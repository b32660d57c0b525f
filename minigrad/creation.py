"""Functions that make tensors, and the few ops that take several tensors (cat, stack, where)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .backend import numpy_backend, resolve
from .dtypes import DEFAULT_FLOAT, bool_, canonical, float16, float32, float64, int64  # noqa: F401
from .ops.elementwise import Where
from .ops.shape import Cat
from .random import default_generator
from .tensor import Tensor, _norm_dim, _promote, shape_arg


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (list, number, numpy array or Tensor)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A cpu tensor sharing ``array``'s memory, as torch.from_numpy. Integer arrays other than
    int64 are copied to int64, minigrad's one integer dtype."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    if canonical(array.dtype) != array.dtype:
        array = array.astype(canonical(array.dtype))
    return Tensor._make(array, numpy_backend, "cpu")


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def _filled(make, shape, dtype, device, requires_grad) -> Tensor:
    xp, dev = resolve(device)
    t = Tensor._make(make(xp, shape, canonical(dtype or DEFAULT_FLOAT), dev), xp, dev)
    return t.requires_grad_(requires_grad)


def zeros(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, dt, d: xp.zeros(s, dt, d), shape_arg(shape), dtype, device, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, dt, d: xp.ones(s, dt, d), shape_arg(shape), dtype, device, requires_grad)


empty = zeros  # minigrad has no uninitialised memory: empty() is zeros()


def full(shape, value: float, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if dtype is None and isinstance(value, (bool, int)):  # torch.full infers the dtype from value
        dtype = bool_ if isinstance(value, bool) else int64
    return _filled(lambda xp, s, dt, d: xp.full(s, value, dt, d), tuple(shape), dtype, device,
                   requires_grad)


def _like(make, t: Tensor, dtype, device, requires_grad: bool, *args) -> Tensor:
    return make(t.shape, *args, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(ones, t, dtype, device, requires_grad)


def full_like(t: Tensor, value: float, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(full, t, dtype, device, requires_grad, value)


def empty_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(zeros, t, dtype, device, requires_grad)


def randn_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(randn, t, dtype, device, requires_grad)


def rand_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(rand, t, dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None) -> Tensor:
    """torch.arange: int64 when every bound is an integer, else the default float dtype."""
    if dtype is None:
        dtype = int64 if all(isinstance(v, (int, np.integer)) for v in (start, end, step) if v is not None) \
            else DEFAULT_FLOAT
    xp, dev = resolve(device)
    return Tensor._make(xp.arange(start, end, step, canonical(dtype), dev), xp, dev)


def linspace(start: float, end: float, steps: int, dtype=None, device=None) -> Tensor:
    xp, dev = resolve(device)
    return Tensor._make(xp.linspace(start, end, steps, canonical(dtype or DEFAULT_FLOAT), dev), xp, dev)


def eye(n: int, m: int | None = None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _filled(lambda xp, s, dt, d: xp.eye(n, m or n, dt, d), (), dtype, device, requires_grad)


def randn(*shape, dtype=None, device=None, generator=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the device's seeded generator (see ``manual_seed``)."""
    gen = generator or default_generator(device or "cpu")
    return _filled(lambda xp, s, dt, d: xp.randn(gen, s, dt), shape_arg(shape), dtype, device,
                   requires_grad)


def rand(*shape, dtype=None, device=None, generator=None, requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples from the device's seeded generator."""
    gen = generator or default_generator(device or "cpu")
    return _filled(lambda xp, s, dt, d: xp.rand(gen, s, dt), shape_arg(shape), dtype, device,
                   requires_grad)


def randint(low: int, high: int | None = None, size: Sequence[int] = (), dtype=None, device=None,
            generator=None) -> Tensor:
    """Uniform integers in [low, high) (``randint(high, size)`` means low = 0), as torch.randint."""
    if high is None or isinstance(high, (tuple, list)):
        low, high, size = 0, low, high if isinstance(high, (tuple, list)) else size
    xp, dev = resolve(device)
    gen = generator or default_generator(dev)
    return Tensor._make(xp.randint(gen, low, high, tuple(size)), xp, dev).to(dtype=dtype)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return Cat.apply(*tensors, axis=_norm_dim(dim, tensors[0].ndim))


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    d = dim if dim >= 0 else dim + tensors[0].ndim + 1
    return cat([t.unsqueeze(d) for t in tensors], d)


def where(condition: Tensor, input=None, other=None):
    """``input`` where ``condition`` holds, else ``other``; the gradient goes to the chosen side.
    With the condition alone: the indices where it holds, one tensor per dim (torch.nonzero)."""
    if input is None and other is None:
        return tuple(Tensor._make(i, condition._xp, condition.device) for i in condition._xp.nonzero(condition._data))
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        input = Tensor(input, device=condition.device)
    t = input if isinstance(input, Tensor) else other
    if t._xp is numpy_backend:  # torch's result dtype (where(c, int_t, 0.5) is float32, not float64)
        input, other = _promote(Where, input, other, False)
    return Where.apply(input, other, condition._data if isinstance(condition, Tensor) else condition)
