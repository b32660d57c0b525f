# %% [markdown]
# # Lesson 3 — Deriving the binary cross-entropy gradient (the article's §4.2)
#
# The source article fine-tunes a classifier with the binary cross-entropy loss. For one example
# with predicted probability ŷ = M_θ(x) ∈ [0, 1] and label y ∈ {0, 1}:
#
# $$\ell(\hat{y}, y) = -\left[\, y \log \hat{y} + (1 - y) \log(1 - \hat{y}) \,\right]$$
#
# and for a data set of N examples, L = (1/N) Σᵢ ℓ(ŷᵢ, yᵢ). Its §4.2 gives the gradient
#
# $$\frac{\partial L}{\partial \theta} = -\frac{1}{N} \sum_i \left( \frac{y_i}{M_\theta(x_i)} - \frac{1 - y_i}{1 - M_\theta(x_i)} \right) \frac{\partial M_\theta(x_i)}{\partial \theta}$$
#
# **Goal.** Finish that derivation for the usual case ŷ = σ(z), where z is the model's *logit*;
# check every form numerically; then see why the formula as written breaks in floating point and
# why every framework offers a fused "BCE with logits" instead.
#
# **Prerequisites.** Lessons 1–2.
#
# ## The derivation
# Differentiate ℓ with respect to ŷ (the article's bracket, with the minus sign):
#
# $$\frac{\partial \ell}{\partial \hat{y}} = -\left( \frac{y}{\hat{y}} - \frac{1 - y}{1 - \hat{y}} \right) = \frac{\hat{y} - y}{\hat{y}\,(1 - \hat{y})}$$
#
# The sigmoid's derivative is σ'(z) = σ(z)(1 − σ(z)) = ŷ(1 − ŷ): exactly the denominator above.
# By the chain rule it cancels:
#
# $$\frac{\partial \ell}{\partial z} = \frac{\partial \ell}{\partial \hat{y}} \cdot \frac{\partial \hat{y}}{\partial z} = \frac{\hat{y} - y}{\hat{y}(1 - \hat{y})} \cdot \hat{y}(1 - \hat{y}) = \sigma(z) - y$$
#
# so for the mean loss, ∂L/∂zᵢ = (σ(zᵢ) − yᵢ)/N: prediction minus label, nothing to divide by.
# For logistic regression z = w·x + b this gives ∂L/∂w = (1/N) Σᵢ (σ(zᵢ) − yᵢ) xᵢ.

# %%
import _common

import matplotlib.pyplot as plt
import numpy as np
import torch

import minigrad as mg
from minigrad.nn import functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Checking the derivation on a logistic regression
# N = 8 examples with 3 features; θ = (w, b). We compute ∂L/∂w four ways in float64:
# the article's formula, the simplified (σ(z) − y)/N form, minigrad's autograd, and torch.

# %%
N, D = 8, 3
X_np = rng.standard_normal((N, D))
y_np = rng.integers(0, 2, N).astype(np.float64)
w_np, b_val = rng.standard_normal(D), 0.1

z_np = X_np @ w_np + b_val
y_hat = 1 / (1 + np.exp(-z_np))
dyhat_dw = (y_hat * (1 - y_hat))[:, None] * X_np  # ∂M_θ(xᵢ)/∂w = σ'(zᵢ) xᵢ
grad_article = -np.mean((y_np / y_hat - (1 - y_np) / (1 - y_hat))[:, None] * dyhat_dw, axis=0)
# BEGIN SOLUTION a2-logreg-grad
grad_simple = X_np.T @ (y_hat - y_np) / N
# END SOLUTION a2-logreg-grad

w = mg.tensor(w_np, dtype=mg.float64, requires_grad=True)
X, y = mg.tensor(X_np), mg.tensor(y_np)
loss = F.binary_cross_entropy_with_logits(X @ w + b_val, y)
loss.backward()

tw = torch.tensor(w_np, requires_grad=True)
t_loss = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(X_np) @ tw + b_val,
                                                              torch.tensor(y_np))
t_loss.backward()

print("article formula :", grad_article)
print("(σ(z) − y)/N · x :", grad_simple)
print("minigrad        :", w.grad.numpy())
print("torch           :", tw.grad.numpy())
# All four are float64 evaluations of one formula in different orders: a few ulps apart at most.
for g in (grad_simple, w.grad.numpy(), tw.grad.numpy()):
    np.testing.assert_allclose(g, grad_article, rtol=1e-10, atol=1e-14)
