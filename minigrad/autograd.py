"""The engine: ``Function`` records a node of the graph, ``backward`` walks the graph in reverse.

Every op is a ``Function`` subclass with two static methods, as in torch::

    forward(ctx, *raw_arrays, **options) -> raw array
    backward(ctx, grad)                  -> one gradient per positional input (None if not needed)

``forward`` and ``backward`` see raw backend arrays (numpy or torch), never Tensors, and compute
through ``ctx.xp``, the backend namespace. ``Function.apply`` wraps the result in a Tensor and, when
a gradient will be needed, keeps ``ctx`` as the output's ``grad_fn``: ctx *is* the graph node.

Broadcasting is undone in one place only (``unbroadcast``), so no op's backward has to care.
"""
from __future__ import annotations

import contextlib
import math
import threading

_state = threading.local()
_NUMBERS = (bool, int, float)  # what an op may save besides arrays (a Python-number operand)

# How many threads have a ``minigrad.profile()`` open (see profiler.py); each thread's own profile is
# ``_state.profiler``, as grad mode is per thread. The engine tests this one global per op and per
# backward node, so running without a profiler costs a single comparison.
_profiling = 0


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


class _GradMode(contextlib.ContextDecorator):
    """A context manager that is also a decorator, with or without parentheses, as torch's:
    ``with no_grad():``, ``@no_grad()`` and ``@no_grad``."""

    enabled = True

    def __new__(cls, func=None):
        self = super().__new__(cls)
        return self(func) if callable(func) else self

    def __enter__(self):
        self.prev = is_grad_enabled()
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        _state.grad_enabled = self.prev


class no_grad(_GradMode):
    """No graph is recorded inside (optimizers update parameters under it)."""

    enabled = False


class enable_grad(_GradMode):
    """Graph recording turned back on inside ``no_grad``."""

    enabled = True


class set_grad_enabled(_GradMode):
    """Recording on or off from the call on (``torch.set_grad_enabled(False)``), or for a ``with``
    block only (``with set_grad_enabled(train):``), restoring the previous mode at its end."""

    def __new__(cls, mode: bool):
        self = object.__new__(cls)
        self.prev, self.enabled = is_grad_enabled(), bool(mode)
        _state.grad_enabled = self.enabled
        return self

    def __enter__(self):
        pass


def _freed_error(node) -> RuntimeError:
    return RuntimeError(
        f"{node.name()}: trying to backward through the graph a second time; its saved "
        "arrays were freed. Pass retain_graph=True to the first backward() to keep them.")


class Context:
    """What a Function's forward leaves for its backward; also the node in the graph.

    ``parents`` has one entry per positional input: the input's own node (its ``grad_fn``) if it
    was computed, the Tensor itself if it is a leaf, None if it was not a Tensor. A node links to
    its parents' *nodes*, never to their output Tensors, so an intermediate result that no
    backward needs is freed as soon as the user drops it (torch's graph works the same way).
    ``shapes`` keeps each input's shape for unbroadcast. ``needs_input_grad`` is known before
    ``forward`` runs, so an op can skip saving what no gradient will need. When it saved anything,
    ``versions`` holds (version counter, version then, id of the array) for each input and the
    output: if one of those arrays is among the saved ones and its tensor was changed in place since,
    backward raises torch's error instead of computing a wrong gradient. The ids stay valid: the
    saved arrays are alive, so no other object can reuse their ids.
    """

    __slots__ = ("fn", "xp", "device", "parents", "shapes", "needs_input_grad", "saved", "freed",
                 "versions", "__dict__")

    def __init__(self, fn, xp, device, needs_input_grad: tuple):
        self.fn, self.xp, self.device, self.needs_input_grad = fn, xp, device, needs_input_grad
        self.saved, self.freed, self.parents, self.shapes, self.versions = (), False, (), (), ()

    def save_for_backward(self, *arrays) -> None:
        self.saved = arrays

    @property
    def saved_tensors(self) -> tuple:
        if self.freed:
            raise _freed_error(self)
        return self.saved

    def name(self) -> str:
        return self.fn.__name__ + "Backward"

    def check_versions(self) -> None:
        """Raise torch's error if an input or output whose array this node saved was changed in
        place since (a saved array is one of ``versions``' (counter, version, id) by identity)."""
        for counter, version, ident in self.versions:
            if counter[0] == version:
                continue
            for s in self.saved:
                if id(s) == ident:
                    raise RuntimeError(
                        "one of the variables needed for gradient computation has been modified by an "
                        f"inplace operation: [{self.xp.dtype_of(s)} {list(s.shape)}], saved by "
                        f"{self.name()}, is at version {counter[0]}; expected version {version} instead. "
                        "Hint: use an out-of-place op (x = x + 1) or .clone() the tensor before changing it.")



