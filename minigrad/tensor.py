"""``Tensor``: a backend array, plus what autograd needs (``requires_grad``, ``grad``, ``grad_fn``).

Every differentiable method is a one-line call of an op in ``minigrad.ops``; the arithmetic lives
there. Dimensions follow torch: ``dim`` may be negative, a tuple, or None for all of them.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Sequence

import numpy as np

from . import autograd
from .backend import backend_of_array, resolve
from .ops import elementwise as E
from .ops import reduce as R
from .ops import shape as S

MaxResult = namedtuple("MaxResult", ["values", "indices"])
_FLOATS = (np.dtype("float32"), np.dtype("float64"))


def _norm_dim(dim, ndim: int):
    """torch-style dim (None, int, negative, tuple) -> numpy axis (None, int or sorted tuple)."""
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        return tuple(sorted(_norm_dim(d, ndim) for d in dim))
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"dim {dim} is out of range for a tensor with {ndim} dims")
    return dim % max(ndim, 1)


def _canonical_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind == "i" or dt.kind == "u":
        return np.dtype("int64")
    return dt


class Tensor:
    __slots__ = ("_data", "grad", "requires_grad", "grad_fn", "device", "_xp", "_vc", "__weakref__")
    __array_priority__ = 1000  # so that numpy_array * tensor calls our __rmul__

    def __init__(self, data: Any, requires_grad: bool = False, dtype=None, device=None):
        if isinstance(data, Tensor):
            data = data._data
        src_xp, src_dev = backend_of_array(data)  # Python data counts as numpy
        xp, dev = resolve(device) if device is not None else (src_xp, src_dev)
        if dtype is None:
            if hasattr(data, "dtype"):
                dtype = src_xp.dtype_of(data)
            else:  # Python data: floats -> float32, ints -> int64, as torch.tensor does
                dtype = np.asarray(data).dtype
                dtype = np.dtype("float32") if dtype.kind == "f" else dtype
        if src_xp is not xp:  # across backends, data goes through host memory
            data = src_xp.to_numpy(data)
        self._data = xp.array(data, dtype=_canonical_dtype(dtype), device=dev)
        self._vc = [0]
        self._xp, self.device = xp, dev
        self.grad, self.grad_fn = None, None
        self.requires_grad = False
        self.requires_grad_(requires_grad)

    @classmethod
    def _make(cls, data, xp, device, grad_fn=None) -> "Tensor":
        """Wrap a raw array without checks: the fast path every op result takes."""
        t = object.__new__(cls)
        t._data, t._xp, t.device, t.grad, t.grad_fn = data, xp, device, None, grad_fn
        t._vc = [0]
        t.requires_grad = grad_fn is not None
        return t

    # ---- metadata ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape)

    @property
    def ndim(self) -> int:
        return len(self._data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._xp.dtype_of(self._data)

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        extra = f", grad_fn=<{self.grad_fn.name()}>" if self.grad_fn else (
            ", requires_grad=True" if self.requires_grad else "")
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"tensor({np.array2string(self.numpy(), separator=', ')}{dev}{extra})"

    # ---- autograd ------------------------------------------------------------------------------
    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.dtype not in _FLOATS:
            raise RuntimeError(f"only float tensors can require gradients, not {self.dtype}")
        if self.grad_fn is not None and not flag:
            raise RuntimeError("requires_grad can only be turned off on leaf tensors; use detach()")
        self.requires_grad = bool(flag)
        return self

    def backward(self, gradient: "Tensor | None" = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (see ``autograd.backward``)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad and has no grad_fn")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, this one "
                                   f"has shape {self.shape}; pass gradient= of that shape")
            g = self._xp.ones(self.shape, self.dtype, self.device)
        else:
            g = gradient._data if isinstance(gradient, Tensor) else self._xp.array(
                gradient, dtype=self.dtype, device=self.device)
            if tuple(g.shape) != self.shape:
                raise RuntimeError(f"gradient has shape {tuple(g.shape)}, expected {self.shape}")
        autograd.backward(self, g, retain_graph=retain_graph)

    @property
    def data(self) -> "Tensor":
        """torch's contract: the same storage (and version counter), detached, requires_grad=False.
        The raw backend array is ``_data``, internal to minigrad."""
        t = Tensor._make(self._data, self._xp, self.device)
        t._vc = self._vc
        return t

    @data.setter
    def data(self, value: "Tensor") -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data = x needs a Tensor (as in torch), got {type(value).__name__}; "
                            "minigrad's raw backend array is the internal Tensor._data")
        if value.device != self.device:
            raise RuntimeError(f"Tensor.data = x: x is on {value.device!r}, this tensor on {self.device!r}")
        self._data = value._data

    def detach(self) -> "Tensor":
        t = Tensor._make(self._data, self._xp, self.device)
        t._vc = self._vc
        return t

    def zero_(self) -> "Tensor":
        self._data = self._xp.fill_(self._data, 0)
        self._vc[0] += 1
        return self

    # ---- conversion ----------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            return np.asarray(self._xp.to_numpy(self._data)).copy()
        return np.asarray(self._xp.to_numpy(self._data))

    def item(self) -> float | int | bool:
        if self.numel() != 1:
            raise ValueError(f"item() needs a one-element tensor, this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> list:
        return self.numpy().tolist()

    def to(self, device=None, dtype=None) -> "Tensor":
        """A copy on ``device`` and/or of ``dtype``; gradients flow back through it (ToCopy op)."""
        from .ops.convert import ToCopy

        xp, dev = resolve(device) if device is not None else (self._xp, self.device)
        if dev == self.device and (dtype is None or np.dtype(dtype) == self.dtype):
            return self
        return ToCopy.apply(self, xp=xp, device=dev, dtype=dtype)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def float(self) -> "Tensor":
        return self.to(dtype=np.float32)

    def double(self) -> "Tensor":
        return self.to(dtype=np.float64)

    def long(self) -> "Tensor":
        return self.to(dtype=np.int64)

    # ---- arithmetic ----------------------------------------------------------------------------
    def __add__(self, o): return E.Add.apply(self, o)
    def __radd__(self, o): return E.Add.apply(o, self)
    def __sub__(self, o): return E.Sub.apply(self, o)
    def __rsub__(self, o): return E.Sub.apply(o, self)
    def __mul__(self, o): return E.Mul.apply(self, o)
    def __rmul__(self, o): return E.Mul.apply(o, self)
    def __truediv__(self, o): return E.Div.apply(self, o)
    def __rtruediv__(self, o): return E.Div.apply(o, self)
    def __matmul__(self, o): return R.MatMul.apply(self, o)
    def __rmatmul__(self, o): return R.MatMul.apply(o, self)
    def __neg__(self): return E.Neg.apply(self)

    def __pow__(self, p):
        if isinstance(p, Tensor):
            raise TypeError("minigrad supports only a constant (Python number) exponent")
        return E.Pow.apply(self, p)

    def __rpow__(self, base):  # base ** self = exp(self * ln base)
        return (self * float(np.log(base))).exp()

    # Comparisons give bool tensors outside the graph, as in torch.
    def _compare(self, o, op) -> "Tensor":
        return Tensor._make(op(self._data, o._data if isinstance(o, Tensor) else o), self._xp, self.device)

    def __lt__(self, o): return self._compare(o, lambda a, b: a < b)
    def __le__(self, o): return self._compare(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._compare(o, lambda a, b: a > b)
    def __ge__(self, o): return self._compare(o, lambda a, b: a >= b)
    def eq(self, o): return self._compare(o, lambda a, b: a == b)
    def ne(self, o): return self._compare(o, lambda a, b: a != b)
    __hash__ = object.__hash__

    def exp(self): return E.Exp.apply(self)
    def log(self): return E.Log.apply(self)
    def sqrt(self): return E.Sqrt.apply(self)
    def abs(self): return E.Abs.apply(self)
    def tanh(self): return E.Tanh.apply(self)
    def sigmoid(self): return E.Sigmoid.apply(self)
    def relu(self): return E.Relu.apply(self)
    def erf(self): return E.Erf.apply(self)

    # ---- reductions ----------------------------------------------------------------------------
    def sum(self, dim=None, keepdim: bool = False) -> "Tensor":
        return R.Sum.apply(self, axis=_norm_dim(dim, self.ndim), keepdims=keepdim)

    def mean(self, dim=None, keepdim: bool = False) -> "Tensor":
        return R.Mean.apply(self, axis=_norm_dim(dim, self.ndim), keepdims=keepdim)

    def var(self, dim=None, unbiased: bool | None = None, keepdim: bool = False, *,
            correction: int | None = None) -> "Tensor":
        if correction is None:
            correction = 0 if unbiased is False else 1
        return R.Var.apply(self, axis=_norm_dim(dim, self.ndim), correction=correction,
                           keepdims=keepdim)

    def max(self, dim: int | None = None, keepdim: bool = False):
        """Without ``dim``: the max (ties share the gradient). With ``dim``: (values, indices), the
        gradient going to the returned index only, as torch does."""
        if dim is None:
            return R.Amax.apply(self, axis=None, keepdims=False)
        axis = _norm_dim(dim, self.ndim)
        idx = self._xp.argmax(self._data, axis, keepdims=True)
        values = S.Gather.apply(self, idx, axis)
        indices = Tensor._make(idx, self._xp, self.device)
        if not keepdim:
            values, indices = values.squeeze(axis), indices.squeeze(axis)
        return MaxResult(values, indices)

    def amax(self, dim=None, keepdim: bool = False) -> "Tensor":
        return R.Amax.apply(self, axis=_norm_dim(dim, self.ndim), keepdims=keepdim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> "Tensor":
        if dim is None:
            return Tensor._make(self._xp.argmax(self._xp.reshape(self._data, (-1,)), 0), self._xp, self.device)
        return Tensor._make(self._xp.argmax(self._data, _norm_dim(dim, self.ndim), keepdims=keepdim),
                            self._xp, self.device)

    # ---- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return S.Reshape.apply(self, shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        s, e = _norm_dim(start_dim, self.ndim), _norm_dim(end_dim, self.ndim)
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def permute(self, *dims) -> "Tensor":
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return S.Permute.apply(self, tuple(_norm_dim(d, self.ndim) for d in dims))

    def transpose(self, dim0: int, dim1: int) -> "Tensor":
        dims = list(range(self.ndim))
        a, b = _norm_dim(dim0, self.ndim), _norm_dim(dim1, self.ndim)
        dims[a], dims[b] = dims[b], dims[a]
        return S.Permute.apply(self, tuple(dims))

    @property
    def T(self) -> "Tensor":
        return S.Permute.apply(self, tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> "Tensor":
        return self.transpose(-2, -1)

    def expand(self, *shape) -> "Tensor":
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        lead = len(shape) - self.ndim
        full = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(shape))
        return S.Expand.apply(self, full)

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
        if isinstance(key, Tensor):
            key = key._data
        elif isinstance(key, tuple):
            key = tuple(k._data if isinstance(k, Tensor) else k for k in key)
        return S.Index.apply(self, key=key)

    def masked_fill(self, mask: "Tensor", value: float) -> "Tensor":
        """Where ``mask`` is True, ``value``; elsewhere self (gradient flows only there)."""
        m = mask._data if isinstance(mask, Tensor) else mask
        return E.Where.apply(value, self, m)

    def softmax(self, dim: int) -> "Tensor":
        from .nn import functional as F

        return F.softmax(self, dim)

    def log_softmax(self, dim: int) -> "Tensor":
        from .nn import functional as F

        return F.log_softmax(self, dim)
