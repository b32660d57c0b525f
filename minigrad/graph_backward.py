"""Backward on Tensors, for ``create_graph=True``: the same formulas, recorded as a graph.

Every op's ``backward(ctx, g)`` computes through ``ctx.xp`` and Python operators. On the first-order
path ``ctx`` is the node itself: ``ctx.xp`` is the backend (numpy or torch) and ``g`` and the saved
arrays are raw arrays, so nothing is recorded and nothing costs more than before. With
``create_graph=True`` the engine calls the *same* function with a ``RecordingContext``: its ``xp`` is
a ``GraphNamespace`` (the same functions, written with minigrad ops on Tensors), ``g`` is a Tensor
and ``saved_tensors`` are Tensors. Every operation of the formula is then an op of its own, so the
gradient it returns is a graph node that can be differentiated again (torch does the same: its
backward formulas are written in ATen ops, recorded when grad mode is on).

Saved arrays become Tensors that carry the graph, as torch's ``SavedVariable`` unpacks:
- an input's array -> that input Tensor (a leaf) or a Tensor whose ``grad_fn`` is the input's node;
- the output's array -> a Tensor whose ``grad_fn`` is this node;
- an integer or bool array (ids, masks) -> a constant;
- any other float array is an intermediate of the forward (LayerNorm's x̂, ...). A constant would
  silently give wrong second derivatives, so the op's ``regraph`` hook must rebuild it from the
  inputs on Tensors; an op without one refuses ``create_graph`` with a clear error.
Which saved array is which comes from ids recorded at forward time anyway (``ctx.versions``: one
per Tensor input, in order, then the output), so the first-order path pays nothing for it.
"""
from __future__ import annotations

import math
from types import ModuleType

from . import autograd
from .tensor import Tensor

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


class _NoKernels:
    """``xp.kernels`` of the graph namespace: no native kernel, every attribute is None, so a backward
    that tries ``k = xp.kernels.NAME; if k is not None: return k(...)`` falls through to its formula
    (a native kernel computes on raw arrays and records nothing)."""

    def __getattr__(self, name: str):
        return None


def _raw(x):
    return x._data if isinstance(x, Tensor) else x