def keep_saved(ctx, saved: tuple, derived: tuple) -> tuple:
    """A ``Function.regraph`` for ops whose saved float arrays besides inputs and output are
    constants of the loss (a target, class weights): they stay constants."""
    return saved


class _Scratch:
    """The ctx of a forward re-run by ``rerun_forward``: the node's xp and flags, its own saves."""

    def __init__(self, ctx):
        self.xp, self.needs_input_grad, self.saved = ctx.xp, ctx.needs_input_grad, ()

    def save_for_backward(self, *values) -> None:
        self.saved = values


def rerun_forward(fn, ctx, *args, **kwargs) -> tuple:
    """What ``fn.forward(..., *args)`` saves, computed again on ``ctx.xp`` (a ``regraph`` helper:
    on the graph namespace and input Tensors, the forward's own formula rebuilds its intermediates
    as graph nodes, so no op writes its math twice)."""
    scratch = _Scratch(ctx)
    fn.forward(scratch, *args, **kwargs)
    return scratch.saved


class Function:
    """Base class of every op. Subclasses define ``forward`` and ``backward`` as static methods."""

    @staticmethod
    def forward(ctx: Context, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad):
        raise NotImplementedError

    @staticmethod
    def regraph(ctx, saved: tuple, derived: tuple) -> tuple:
        """``create_graph`` only: ``saved`` are this node's saved arrays unpacked as Tensors (see
        graph_backward.py), ``derived`` the positions of float arrays that are neither an input nor
        the output. An op that saves such an intermediate overrides this to rebuild it from its
        inputs on Tensors (``ctx.xp``), or, when they are constants (targets, class weights), to
        keep them (``keep_saved``). Treating a computed one as a constant would silently give wrong
        second derivatives, hence this refusal by default."""
        raise RuntimeError(f"{ctx.name()}: create_graph=True needs this op's saved intermediates as "
                           "graph nodes, and it has no regraph() to rebuild them; it cannot be "
                           "differentiated twice yet")

    # Facts about the op live on its class, so renaming it cannot lose them (the profiler reads
    # them): FLOPs per element of the largest operand (0 for an op that only moves data), and, when
    # only the first few gradients of backward cost a forward's FLOPs each, how many.
    flops_per_element = 1
    grads_costing_flops: int | None = None

    @classmethod
    def flops(cls, inputs, out) -> int:
        """Forward FLOPs, an estimate: ``flops_per_element`` x the largest operand's element count."""
        if not cls.flops_per_element:
            return 0
        return cls.flops_per_element * max(math.prod(a.shape) for a in (*inputs, out) if hasattr(a, "shape"))

    @classmethod
    def apply(cls, *args, **kwargs):
        Tensor = _tensor.Tensor
        xp = device = None
        raw, needs = [], []
        for a in args:
            if isinstance(a, Tensor):
                if xp is None:
                    xp, device = a._xp, a.device
                elif a.device != device:
                    raise RuntimeError(f"{cls.__name__}: expected all tensors on one device, "
                                       f"got {device!r} and {a.device!r}")
                raw.append(a._data)
                needs.append(a.requires_grad)
            else:
                raw.append(a)
                needs.append(False)
        if xp is None:
            raise TypeError(f"{cls.__name__}.apply needs at least one Tensor argument")
        record = True in needs and getattr(_state, "grad_enabled", True)  # is_grad_enabled(), inlined
        ctx = Context(cls, xp, device, tuple(needs) if record else (False,) * len(args))
        return run_node(ctx, args, raw, kwargs, record, xp, device)


