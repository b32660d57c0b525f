# %% [markdown]
# # Lesson 16 — Second order: Hessian-vector products, Newton's method, and the largest stable step
#
# Lesson 9's optimizers use only the gradient g = ∇f. The *Hessian* H = ∇²f, the matrix of second
# derivatives, says how g itself changes: the curvature. It decides how fast gradient descent can
# go (lesson 9 set its learning rate by "η < 2 divided by the curvature") and what Newton's method
# does instead. For a model with n parameters H has n² entries, far too many to build for BERT, but the
# product H v with any vector v costs about two backward passes: differentiate ⟨g, v⟩ once more.
# That needs an engine that can differentiate its own backward: `create_graph=True`.
#
# **Goal.** Compute H v by double backward and by finite differences of gradients, and check both
# against torch; run Newton's method against gradient descent; find the top eigenvalue λ of a
# BERT classifier head's Hessian by power iteration, and see 2/λ bound gradient descent's step.
#
# **Prerequisites.** Lesson 9 (gradient descent and its learning rate on Rosenbrock); lessons 1-2
# (backward, gradient checks).

# %%
import _common

import matplotlib.pyplot as plt
import numpy as np
import torch

import mini_bert as mb
import minigrad as mg
from mini_bert import data as D
from mini_bert.testing import parity_examples


def rosenbrock(x):
    """Σᵢ (1 − xᵢ)² + 100 (xᵢ₊₁ − xᵢ²)²: lesson 9's valley in n dimensions (n = 2 is lesson 9's).
    Written once for minigrad and torch tensors alike: the two share an API."""
    return ((1 - x[:-1]) ** 2 + 100 * (x[1:] - x[:-1] ** 2) ** 2).sum()


# %% [markdown]
# ## 1. H v by double backward
# The gradient g(x) is itself a function of x, computed by ops the engine can record. With
# `create_graph=True` the backward pass builds a graph for g instead of returning bare numbers;
# then one more backward of the scalar ⟨g, v⟩ gives
#
# $$\nabla_x \langle g(x), v\rangle = H(x)\, v \qquad (H \text{ is symmetric}),$$
#
# without ever forming H. The cost is about that of a forward and two backwards, whatever n is.
# `mg.autograd.grad(outputs, inputs, ...)` (torch's function) returns the gradients instead of
# adding them into `.grad`; `loss.backward(create_graph=True)` is the other spelling, where the
# `.grad` it writes is a graph node. We check both against torch's `hvp` and against torch's full
# Hessian times v, on a 6-dimensional Rosenbrock in float64.

