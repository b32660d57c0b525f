# %% [markdown]
# # Lesson 2 — Tensors, broadcasting, and checking gradients
#
# Lesson 1 differentiated scalars. Real layers work on whole batches at once: a linear layer maps
# a batch X of shape [B, D] to Y = X W + b, with one bias vector b of shape [H] shared by all B
# rows. The rule that lets [B, H] + [H] work is *broadcasting*; this lesson is about what it does to
# gradients, and about `gradcheck`, the tool that tells a right backward from a wrong one.
#
# **Goal.** (1) See why the gradient of a broadcast input must be *summed* back to its own shape.
# (2) Use `mg.gradcheck` to verify ops against finite differences. (3) Write a custom op with a
# deliberately wrong backward and watch gradcheck catch it.
#
# **Prerequisites.** Lesson 1 (chain rule, backward pass, finite differences).

# %%
import _common

import matplotlib.pyplot as plt
import numpy as np
import torch

import minigrad as mg
from minigrad.autograd import unbroadcast
from minigrad.nn import functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A bias shared by a batch
# Y = X W + b with X [4, 3], W [3, 2], b [2]. Broadcasting copies b into each of the 4 rows. To
# see the gradients clearly, take L = Σ G ⊙ Y for a fixed random G: then ∂L/∂Y = G exactly.
#
# - ∂L/∂W = Xᵀ G and ∂L/∂X = G Wᵀ (the matrix form of the chain rule for a product).
# - b feeds all 4 rows, and (lesson 1, §6) a value used several times gets the *sum* of the
#   gradients from every use: ∂L/∂b = Σ over rows of G, shape [2], the shape of b.

# %%
B, D, H = 4, 3, 2
X_np, W_np, b_np, G_np = (rng.standard_normal(s) for s in [(B, D), (D, H), (H,), (B, H)])
X, W, b = (mg.tensor(a, dtype=mg.float64, requires_grad=True) for a in (X_np, W_np, b_np))
G = mg.tensor(G_np, dtype=mg.float64)

Y = X @ W + b
(Y * G).sum().backward()
print("Y.shape", Y.shape, " b.shape", b.shape, " b.grad.shape", b.grad.shape)
print("b.grad         =", b.grad.numpy())
print("G summed over B =", G_np.sum(axis=0))

# Same float64 products/sums in a possibly different order: agreement to 1e-12 is expected.
assert b.grad.shape == b.shape and W.grad.shape == W.shape and X.grad.shape == X.shape
np.testing.assert_allclose(b.grad.numpy(), G_np.sum(axis=0), rtol=0, atol=1e-12)
np.testing.assert_allclose(W.grad.numpy(), X_np.T @ G_np, rtol=0, atol=1e-12)
np.testing.assert_allclose(X.grad.numpy(), G_np @ W_np.T, rtol=0, atol=1e-12)

# %% [markdown]
# ## 2. The general rule: `unbroadcast`
# Broadcasting an input of shape `s` to a bigger output shape does two things: it *prepends* dims
# (a [3] becomes [1, 3] then [4, 3]) and it *stretches* dims of size 1. The gradient has the output's
# shape, so backward must undo both: sum over the prepended dims, and sum (keeping a size-1 dim)
# over the stretched ones.
#
# minigrad does this in exactly one place, `minigrad.autograd.unbroadcast`, which the engine applies
# to every gradient on its way to an input. No op's backward has to think about broadcasting.
# Below, each case is checked three ways: the engine's `.grad`, explicit numpy sums, and torch.

# %%
cases = [  # (input shape, output shape it is broadcast to, the sum that must undo it)
    ((3,), (4, 3), lambda g: g.sum(axis=0)),
    ((4, 1), (4, 3), lambda g: g.sum(axis=1, keepdims=True)),
    ((1, 3), (2, 4, 3), lambda g: g.sum(axis=(0, 1))[None, :]),
    ((2, 1, 3), (2, 4, 3), lambda g: g.sum(axis=1, keepdims=True)),
    ((), (2, 3), lambda g: g.sum()),
]
print(f"{'input':>10} {'broadcast to':>14} {'grad shape':>12}")
for in_shape, out_shape, by_hand in cases:
    a_np, g_np = rng.standard_normal(in_shape), rng.standard_normal(out_shape)
    a = mg.tensor(a_np, dtype=mg.float64, requires_grad=True)
    (((a + mg.zeros(out_shape, dtype=mg.float64)) * mg.tensor(g_np)).sum()).backward()
    ta = torch.tensor(a_np, requires_grad=True)
    ((ta + torch.zeros(out_shape, dtype=torch.float64)) * torch.tensor(g_np)).sum().backward()
    print(f"{str(in_shape):>10} {str(out_shape):>14} {str(a.grad.shape):>12}")
    assert a.grad.shape == in_shape
    np.testing.assert_allclose(a.grad.numpy(), by_hand(g_np), rtol=0, atol=1e-12)
    np.testing.assert_allclose(unbroadcast(np, g_np, in_shape), by_hand(g_np), rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), ta.grad.numpy(), rtol=0, atol=1e-12)