np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-12)

# %% [markdown]
# And against finite differences, with no calculus at all: `gradcheck` wiggles each wᵢ.

# %%
assert mg.gradcheck(lambda w: F.binary_cross_entropy_with_logits(X @ w + b_val, y), [w])
print("gradcheck: ∂L/∂w matches central differences")

# %% [markdown]
# ## 2. The same loss, written naively, in float32
# Written exactly as the formula reads, the loss is a chain of primitive ops:
# `p = z.sigmoid(); ℓ = −(y·log p + (1 − y)·log(1 − p))`. Autograd differentiates that chain
# node by node, so it computes the *uncancelled* product (ŷ − y)/(ŷ(1 − ŷ)) · ŷ(1 − ŷ) — and in
# float32 (what models train in) σ(z) = 1/(1 + e^(−z)) rounds to exactly 1.0 once 1 + e^(−z) rounds
# to 1, i.e. e^(−z) < 2⁻²⁴ (half the spacing of float32 numbers just above 1): z > 24 ln 2 ≈ 16.64.
# Then log(1 − p) = log 0 = −inf, the division by ŷ(1 − ŷ) = 0 gives inf, and inf · 0 = nan.
# Even the *correct* label breaks it: 0 · log 0 = 0 · (−inf) = nan.
#
# Torch's `binary_cross_entropy` (on probabilities) has two guards, and it is the second that
# matters for training:
# - the forward clamps each log at −100, so the *loss* stays finite (at most 100);
# - the backward computes ∂ℓ/∂ŷ = (ŷ − y) / max(ŷ(1 − ŷ), 1e-12) (ATen's
#   `binary_cross_entropy_backward`; minigrad's `BinaryCrossEntropy.backward` copies it).
#
# Chained with the sigmoid's ∂ŷ/∂z = ŷ(1 − ŷ), the gradient on the logit is
#
# $$\frac{\partial \ell}{\partial z} = \frac{(\hat{y} - y)\, \hat{y}(1 - \hat{y})}{\max\left(\hat{y}(1 - \hat{y}),\ 10^{-12}\right)}$$
#
# which is exactly σ(z) − y while ŷ(1 − ŷ) ≥ 1e-12, and (ŷ − y) · ŷ(1 − ŷ) · 10¹² below that: it
# shrinks by a factor e for every unit z moves further out. For y = 1 and z < 0, ŷ(1 − ŷ) ≈ e^z
# falls below 1e-12 at z = ln(1e-12) ≈ −27.6, so the gradient collapses there, long before the log
# clamp does anything (log ŷ < −100 needs z < −100): at z = −50 the loss is an honest 50, yet the
# gradient is 2·10⁻¹⁰ instead of −1. On the other side (y = 0, z > 0), float32 σ(z) already rounds
# to exactly 1 at z ≈ 16.64; then ŷ(1 − ŷ) = 0 in both factors, and the clamp turns
# (ŷ − y)/0 · 0 = nan into (ŷ − y)/10⁻¹² · 0 = 0. Either way the most wrongly classified examples
# stop teaching the model anything.
#
# The fused `binary_cross_entropy_with_logits` takes z, never forms σ(z) for the loss, and computes
#
# $$\ell(z, y) = \max(z, 0) - z y + \log\left(1 + e^{-|z|}\right) \qquad \text{(algebraically equal to the formula above)}$$
# $$\frac{\partial \ell}{\partial z} = \sigma(z) - y$$
#
# where e^(−|z|) ≤ 1 can never overflow and no division appears.

# %%
assert mg.tensor(20.0).sigmoid().item() == 1.0  # float32: σ(20) = 1 − 2e-9 rounds to 1


