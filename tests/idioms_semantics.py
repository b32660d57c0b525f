"""Idioms of everyday Tensor use: comparisons, truthiness, builtins, dtypes, powers, shapes, modules."""
from __future__ import annotations

import math

import numpy as np
from idioms_kit import idiom, load, raised, rng_array


# ---- comparisons, truthiness, Python builtins ----------------------------------------------------------
@idiom("accuracy: (pred == y).float().mean(); (logits.argmax(-1) == y).sum().item()")
def accuracy_idioms(e):
    logits = e.tensor(rng_array(65, 6, 3))
    y = e.tensor([0, 1, 2, 0, 1, 2])
    pred = logits.argmax(dim=-1)
    return (pred == y).float().mean(), (pred == y).sum().item(), (pred != y), pred.eq(y)


@idiom("comparisons with tensors, Python and numpy scalars give bool tensors")
def comparisons(e):
    t = e.tensor([0.0, 1.0, 2.0])
    return (t == 1, t != 1, t < 1, t <= 1, t > np.float64(1), t >= 1, t == e.tensor([0.0, 5.0, 2.0]),
            1 < t, e.tensor([1, 2]) == 2)


@idiom("if loss.item() < x / if t.sum() > 0 / bool() of a multi-element tensor raises")
def truthiness(e):
    t = e.tensor([-1.0, 2.0])
    first = "pos" if t.sum() > 0 else "neg"
    second = bool(e.tensor([0.0]) > 1)
    return first, second, raised(lambda: bool(t > 0)), bool(e.tensor(3)), raised(lambda: len(e.tensor(1.0)))


@idiom("(x > 0).any() / .all() in conditions; torch.all(dt == t)")
def any_all(e):
    x = e.tensor([[-1.0, 2.0], [3.0, 4.0]])
    return (x > 0).any(), (x > 0).all(), e.T.all(x > -2), (x > 0).all(dim=1), bool((x > 0).any())


@idiom("tensors as dict keys and set members (identity hash)")
def hash_identity(e):
    a, b = e.tensor([1.0]), e.tensor([1.0])
    d = {a: "a", b: "b"}
    return len(d), d[a], a in {a}, len({a, b}), list(d.values())


@idiom("float(t), int(t), abs(t), round(t.item(), 2), t.tolist(), -t, ~mask")
def python_builtins(e):
    t = e.tensor([-1.25])
    mask = e.tensor([True, False])
    return float(t), int(e.tensor(7)), abs(t), round(t.item(), 2), t.tolist(), -t, ~mask, [1, 2, 3][e.tensor(1)]


@idiom("sum(losses) / len(losses) over 0-d tensors; total += loss.item() * x.size(0)")
def python_sum_of_tensors(e):
    losses = [e.tensor(v) for v in (0.5, 1.5, 2.0)]
    total = 0.0
    for loss in losses:
        total += loss.item() * 4
    return sum(losses) / len(losses), total


@idiom("for row in t: ...; len(t); list(t)")
def iterate_rows(e):
    t = e.tensor([[1.0, 2.0], [3.0, 4.0]])
    return [row.sum() for row in t], len(t), raised(lambda: iter(e.tensor(1.0)))


# ---- dtypes and promotion --------------------------------------------------------------------------------
@idiom("promotion: int tensor * 0.5, int / int, arange(5) / 5, float32 * np.float64, bool + int")
def promotion_scalars(e):
    i, f = e.tensor([1, 2]), e.tensor([1.0, 2.0])
    return (i * 0.5, i / 2, e.T.arange(5, device=e.dev) / 5, f * np.float64(2), e.tensor([True, False]) + 1,
            i + 1, i * True, f / np.int64(2), 2 / i, i - 0.5)


@idiom("promotion: int tensor + float tensor, float32 + float64 tensors, 0-d float64 * float32 vector")
def promotion_tensors(e):
    i, f32 = e.tensor([1, 2]), e.tensor([1.0, 2.0])
    f64 = e.tensor([1.0, 2.0], dtype=e.T.float64)
    return i + f32, f32 + f64, e.tensor(2.0, dtype=e.T.float64) * f32, i * e.tensor(0.5), f32 * e.tensor(3)


@idiom("dtype conversions: .float() .double() .long() .bool() .half() .type_as() .to(torch.float64)")
def dtype_conversions(e):
    t = e.tensor([0.0, 1.5, -2.0])
    return (t.long(), t.bool(), t.double(), t.half(), t.long().float(), e.tensor([1, 2]).type_as(t),
            t.to(e.T.float64), t.to(e.dev, e.T.float64), t.to(e.tensor([1], dtype=e.T.float64)),
            t.to(dtype=e.T.float64).dtype, t.is_floating_point())