# %%
def hvp(f, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """H(x) v for a scalar function f of one minigrad tensor: differentiate ⟨∇f, v⟩ once more."""
    xt = mg.tensor(x, dtype=mg.float64, requires_grad=True)
    (g,) = mg.autograd.grad(f(xt), [xt], create_graph=True)
    (hv,) = mg.autograd.grad((g * mg.tensor(v)).sum(), [xt])
    return hv.numpy()


def grad(f, x: np.ndarray) -> np.ndarray:
    xt = mg.tensor(x, dtype=mg.float64, requires_grad=True)
    return mg.autograd.grad(f(xt), [xt])[0].numpy()


rng = np.random.default_rng(0)
x0, v0 = rng.uniform(-1.5, 1.5, 6), rng.standard_normal(6)
ours = hvp(rosenbrock, x0, v0)
_, theirs = torch.autograd.functional.hvp(rosenbrock, torch.tensor(x0), torch.tensor(v0))
hessian = torch.autograd.functional.hessian(rosenbrock, torch.tensor(x0)).numpy()
print("H v, minigrad:", np.round(ours, 4))
print(f"relative error vs torch.autograd.functional.hvp {_common.max_rel_err(ours, theirs):.1e}, "
      f"vs torch's full Hessian @ v {_common.max_rel_err(ours, hessian @ v0):.1e}")
# float64, the same polynomial evaluated in a different order: a few ulps of the largest term.
assert _common.max_rel_err(ours, theirs) < 1e-13
assert _common.max_rel_err(ours, hessian @ v0) < 1e-13

# The same product through .grad: backward(create_graph=True) leaves a .grad that has a graph.
xt = mg.tensor(x0, requires_grad=True)
rosenbrock(xt).backward(create_graph=True)
assert xt.grad.requires_grad            # a graph node, not just numbers
(hv_via_grad,) = mg.autograd.grad((xt.grad * mg.tensor(v0)).sum(), [xt])
assert _common.max_rel_err(hv_via_grad.numpy(), theirs) < 1e-13

# %% [markdown]
# ## 2. H v by finite differences of gradients
# Without double backward, H v can be approximated from two gradients (lesson 1's central
# difference, applied to g instead of f):
#
# $$H v \approx \frac{g(x + h v) - g(x - h v)}{2h},$$
#
# with a truncation error O(h²) and a rounding error ~ε·|g|/h (ε = 2⁻⁵² in float64). The sum is
# smallest near h ~ ε^{1/3} ≈ 1e-5, where only 10 or 11 of the 16 digits survive. Double backward has
# no h and keeps all of them: that is why it is the oracle here and finite differences are not.

# %%
hs = np.logspace(-12, -1, 23)
fd_err = [_common.max_rel_err((grad(rosenbrock, x0 + h * v0) - grad(rosenbrock, x0 - h * v0)) / (2 * h),
                              theirs.numpy()) for h in hs]
best = int(np.argmin(fd_err))
print(f"finite differences: best h = {hs[best]:.0e}, relative error {fd_err[best]:.1e}")
# The V of lesson 1: the best h lies within a decade or so of ε^(1/3) ≈ 6e-6, and even there a
# good part of the digits is lost (rounding ~ε/h plus truncation ~h²), far above double backward.
assert 1e-7 <= hs[best] <= 1e-3 and 1e-13 < fd_err[best] < 1e-7
assert fd_err[0] > 1e-5 and fd_err[-1] > 1e-3   # too small an h: rounding; too large: truncation

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.loglog(hs, fd_err, "o-", label=_common.tr("finite differences of gradients",
                                             "梯度的有限差分"))
ax.axhline(_common.max_rel_err(ours, theirs) + 1e-17, color="C2", ls="--",
           label=_common.tr("double backward", "二次反向传播"))
ax.set_xlabel("h")
ax.set_ylabel(_common.tr("relative error of H v", "H v 的相对误差"))
ax.set_title(_common.tr("H v: finite differences against double backward (float64)",
                        "H v：有限差分与二次反向传播（float64）"))
ax.legend()
_common.savefig(fig, "16_hvp_finite_differences.png")

# %% [markdown]
# ## 3. Newton's method against gradient descent
# Near x the function is close to its quadratic model f(x + d) ≈ f + gᵀd + ½ dᵀH d. Newton's
# method jumps to that model's minimum, d = −H⁻¹ g; gradient descent takes d = −η g with one η
# for every direction. On lesson 9's 2-D Rosenbrock, from lesson 9's start (−1.5, 2), we build H
# from two HVPs (H e₁, H e₂: its columns), check it against torch's Hessian, and run both methods.
# Newton's steps are not all downhill (its second step climbs: the quadratic model is only local),
# but once close it converges *quadratically*: the error is squared at each step, and the number
# of correct digits doubles. Gradient descent at lesson 9's η = 1e-3 has not arrived after 1000
# steps.

# %%
START = np.array([-1.5, 2.0])


def hessian_by_hvps(f, x: np.ndarray) -> np.ndarray:
    """H column by column: H eᵢ for each unit vector eᵢ (n HVPs; fine for n = 2, not for BERT)."""
    return np.stack([hvp(f, x, e) for e in np.eye(len(x))], axis=1)


def newton_path(f, x: np.ndarray, steps: int) -> np.ndarray:
    path = [x]
    for _ in range(steps):
        x = x - np.linalg.solve(hessian_by_hvps(f, x), grad(f, x))
        path.append(x)
    return np.array(path)


def torch_newton_path(f, x: np.ndarray, steps: int) -> np.ndarray:
    x, path = torch.tensor(x), [x]
    for _ in range(steps):
        g = torch.autograd.functional.jacobian(f, x)
        x = x - torch.linalg.solve(torch.autograd.functional.hessian(f, x), g)
        path.append(x.numpy())
    return np.array(path)


h_start = hessian_by_hvps(rosenbrock, START)
print("H at the start:\n", h_start)
np.testing.assert_allclose(h_start, torch.autograd.functional.hessian(rosenbrock, torch.tensor(START)).numpy(),
                           rtol=1e-14)  # exact small integers, computed in float64
newton = newton_path(rosenbrock, START, 7)
# Same formulas on both sides; Newton's first steps amplify rounding a little (the second jumps
# far out), but the paths stay within 1e-10 and both land on (1, 1) exactly.
assert np.abs(newton - torch_newton_path(rosenbrock, START, 7)).max() < 1e-10
gd, x = [START], START
for _ in range(1000):
    x = x - 1e-3 * grad(rosenbrock, x)
    gd.append(x)
gd = np.array(gd)
err_newton = np.abs(newton - 1).max(axis=1)
print("Newton: distance to (1, 1) per step", [f"{e:.0e}" for e in err_newton])
print(f"gradient descent (η = 1e-3): after 1000 steps, distance {np.abs(gd[-1] - 1).max():.2f}")
assert err_newton[-1] < 1e-12 and np.abs(gd[-1] - 1).max() > 0.1
# Quadratic convergence: once within 0.01, each error is at most a constant times the previous
# one squared (the constant is about |f'''| / |f''| ~ 10 here), so the digits double per step.
close = [(a, b) for a, b in zip(err_newton[:-1], err_newton[1:]) if 1e-9 < a < 1e-2]
assert close and all(b <= 10 * a * a for a, b in close), close

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
gx, gy = np.meshgrid(np.linspace(-2, 2, 300), np.linspace(-3, 3, 300))
ax0.contour(gx, gy, (1 - gx) ** 2 + 100 * (gy - gx ** 2) ** 2, levels=np.logspace(-1, 3.5, 14),
            colors="0.7", linewidths=0.7)
ax0.plot(gd[:, 0], gd[:, 1], lw=1.3, label=_common.tr("gradient descent, η = 1e-3", "梯度下降，η = 1e-3"))
ax0.plot(newton[:, 0], newton[:, 1], "o-", lw=1.3, label=_common.tr("Newton", "牛顿法"))
ax0.plot(1, 1, "k*", ms=12)
ax0.set_title(_common.tr("from lesson 9's start (−1.5, 2) to the minimum ★",
                         "从第 9 课的起点 (−1.5, 2) 到最小值 ★"))
ax0.legend(fontsize=8)
ax1.semilogy(np.abs(gd - 1).max(axis=1), label=_common.tr("gradient descent", "梯度下降"))
ax1.semilogy(np.arange(len(newton)), err_newton + 1e-17, "o-", label=_common.tr("Newton", "牛顿法"))
ax1.set_xscale("symlog", linthresh=10)
ax1.set_xlabel(_common.tr("step", "步数"))
ax1.set_ylabel(_common.tr("max |x − (1, 1)|", "max |x − (1, 1)|"))
ax1.set_title(_common.tr("distance to the minimum", "到最小值的距离"))
ax1.legend()
_common.savefig(fig, "16_newton_vs_gradient_descent.png")

# %% [markdown]
# ## 4. Why η < 2/λ: one step along an eigenvector
# On the quadratic model, write the error in H's eigenvectors u with eigenvalues λ. A gradient step
# x ← x − η g multiplies the component along u by (1 − ηλ): it shrinks when |1 − ηλ| < 1, that is
# 0 < η < 2/λ, and grows (flipping sign each step: a zig-zag) when η > 2/λ. The largest
# eigenvalue λ_max, the *sharpness*, sets the limit for all directions at once. We find it
# with HVPs only, by *power iteration*: v ← H v / ‖H v‖ converges to the top eigenvector
# (when λ_max is the eigenvalue of largest size, true for a convex loss), and vᵀ H v to λ_max.
#
# Lesson 9 said the curvature across the valley at its start is ~1900. That is H's first diagonal
# entry (1902, printed above); the eigenvalue, which is what the bound needs, is larger.

# %%
def top_eigenvalue(hv, n: int, iters: int = 100, seed: int = 0) -> tuple[float, np.ndarray, list]:
    """Power iteration with a function v -> H v: (λ_max, its unit eigenvector, λ per iteration)."""
    v = np.random.default_rng(seed).standard_normal(n)
    v /= np.linalg.norm(v)
    history = []
    for _ in range(iters):
        w = hv(v)
        history.append(float(v @ w))
        v = w / np.linalg.norm(w)
    return float(v @ hv(v)), v, history


lam_start, _, _ = top_eigenvalue(lambda v: hvp(rosenbrock, START, v), 2, iters=30)
print(f"λ_max at lesson 9's start: {lam_start:.1f}, so 2/λ_max = {2 / lam_start:.2e}")
assert abs(lam_start - np.linalg.eigvalsh(h_start)[-1]) < 1e-9 * lam_start
# Lesson 9's η = 1e-3 is a hair *above* 2/λ_max at the start: its first steps zig-zag, but the
# valley's walls soften as x moves, and 2/λ_max along the path climbs above 1e-3 within a step.
assert 2 / lam_start < 1e-3
lam_after, _, _ = top_eigenvalue(lambda v: hvp(rosenbrock, gd[1], v), 2, iters=30)
print(f"after one step: λ_max = {lam_after:.0f}, 2/λ_max = {2 / lam_after:.2e}")
assert 2 / lam_after > 1e-3

# %% [markdown]
# ## 5. The sharpness of a BERT classifier head
# Lesson 10 fine-tunes MiniLM with a one-logit head and binary cross-entropy. Here the encoder is
# frozen: its pooled features x̃ = [pooler output, 1] for 64 SST-2 sentences are fixed (computed by
# mini_bert; lesson 8 matched them to HF), and only the head's 385 weights w (384 and a bias) move, on
#
# $$L(w) = \frac1N \sum_i \mathrm{BCE}(\tilde x_i^\top w,\ y_i), \qquad
# H(w) = \frac1N \sum_i \sigma(z_i)(1 - \sigma(z_i))\, \tilde x_i \tilde x_i^\top .$$
#
# Since σ(1 − σ) ≤ ¼, with equality at z = 0, the Hessian at w = 0 bounds every other one:
# λ_max(H(w)) ≤ λ_max(H(0)) =: L. So gradient descent from w = 0 with η < 2/L can never overshoot,
# and the loss falls at every step (the descent lemma); above 2/L nothing protects it. We find L
# with minigrad HVPs and power iteration, check it against torch's full 385 × 385 Hessian, and run
# gradient descent just below and above 2/L. Above it the run climbs, but not for ever: the climb
# makes the logits large, σ(1 − σ) and with it λ_max fall below 2/η, and the run descends again
# (here even ending lower than the cautious one). Training that regulates its own sharpness this
# way is said to run at the *edge of stability* (Cohen et al. 2021).

# %%
examples, names = parity_examples(64)   # SST-2 dev sentences (or the fallback corpus, announced)
y = D.label_ids(examples, names).astype(np.float64)
model_dir = mb.default_model_dir()
encoder = mb.BertModel.from_pretrained(model_dir)
with mg.no_grad():
    pooled = encoder(**D.encode_batch(mb.BertTokenizer.from_pretrained(model_dir), examples, 64)).pooler_output
X = np.hstack([pooled.numpy().astype(np.float64), np.ones((len(y), 1))])   # x̃ = [features, 1]


def head_loss(lib, w):
    """L(w) for a minigrad or torch tensor w (float64): the fused BCE of lessons 3 and 10."""
    return lib.nn.functional.binary_cross_entropy_with_logits(lib.tensor(X) @ w, lib.tensor(y))


L_max, u_top, power_history = top_eigenvalue(lambda v: hvp(lambda w: head_loss(mg, w), np.zeros(385), v), 385,
                                             iters=30)
head_hessian = torch.autograd.functional.hessian(lambda w: head_loss(torch, w), torch.zeros(385, dtype=torch.float64))
eigenvalues = np.linalg.eigvalsh(head_hessian.numpy())
print(f"λ_max by power iteration {L_max:.6f}; torch's Hessian: {eigenvalues[-1]:.6f} "
      f"(next: {eigenvalues[-2]:.4f}); 2/λ_max = {2 / L_max:.3f}")
# The gap between the top two eigenvalues is large (below), so 30 iterations converge to
# float64 rounding: the error of vᵀHv shrinks by (λ₂/λ₁)² per iteration (the figure).
assert abs(L_max - eigenvalues[-1]) < 1e-10 * eigenvalues[-1]
assert eigenvalues[-2] < 0.1 * eigenvalues[-1]
# H(0) = X̃ᵀX̃/(4N): checked against that closed form too.
assert abs(L_max - np.linalg.eigvalsh(X.T @ X / (4 * len(y)))[-1]) < 1e-10 * L_max
# The sharp direction is "move every logit the same way": all pooled features share a large
# common component, so the top eigenvector is nearly the mean feature vector.
mean_direction = X.mean(0) / np.linalg.norm(X.mean(0))
print(f"|cos(top eigenvector, mean feature)| = {abs(u_top @ mean_direction):.3f}")
assert abs(u_top @ mean_direction) > 0.9


# %%
def gradient_descent(eta: float, steps: int = 150) -> tuple[list[float], np.ndarray]:
    w, losses = mg.tensor(np.zeros(385), requires_grad=True), []
    opt = mg.optim.SGD([w], lr=eta)
    for _ in range(steps):
        opt.zero_grad()
        loss = head_loss(mg, w)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, w.detach().numpy()


below, _ = gradient_descent(0.95 * 2 / L_max)
above, w_above = gradient_descent(1.5 * 2 / L_max)
print(f"η = 0.95·2/L: loss {below[0]:.3f} -> {below[-1]:.3f}; η = 1.5·2/L: peaks at "
      f"{max(above):.3f} before ending at {above[-1]:.3f}")
assert np.all(np.diff(below) < 0)            # below 2/L: downhill at every step, as proven
assert max(above) > above[0] + 0.1           # above it: the zig-zag along u_top first climbs
lam_end, _, _ = top_eigenvalue(lambda v: hvp(lambda w: head_loss(mg, w), w_above, v), 385)
print(f"after the climb the sharpness has fallen to {lam_end:.3f} < 2/η = {2 / (1.5 * 2 / L_max):.3f}")
# ...and it recovers because the logits grew: σ(1 − σ) fell, so λ_max fell below 2/η.
assert lam_end < 2 / (1.5 * 2 / L_max)

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
ax0.semilogy(np.abs(np.array(power_history) - eigenvalues[-1]) / eigenvalues[-1] + 1e-17, "o-", ms=3)
ax0.set_xlabel(_common.tr("power iteration", "幂迭代次数"))
ax0.set_ylabel(_common.tr("|vᵀHv − λ_max| / λ_max (λ_max: torch's eigvalsh)",
                          "|vᵀHv − λ_max| / λ_max（λ_max：torch 的 eigvalsh）"))
ax0.set_title(_common.tr("the head's sharpness from HVPs: power iteration converges",
                         "由 HVP 求分类头的锐度：幂迭代的收敛"))
ax1.plot(below, label=_common.tr("η = 0.95 · 2/λ_max", "η = 0.95 · 2/λ_max"))
ax1.plot(above, label=_common.tr("η = 1.5 · 2/λ_max", "η = 1.5 · 2/λ_max"))
ax1.set_xlabel(_common.tr("gradient descent step", "梯度下降步数"))
ax1.set_ylabel(_common.tr("BCE loss of the head", "分类头的 BCE 损失"))
ax1.set_title(_common.tr("below 2/λ_max: always downhill; above: a climb first",
                         "低于 2/λ_max：每步下降；高于：先上升"))
ax1.legend()
_common.savefig(fig, "16_head_sharpness_and_step_size.png")

# %% [markdown]
# ## 6. And lesson 10's learning rates?
# Lesson 10 trains with AdamW at lr = 3e-4 (its short run), Adam at 1e-4 (the corrected loop)
# and the article's 2e-5; the head's 2/λ_max printed above is over four orders of magnitude larger.
# The two numbers do not measure the same thing: Adam is not gradient descent. Its first step
# moves every weight by about lr, in the direction s = −sign(g) (lesson 9), so the right
# question is how long a step along s may be. On the quadratic model, f(w + a s) ≈ f + a gᵀs +
# ½ a² sᵀHs falls as long as
#
# $$a < a_{\max} = \frac{2\,|g^\top s|}{s^\top H s},$$
#
# one more HVP. For the head, a_max is still hundreds of times lesson 10's lr: at lr = 3e-4 the head
# is nowhere near its stability limit, consistent with lesson 10's runs, whose loss falls without
# blowing up. What keeps fine-tuning rates small must lie in the encoder's 22 M pre-trained
# weights (a large step would undo what pre-training learned), not in the head's curvature.

# %%
w0 = mg.tensor(np.zeros(385), requires_grad=True)
g0 = mg.autograd.grad(head_loss(mg, w0), [w0])[0].numpy()
s = -np.sign(g0)
a_max = 2 * abs(g0 @ s) / (s @ hvp(lambda w: head_loss(mg, w), np.zeros(385), s))
h0 = head_hessian.numpy()
print(f"Adam-like first step: a_max = {a_max:.3f}, {a_max / 3e-4:.0f}x lesson 10's lr 3e-4")
assert abs(a_max - 2 * abs(g0 @ s) / (s @ h0 @ s)) < 1e-10 * a_max   # torch's Hessian agrees
assert a_max > 100 * 3e-4

# %% [markdown]
# ## Takeaways
# - H v costs about two backward passes: differentiate ⟨∇f, v⟩ with `create_graph=True` (or
#   `mg.autograd.grad`); it matches torch to float64 rounding, while finite differences of
#   gradients lose digits to rounding and truncation whatever h.
# - Newton's method uses H⁻¹g: quadratic convergence near the minimum, in a handful of steps where
#   gradient descent needs thousands, but it needs H (n HVPs) and is not always downhill.
# - Gradient descent is stable while η < 2/λ_max; power iteration finds λ_max with HVPs alone. For
#   a BCE head that bound holds everywhere once it holds at w = 0, and above it the loss climbs.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Why does an HVP cost a small constant times one gradient, while the full Hessian costs n
#    times that?
#
# 2. The finite-difference HVP is best near h ≈ 1e-5 in float64. What limits it on each side?
#
# 3. Why does Newton's method converge in a handful of steps near the minimum, and why can one of
#    its steps still go uphill?
#
# 4. Why is 2/λ_max the largest stable learning rate for gradient descent on a quadratic, and why,
#    for the BCE head, is λ_max at w = 0 an upper bound for the whole run?
#
# 5. Lesson 10's lr = 3e-4 is far below the head's 2/λ_max. Why is that comparison not enough for
#    Adam, and what does a_max measure instead?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. H v is the gradient of one scalar, ⟨∇f, v⟩, whose graph is the backward pass of f: one more
#    backward through it costs a small multiple of a gradient. The full Hessian needs H eᵢ for all
#    n unit vectors: n such products.
#
# 2. Truncation: the central difference has an error O(h²) (third derivatives), which dominates
#    for large h. Rounding: each gradient carries errors ~ε|g|, divided by 2h, which dominates for
#    small h. The sum is smallest near h ~ ε^{1/3}.
#
# 3. Close to the minimum the function is nearly its quadratic model, and Newton's step goes to
#    that model's minimum: the error left is of the order of the error squared. Far from it the
#    model is poor and H may not even be positive definite, so the step can overshoot uphill (the
#    second step on Rosenbrock).
#
# 4. Along an eigenvector with eigenvalue λ a gradient step multiplies the error by (1 − ηλ), which
#    shrinks only if η < 2/λ; λ_max is the strictest. The head's Hessian is (1/N) Σ σ(1−σ) x̃ x̃ᵀ
#    and σ(1−σ) ≤ ¼ with equality at w = 0, so H(w) ≤ H(0) and no point is sharper.
#
# 5. Adam rescales each coordinate by its gradient size, so its step is about lr per weight, not
#    lr·g: the GD bound 2/λ does not apply to it. a_max is the longest step along Adam's first
#    direction −sign(g) for which the quadratic model still decreases; it is still hundreds of times
#    3e-4, so the head does not limit lesson 10's learning rate.
