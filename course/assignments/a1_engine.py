"""Assignment 1: the engine's backward rules (lessons 1-2).

Each op's ``forward`` stays, so you can see what it saved for you; you write ``backward``: one
gradient per positional input, full-shape (the engine's ``unbroadcast`` sums it back to the input's
shape, and writing that is a task too). Every check compares with torch autograd on shapes and
values drawn when you are graded, in float64 and float32, and with float64 finite differences.
"""
from __future__ import annotations

import numpy as np

from .. import checks as C
from ..framework import Assignment, Task, TaskFailure

EW = "minigrad/ops/elementwise.py"
RED = "minigrad/ops/reduce.py"
SHAPE = "minigrad/ops/shape.py"
MATMUL = "minigrad/ops/matmul.py"
ENGINE = "minigrad/autograd.py"

BROADCAST_HINT = "did you sum over the broadcast dimension? the engine's unbroadcast does that " \
                 "for you only if you return a full-shape gradient"


def _pairs(rng, n=3):
    """n broadcasting shape pairs, the first two fixed extremes (a column times a row, a full
    tensor times a shorter one), the rest drawn."""
    return [((3, 1), (1, 4)), ((2, 3, 4), (4,))] + [C.broadcast_pair(rng) for _ in range(n - 2)]


def _binary(label, fn, rng, b_low=None, b_high=None, hint=BROADCAST_HINT):
    for sa, sb in _pairs(rng):
        b = C.values(rng, sb, b_low, b_high)
        if b_low is not None:
            b *= rng.choice([-1.0, 1.0], sb)  # either sign, magnitude in [b_low, b_high)
        C.both(label, fn, [C.Arg(C.values(rng, sa), "a"), C.Arg(b, "b")], rng, hint)


def check_add_sub_neg(rng):
    _binary("Add.backward", lambda ns, a, b: a + b, rng)
    _binary("Sub.backward", lambda ns, a, b: a - b, rng, hint="d(a - b)/db = -1")
    x = C.values(rng, C.rand_shape(rng, 2))
    C.both("Neg.backward", lambda ns, a: -a, [C.Arg(x, "a")], rng)
    C.both("Sub.backward (number - tensor)", lambda ns, a: 2.0 - a, [C.Arg(x, "a")], rng,
           "with a Python number on the left only the right operand needs a gradient")


def check_mul(rng):
    _binary("Mul.backward", lambda ns, a, b: a * b, rng)
    x = C.values(rng, C.rand_shape(rng, 2))
    C.both("Mul.backward (a * a)", lambda ns, a: a * a, [C.Arg(x, "a")], rng,
           "the same tensor on both sides gets both gradients added")
    C.both("Mul.backward (3 * a)", lambda ns, a: 3.0 * a, [C.Arg(x, "a")], rng)


def check_div(rng):
    _binary("Div.backward", lambda ns, a, b: a / b, rng, b_low=0.5, b_high=2.0)
    b = rng.uniform(0.5, 2.0, C.rand_shape(rng, 2))
    C.both("Div.backward (2 / b)", lambda ns, b: 2.0 / b, [C.Arg(b, "b")], rng,
           "d(a/b)/db = -a/b²; here a is a Python number")


def check_pow(rng):
    x = rng.uniform(0.5, 2.0, C.rand_shape(rng, 2))
    for p in (2, 3, 0.5, float(np.round(rng.uniform(-2.5, 2.5), 2))):
        C.both(f"Pow.backward (p = {p})", lambda ns, a, p=p: a ** p, [C.Arg(x, "a")], rng,
               "d(a^p)/da = p a^(p-1)")


def check_exp_log(rng):
    C.both("Exp.backward", lambda ns, a: a.exp(), [C.Arg(C.values(rng, C.rand_shape(rng, 3)), "a")],
           rng)
    C.both("Log.backward", lambda ns, a: a.log(),
           [C.Arg(rng.uniform(0.2, 3.0, C.rand_shape(rng, 2)), "a")], rng)


def check_sqrt(rng):
    C.both("Sqrt.backward", lambda ns, a: a.sqrt(),
           [C.Arg(rng.uniform(0.2, 3.0, C.rand_shape(rng, 3)), "a")], rng)


