"""Elementwise ops: arithmetic and activations. Each docstring states the derivative it implements.

Binary ops may broadcast; their backward returns full-shape gradients and the engine's single
``unbroadcast`` sums them back to each input's shape. A Python number may stand for either operand.
"""
from __future__ import annotations

import math

from ..autograd import Function, rerun_forward
from .blocks import run_formula, run_kernel

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


class Add(Function):
    """z = a + b;  dz/da = 1, dz/db = 1."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """z = a - b;  dz/da = 1, dz/db = -1."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, -g if ctx.needs_input_grad[1] else None


class Mul(Function):
    """z = a * b;  dz/da = b, dz/db = a (so each side is saved only if the *other* needs a grad)."""

    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad
        ctx.save_for_backward(a if need_b else None, b if need_a else None)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Function):
    """z = a / b;  dz/da = 1/b, dz/db = -a/b^2 = -z/b."""

    @staticmethod
    def forward(ctx, a, b):
        z = a / b
        ctx.save_for_backward(b, z if ctx.needs_input_grad[1] else None)
        return z

    @staticmethod
    def backward(ctx, g):
        b, z = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        ga = g / b if need_a else None
        return ga, (-g * z / b if need_b else None)


class Neg(Function):
    """z = -a;  dz/da = -1."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    """z = a^p for a constant exponent p;  dz/da = p a^(p-1), and 0 for p = 0 (torch: not 0·0^-1)."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return a ** p

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        if ctx.p == 0:
            return g * 0, None
        return g * ctx.p * a ** (ctx.p - 1), None


class ScalarPow(Function):
    """z = c^a for a constant base c (``c ** tensor``);  dz/da = c^a ln c.

    Computed as a power, not exp(a ln c), so negative bases work at integer exponents
    ((-2)^3 = -8) and 0^0 = 1. At c = 0 the gradient is 0 where a >= 0, as in torch (ln 0 = -inf
    would give 0·(-inf) = nan); at c < 0 it is nan (ln c is undefined), also as in torch.
    """

    @staticmethod
    def forward(ctx, a, c):
        z = c ** a
        ctx.c = c
        ctx.save_for_backward(a if c == 0 else None, z)
        return z

    @staticmethod
    def backward(ctx, g):
        a, z = ctx.saved_tensors
        c = ctx.c
        if c == 0:
            return ctx.xp.where(a >= 0, 0 * g, g * z * -math.inf), None
        return g * z * (math.log(c) if c > 0 else math.nan), None


class Exp(Function):
    """z = e^a;  dz/da = e^a = z (so the output is what we keep)."""

    @staticmethod
    def forward(ctx, a):
        z = ctx.xp.exp(a)
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * z