# %% [markdown]
# Why the shape matters in practice: an optimizer updates `p -= lr * p.grad` in place. If the
# gradient of b kept the batch's shape [4, 2], that update could not even be written into b's [2]
# storage; and a gradient that was *averaged* instead of summed would silently be 4× too small.

# %%
try:
    b_copy = b_np.copy()
    b_copy -= 0.1 * G_np  # the [4, 2] gradient, not unbroadcast
    raise AssertionError("an in-place update with a batch-shaped gradient should have failed")
except ValueError as e:
    print("updating b with a [4, 2] gradient fails:", e)

# %% [markdown]
# ## 3. `gradcheck`: every op against finite differences
# `mg.gradcheck(fn, inputs)` builds the full Jacobian twice: from backward (one backward pass per
# output element, seeded with a one-hot vector) and from central finite differences (two forward
# passes per input element). It insists on float64: lesson 1 showed float32 differences carry
# errors ~1e-5, as large as the bugs we hunt. Here it checks a few ops, broadcasting included.

# %%
def f64(*shape: int) -> mg.Tensor:
    return mg.tensor(rng.standard_normal(shape), dtype=mg.float64, requires_grad=True)


checks = {
    "broadcast mul [3,1]*[1,4]": (lambda a, c: a * c, [f64(3, 1), f64(1, 4)]),
    "batched matmul [2,3,4]@[4,5]": (lambda a, c: a @ c, [f64(2, 3, 4), f64(4, 5)]),
    "division with broadcasting": (lambda a, c: a / (c * c + 1.0), [f64(2, 3), f64(3)]),
    "softmax over the last dim": (lambda a: F.softmax(a, dim=-1), [f64(2, 5)]),
    "gelu (exact erf)": (lambda a: F.gelu(a), [f64(7)]),
    "max over a dim": (lambda a: a.max(dim=1).values, [f64(3, 4)]),
    "indexing with a repeated row": (lambda a: a[[0, 0, 2]], [f64(3, 2)]),
    "variance (unbiased)": (lambda a: a.var(dim=0), [f64(5, 2)]),
}
for name, (fn, inputs) in checks.items():
    assert mg.gradcheck(fn, inputs), name  # raises GradcheckError naming the worst element
    print(f"gradcheck ok: {name}")

# %% [markdown]
# ## 4. A custom op, and a bug that gradcheck catches
# A new op is a `mg.Function` subclass: `forward` computes on raw arrays (through `ctx.xp`, the
# backend) and saves what backward needs; `backward` receives ∂L/∂output and returns ∂L/∂input.
#
# Softplus: y = log(1 + eˣ), with dy/dx = σ(x). We write it once correctly, and once with the most
# common backward bug there is: returning the local derivative σ(x) but *forgetting to multiply by
# the incoming gradient* g. The result has the right shape and even the right values when g is all
# ones (as for `y.sum().backward()`!), so a quick test can pass. gradcheck seeds backward with
# one-hot vectors, not ones, so it cannot be fooled.


# %%
class Softplus(mg.Function):
    """y = log(1 + e^x), computed as max(x, 0) + log(1 + e^-|x|) so e^x never overflows.
    dy/dx = σ(x)."""

    @staticmethod
    def forward(ctx, x):
        xp = ctx.xp
        ctx.save_for_backward(x)
        return xp.maximum(x, 0) + xp.log(1 + xp.exp(-xp.abs(x)))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.xp.sigmoid(x)


class BuggySoftplus(Softplus):
    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return ctx.xp.sigmoid(x)  # BUG: the chain rule needs g * σ(x)


x = f64(6)
assert mg.gradcheck(Softplus.apply, [x])

# The bug is invisible to a loss that is a plain sum (g = 1 everywhere)...
for op in (Softplus, BuggySoftplus):
    x.grad = None
    op.apply(x).sum().backward()
    print(f"{op.__name__:>14}: grad of sum = {np.round(x.grad.numpy(), 4)}")
sum_grad_buggy = x.grad.numpy().copy()
np.testing.assert_allclose(sum_grad_buggy, 1 / (1 + np.exp(-x.numpy())), rtol=1e-12)