@idiom("int tensors into float functions: arange(4).exp(), sqrt, mean of .float()")
def int_into_float_functions(e):
    a = e.T.arange(4, device=e.dev)
    return a.exp(), a.sqrt(), a.float().mean(), e.T.sigmoid(a), a.sin()


# ---- powers ------------------------------------------------------------------------------------------------
@idiom("powers: x ** 2, x.pow(3), 2 ** x, 0.0 ** x at 0, (-2.0) ** x, math.e ** x, x ** 0 (with gradients)")
def powers(e):
    x = e.tensor([0.0, 2.0, 3.0, -1.0], requires_grad=True)
    out = [x ** 2, x.pow(3), 2 ** x, 0.0 ** x, (-2.0) ** x, math.e ** x, x ** 0, 10 ** x, x ** 0.5]
    grads = []
    for o in out:
        x.grad = None
        o.sum().backward()
        grads.append(x.grad)
    return out, grads


# ---- shapes, reductions, indexing ------------------------------------------------------------------------------
@idiom("view(-1), view(B, -1), flatten(1), squeeze(-1), unsqueeze(0), permute, T, mT, reshape_as")
def shape_idioms(e):
    x = e.tensor(rng_array(70, 2, 3, 1))
    return (x.view(-1).shape, x.view(2, -1), x.flatten(1), x.squeeze(-1), x.unsqueeze(0).shape,
            x.permute(2, 0, 1).shape, x.squeeze().T, x.mT.shape, x.view_as(e.tensor(rng_array(71, 6))),
            x.size(), x.size(-1), x.ndim, x.dim(), x.numel(), len(x), x.shape[0])


@idiom("max/min in all forms: max(), max(dim) -> (values, indices), max(other), torch.max(x, 1), amax, argmin")
def max_min_forms(e):
    x = e.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], requires_grad=True)
    y = e.tensor([[2.0, 2.0, 2.0], [5.0, 5.0, 5.0]])
    vals, idx = x.max(dim=1)
    mn = x.min(0)
    outs = [x.max(), x.min(), vals, mn.values, x.max(y), e.T.max(x, 1)[0], x.amax(0), e.T.maximum(x, y), e.T.min(x, y)]
    sum(o.sum() for o in outs).backward()
    return outs, idx, mn.indices, x.argmin(1), x.argmax(), x.grad


@idiom("torch.where(cond, x, y), where(cond, x, 0.0), where(cond) (indices), masked_fill")
def where_forms(e):
    x = e.tensor([-1.0, 2.0, -3.0, 4.0], requires_grad=True)
    a = e.T.where(x > 0, x, e.T.zeros_like(x))
    b = e.T.where(x > 0, x, 0.0)
    c = x.masked_fill(x < -2, 0.0)
    (a * 1 + b * 2 + c * 3).sum().backward()
    return a, b, c, e.T.where(x > 0), x.grad, e.T.where(x > 0, 1.0, -1.0)


@idiom("reductions: sum(dim), mean(dim, keepdim), var(unbiased=False), std(0), norm(), clamp(min=0)")
def reductions(e):
    x = e.tensor(rng_array(72, 3, 4), requires_grad=True)
    outs = [x.sum(1), x.mean(0, keepdim=True), x.var(1, unbiased=False), x.std(0), x.norm(), x.clamp(min=0),
            x.clamp(-0.5, 0.5), e.T.sum(x), e.T.mean(x, dim=(0, 1)), x.abs().sum(-1)]
    sum(o.sum() for o in outs).backward()
    return outs, x.grad


@idiom("stack, cat, split, chunk; advanced indexing x[[0, 2]], x[idx_tensor], x[:, -1]")
def joining_and_indexing(e):
    x = e.tensor(rng_array(73, 4, 3), requires_grad=True)
    parts = x.chunk(2, dim=0)
    a, b = x.split([1, 2], dim=1)
    out = [e.T.stack([x, x], dim=0).sum(0), e.T.cat(parts, 0), a, b, x[[0, 2]], x[e.tensor([3, 3, 1])],
           x[:, -1], x[1:3, ::2]]
    sum(o.sum() for o in out).backward()
    return out, x.grad


@idiom("creation: zeros/ones/full/eye/arange(start, end, step)/full_like/empty(...).shape/tensor(scalar)")
def creation(e):
    T = e.T
    return (T.zeros(2, 3, device=e.dev), T.ones((2,), device=e.dev), T.full((2, 2), 7.0, device=e.dev),
            T.eye(3, device=e.dev), T.arange(1, 7, 2, device=e.dev), T.arange(0.0, 1.0, 0.25, device=e.dev),
            T.full_like(e.tensor([1.0, 2.0]), 3.0), T.empty(2, 5, device=e.dev).shape, e.tensor(3),
            e.tensor(2.5), T.full((2,), 4, device=e.dev), T.is_tensor(e.tensor(1)), T.is_tensor(1.0))