def check_tanh_sigmoid(rng):
    x = C.values(rng, C.rand_shape(rng, 2)) * 3
    x.flat[0], x.flat[-1] = 30.0, -30.0  # saturated: the gradient must be ~0, never nan
    for name, fn in (("Tanh", lambda ns, a: a.tanh()), ("Sigmoid", lambda ns, a: a.sigmoid())):
        C.compare(f"{name}.backward", fn, [C.Arg(x, "a")], rng, dtype="float64")
        C.compare(f"{name}.backward", fn, [C.Arg(x, "a")], rng, dtype="float32",
                  hint="use the saved output z: z(1 - z) or 1 - z² stays finite where e^a overflows")
        C.gradcheck(f"{name}.backward", fn, [C.Arg(x / 10, "a")])


def check_relu_abs(rng):
    x = C.values(rng, C.rand_shape(rng, 2, 2, 5))
    x.flat[0] = 0.0  # torch's convention at the kink: gradient 0
    for name, fn in (("Relu", lambda ns, a: a.relu()), ("Abs", lambda ns, a: a.abs())):
        for dtype in ("float64", "float32"):
            C.compare(f"{name}.backward", fn, [C.Arg(x, "a")], rng, dtype=dtype,
                      hint="at a = 0 torch's gradient is 0")


def _dims(rng, ndim):
    """A few dim arguments torch accepts: None, an int (maybe negative), a tuple."""
    d = int(rng.integers(0, ndim))
    return [None, d, d - ndim, tuple(sorted({d, int(rng.integers(0, ndim))}))]


def check_sum_mean(rng):
    shape = C.rand_shape(rng, 3, 2, 4)
    x = C.values(rng, shape)
    for dim in _dims(rng, 3):
        for keep in (False, True):
            for name, fn in (("Sum", lambda ns, a, d=dim, k=keep: a.sum(dim=d, keepdim=k)),
                             ("Mean", lambda ns, a, d=dim, k=keep: a.mean(dim=d, keepdim=k))):
                C.compare(f"{name}.backward (dim={dim}, keepdim={keep})", fn, [C.Arg(x, "a")], rng,
                          hint="put the reduced dims back (size 1), then broadcast to a's shape")


def check_var(rng):
    x = C.values(rng, C.rand_shape(rng, 3, 2, 4))
    for dim in _dims(rng, 3)[1:]:
        for corr, keep in ((0, False), (1, True)):
            C.both(f"Var.backward (dim={dim}, correction={corr}, keepdim={keep})",
                   lambda ns, a, d=dim, c=corr, k=keep: a.var(dim=d, correction=c, keepdim=k),
                   [C.Arg(x, "a")], rng, "dz/da = 2 (a - mean) / (n - correction)")


def check_amax(rng):
    # Small integers make ties likely: torch shares the gradient equally among tied maxima.
    x = rng.integers(-2, 3, C.rand_shape(rng, 3, 2, 4)).astype(np.float64)
    for dim in [None] + _dims(rng, 3)[1:]:
        for dtype in ("float64", "float32"):
            C.compare(f"Amax.backward (dim={dim})", lambda ns, a, d=dim: a.amax(dim=d), [C.Arg(x, "a")],
                      rng, dtype=dtype, hint="tied maxima share the gradient equally, as in torch")


def check_reshape_permute(rng):
    shape = C.rand_shape(rng, 3, 2, 4)
    x = C.values(rng, shape)
    order = tuple(int(i) for i in rng.permutation(3))
    C.both("Reshape.backward", lambda ns, a: a.reshape(shape[0] * shape[1], shape[2]),
           [C.Arg(x, "a")], rng)
    C.both(f"Permute.backward (dims {order})", lambda ns, a: a.permute(*order), [C.Arg(x, "a")], rng,
           "undo the permutation with its inverse, which is not the same order unless it is a swap")
    C.both("Permute.backward (transpose)", lambda ns, a: a.transpose(0, 2), [C.Arg(x, "a")], rng)