# ... but not to gradcheck.
try:
    mg.gradcheck(BuggySoftplus.apply, [x])
    raise AssertionError("gradcheck should have rejected BuggySoftplus")
except mg.GradcheckError as e:
    print("gradcheck caught the bug:", e)

# %% [markdown]
# What gradcheck saw. Softplus acts elementwise, so its true Jacobian ∂yᵢ/∂xⱼ is diagonal. The buggy
# backward returns σ(x) whatever the seed, so every row of its "Jacobian" is the whole vector σ(x).
# We rebuild both matrices the way gradcheck does (one seed per row, two forward passes per
# column) to draw them.


# %%
def jacobians(op: type, x: mg.Tensor, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(from backward, from central differences) Jacobians of an elementwise op at x (1-D)."""
    n = x.shape[0]
    rows = []
    for i in range(n):
        x.grad = None
        op.apply(x).backward(mg.tensor(np.eye(n)[i]))  # seed e_i gives row i: ∂y_i/∂x
        rows.append(x.grad.numpy())
    base = x.numpy()
    with mg.no_grad():
        cols = [(op.apply(mg.tensor(base + eps * e)).numpy()
                 - op.apply(mg.tensor(base - eps * e)).numpy()) / (2 * eps) for e in np.eye(n)]
    return np.array(rows), np.stack(cols, axis=1)


J_good, J_fd = jacobians(Softplus, x)
J_bad, _ = jacobians(BuggySoftplus, x)
# Central differences in float64 with eps = 1e-6: error ~1e-10 (lesson 1), so 1e-8 is safe.
np.testing.assert_allclose(J_good, J_fd, atol=1e-8)
assert np.abs(J_bad - J_fd).max() > 0.1  # the bug is not a rounding effect

fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
for ax, M, title in zip(axes, (J_fd, J_good, J_bad),
                        (_common.tr("finite differences", "有限差分"),
                         _common.tr("correct backward", "正确的backward"),
                         _common.tr("buggy backward (no g ×)", "有bug的backward（漏乘g）"))):
    im = ax.imshow(M, cmap="viridis", vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_xlabel(_common.tr("input j", "输入j"))
    ax.set_ylabel(_common.tr("output i", "输出i"))
fig.colorbar(im, ax=axes, shrink=0.8, label="∂yᵢ/∂xⱼ")
_common.savefig(fig, "02_softplus_jacobians.png")

# %% [markdown]
# ## Takeaways
# - A gradient always has the shape of the thing it is the gradient *of*. Broadcast inputs get
#   their gradient summed over every copy; minigrad does this once, in `unbroadcast`.
# - Test backward with a random upstream gradient, never only with `.sum().backward()`.
# - `gradcheck` in float64 is the referee for every op in this course. torch has one too
#   (`torch.autograd.gradcheck`) and it works the same way.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. In Y = X W + b with X [B, D] and b [H], what is the shape of ∂L/∂b, and why is it a sum over
#    the batch rather than a mean?
#
# 2. An input of shape [3, 1] is broadcast in an op whose output has shape [2, 3, 4]. Which axes
#    of the output's gradient does `unbroadcast` sum, and what shape comes out?
#
# 3. A backward that forgets to multiply by the incoming gradient g passes a test written with
#    `y.sum().backward()`. Why, and why does gradcheck catch it?
#
# 4. For a function with n input elements and m output elements, how many backward and forward
#    passes does gradcheck run? Why is that fine in tests but never used in training?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. [H], the shape of b: a gradient always has the shape of what it is the gradient of.
#    Broadcasting uses b once per row, and a value used several times receives the sum of the
#    gradients of its uses. A mean would be the gradient of another function; if the loss averages
#    over the batch, that 1/B is already inside ∂L/∂Y.
#
# 2. The input is read as [1, 3, 1]: one dim prepended, then stretched along that dim (to 2) and
#    the last one (to 4). So sum over axis 0 and drop it (prepended), sum over the last axis
#    keeping it as size 1 (stretched); the middle axis matches and is not summed. Result: [3, 1].
#
# 3. The backward of sum seeds g = 1 everywhere, and 1 · σ(x) = σ(x): the missing factor is
#    invisible. gradcheck seeds one one-hot vector per output element, so the buggy backward
#    returns the whole σ(x) where only one entry should be non-zero.
#
# 4. m backward passes (one one-hot seed per output element, one Jacobian row each) and 2n forward
#    passes (central differences, two per input element). That builds the full m × n Jacobian:
#    fine for tensors of a few dozen numbers, hopeless for millions of parameters, where training
#    needs only one backward of a scalar loss.
