"""Tensor's reductions, shape methods and fused ops (mixed into ``Tensor``; see tensor.py).

Each differentiable method is one op call; the arithmetic lives in ``minigrad.ops``.
"""
from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING, Sequence

# Modules, not names: ops/ import autograd, which imports tensor.py (and so this module) while
# they are half-loaded.
from .ops import elementwise, nn as nn_ops, reduce as reductions, shape as shape_ops

if TYPE_CHECKING:
    from .tensor import Tensor

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])  # torch.return_types.max/min/topk


def _norm_dim(dim, ndim: int):
    """torch-style dim (None, int, negative, tuple) -> numpy axis (None, int or sorted tuple)."""
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        return tuple(sorted(_norm_dim(d, ndim) for d in dim))
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"dim {dim} is out of range for a tensor with {ndim} dims")
    return dim % max(ndim, 1)


def shape_arg(shape: tuple) -> tuple:
    """torch takes a shape as varargs or as one tuple/list: ``view(2, 3)`` and ``view((2, 3))``."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def raw_key(key):
    """An index key with Tensors replaced by their raw arrays."""
    if isinstance(key, tuple):
        return tuple(raw_key(k) for k in key)
    return key._data if isinstance(key, TensorMethods) else key


def _keep(keepdim: bool, keepdims: bool | None) -> bool:
    return keepdim if keepdims is None else keepdims  # torch accepts numpy's spelling too


class TensorMethods:
    """Reductions, shape methods and fused ops of ``Tensor``."""

    __slots__ = ()

    # ---- reductions ----------------------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False, *, dtype=None, keepdims: bool | None = None) -> "Tensor":
        """Σ over ``dim``; with ``dtype`` the input is cast first (torch accumulates in that dtype)."""
        x = self if dtype is None else self.to(dtype=dtype)
        return reductions.Sum.apply(x, axis=_norm_dim(dim, self.ndim), keepdims=_keep(keepdim, keepdims))

    def mean(self, dim=None, keepdim: bool = False, *, dtype=None, keepdims: bool | None = None) -> "Tensor":
        x = self if dtype is None else self.to(dtype=dtype)
        return reductions.Mean.apply(x, axis=_norm_dim(dim, self.ndim), keepdims=_keep(keepdim, keepdims))

    def norm(self, p: float = 2, dim=None, keepdim: bool = False) -> "Tensor":
        """(Σ |x|^p)^(1/p) over ``dim`` (all elements when None); p = 2 is the Euclidean norm."""
        if p == 2:
            return (self * self).sum(dim, keepdim).sqrt()
        if p == 1:
            return self.abs().sum(dim, keepdim)
        return (self.abs() ** p).sum(dim, keepdim) ** (1.0 / p)

    def all(self, dim=None, keepdim: bool = False) -> "Tensor":
        return self._make(self._xp.reduce_all(self._data, _norm_dim(dim, self.ndim), keepdim), self._xp, self.device)

    def any(self, dim=None, keepdim: bool = False) -> "Tensor":
        return self._make(self._xp.reduce_any(self._data, _norm_dim(dim, self.ndim), keepdim), self._xp, self.device)

    def var(self, dim=None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: int | None = None) -> "Tensor":
        if correction is None:
            correction = 0 if unbiased is False else 1
        return reductions.Var.apply(self, axis=_norm_dim(dim, self.ndim), correction=correction, keepdims=keepdim)

    def std(self, dim=None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: int | None = None) -> "Tensor":
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def max(self, dim=None, keepdim: bool = False, *, keepdims: bool | None = None):
        """torch's three forms: ``max()`` the largest value (ties share the gradient); ``max(dim)``
        (values, indices), the gradient going to the returned index only; ``max(other)`` elementwise."""
        if isinstance(dim, TensorMethods):
            return self.maximum(dim)
        return self._extreme(dim, _keep(keepdim, keepdims), largest=True)

    def min(self, dim=None, keepdim: bool = False, *, keepdims: bool | None = None):
        """As ``max``, for the smallest."""
        if isinstance(dim, TensorMethods):
            return self.minimum(dim)
        return self._extreme(dim, _keep(keepdim, keepdims), largest=False)

    def _extreme(self, dim, keepdim: bool, largest: bool):
        if dim is None:
            return self.amax() if largest else self.amin()
        axis = _norm_dim(dim, self.ndim)
        idx = (self._xp.argmax if largest else self._xp.argmin)(self._data, axis, keepdims=True)
        values = shape_ops.Gather.apply(self, idx, axis)
        indices = self._make(idx, self._xp, self.device)
        if not keepdim:
            values, indices = values.squeeze(axis), indices.squeeze(axis)
        return ValuesIndices(values, indices)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
        """(values, indices) of the k largest (smallest) along ``dim``, in order; the gradient goes
        to the picked elements."""
        axis = _norm_dim(dim, self.ndim)
        idx = self._xp.topk_indices(self._data, k, axis, largest)
        return ValuesIndices(shape_ops.Gather.apply(self, idx, axis), self._make(idx, self._xp, self.device))

    def amax(self, dim=None, keepdim: bool = False) -> "Tensor":
        return reductions.Amax.apply(self, axis=_norm_dim(dim, self.ndim), keepdims=keepdim)

    def amin(self, dim=None, keepdim: bool = False) -> "Tensor":
        return -(-self).amax(dim, keepdim)  # min a = -max(-a), ties sharing the gradient likewise

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> "Tensor":
        return self._arg(self._xp.argmax, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> "Tensor":
        return self._arg(self._xp.argmin, dim, keepdim)

    def _arg(self, fn, dim, keepdim: bool) -> "Tensor":
        if dim is None:
            return self._make(fn(self._xp.reshape(self._data, (-1,)), 0), self._xp, self.device)
        return self._make(fn(self._data, _norm_dim(dim, self.ndim), keepdims=keepdim), self._xp, self.device)

    # ---- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        return self._view(shape_ops.Reshape.apply(self, shape_arg(shape)))

    view = reshape

    def view_as(self, other: "Tensor") -> "Tensor":
        return self.reshape(other.shape)

    reshape_as = view_as

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _norm_dim(start_dim, self.ndim), _norm_dim(end_dim, self.ndim)
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def permute(self, *dims) -> "Tensor":
        return self._view(shape_ops.Permute.apply(self, tuple(_norm_dim(d, self.ndim) for d in shape_arg(dims))))

    def transpose(self, dim0: int, dim1: int) -> "Tensor":
        dims = list(range(self.ndim))
        a, b = _norm_dim(dim0, self.ndim), _norm_dim(dim1, self.ndim)
        dims[a], dims[b] = dims[b], dims[a]
        return self.permute(dims)

    @property
    def T(self) -> "Tensor":
        return self.permute(tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> "Tensor":
        return self.transpose(-2, -1)

    def expand(self, *shape) -> "Tensor":
        shape = shape_arg(shape)
        lead = len(shape) - self.ndim
        full = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return self._view(shape_ops.Expand.apply(self, full))

    def squeeze(self, dim: int | None = None) -> "Tensor":
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        d = _norm_dim(dim, self.ndim)
        if self.shape[d] != 1:
            return self
        return self.reshape(self.shape[:d] + self.shape[d + 1:])

    def unsqueeze(self, dim: int) -> "Tensor":
        d = dim if dim >= 0 else dim + self.ndim + 1
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def scatter(self, dim: int, index: "Tensor", src) -> "Tensor":
        """A copy with ``src`` (a Tensor or a number) written at ``index`` along ``dim``, as torch.scatter."""
        return shape_ops.Scatter.apply(self, src, index._data, _norm_dim(dim, self.ndim))

    def chunk(self, chunks: int, dim: int = 0) -> tuple:
        """``chunks`` pieces of equal size along ``dim`` (the last one smaller), as torch.chunk."""
        n = self.shape[_norm_dim(dim, self.ndim)]
        return self.split(-(-n // chunks), dim)

    def tril(self, diagonal: int = 0) -> "Tensor":
        """Zeros above the ``diagonal``-th diagonal of the last two dims; the gradient is masked alike."""
        n, m = self.shape[-2:]
        return elementwise.Where.apply(self, 0, self._xp.tri(n, m, diagonal, self.device))

    def triu(self, diagonal: int = 0) -> "Tensor":
        """Zeros below the ``diagonal``-th diagonal of the last two dims."""
        n, m = self.shape[-2:]
        return elementwise.Where.apply(0, self, self._xp.tri(n, m, diagonal - 1, self.device))

    def split(self, split_size: int | Sequence[int], dim: int = 0) -> tuple:
        """Chunks of ``split_size`` (or of the listed sizes) along ``dim``: views by slicing."""
        d, n = _norm_dim(dim, self.ndim), self.shape[_norm_dim(dim, self.ndim)]
        sizes = ([split_size] * (n // split_size) + ([n % split_size] if n % split_size else [])
                 if isinstance(split_size, int) else list(split_size))
        if sum(sizes) != n:
            raise ValueError(f"split sizes {sizes} do not add up to dim {dim}'s size {n}")
        out, start = [], 0
        for size in sizes:
            out.append(self[(slice(None),) * d + (slice(start, start + size),)])
            start += size
        return tuple(out)

    def __getitem__(self, key) -> "Tensor":
        return self._view(shape_ops.Index.apply(self, key=raw_key(key)))

    # ---- fused ops -----------------------------------------------------------------------------
    def softmax(self, dim: int) -> "Tensor":
        """e^x / Σ e^x along ``dim`` (one fused op; see ops/nn.py)."""
        return nn_ops.Softmax.apply(self, _norm_dim(dim, self.ndim))

    def log_softmax(self, dim: int) -> "Tensor":
        """x - log Σ e^x along ``dim`` (one fused op; see ops/nn.py)."""
        return nn_ops.LogSoftmax.apply(self, _norm_dim(dim, self.ndim))