def check_expand_cat(rng):
    x = C.values(rng, (3, 1, 2))
    n = int(rng.integers(2, 5))
    C.both("Expand.backward", lambda ns, a: a.expand(4, 3, n, 2), [C.Arg(x, "a")], rng)
    axis = int(rng.integers(0, 3))
    parts = []
    for i in range(3):
        s = [2, 3, 2]
        s[axis] = int(rng.integers(1, 4))
        parts.append(C.Arg(C.values(rng, tuple(s)), f"x{i}"))
    C.both(f"Cat.backward (dim={axis})", lambda ns, *xs: ns.lib.cat(list(xs), dim=axis), parts, rng,
           "each input's gradient is its own slice of g along the joined dim")


def check_index_gather(rng):
    x = C.values(rng, (5, 4))
    idx = rng.integers(0, 5, 7)
    idx[:2] = idx[2]  # repeated rows: their gradients add up
    C.both("Index.backward (integer array with repeats)", lambda ns, a: a[idx.tolist()],
           [C.Arg(x, "a")], rng, "an index picked twice gets both gradients: add, do not assign")
    C.both("Index.backward (slices)", lambda ns, a: a[1:, ::2], [C.Arg(x, "a")], rng)
    dim = int(rng.integers(0, 2))
    C.both(f"Gather.backward (max over dim {dim})", lambda ns, a: a.max(dim=dim)[0], [C.Arg(x, "a")],
           rng, "the gradient goes back to the position each value was picked from")


def check_matmul(rng):
    k = int(rng.integers(2, 5))
    b, m, n = (int(v) for v in rng.integers(2, 4, 3))
    cases = [((m, k), (k, n)), ((b, m, k), (k, n)), ((1, m, k), (b, k, n)), ((k,), (k, n)),
             ((m, k), (k,)), ((k,), (k,)), ((2, b, m, k), (2, b, k, n))]
    for sa, sb in cases:
        C.both("MatMul.backward", lambda ns, a, b: a @ b,
               [C.Arg(C.values(rng, sa), "a"), C.Arg(C.values(rng, sb), "b")], rng,
               "dA = g Bᵀ, dB = Aᵀ g; a 1-D operand is a row (left) or a column (right) vector",
               gradcheck_too=len(sa) < 4)


def check_unbroadcast(rng):
    import minigrad.autograd as A
    import torch

    for sa, sb in _pairs(rng, 5):
        g = C.values(rng, np.broadcast_shapes(sa, sb))
        for shape in (sa, sb):
            got = np.asarray(A.unbroadcast(np, g.copy(), shape))
            want = torch.tensor(g).sum_to_size(shape).numpy()
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-12, atol=1e-12):
                raise TaskFailure(f"unbroadcast: summing a {g.shape} gradient back to {shape} gives "
                                  f"shape {got.shape} / wrong values vs torch's sum_to_size "
                                  "(sum the leading dims broadcasting added, and the dims that were "
                                  "1 in the input, keeping them as 1)")
    _binary("unbroadcast (through a * b)", lambda ns, a, b: a * b, rng)


def check_topological_order(rng):
    import minigrad as mg
    import minigrad.autograd as A

    # A diamond with a reused value: x feeds y twice, y feeds the loss through two paths.
    x = mg.tensor(C.values(rng, (3,)), dtype=mg.float64, requires_grad=True)
    y = x * x
    z = y.exp() + y * 2.0
    loss = (z * y).sum()
    nodes = A._topological_order(loss)
    if len({id(n) for n in nodes}) != len(nodes):
        raise TaskFailure("_topological_order: a node appears twice (mark nodes as visited)")
    pos = {id(n): i for i, n in enumerate(nodes)}
    if pos.get(id(loss.grad_fn)) != 0:
        raise TaskFailure("_topological_order: the root's node must come first")
    for n in nodes:
        for p in n.parents:
            if isinstance(p, A.Context) and pos.get(id(p), -1) <= pos[id(n)]:
                raise TaskFailure(f"_topological_order: {p.name()} comes before its consumer "
                                  f"{n.name()}; every node must come after all nodes that use it")
    if len(nodes) != 6:
        raise TaskFailure(f"_topological_order: found {len(nodes)} nodes, the graph has 6")
    C.compare("backward in topological order", lambda ns, a: ((a * a).exp() + a * a * 2.0) * (a * a),
              [C.Arg(C.values(rng, (4,)), "a")], rng)
    # A long chain: recursion would hit Python's limit (~1000 frames); an explicit stack does not.
    depth = int(rng.integers(3000, 5000))
    w = mg.tensor(C.values(rng, (2,)), dtype=mg.float64, requires_grad=True)
    h = w
    for _ in range(depth):
        h = h * 1.0001
    h.sum().backward()
    want = np.full(2, 1.0001 ** depth)
    if not np.allclose(w.grad.numpy(), want, rtol=1e-9):
        raise TaskFailure(f"_topological_order: a chain of {depth} ops gives a wrong gradient")