def run_node(ctx: Context, args, raw, kwargs: dict, record: bool, xp, device):
    """Run ``ctx.fn.forward(ctx, *raw, **kwargs)`` (timed when this thread profiles) and wrap its
    result as a Tensor on backend ``xp``/``device``; if ``record``, ``ctx`` becomes that Tensor's
    ``grad_fn``, linked to ``args`` (the Tensors and plain values ``raw`` was unwrapped from).

    ``Function.apply`` ends here; an op whose output lives on another backend than its inputs
    (``ToCopy``) builds its ``ctx`` itself and calls this, so it is profiled and wired alike.
    """
    Tensor = _tensor.Tensor
    if _profiling and getattr(_state, "profiler", None) is not None:
        out = _state.profiler.run_forward(ctx.fn, ctx, ctx.device, raw, kwargs)
    else:
        out = ctx.fn.forward(ctx, *raw, **kwargs)
    if not record:
        return Tensor._make(out, xp, device)
    parents, shapes, versions = [], [], []
    saved = ctx.saved
    for a, r in zip(args, raw):
        if a is r:  # not a Tensor
            parents.append(None)
            shapes.append(None)
            continue
        parents.append(a if a.grad_fn is None else a.grad_fn)
        shapes.append(r.shape)
        if saved:
            versions.append((a._vc, a._vc[0], id(r)))
    ctx.parents, ctx.shapes = tuple(parents), tuple(shapes)
    result = Tensor._make(out, xp, device, grad_fn=ctx)
    if saved:
        versions.append((result._vc, 0, id(out)))
        ctx.versions = versions
    return result


def unbroadcast(xp, grad, shape: tuple):
    """Sum ``grad`` back to ``shape``: over the leading dims broadcasting added, and over the dims
    that were size 1 in the input. d(x broadcast)/dx sums, because one x fed many outputs."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and grad.shape[i + lead] != 1)
    if axes:
        grad = xp.sum(grad, axis=axes, keepdims=True)
    return xp.reshape(grad, shape)


def _topological_order(root) -> list:
    """Nodes reachable from ``root``, each after every node that consumes it (iterative DFS)."""
    order, visited = [], set()
    stack = [(root.grad_fn, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for p in node.parents:
            if type(p) is Context and id(p) not in visited:
                stack.append((p, False))
    order.reverse()
    return order


def backward(root, grad, retain_graph: bool = False, create_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) · grad into every leaf's ``.grad`` (see ``run_backward``)."""
    run_backward([root], [grad], retain_graph, create_graph)