@idiom("x.new_zeros / new_ones / new_tensor keep x's dtype and device (HF model code)")
def new_tensors(e):
    x = e.tensor([1.0, 2.0], dtype=e.T.float64)
    return x.new_zeros(2, 3), x.new_ones((2,)), x.new_tensor([1, 2]), x.new_full((2,), 5)


@idiom("no_grad as decorator (bare), enable_grad inside no_grad, set_grad_enabled(False) block")
def grad_modes(e):
    x = e.tensor([1.0], requires_grad=True)

    @e.T.no_grad
    def f(t):
        return t * 2

    with e.T.no_grad():
        with e.T.enable_grad():
            inner = x * 2
    with e.T.set_grad_enabled(False):
        off = x * 2
    return f(x).requires_grad, inner.requires_grad, off.requires_grad, e.T.is_grad_enabled()


@idiom("softmax/log_softmax: torch.softmax(x, -1), x.softmax(-1), F.log_softmax, exp(log_softmax) = softmax")
def softmax_forms(e):
    x = e.tensor(rng_array(74, 2, 5), requires_grad=True)
    outs = [e.T.softmax(x, dim=-1), x.softmax(-1), e.F.log_softmax(x, dim=1), e.T.log_softmax(x, 0),
            e.F.log_softmax(x, -1).exp()]
    (sum(o.sum() for o in outs[2:4]) + (outs[0] * outs[0]).sum()).backward()
    return outs, x.grad


@idiom("state_dict round trip: model2.load_state_dict(model.state_dict()) gives the same outputs")
def state_dict_round_trip(e):
    m1 = load(e, e.nn.Linear(3, 2), rng_array(75, 2, 3), rng_array(76, 2)).to(e.dev)
    m2 = e.nn.Linear(3, 2).to(e.dev)
    m2.load_state_dict(m1.state_dict())
    x = e.tensor(rng_array(77, 4, 3))
    return m2(x), sorted(m1.state_dict()), m2.weight is not m1.weight


@idiom("model.zero_grad(); p.requires_grad = False freezes; sum(p.numel() for p if p.requires_grad)")
def freezing(e):
    net = e.nn.Sequential(e.nn.Linear(3, 4), e.nn.Linear(4, 2))
    for p in net[0].parameters():
        p.requires_grad = False
    out = net.to(e.dev)(e.tensor(rng_array(78, 2, 3)))
    out.sum().backward()
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    grads_none = [p.grad is None for p in net.parameters()]
    net.zero_grad()
    return trainable, grads_none, [p.grad is None for p in net.parameters()]


@idiom("Adam: three steps on a quadratic")
def adam_steps(e):
    w = e.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = e.optim.Adam([w], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ((w - 1) ** 2).sum().backward()
        opt.step()
    return w


@idiom("init in place under no_grad: weight.normal_(0, 0.02) then zero_(); bias.fill_(0.1); uniform_ shape")
def init_in_place(e):
    lin = e.nn.Linear(3, 2)
    with e.T.no_grad():
        lin.weight.normal_(0.0, 0.02)
        std = lin.weight.std().item()
        lin.weight.zero_()
        lin.bias.fill_(0.1)
        lin.bias.uniform_(-1, 1)
        in_range = bool(((lin.bias >= -1) & (lin.bias <= 1)).all())
    return lin.weight, std < 0.1, in_range, lin.weight.requires_grad


@idiom("clamp_ / masked_fill_ / div_ / mul_ / sub_ in place under no_grad, _version counts")
def inplace_family(e):
    x = e.tensor([-2.0, 0.5, 3.0])
    x.clamp_(-1, 1)
    x.mul_(2)
    x.sub_(e.tensor([1.0, 1.0, 1.0]), alpha=0.5)
    x.div_(2)
    x.masked_fill_(x < 0, 0.0)
    return x, x._version


@idiom("detach().numpy() / cpu().numpy() / .item() / .tolist() on results")
def to_numpy(e):
    x = e.tensor([[1.0, 2.0]], requires_grad=True)
    y = x * 3
    return y.detach().numpy(), y.detach().cpu().numpy(), y.sum().item(), y.tolist()


@idiom("x.sum(dtype=torch.float64), mean(dtype=...) (reductions with an accumulation dtype)")
def sum_with_dtype(e):
    x = e.tensor([1.0, 2.0], requires_grad=True)
    s = x.sum(dtype=e.T.float64) + x.mean(0, dtype=e.T.float64)
    s.backward()
    return s, x.grad, e.tensor([True, False, True]).sum(dtype=e.T.float32)


@idiom("torch.multinomial / bernoulli sampling",
       unsupported="minigrad's generators are numpy's/torch's own streams: samples cannot match torch's")
def sampling(e):
    e.T.manual_seed(0)
    return e.T.multinomial(e.tensor([0.2, 0.8]), 5, replacement=True)