class GraphNamespace:
    """The backend functions that backward formulas use, on Tensors through minigrad ops (so they
    record). Arrays it creates (zeros, arange) are constants on the node's backend and device."""

    kernels = _NoKernels()

    def __init__(self, raw_xp: ModuleType, device: str):
        self.raw, self.device = raw_xp, device

    def __getattr__(self, name: str):
        raise RuntimeError(f"create_graph=True: a backward formula calls xp.{name}, which has no "
                           "recorded (Tensor) version in minigrad/graph_backward.py, so this op cannot "
                           "be differentiated twice yet")

    def _const(self, array) -> Tensor:
        return Tensor._make(array, self.raw, self.device)

    # ---- elementwise: each a Tensor method (one op) ----
    def exp(self, x): return x.exp()
    def log(self, x): return x.log()
    def sqrt(self, x): return x.sqrt()
    def tanh(self, x): return x.tanh()
    def sigmoid(self, x): return x.sigmoid()
    def sin(self, x): return x.sin()
    def cos(self, x): return x.cos()
    def abs(self, x): return x.abs()
    def erf(self, x): return x.erf()
    def clip(self, x, lo, hi): return x.clamp(lo, hi)
    def matmul(self, a, b): return a @ b

    def sign(self, x):
        """A step function: its derivative is 0, so a constant is exact."""
        return self._const(self.raw.sign(x._data))

    def normal_cdf(self, x):
        """Φ(x) = (1 + erf(x/√2)) / 2, from Erf so that it is differentiable."""
        return 0.5 * (1.0 + (x * _INV_SQRT_2).erf())

    def maximum(self, a, b):
        return a.maximum(b) if isinstance(a, Tensor) else b.maximum(a)  # max is symmetric, ties too

    def minimum(self, a, b):
        return a.minimum(b) if isinstance(a, Tensor) else b.minimum(a)

    def where(self, cond, a, b):
        from .ops.elementwise import Where

        return Where.apply(a, b, _raw(cond))

    # ---- reductions and shapes ----
    def sum(self, x, axis=None, keepdims=False):
        from .ops.reduce import Sum

        return Sum.apply(x, axis=axis, keepdims=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        from .ops.reduce import Mean

        return Mean.apply(x, axis=axis, keepdims=keepdims)

    def amax(self, x, axis=None, keepdims=False):
        from .ops.reduce import Amax

        return Amax.apply(x, axis=axis, keepdims=keepdims)

    def reshape(self, x, shape): return x.reshape(shape)
    def permute(self, x, axes): return x.permute(axes)
    def broadcast_to(self, x, shape): return x if tuple(x.shape) == tuple(shape) else x.expand(shape)

    # ---- dtypes and creation (constants) ----
    def dtype_of(self, x): return x.dtype if isinstance(x, Tensor) else self.raw.dtype_of(x)
    def astype(self, x, dtype): return x if x.dtype == dtype else x.to(dtype=dtype)
    def zeros(self, shape, dtype, device=None): return self._const(self.raw.zeros(shape, dtype, self.device))

    def arange(self, start, end=None, step=1, dtype=None, device=None):
        kw = {} if dtype is None else {"dtype": dtype}
        return self._const(self.raw.arange(start, end, step, device=self.device, **kw))

    def copy(self, x):
        """Identity: raw formulas copy before writing in place; here every write is out of place."""
        return x

    def array(self, x, dtype=None, device=None):
        """ToCopy's backward moves g back: on Tensors that is ``to`` (recorded)."""
        return x.to(device=device or self.device, dtype=dtype)

    def to_numpy(self, x):
        return x  # a Tensor moves itself across backends (``array`` above)

    # ---- indexing: each op's backward is the other one of its pair, so both differentiate again ----
    def getitem(self, x, key): return x[key]

    def setitem_(self, x, key, value):
        from .ops.shape import IndexPut
        from .methods import raw_key

        return IndexPut.apply(x, value, key=raw_key(key))

    def index_add(self, target, key, values):
        from .ops.shape import IndexAdd
        from .methods import raw_key

        return target + IndexAdd.apply(values, tuple(target.shape), raw_key(key))

    def embedding_backward(self, grad, ids, num_embeddings):
        from .ops.shape import IndexAdd

        dim = grad.shape[-1]
        return IndexAdd.apply(grad.reshape(-1, dim), (num_embeddings, dim), self.raw.reshape(_raw(ids), (-1,)))

    def take_along_axis(self, x, idx, axis):
        from .ops.shape import Gather

        return Gather.apply(x, _raw(idx), axis)

    def put_along_axis(self, shape, idx, values, axis):
        from .ops.shape import PutAlongAxis

        return PutAlongAxis.apply(values, tuple(shape), _raw(idx), axis)

    def gather(self, x, idx, axis):
        """torch.gather as an Index op, so it differentiates again (its backward is IndexAdd): the
        key is idx along ``axis`` and, along every other dim d, the position itself (a broadcast
        arange), as numpy_backend._along builds it."""
        idx, raw = _raw(idx), self.raw
        key = tuple(idx if d == axis else raw.reshape(raw.arange(n, device=self.device),
                                                      tuple(n if k == d else 1 for k in range(idx.ndim)))
                    for d, n in enumerate(idx.shape))
        return x[key]

    def scatter(self, x, idx, src, axis):
        from .ops.shape import Scatter

        return Scatter.apply(x, src, _raw(idx), axis)


_namespaces: dict = {}


def graph_namespace(raw_xp: ModuleType, device: str) -> GraphNamespace:
    """The (cached) graph namespace of one backend and device."""
    key = (raw_xp.__name__, device)
    ns = _namespaces.get(key)
    if ns is None:
        ns = _namespaces[key] = GraphNamespace(raw_xp, device)
    return ns


class RecordingContext:
    """What a node's backward sees under ``create_graph``: the node's attributes (``axis``,
    ``needs_input_grad``, ...), with ``xp`` the graph namespace and ``saved_tensors`` Tensors. A
    backend module kept on the node (ToCopy's ``dst_xp``) reads as the namespace too."""

    def __init__(self, node, xp: GraphNamespace):
        self.node, self.xp = node, xp
        saved, derived = unpack_saved(node, xp)
        self.saved_tensors = node.fn.regraph(self, saved, derived) if derived else saved

    def __getattr__(self, name: str):
        value = getattr(self.node, name)
        return self.xp if isinstance(value, ModuleType) else value


def unpack_saved(node, xp: GraphNamespace) -> tuple:
    """(the node's saved arrays as Tensors, the positions of float intermediates) — see the module
    docstring. ``node.versions`` has one (counter, version, id) per Tensor input, in order, then
    the output's. Two inputs may share one array (``x * x.detach()``): saved arrays are matched to
    inputs in order, which is the order every op saves them in."""
    saved = node.saved_tensors
    if not saved:
        return saved, ()
    sources = [p for p in node.parents if p is not None]
    ids = [v[2] for v in node.versions]
    out, derived, used = [], [], set()
    for j, s in enumerate(saved):
        if s is None or s.__class__ in autograd._NUMBERS:
            out.append(s)
            continue
        hits = [k for k, i in enumerate(ids) if i == id(s)]
        k = next((k for k in hits if k not in used), hits[0] if hits else None)
        if k is None:  # not an input nor the output
            out.append(Tensor._make(s, xp.raw, xp.device))
            if xp.raw.dtype_of(s).kind == "f":
                derived.append(j)
            continue
        used.add(k)
        if k == len(sources):  # the output: a Tensor of this very node
            out.append(Tensor._make(s, xp.raw, xp.device, grad_fn=node))
        elif type(sources[k]) is autograd.Context:
            out.append(Tensor._make(s, xp.raw, xp.device, grad_fn=sources[k]))
        else:
            out.append(sources[k])  # a leaf input, with or without requires_grad
    return tuple(out), tuple(derived)


def run_recorded(node, g, xp: GraphNamespace) -> tuple:
    """``node``'s backward on Tensors, recorded (``run_backward`` has turned grad mode on). While it
    runs, ``Tensor.__array__`` refuses graph Tensors: a formula calling numpy directly (a user's
    Function bypassing ``ctx.xp``) would otherwise silently drop their second derivative."""
    state = autograd._state
    outer = getattr(state, "graph_backward", False)
    state.graph_backward = True
    try:
        return node.fn.backward(RecordingContext(node, xp), g)
    finally:
        state.graph_backward = outer