def run_backward(roots: list, grads: list, retain_graph: bool = False, create_graph: bool = False,
                 targets: list | None = None) -> list | None:
    """Reverse-mode sweep: each node's backward runs once, after all its consumers.

    Gradients of intermediate nodes live in ``pending`` only until their node has run. The first
    gradient to arrive is kept as is (it may be a view another node also reads); a second one makes
    a fresh sum, which the engine then owns and may add to in place.

    ``grads`` are raw arrays, or Tensors when ``create_graph``: then each node's backward runs on
    Tensors (``run_recorded``), so the gradients it returns are graph nodes themselves, and sums
    are made out of place. With ``targets`` (Tensors, leaves or not) nothing is accumulated into
    ``.grad``: the gradient reaching each target is returned (None where none flows), and only the
    nodes leading to a target run (``autograd.grad``).
    """
    if create_graph and not is_grad_enabled():
        # torch's rule: create_graph records even when called under no_grad (the backward formulas,
        # and the sums and unbroadcasts between them, all belong to the new graph).
        with enable_grad():
            return run_backward(roots, grads, retain_graph, create_graph, targets)
    if create_graph:
        accumulate = accumulate_graph
        add_owned = False  # out-of-place sums: a recorded gradient must not change under its graph
    else:
        accumulate, add_owned = _accumulate_leaf, True
    want = captured = None
    if targets is not None:
        want = {id(t.grad_fn if t.grad_fn is not None else t): i for i, t in enumerate(targets)}
        captured = [None] * len(targets)

        def accumulate(leaf, g):  # a leaf's gradient goes to the result, not to its .grad
            i = want.get(id(leaf))
            if i is not None:
                _capture(captured, i, g)
    pending = {}
    for root, grad in zip(roots, grads):
        if root.grad_fn is None:
            accumulate(root, grad)
            continue
        slot = pending.get(id(root.grad_fn))
        pending[id(root.grad_fn)] = [grad if slot is None else slot[0] + grad, False]
    order = order_all(roots)
    run = None if want is None else nodes_to_run(order, want)
    for node in order:
        entry = pending.pop(id(node), None)
        if entry is None:
            continue
        if node.freed:
            raise _freed_error(node)
        if want is not None:
            if id(node) in want:
                _capture(captured, want[id(node)], entry[0])
            if id(node) not in run:
                continue
        if node.versions:
            node.check_versions()
        if create_graph:
            xp = graph_namespace(node.xp, node.device)
            grads = run_recorded(node, entry[0], xp)
        elif _profiling and getattr(_state, "profiler", None) is not None:
            xp, grads = node.xp, _state.profiler.run_backward(node, entry[0])
        else:
            xp, grads = node.xp, node.fn.backward(node, entry[0])
        if not isinstance(grads, tuple):
            grads = (grads,)
        if not retain_graph:
            # Only nodes holding arrays are freed: one that saved nothing (or only Python numbers)
            # stays usable, so a second backward through it works, as in torch. (A loop, not any()
            # over a generator: this runs once per node.)
            for s in node.saved:
                if s is not None and s.__class__ not in _NUMBERS:
                    node.saved, node.freed = (), True
                    break
        for parent, shape, g, need in zip(node.parents, node.shapes, grads, node.needs_input_grad):
            if not need or g is None:
                continue
            g = unbroadcast(xp, g, shape)
            if type(parent) is not Context:  # a leaf Tensor
                accumulate(parent, g)
                continue
            slot = pending.get(id(parent))
            if slot is None:
                pending[id(parent)] = [g, False]
            elif slot[1]:
                slot[0] += g
            else:
                slot[0], slot[1] = slot[0] + g, add_owned
        if node.freed:
            node.parents = ()  # drop the links so nodes (and what they saved) die as we go
    return captured


def _capture(captured: list, i: int, g) -> None:
    captured[i] = g if captured[i] is None else captured[i] + g


def _accumulate_leaf(t, g) -> None:
    """Leaf gradients add up across backward calls, as in torch. The first one is copied: ``g`` may
    be a view shared with another leaf's gradient (Add hands the same array to both inputs), and
    user code changes ``.grad`` in place (``p.grad.zero_()``), which must not reach the other."""
    if not t.requires_grad:
        return
    if t.grad is None:
        t.grad = _tensor.Tensor._make(t._xp.copy(g), t._xp, t.device)
    else:
        t.grad._data = t._xp.copy(t.grad._data + g) if t.grad._data.ndim == 0 else t.grad._data + g


# tensor.py imports this module, so the Tensor class is reached through its module, imported here
# at the bottom (Function exists by now) and read at call time. A ``from .tensor import Tensor``
# inside apply() would run the import machinery once per op.
from . import tensor as _tensor  # noqa: E402
# The create_graph half of the engine, and autograd.grad with its target-pruned sweep.
from . import graph_backward as _graph  # noqa: E402
from .graph_backward import (accumulate_graph, graph_namespace, nodes_to_run, order_all,  # noqa: E402,F401
                             run_recorded, seeds)

grad = _graph.grad  # torch.autograd.grad's place: mg.autograd.grad
