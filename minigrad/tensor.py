"""``Tensor``: a backend array, plus what autograd needs (``requires_grad``, ``grad``, ``grad_fn``).

Every differentiable method is a one-line call of an op in ``minigrad.ops``; the arithmetic lives
there. Dimensions follow torch: ``dim`` may be negative, a tuple, or None for all of them.
In-place methods (``add_``, ``t[i] = v``, ``+=``, ...) and their rules are in ``inplace.py``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import autograd, dtypes
from .backend import backend_of_array, numpy_backend, resolve
from .inplace import InplaceMixin
from .methods import TensorMethods, _norm_dim, shape_arg  # noqa: F401 (_norm_dim: used by nn)
# Modules, not names: ops/ import autograd, which imports this module while they are half-loaded.
from .ops import elementwise, matmul as matmul_ops


def _raw(x):
    return x._data if isinstance(x, Tensor) else x


def _promote(fn, a, b, true_divide: bool) -> tuple:
    """Cast a numpy-backend op's operands to torch's result dtype (see dtypes.py)."""
    if fn is elementwise.Sub and any(isinstance(x, (bool, np.bool_)) or getattr(_raw(x), "dtype", None) == np.bool_
                                     for x in (a, b)):
        raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not supported. If you are "
                           "trying to invert a mask, use the `~` or `logical_not()` operator instead.")
    target = dtypes.result_type(*(np.asarray(x._data) if isinstance(x, Tensor) else x for x in (a, b)),
                                true_divide=true_divide)
    return tuple(x.to(dtype=target) if isinstance(x, Tensor) and x.dtype != target else
                 x.item() if isinstance(x, np.generic) else x for x in (a, b))


_WEAK = (float, int)  # Python numbers a float tensor absorbs as numpy does (bool is handled apart)


def _binary(fn, a, b, true_divide: bool = False):
    """fn.apply(a, b) with torch's result dtype. The torch backend promotes by torch's rules itself;
    on numpy the common cases (equal dtypes, a float tensor with a Python number) go straight
    through, the rest are cast by ``_promote``. Inlined checks: this runs for every + - * /."""
    if isinstance(a, Tensor):
        if a._xp is numpy_backend:
            da = a._data.dtype
            if isinstance(b, Tensor):
                if b._data.dtype is not da or (true_divide and da.kind != "f") or da.kind == "b":
                    a, b = _promote(fn, a, b, true_divide)
            elif type(b) not in _WEAK or da.kind != "f":
                a, b = _promote(fn, a, b, true_divide)
    elif b._xp is numpy_backend and (type(a) not in _WEAK or b._data.dtype.kind != "f"):
        a, b = _promote(fn, a, b, true_divide)
    return fn.apply(a, b)


class Tensor(TensorMethods, InplaceMixin):
    __slots__ = ("_data", "grad", "requires_grad", "grad_fn", "device", "_xp", "_vc", "_base",
                 "__weakref__")
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
                dtype = dtypes.DEFAULT_FLOAT if dtype.kind == "f" else dtype
        if src_xp is not xp:  # across backends, data goes through host memory
            data = src_xp.to_numpy(data)
        self._data = xp.array(data, dtype=dtypes.canonical(dtype), device=dev)
        self._xp, self.device, self._vc = xp, dev, [0]
        self.grad, self.grad_fn = None, None
        self.requires_grad = False
        self.requires_grad_(requires_grad)

    @classmethod
    def _make(cls, data, xp, device, grad_fn=None) -> "Tensor":
        """Wrap a raw array without checks: the fast path every op result takes. ``_vc`` is the
        version counter, shared with views of the same storage (see inplace.py)."""
        t = object.__new__(cls)
        t._data, t._xp, t.device, t.grad, t.grad_fn, t._vc = data, xp, device, None, grad_fn, [0]
        t.requires_grad = grad_fn is not None
        return t

    def _view(self, out: "Tensor") -> "Tensor":
        """``out`` came from a view op: if it shares self's memory it shares the version counter
        too, so an in-place change through either is seen by every backward that saved the other."""
        if self._xp.shares_memory(out._data, self._data):
            out._vc = self._vc
            base = getattr(self, "_base", None)
            out._base = self if base is None else base
        return out

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

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor's storage has seen (torch's ``_version``)."""
        return self._vc[0]

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return math.prod(self.shape)

    def is_floating_point(self) -> bool:
        return self.dtype in dtypes.FLOATS

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        extra = f", grad_fn=<{self.grad_fn.name()}>" if self.grad_fn else (
            ", requires_grad=True" if self.requires_grad else "")
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"tensor({np.array2string(self.numpy(), separator=', ')}{dev}{extra})"

    # ---- Python scalars: one-element tensors only, as in torch ----------------------------------
    def _scalar(self, what: str):
        if self.numel() != 1:
            raise RuntimeError(f"{what} with more than one value is ambiguous" if what.startswith("Bool")
                               else f"only one element tensors can be converted to Python scalars "
                                    f"({what}), this one has shape {self.shape}")
        return self.numpy().reshape(()).item()

    def __bool__(self) -> bool:
        return bool(self._scalar("Boolean value of Tensor"))

    def __float__(self) -> float:
        return float(self._scalar("float()"))

    def __int__(self) -> int:
        return int(self._scalar("int()"))

    def __index__(self) -> int:
        if self.dtype.kind not in "iub" or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self._scalar("index"))

    def item(self) -> float | int | bool:
        return self._scalar("item()")

    # ---- autograd ------------------------------------------------------------------------------
    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.dtype not in dtypes.FLOATS:
            raise RuntimeError(f"only float tensors can require gradients, not {self.dtype}")
        if self.grad_fn is not None and not flag:
            raise RuntimeError("requires_grad can only be turned off on leaf tensors; use detach()")
        self.requires_grad = bool(flag)
        return self

    def backward(self, gradient: "Tensor | None" = None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (see ``autograd.run_backward``),
        or only into ``inputs``' (leaves or not) when given. With ``create_graph=True`` the
        gradients are graph nodes themselves; ``retain_graph`` defaults to ``create_graph``."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad and has no grad_fn")
        if gradient is None:
            if self.numel() != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output, this one "
                                   f"has shape {self.shape}; pass gradient= of that shape")
            g = self._xp.ones(self.shape, self.dtype, self.device)
            if create_graph:
                g = Tensor._make(g, self._xp, self.device)
        else:
            if hasattr(gradient, "shape") and tuple(gradient.shape) != self.shape:
                raise RuntimeError(f"gradient has shape {tuple(gradient.shape)}, expected {self.shape}")
            (g,) = autograd.seeds([self], [gradient], create_graph)
        retain = create_graph if retain_graph is None else retain_graph
        if inputs is None:
            autograd.backward(self, g, retain_graph=retain, create_graph=create_graph)
            return
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not inputs:
            raise RuntimeError("`inputs` argument to `backward()` cannot be empty.")
        found = autograd.run_backward([self], [g], retain, create_graph, inputs)
        accumulate = autograd.accumulate_graph if create_graph else autograd._accumulate_leaf
        for t, grad in zip(inputs, found):
            if grad is not None:
                accumulate(t, grad)

    @property
    def data(self) -> "Tensor":
        """torch's contract: the same storage, detached, requires_grad=False. Unlike torch it also
        shares the version counter, so a backward that saved this storage refuses to run after an
        in-place change through ``.data`` instead of silently using the new values. The raw backend
        array is ``_data``, internal to minigrad."""
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
        """Same storage and version counter, no history (torch's detach)."""
        return self.data

    def detach_(self) -> "Tensor":
        if getattr(self, "_base", None) is not None and self.grad_fn is not None:
            raise RuntimeError("detach_() on a view that has history is not supported; use detach()")
        self.grad_fn, self.requires_grad = None, False
        return self

    # ---- conversion ----------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            return np.asarray(self._xp.to_numpy(self._data)).copy()
        return np.asarray(self._xp.to_numpy(self._data))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self.requires_grad and getattr(autograd._state, "graph_backward", False):
            raise RuntimeError(
                "create_graph=True: a backward formula turned a Tensor that carries the graph into a "
                "numpy array (np.* called on it?), which would cut its second derivative; compute "
                "through ctx.xp instead")
        return self.numpy() if dtype is None else self.numpy().astype(dtype)

    def tolist(self) -> list:
        return self.numpy().tolist()

    def to(self, *args, **kwargs) -> "Tensor":
        """torch's forms: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(other_tensor)``,
        and ``device=``/``dtype=`` keywords. A copy when anything changes, else self; gradients flow
        back through it (ToCopy op)."""
        from .ops.convert import ToCopy

        device, dtype = to_args(args, kwargs, "to")
        xp, dev = resolve(device) if device is not None else (self._xp, self.device)
        if dev == self.device and (dtype is None or np.dtype(dtype) == self.dtype):
            return self
        return ToCopy.apply(self, xp=xp, device=dev, dtype=None if dtype is None else dtypes.canonical(dtype))

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def float(self) -> "Tensor":
        return self.to(dtype=dtypes.float32)

    def double(self) -> "Tensor":
        return self.to(dtype=dtypes.float64)

    def half(self) -> "Tensor":
        return self.to(dtype=dtypes.float16)

    def long(self) -> "Tensor":
        return self.to(dtype=dtypes.int64)

    def bool(self) -> "Tensor":
        return self.to(dtype=dtypes.bool_)

    def type(self, dtype) -> "Tensor":
        return self.to(dtype=dtype)

    def type_as(self, other: "Tensor") -> "Tensor":
        return self.to(dtype=other.dtype)

    def new_tensor(self, data) -> "Tensor":
        return Tensor(data, dtype=self.dtype if not isinstance(data, Tensor) else None, device=self.device)

    def new_zeros(self, *size) -> "Tensor":
        return Tensor._make(self._xp.zeros(shape_arg(size), self.dtype, self.device), self._xp, self.device)

    def new_ones(self, *size) -> "Tensor":
        return Tensor._make(self._xp.ones(shape_arg(size), self.dtype, self.device), self._xp, self.device)

    def new_full(self, size, value) -> "Tensor":
        return Tensor._make(self._xp.full(tuple(size), value, self.dtype, self.device), self._xp, self.device)

    def clone(self) -> "Tensor":
        """A copy with its own storage; the gradient flows back unchanged."""
        from .ops.convert import ToCopy

        return ToCopy.apply(self, xp=self._xp, device=self.device)

    def __deepcopy__(self, memo: dict) -> "Tensor":
        """torch's rule: only leaves deep-copy (a node's history cannot be copied). The copy keeps
        the class (a Parameter stays one), requires_grad and a copy of .grad; ``memo`` keeps shared
        tensors shared, so ``copy.deepcopy(module)`` (the Annotated Transformer's ``clones``) works."""
        if self.grad_fn is not None:
            raise RuntimeError("Only Tensors created explicitly by the user (graph leaves) support the "
                               "deepcopy protocol at the moment")
        if id(self) in memo:
            return memo[id(self)]
        new = type(self)._make(self._xp.copy(self._data), self._xp, self.device)
        new.requires_grad = self.requires_grad
        memo[id(self)] = new
        new.grad = None if self.grad is None else self.grad.__deepcopy__(memo)
        return new

    def __reduce_ex__(self, protocol):
        """Pickle a leaf as (class, host array, device, requires_grad): the backend module in
        ``_xp`` cannot be pickled, and the device is re-resolved when loading."""
        if self.grad_fn is not None:
            raise RuntimeError("pickling a tensor that has history is not supported; pickle t.detach()")
        return _rebuild, (type(self), self.numpy(), self.device, self.requires_grad)

    def contiguous(self) -> "Tensor":
        return self  # backends handle layouts themselves; values are what minigrad promises

    # ---- arithmetic ----------------------------------------------------------------------------
    def __add__(self, o): return _binary(elementwise.Add, self, o)
    def __radd__(self, o): return _binary(elementwise.Add, o, self)
    def __sub__(self, o): return _binary(elementwise.Sub, self, o)
    def __rsub__(self, o): return _binary(elementwise.Sub, o, self)
    def __mul__(self, o): return _binary(elementwise.Mul, self, o)
    def __rmul__(self, o): return _binary(elementwise.Mul, o, self)
    def __truediv__(self, o): return _binary(elementwise.Div, self, o, true_divide=True)
    def __rtruediv__(self, o): return _binary(elementwise.Div, o, self, true_divide=True)
    def __matmul__(self, o): return matmul_ops.MatMul.apply(self, o)
    def __rmatmul__(self, o): return matmul_ops.MatMul.apply(o, self)
    def __neg__(self): return elementwise.Neg.apply(self)

    def add(self, other, alpha=1): return self + (other if alpha == 1 else other * alpha)
    def sub(self, other, alpha=1): return self - (other if alpha == 1 else other * alpha)
    def mul(self, other): return self * other
    def div(self, other): return self / other
    def matmul(self, other): return self @ other

    # Not differentiable (torch's floor division and remainder have no useful gradient; the bitwise
    # ops act on bool masks and integers): computed on the raw arrays, outside the graph.
    def _raw_op(self, o, op) -> "Tensor":
        return Tensor._make(op(self._data, _raw(o)), self._xp, self.device)

    def __floordiv__(self, o): return self._raw_op(o, lambda a, b: a // b)
    def __mod__(self, o): return self._raw_op(o, lambda a, b: a % b)
    def __and__(self, o): return self._raw_op(o, lambda a, b: a & b)
    def __or__(self, o): return self._raw_op(o, lambda a, b: a | b)
    def __xor__(self, o): return self._raw_op(o, lambda a, b: a ^ b)
    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__
    def __abs__(self): return self.abs()

    def __pow__(self, p):
        if isinstance(p, Tensor):
            raise TypeError("minigrad supports a constant (Python number) exponent, or a constant base")
        return _binary(elementwise.Pow, self, p)

    pow = __pow__

    def __rpow__(self, base):
        t = self.float() if isinstance(base, float) and self.dtype.kind != "f" else self
        return elementwise.ScalarPow.apply(t, base)

    def __invert__(self) -> "Tensor":
        if self.dtype.kind not in "ib":
            raise TypeError("~ (operator.invert) is only implemented on integer and Boolean-type tensors")
        return Tensor._make(~self._data, self._xp, self.device)

    # Comparisons give bool tensors outside the graph, as in torch. numpy scalars count as Python
    # numbers (torch's "weak" scalars): t == np.float64(0.1) compares in t's dtype.
    def _compare(self, o, op) -> "Tensor":
        o = o._data if isinstance(o, Tensor) else o.item() if isinstance(o, np.generic) else o
        return Tensor._make(op(self._data, o), self._xp, self.device)

    def __lt__(self, o): return self._compare(o, lambda a, b: a < b)
    def __le__(self, o): return self._compare(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._compare(o, lambda a, b: a > b)
    def __ge__(self, o): return self._compare(o, lambda a, b: a >= b)
    def __eq__(self, o): return self._compare(o, lambda a, b: a == b)  # type: ignore[override]
    def __ne__(self, o): return self._compare(o, lambda a, b: a != b)  # type: ignore[override]
    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__
    __hash__ = object.__hash__  # identity, so tensors work as dict keys and in sets, as torch's

    def exp(self): return elementwise.Exp.apply(self._floating())
    def log(self): return elementwise.Log.apply(self._floating())
    def sqrt(self): return elementwise.Sqrt.apply(self._floating())
    def abs(self): return elementwise.Abs.apply(self)
    def tanh(self): return elementwise.Tanh.apply(self._floating())
    def sigmoid(self): return elementwise.Sigmoid.apply(self._floating())
    def relu(self): return elementwise.Relu.apply(self)
    def erf(self): return elementwise.Erf.apply(self._floating())
    def sin(self): return elementwise.Sin.apply(self._floating())
    def cos(self): return elementwise.Cos.apply(self._floating())

    def _floating(self) -> "Tensor":
        """Integer input to a float function gives the default float dtype, as in torch."""
        return self.float() if self.dtype.kind != "f" else self

    def clamp(self, min=None, max=None) -> "Tensor":
        return elementwise.Clamp.apply(self, lo=min, hi=max)

    clip = clamp

    def maximum(self, other: "Tensor") -> "Tensor":
        return _binary(elementwise.Maximum, self, other)

    def minimum(self, other: "Tensor") -> "Tensor":
        return _binary(elementwise.Minimum, self, other)

    def masked_fill(self, mask: "Tensor", value: float) -> "Tensor":
        """Where ``mask`` is True, ``value`` (cast to self's dtype, as torch); elsewhere self (the
        gradient flows only there)."""
        if not isinstance(value, Tensor):  # a Python number of self's kind: it cannot promote self
            value = self.dtype.type(value).item()
        return elementwise.Where.apply(value, self, _raw(mask))



def _rebuild(cls: type, array: np.ndarray, device: str, requires_grad: bool) -> Tensor:
    """The inverse of ``Tensor.__reduce_ex__``."""
    t = cls.__new__(cls)
    Tensor.__init__(t, array, requires_grad=requires_grad, device=device)
    return t


def to_args(args: tuple, kwargs: dict, who: str) -> tuple:
    """(device, dtype) from torch's ``to`` forms: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``,
    ``to(tensor)`` (its device and dtype) and the ``device=``/``dtype=``/``non_blocking=`` keywords."""
    kwargs = dict(kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    if kwargs:
        raise TypeError(f"{who}() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            device, dtype = a.device, a.dtype
        elif isinstance(a, str):
            device = a
        elif a is not None:
            dtype = a
    return device, dtype