def per_example(z_vals: np.ndarray, y_vals: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-example loss and ∂ℓ/∂z (reduction='sum') in float32, for each way of writing BCE."""
    out = {}
    with np.errstate(all="ignore"):  # the naive forms hit log(0) and inf·0 on purpose
        for name in ("naive", "clamped", "fused"):
            z = mg.tensor(z_vals, dtype=mg.float32, requires_grad=True)
            yt = mg.tensor(y_vals, dtype=mg.float32)
            if name == "naive":
                p = z.sigmoid()
                ell = -(yt * p.log() + (1 - yt) * (1 - p).log())
            elif name == "clamped":
                ell = F.binary_cross_entropy(z.sigmoid(), yt, reduction="none")
            else:
                ell = F.binary_cross_entropy_with_logits(z, yt, reduction="none")
            ell.sum().backward()
            out[name] = (ell.numpy(), z.grad.numpy())
        for name, loss_fn in (("torch naive", None),
                              ("torch clamped", torch.nn.functional.binary_cross_entropy),
                              ("torch fused", torch.nn.functional.binary_cross_entropy_with_logits)):
            z = torch.tensor(z_vals, dtype=torch.float32, requires_grad=True)
            yt = torch.tensor(y_vals, dtype=torch.float32)
            if loss_fn is None:
                p = torch.sigmoid(z)
                ell = -(yt * p.log() + (1 - yt) * (1 - p).log())
            elif name == "torch clamped":
                ell = loss_fn(torch.sigmoid(z), yt, reduction="none")
            else:
                ell = loss_fn(z, yt, reduction="none")
            ell.sum().backward()
            out[name] = (ell.detach().numpy(), z.grad.numpy())
    return out


z_cases = np.array([-100, -100, -20, -20, 20, 20, 100, 100], dtype=np.float64)
y_cases = np.array([0, 1, 0, 1, 0, 1, 0, 1], dtype=np.float64)
res = per_example(z_cases, y_cases)
exact = 1 / (1 + np.exp(-z_cases)) - y_cases  # σ(z) − y, in float64

print("∂ℓ/∂z per example (reduction='sum', float32); 'exact' is σ(z) − y in float64")
print(f"{'z':>6} {'y':>3} {'exact':>10} " + " ".join(f"{k:>13}" for k in res))
for i, (zv, yv) in enumerate(zip(z_cases, y_cases)):
    print(f"{zv:>6.0f} {yv:>3.0f} {exact[i]:>10.3g} " + " ".join(f"{res[k][1][i]:>13.3g}" for k in res))


# %% [markdown]
# What the table shows, asserted:
# - fused (minigrad and torch) gives σ(z) − y everywhere;
# - the naive chain fails (non-finite or wrong by ~1) whenever σ(z) saturates: at z = +20 and
#   z = +100 whatever the label, and at z = −100 for y = 1; torch's naive chain fails the same way
#   (and a little more often: its float32 σ(−100) underflows to 0);
# - the clamped version stays finite but returns ≈ 0 where the true gradient is ±1.

# %%
def fails(g: np.ndarray) -> np.ndarray:
    """True where a gradient is unusable: not finite, or off from σ(z) − y by more than 0.5."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(g) | (np.abs(g - exact) > 0.5)


# Where σ(z) is unusable in float32: it rounds to exactly 1 (z ≥ 20), or, at z = −100, it is a
# denormal 3.7e-44 whose reciprocal overflows (that matters when the label is 1 and log p is used).
naive_breaks = (z_cases >= 20) | ((z_cases <= -100) & (y_cases == 1))
# float32 σ(z) − y: rounding ~6e-8 relative to σ; absolute 1e-6 is a wide margin.
for k in ("fused", "torch fused"):
    np.testing.assert_allclose(res[k][1], exact, rtol=0, atol=1e-6, err_msg=k)
np.testing.assert_allclose(res["fused"][0], res["torch fused"][0], rtol=1e-6, atol=1e-6)
for k in ("naive", "torch naive"):
    assert fails(res[k][1])[naive_breaks].all(), k
wrong_label = np.abs(exact) > 0.5  # confidently wrong: the true gradient is ±1
for k in ("clamped", "torch clamped"):
    assert np.isfinite(res[k][1]).all(), k
    assert (np.abs(res[k][1][wrong_label & naive_breaks]) < 1e-6).all(), k
print("(z, y) where the naive chain fails:",
      [(int(a), int(b)) for a, b in zip(z_cases[naive_breaks], y_cases[naive_breaks])])

# %% [markdown]
# ### Where the clamped gradient collapses, found by scanning torch
# Scan z downwards from −20 with y = 1 and ask torch itself for ∂ℓ/∂z of BCE on σ(z). The clamp
# predicts the whole curve: σ(z) − y down to z* = ln(1e-12) ≈ −27.6, then (ŷ − y)·ŷ(1 − ŷ)·10¹²,
# which has lost half its size at z ≈ ln(0.5·10⁻¹²) ≈ −28.3.

# %%
def clamped_grad(z_vals: np.ndarray, label: float, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Torch's per-example loss and ∂ℓ/∂z for binary_cross_entropy(sigmoid(z), y)."""
    zt = torch.tensor(z_vals, dtype=dtype, requires_grad=True)
    ell = torch.nn.functional.binary_cross_entropy(torch.sigmoid(zt), torch.full_like(zt, label),
                                                   reduction="none")
    ell.sum().backward()
    return ell.detach().numpy(), zt.grad.numpy()


z_scan = np.arange(-20.0, -60.0, -0.01)
_, g64 = clamped_grad(z_scan, 1.0, torch.float64)
s64 = 1 / (1 + np.exp(-z_scan))
predicted = (s64 - 1) * s64 * (1 - s64) / np.maximum(s64 * (1 - s64), 1e-12)
# float64 σ and torch's kernel round differently by a few ulp, relative to each value.
np.testing.assert_allclose(g64, predicted, rtol=1e-7)
z_star = np.log(1e-12 / (1 - 1e-12))  # ŷ(1 − ŷ) = 1e-12 exactly here
above = z_scan > z_star
np.testing.assert_allclose(g64[above], s64[above] - 1, rtol=1e-9)  # the clamp is inactive: σ(z) − y
z_half = z_scan[np.argmax(np.abs(g64) < 0.5)]  # first z (scanning down) with half the gradient gone
assert abs(z_half - np.log(0.5e-12)) < 0.011, z_half  # one grid step of the prediction
# minigrad copies the clamp, so it collapses at the same place (float32, relative rounding 1e-6).
zm = mg.tensor(z_scan, dtype=mg.float32, requires_grad=True)
F.binary_cross_entropy(zm.sigmoid(), mg.ones(len(z_scan)), reduction="sum").backward()
_, g32 = clamped_grad(z_scan, 1.0, torch.float32)
np.testing.assert_allclose(zm.grad.numpy(), g32, rtol=1e-5, atol=1e-30)
np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-30)

# At z = −50 the log clamp is not involved (the loss is 50, not 100) but the gradient is gone.
loss50, grad50 = clamped_grad(np.array([-50.0]), 1.0, torch.float32)
assert abs(loss50[0] - 50.0) < 1e-4 and abs(grad50[0]) < 1e-9, (loss50, grad50)

# y = 0, z > 0 in float32: the gradient drops to exactly 0 where σ(z) rounds to 1.
z_pos = np.arange(10.0, 30.0, 0.01)
_, gpos = clamped_grad(z_pos, 0.0, torch.float32)
sat = torch.sigmoid(torch.tensor(z_pos, dtype=torch.float32)).numpy() == 1.0
z_sat = z_pos[np.argmax(sat)]
assert sat[np.argmax(sat):].all() and (gpos[sat] == 0).all() and (gpos[~sat] > 0.99).all()
assert abs(z_sat - 24 * np.log(2)) < 0.011, z_sat  # 1 + e^(−z) rounds to 1: e^(−z) < 2⁻²⁴, one grid step
print(f"y = 1: ∂ℓ/∂z = σ(z) − y down to z* = {z_star:.2f}, half gone at z = {z_half:.2f}, "
      f"{grad50[0]:.2g} at z = −50 (loss {loss50[0]:.1f})")
print(f"y = 0, float32: ∂ℓ/∂z is exactly 0 from z = {z_sat:.2f}, where σ(z) rounds to 1")


# %% [markdown]
# ## 3. The picture
# Loss and gradient as functions of z, for each label. Red crosses mark where the naive chain
# returns inf or nan (drawn at the edge of the plot, since they have no value).

# %%
z_grid = np.linspace(-120, 120, 481)
fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
for col, label in enumerate((1.0, 0.0)):
    r = per_example(z_grid, np.full_like(z_grid, label))
    for row, (what, ylim) in enumerate(((_common.tr("loss", "损失"), (-5, 130)), ("∂ℓ/∂z", (-1.3, 1.3)))):
        ax = axes[row, col]
        fused, naive, clamped = r["fused"][row], r["naive"][row], r["clamped"][row]
        ax.plot(z_grid, fused, lw=2.5,
                label=_common.tr("fused with logits = exact", "基于logit的融合版本 = 精确值"))
        ax.plot(z_grid, clamped, "--", lw=1.5,
                label=_common.tr("BCE on σ(z), log clamped at −100", "对σ(z)求BCE，log截断于−100"))
        ok = np.isfinite(naive)
        ax.plot(z_grid[ok], naive[ok], ".", ms=3,
                label=_common.tr("naive log/sigmoid chain", "朴素的log/sigmoid链"))
        ax.plot(z_grid[~ok], np.full((~ok).sum(), ylim[1] * 0.95), "x", color="red", ms=4,
                label=_common.tr("naive: inf / nan", "朴素版本：inf / nan"))
        ax.set_ylim(*ylim)
        ax.set_title(f"y = {label:.0f}: {what}")
        ax.grid(alpha=0.3)
    axes[1, col].set_xlabel("logit z")
axes[0, 0].legend(fontsize=8, loc="center right")
_common.savefig(fig, "03_bce_naive_vs_fused.png")

# The fused gradient over the whole grid equals σ(z) − y (float32 rounding, as above).
for label in (0.0, 1.0):
    g = per_example(z_grid, np.full_like(z_grid, label))["fused"][1]
    np.testing.assert_allclose(g, 1 / (1 + np.exp(-z_grid)) - label, rtol=0, atol=1e-6)

# %% [markdown]
# ## Takeaways
# - The article's formula is right, and with ŷ = σ(z) it collapses to ∂ℓ/∂z = σ(z) − y.
# - Never build the loss as log(sigmoid(z)) in code: the cancellation that makes the math clean
#   cannot happen in floating point once σ saturates. Use the fused loss on logits:
#   `F.binary_cross_entropy_with_logits` here, `BCEWithLogitsLoss` in torch.
# - A classifier with two outputs trained with cross-entropy (as in the article's §5.2 code) is the
#   same loss in disguise; lesson 4 shows that softmax cross-entropy has the same σ − y shape.

# %% [markdown] tags=["questions"]
# ## Check your understanding
#
# 1. Starting from the article's ∂L/∂θ, what cancels when ŷ = σ(z), and what is ∂L/∂zᵢ?
#
# 2. Why does the naive chain −[y log σ(z) + (1 − y) log(1 − σ(z))] give nan at z = 20 even when y
#    = 1, the correct label?
#
# 3. Torch's `binary_cross_entropy(sigmoid(z), y)` gives ∂ℓ/∂z ≈ −2·10⁻¹⁰ at z = −50, y = 1,
#    although the loss is an honest 50. Which guard causes it, and why is the −100 log clamp not
#    involved?
#
# 4. Write the fused loss on logits. Why can it neither overflow nor divide by zero, and why does
#    that matter for the most wrongly classified examples?

# %% [markdown] tags=["answers"]
# ## Answers
#
# 1. ∂ℓ/∂ŷ = (ŷ − y)/(ŷ(1 − ŷ)) and σ'(z) = ŷ(1 − ŷ): the denominator cancels and ∂ℓ/∂z = σ(z) −
#    y. For the mean over N examples, ∂L/∂zᵢ = (σ(zᵢ) − yᵢ)/N, and ∂L/∂θ = (1/N) Σᵢ (σ(zᵢ) − yᵢ)
#    ∂zᵢ/∂θ.
#
# 2. In float32 σ(20) rounds to exactly 1 (1 + e^(−20) rounds to 1 once e^(−z) < 2⁻²⁴), so log(1 −
#    σ) = log 0 = −inf and (1 − y) · log(1 − σ) = 0 · (−inf) = nan; the backward forms 0 · inf in
#    the same place.
#
# 3. The backward's max(ŷ(1 − ŷ), 1e-12): chained with σ' it gives ∂ℓ/∂z = (ŷ − y) ŷ(1 −
#    ŷ)/max(ŷ(1 − ŷ), 1e-12). Below z = ln 1e-12 ≈ −27.6, ŷ(1 − ŷ) ≈ e^z is under the floor, the
#    cancellation no longer happens, and the gradient is ≈ −e^z · 10¹², about −2·10⁻¹⁰ at z = −50.
#    The log clamp acts only in the forward, and only where log ŷ < −100 (z < −100); at z = −50,
#    log ŷ = −50.
#
# 4. ℓ(z, y) = max(z, 0) − z y + log(1 + e^(−|z|)), with gradient σ(z) − y computed directly.
#    e^(−|z|) ≤ 1 cannot overflow, log(1 + t) of t ∈ (0, 1] is finite, and nothing is divided.
#    Confidently wrong examples get a gradient of size ≈ 1 (the largest any example gives),
#    instead of 0 or nan, so they keep teaching the model.