ASSIGNMENT = Assignment("a1", "The engine's backward rules", [
    Task("a1.add_sub_neg", "Add, Sub, Neg backward", 2,
         [f"{EW}:Add.backward", f"{EW}:Sub.backward", f"{EW}:Neg.backward"],
         "one gradient per input, full shape; the engine sums broadcast dims", check_add_sub_neg),
    Task("a1.mul", "Mul backward (with broadcasting)", 3, [f"{EW}:Mul.backward"],
         "dz/da = b, dz/db = a; return None for an input that needs no gradient", check_mul),
    Task("a1.div", "Div backward", 3, [f"{EW}:Div.backward"],
         "dz/da = 1/b, dz/db = -a/b^2 (= -z/b)", check_div),
    Task("a1.pow", "Pow backward", 2, [f"{EW}:Pow.backward"],
         "dz/da = p a^(p-1); the exponent is a constant (its gradient is None)", check_pow),
    Task("a1.exp_log", "Exp and Log backward", 2, [f"{EW}:Exp.backward", f"{EW}:Log.backward"],
         "use what forward saved", check_exp_log),
    Task("a1.sqrt", "Sqrt backward", 1, [f"{EW}:Sqrt.backward"], "dz/da = 1 / (2 sqrt(a))",
         check_sqrt),
    Task("a1.tanh_sigmoid", "Tanh and Sigmoid backward", 2,
         [f"{EW}:Tanh.backward", f"{EW}:Sigmoid.backward"],
         "write the derivative in terms of the saved output z", check_tanh_sigmoid),
    Task("a1.relu_abs", "Relu and Abs backward (the kink at 0)", 2,
         [f"{EW}:Relu.backward", f"{EW}:Abs.backward"], "torch's gradient at exactly 0 is 0",
         check_relu_abs),
    Task("a1.sum_mean", "Sum and Mean backward", 3,
         [f"{RED}:_expand_back", f"{RED}:Sum.backward", f"{RED}:Mean.backward"],
         "re-insert the reduced dims as size 1, then broadcast to the input shape", check_sum_mean),
    Task("a1.var", "Var backward", 3, [f"{RED}:Var.backward"],
         "dz/da = 2 (a - mean) / (n - correction), broadcast back over the reduced dims", check_var),
    Task("a1.amax", "Amax backward (ties)", 2, [f"{RED}:Amax.backward"],
         "the gradient goes to the maxima, shared equally among ties", check_amax),
    Task("a1.reshape_permute", "Reshape and Permute backward", 2,
         [f"{SHAPE}:Reshape.backward", f"{SHAPE}:Permute.backward"],
         "move the gradient back: reshape to the input shape, permute by the inverse order",
         check_reshape_permute),
    Task("a1.expand_cat", "Expand and Cat backward", 2,
         [f"{SHAPE}:Expand.backward", f"{SHAPE}:Cat.backward"],
         "Expand: the engine sums the copies; Cat: slice g back into pieces", check_expand_cat),
    Task("a1.index_gather", "Index and Gather backward", 3,
         [f"{SHAPE}:Index.backward", f"{SHAPE}:Gather.backward"],
         "scatter g back into zeros of the input's shape; repeated indices add", check_index_gather),
    Task("a1.matmul", "MatMul backward (batched, 1-D operands)", 4, [f"{MATMUL}:MatMul.backward"],
         "dA = g Bᵀ, dB = Aᵀ g; treat 1-D operands as a row / a column", check_matmul),
    Task("a1.unbroadcast", "The engine's unbroadcast", 3, [f"{ENGINE}:unbroadcast"],
         "sum over leading dims and over dims that were 1 in the input", check_unbroadcast),
    Task("a1.topological_order", "The engine's topological sort", 3, [f"{ENGINE}:_topological_order"],
         "iterative DFS from root.grad_fn; a node after all of its consumers", check_topological_order),
])