class Log(Function):
    """z = ln a;  dz/da = 1/a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / a


class Sin(Function):
    """z = sin a;  dz/da = cos a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.sin(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * ctx.xp.cos(a)


class Cos(Function):
    """z = cos a;  dz/da = -sin a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.cos(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return -g * ctx.xp.sin(a)


class Sqrt(Function):
    """z = sqrt(a);  dz/da = 1 / (2 sqrt(a)) = 1 / (2z)."""

    @staticmethod
    def forward(ctx, a):
        z = ctx.xp.sqrt(a)
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g / (2 * z)


class Abs(Function):
    """z = |a|;  dz/da = sign(a) (0 at 0, as torch)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * ctx.xp.sign(a)


class Tanh(Function):
    """z = tanh a;  dz/da = 1 - z^2."""

    @staticmethod
    def forward(ctx, a):
        z = ctx.xp.tanh(a)
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * (1 - z * z)


class Sigmoid(Function):
    """z = 1 / (1 + e^-a);  dz/da = z (1 - z). Computed without overflow for large |a|."""

    flops_per_element = 4  # negate, exp, add, divide

    @staticmethod
    def forward(ctx, a):
        z = ctx.xp.sigmoid(a)
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * z * (1 - z)


class Relu(Function):
    """z = max(a, 0);  dz/da = 1 where a > 0, else 0 (0 at 0, as torch)."""

    @staticmethod
    def forward(ctx, a):
        z = ctx.xp.maximum(a, 0)
        ctx.save_for_backward(z)
        return z

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return g * (z > 0)


class Erf(Function):
    """z = erf a = 2/sqrt(pi) ∫_0^a e^(-t^2) dt;  dz/da = 2/sqrt(pi) e^(-a^2)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.erf(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * (2 * _INV_SQRT_PI) * ctx.xp.exp(-a * a)


class Gelu(Function):
    """GELU, fused.

    approximate='none' (BERT's "gelu"):  z = a Φ(a),  Φ(a) = (1 + erf(a/√2)) / 2,
        dz/da = Φ(a) + a φ(a),  φ(a) = e^(-a²/2) / √(2π).
    approximate='tanh' ("gelu_new"):  z = a/2 (1 + tanh u),  u = √(2/π) (a + 0.044715 a³),
        dz/da = (1 + tanh u)/2 + a/2 (1 - tanh² u) √(2/π) (1 + 3·0.044715 a²).

    numpy: these formulas (the exact forward over blocks on its thread pool), or with numba the same
    math as one compiled pass (``backend/jit.py``); torch: its native
    ``gelu`` and ``gelu_backward`` kernels, which keep only a (tanh u is recomputed where needed).
    """

    flops_per_element = 8  # erf (or tanh) plus a handful of products and sums

    @staticmethod
    def forward(ctx, a, approximate="none"):
        xp = ctx.xp
        ctx.approximate = approximate
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        y = run_kernel(xp.kernels.gelu, a, approximate)
        if y is not NotImplemented:
            ctx.save_for_backward(a, None)
            return y
        if approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a * a * a))
            ctx.save_for_backward(a, t)
            return 0.5 * a * (1 + t)
        ctx.save_for_backward(a, None)  # Φ(a) is recomputed in backward: one pass, not one array
        return run_formula(xp, xp.x_normal_cdf, a, axis=a.ndim - 1)  # a·Φ(a), Φ(a) = (1 + erf(a/√2)) / 2

    @staticmethod
    def regraph(ctx, saved, derived):
        """tanh-GELU's saved tanh rebuilt by this forward, run on the input Tensor."""
        return rerun_forward(Gelu, ctx, saved[0], "tanh")

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        a, s = ctx.saved_tensors
        ga = run_kernel(xp.kernels.gelu_backward, g, a, ctx.approximate)
        if ga is not NotImplemented:
            return ga
        if ctx.approximate == "tanh":
            if s is None:  # the native forward kept a only
                s = xp.tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a * a * a))
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * a * a)
            return g * (0.5 * (1 + s) + 0.5 * a * (1 - s * s) * du)

        def formula(g, a):
            pdf = xp.exp(-0.5 * a * a) * (_INV_SQRT_2 * _INV_SQRT_PI)
            return g * (xp.normal_cdf(a) + a * pdf)
        return run_formula(xp, formula, g, a, axis=a.ndim - 1)


class Clamp(Function):
    """z = min(max(a, lo), hi) (either bound may be None);  dz/da = 1 where lo <= a <= hi, else 0
    (torch's rule: the gradient passes at the bounds themselves)."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        ctx.save_for_backward(a)
        ctx.lo, ctx.hi = lo, hi
        return ctx.xp.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        inside = True
        if ctx.lo is not None:
            inside = a >= ctx.lo
        if ctx.hi is not None:
            inside = inside & (a <= ctx.hi)
        return ctx.xp.where(inside, g, 0)


def _pick_grads(ctx, g, a_wins):
    """Gradients of an elementwise max/min: all of g to the winner, half to each side on a tie."""
    xp, (a, b) = ctx.xp, ctx.saved_tensors
    need_a, need_b = ctx.needs_input_grad
    tie, half = a == b, g * 0.5
    ga = xp.where(a_wins, g, xp.where(tie, half, 0)) if need_a else None
    gb = xp.where(a_wins | tie, xp.where(tie, half, 0), g) if need_b else None
    return ga, gb


class Maximum(Function):
    """z = max(a, b) elementwise;  dz/da = 1 where a > b, 1/2 where a = b (ties split, as torch)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _pick_grads(ctx, g, a > b)


class Minimum(Function):
    """z = min(a, b) elementwise;  dz/da = 1 where a < b, 1/2 where a = b (ties split, as torch)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _pick_grads(ctx, g, a < b)


class Where(Function):
    """z = a where cond else b;  dz/da = cond, dz/db = not cond. ``cond`` is a raw bool array."""

    @staticmethod
    def forward(ctx, a, b, cond):
        ctx.save_for_backward(cond)
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        xp, (cond,) = ctx.xp, ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[:2]
        ga = xp.where(cond, g, 0) if need_a else None
        gb = xp.where(cond, 0, g) if need_b else None
        return ga, gb, None
