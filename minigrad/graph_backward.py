"""Backward on Tensors, for ``create_graph=True``: the same formulas, recorded as a graph; and the
API around it (``autograd.grad``, the seeds of a backward, ``regraph`` helpers).

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
# A module, not its names: ops/ import rerun_forward from here while tensor.py is half-loaded.
from . import tensor as _tensor

_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


class _NoKernels:
    """``xp.kernels`` of the graph namespace: no native kernel, every attribute is None, so a backward
    that tries ``k = xp.kernels.NAME; if k is not None: return k(...)`` falls through to its formula
    (a native kernel computes on raw arrays and records nothing)."""

    def __getattr__(self, name: str):
        return None


def _raw(x):
    return x._data if isinstance(x, _tensor.Tensor) else x


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

    def _const(self, array) -> "_tensor.Tensor":
        return _tensor.Tensor._make(array, self.raw, self.device)

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
        return a.maximum(b) if isinstance(a, _tensor.Tensor) else b.maximum(a)  # max is symmetric, ties too

    def minimum(self, a, b):
        return a.minimum(b) if isinstance(a, _tensor.Tensor) else b.minimum(a)

    def where(self, cond, a, b):
        """A choice between Tensors records Where; between constants (a raw array saved by the
        forward, a number: a loss's weight total) it is a constant itself."""
        from .ops.elementwise import Where

        if not isinstance(a, _tensor.Tensor) and not isinstance(b, _tensor.Tensor):
            return self._const(self.raw.where(_raw(cond), a, b))
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
    def dtype_of(self, x): return x.dtype if isinstance(x, _tensor.Tensor) else self.raw.dtype_of(x)
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
            out.append(_tensor.Tensor._make(s, xp.raw, xp.device))
            if xp.raw.dtype_of(s).kind == "f":
                derived.append(j)
            continue
        used.add(k)
        if k == len(sources):  # the output: a Tensor of this very node
            out.append(_tensor.Tensor._make(s, xp.raw, xp.device, grad_fn=node))
        elif type(sources[k]) is autograd.Context:
            out.append(_tensor.Tensor._make(s, xp.raw, xp.device, grad_fn=sources[k]))
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


def accumulate_graph(t, g) -> None:
    """``create_graph`` accumulation, as torch's: ``.grad`` becomes a graph node (a clone of the
    first gradient, so two leaves never share one Tensor), and a later one is added out of place,
    so the graph that computed the old ``.grad`` stays valid."""
    if not t.requires_grad:
        return
    with autograd.enable_grad():
        t.grad = g.clone() if t.grad is None else t.grad + g


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def seeds(outputs: list, grad_outputs: list, create_graph: bool) -> list:
    """The backward seed of each output, as torch's ``_make_grads``: ones for a scalar output given
    no gradient, else the given gradient, checked against the output's shape. Raw arrays, or Tensors
    when ``create_graph`` (a gradient that requires grad then joins the graph)."""
    Tensor = _tensor.Tensor
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"got {len(outputs)} tensors and {len(grad_outputs)} gradients")
    out = []
    for i, (o, g) in enumerate(zip(outputs, grad_outputs)):
        if not o.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        if g is None:
            if o.numel() != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs; output {i} "
                                   f"has shape {o.shape}: pass a gradient of that shape")
            g = o._xp.ones(o.shape, o.dtype, o.device)
        elif isinstance(g, Tensor):
            if g.shape != o.shape:
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {g.shape} and "
                                   f"output[{i}] has a shape of {o.shape}.")
            out.append(g if create_graph else g._data)
            continue
        else:
            g = o._xp.array(g, dtype=o.dtype, device=o.device)
            if tuple(g.shape) != o.shape:
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {tuple(g.shape)} "
                                   f"and output[{i}] has a shape of {o.shape}.")
        out.append(Tensor._make(g, o._xp, o.device) if create_graph else g)
    return out


def grad(outputs, inputs, grad_outputs=None, retain_graph: bool | None = None, create_graph: bool = False,
         allow_unused: bool = False) -> tuple:
    """torch.autograd.grad: the gradients of ``outputs`` (weighted by ``grad_outputs``) with respect
    to each of ``inputs`` (leaves or not), as a tuple; no ``.grad`` is touched. With
    ``create_graph=True`` the gradients are graph nodes, to be differentiated again (Hessian-vector
    products, gradient penalties). ``retain_graph`` defaults to ``create_graph``, as in torch. An
    input no gradient reaches is an error, or None with ``allow_unused=True``."""
    outputs, inputs = _as_list(outputs), _as_list(inputs)
    grad_outputs = [None] * len(outputs) if grad_outputs is None else _as_list(grad_outputs)
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    retain = create_graph if retain_graph is None else retain_graph
    found = autograd.run_backward(outputs, seeds(outputs, grad_outputs, create_graph), retain, create_graph, inputs)
    result = []
    for i, (t, g) in enumerate(zip(inputs, found)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"The differentiated Tensor at index {i} appears to not have been used "
                                   "in the graph. Set allow_unused=True if this is the desired behavior.")
            result.append(None)
        elif create_graph:
            result.append(g)
        else:  # a fresh array: g may be shared with another input's gradient (Add hands both the same)
            result.append(_tensor.Tensor._make(t._xp.copy(g), t._xp, t.device))
    return tuple(result)


class _Joint:
    """A stand-in root whose node consumes every root's node, to order several roots at once."""

    def __init__(self, nodes: list):
        self.grad_fn = autograd.Context(autograd.Function, None, None, ())
        self.grad_fn.parents = tuple(nodes)


def order_all(roots: list) -> list:
    """``_topological_order`` over several roots (``autograd.grad`` of a list of outputs)."""
    if len(roots) == 1:  # Tensor.backward, the common case
        return autograd._topological_order(roots[0]) if roots[0].grad_fn is not None else []
    nodes = [r.grad_fn for r in roots if r.grad_fn is not None]
    return autograd._topological_order(_Joint(nodes))[1:] if nodes else []


def nodes_to_run(order: list, targets: dict) -> set:
    """The nodes whose backward leads to a target (torch runs no others for ``autograd.grad``): a
    node runs if one of its parents is a target leaf or a node that is or leads to a target. A freed
    node has lost its links: it counts as leading there, so that reaching it raises torch's error."""
    leads, run, Context = set(), set(), autograd.Context
    for node in reversed(order):  # parents before their consumers
        if node.freed or any(id(p) in leads or (type(p) is not Context and id(p) in targets) for p in node.parents):
            run.add(id(node))
            leads.add(id(node))
        elif id(node) in targets:
            leads.add(id(node))
    return run
